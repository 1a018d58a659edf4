#!/usr/bin/env python3
"""Fuzz the SocketHandler decoder: ``Decoder(LengthPrefixFramer(), PickleFormat())`` on hostile bytes.

The invariant is h11's (``fuzz/afl-server.py``): we either successfully decode records of plain
data (or ``NEED_DATA``), or raise ``ProtocolError``, never any other error; no input takes long
and memory stays bounded. Checked for every input:

- only ``ProtocolError`` escapes, with a known ``reason``, raised on purpose (not a broken promise
  wrapped by ``Decoder``'s last resort, not a MemoryError/RecursionError turned into a message),
  and the decoder then stays in its error state;
- records are dicts with str keys and plain values (no placeholder object, no class);
- after draining, the buffer holds at most one partial frame; after a clean EOF, NEED_DATA;
- when a mutated body behind a correct header still decodes, the valid frame after it decodes
  exactly as it does alone (the reused unpickler kept nothing), and a new decoder still decodes
  the seed frames (nothing process-wide was disturbed);
- nothing ran: ``_canary`` (reachable by GLOBAL, NEWOBJ, and EXT1/2/4 codes registered *and
  cached* in copyreg) was never called and ``os.system`` never created the marker file.

Input layout: byte 0 is a control byte, the rest the payload::

    bit 0    1: payload is one frame body, sent behind its correct >L header; 0: raw stream
    bit 1    a valid frame follows the payload
    bit 2    the framer's cap is 4096 bytes instead of 1 MiB
    bits 3-7 chunking: 0 whole, 1 byte by byte, n: chunks of 3*n bytes

Engines: ``atheris`` (coverage-guided libFuzzer; ``pip install atheris``), the default when it
imports, and ``random``, a seeded mutator with no dependency. Both start from real
``SocketHandler.makePickle`` frames and hand-built hostile pickles, and mutate with bit flips,
byte sets, insertions of random bytes and opcode snippets, deletions, truncations, splices,
length header edits and duplications (atheris mixes in libFuzzer's own mutations).

Stops after ``--runs`` inputs or ``--seconds`` seconds, whichever comes first, and prints the
inputs tried, crashes, peak RSS and the slowest input. Exit status 1 on any failure: a crash
(the input is saved), an input slower than ``--hang-seconds`` (a C-level watchdog aborts the
run; the input is in ``current-input`` under the artifact directory), or peak RSS over
``--max-rss-mb``.
"""

from __future__ import annotations

import argparse
import copyreg
import faulthandler
import hashlib
import importlib
import logging
import logging.handlers
import mmap
import os
import pickle
import random
import re
import resource
import struct
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # imported at run time by _load_target(), instrumented for atheris
    from logsvc.errors import ProtocolError
    from logsvc.wire import Decoder

HEADER: Final = struct.Struct(">L")
CURRENT_INPUT: Final = "current-input"
SMALL_CAP: Final = 4096
REASONS: Final = frozenset({"malformed", "forbidden", "complexity", "not_a_dict", "oversized", "truncated"})
_SCALARS: Final = frozenset(
    {str, int, float, bool, type(None), bytes, datetime, date, dtime, timedelta, Decimal}
)
_WRAPPED: Final = re.compile(r"MemoryError|RecursionError|Internal decoder error")

# --- what a payload would do if it ran ----------------------------------------------------------

CALLS: list[tuple[object, ...]] = []


def _canary(*args: object, **kwargs: object) -> str:
    CALLS.append(args)
    return "pwned"


# One copyreg key holds one code, so each EXT width gets its own name for the same function.
_canary_ext1 = _canary_ext2 = _canary_ext4 = _canary
EXTS: Final = [  # (opcode, argument format, code, name)
    (b"\x82", "<B", 0xE1, "_canary_ext1"),
    (b"\x83", "<H", 0x1E1, "_canary_ext2"),
    (b"\x84", "<i", 0x10000E1, "_canary_ext4"),
]


class _Canary:
    def __new__(cls, *args: object, **kwargs: object) -> _Canary:
        CALLS.append(("new", *args))
        return object.__new__(cls)

    def __setstate__(self, state: object) -> None:
        CALLS.append(("setstate", state))


def _arm_extensions() -> None:
    """Register EXT codes for ``_canary`` and resolve each once, so copyreg caches the real object."""
    for op, fmt, code, name in EXTS:
        copyreg.add_extension(__name__, name, code)
        if pickle.loads(b"\x80\x02" + op + struct.pack(fmt, code) + b".") is not _canary:
            raise SystemExit("could not arm the copyreg extension cache")


# --- seeds ---------------------------------------------------------------------------------------


def X(s: str) -> bytes:
    """BINUNICODE."""
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def G(module: str, name: str) -> bytes:
    """GLOBAL."""
    return f"c{module}\n{name}\n".encode()


def _record_body(value: bytes) -> bytes:
    return b"}(" + X("msg") + X("m") + X("evil") + value + b"u."


def real_frames() -> list[bytes]:
    """Frames exactly as ``SocketHandler`` sends them, for real records with extras."""
    handler = logging.handlers.SocketHandler("localhost", 0)  # never connects: makePickle only

    def frame(msg: str = "hello", level: int = logging.INFO, **extra: Any) -> bytes:
        record = logging.LogRecord("app.module", level, "/srv/app/module.py", 42, msg, None, None, "handler")
        record.__dict__.update(extra)
        return handler.makePickle(record)

    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("app", logging.ERROR, "/a.py", 1, "failed", None, sys.exc_info())
    return [
        frame(),
        frame("hello world", trace_id=17, user="bob"),
        frame("x" * 1000),
        frame("[000042] {curly} ]}.", uni="héllo ☃ \U0001f600"),
        frame(when=datetime(2024, 5, 1, 12, 0, tzinfo=UTC), naive=datetime(2024, 1, 2, 3, 4, 5, 6)),
        frame(tz=datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2), "X"))),
        frame(td=timedelta(1, 2, 3), day=date(2024, 1, 2), t=dtime(1, 2)),
        frame(d=Decimal("1.5"), big_d=Decimal("-1.23E+400"), u=uuid.UUID(int=5)),
        frame(b=b"\x00\xff", empty=b"", ba=bytearray(b"ab")),
        frame(nested=[1, (2.5, "x"), {"k": None, 1: "int key"}, True], shared=[(1, 2)] * 3),
        frame(big=2**100, neg=-(2**70), f=1e300, inf=float("inf")),
        frame(s={1, 2}, e=ValueError("x"), o=Path("/x")),
        handler.makePickle(failed),
    ]


def hostile_bodies(marker: Path) -> list[bytes]:
    """Pickle bodies that would run code, import, or burn CPU or memory if trusted."""
    call = b"(" + X("ran") + b"tR"
    touch = b"(" + X(f"touch {marker}") + b"tR"
    bodies = [
        _record_body(G("os", "system") + touch),
        _record_body(G("builtins", "eval") + b"(" + X(f"open({str(marker)!r}, 'w')") + b"tR"),
        _record_body(G(__name__, "_canary") + call),
        b"\x80\x04" + _record_body(X(__name__) + X("_canary") + b"\x93" + call),
        _record_body(b"(" + X("ran") + f"i{__name__}\n_canary\n".encode()),
        _record_body(b"(" + G(__name__, "_canary") + X("ran") + b"o"),
        b"\x80\x02" + _record_body(G(__name__, "_Canary") + b"(" + X("ran") + b"t\x81"),
        b"\x80\x04" + _record_body(G(__name__, "_Canary") + b")}" + X("k") + b"K\x01s\x92"),
        _record_body(
            G("copy_reg", "_reconstructor")
            + b"("
            + G(__name__, "_Canary")
            + G("__builtin__", "object")
            + b"NtR}"
            + X("state")
            + b"K\x01sb"
        ),
        *[b"\x80\x02" + _record_body(op + struct.pack(fmt, code) + call) for op, fmt, code, _ in EXTS],
        _record_body(b"Pcanary\n" + call),
        _record_body(X("canary") + b"Q" + call),
        # Hash bombs in the small: a dict key t = (t, t) 16 times over through DUP (hash work
        # 2**16), and one big int put into a set 8 times through DUP and memo GETs.
        b"}(" + X("msg") + X("m") + b"K\x01" + b"2\x86" * 16 + X("v") + b"u.",
        _record_body(
            b"\x8f(\x8b\x00\x01\x00\x00" + b"\x01" * 256 + b"\x94" + b"h\x00" * 4 + b"2" * 4 + b"\x90"
        ),
        _record_body(b"]q\x00(" + X("lol") * 4 + b"e" + b"]q\x01(" + b"h\x00" * 4 + b"e"),
        _record_body(b"]" * 64 + b"a" * 63),
        b"\x80\x04\x95" + struct.pack("<Q", 40) + _record_body(X("v")),
        pickle.dumps({"msg": "m", "when": datetime(2024, 1, 1), "u": uuid.UUID(int=5)}, 2),
        pickle.dumps({"msg": "m", "b": b"x", "s": frozenset({1})}, 5),
    ]
    return bodies


SNIPPETS: Final = [
    G("os", "system"),
    G("builtins", "eval"),
    G("copy_reg", "_reconstructor"),
    G("datetime", "datetime"),
    G("_codecs", "encode"),
    G(__name__, "_canary"),
    X("os") + X("system") + b"\x93",
    b"(" + X("ran") + b"tR",
    *[bytes([op]) for op in b"\x81\x92obR2\x94(])}tesau01.N\x88\x97\x98"],
    b"\x82\xe1",
    b"\x83\xe1\x01",
    b"\x84\xe1\x00\x00\x01",
    b"Pfoo\n",
    X("id") + b"Q",
    b"2\x86" * 8,
    b"h\x00",
    b"j\x00\x00\x00\x00",
    b"q\x00",
    b"r\xff\xff\xff\x7f",
    b"g0\n",
    b"p0\n",
    b"\x8b\xff\xff\xff\x7f",
    b"\x8e" + b"\xff" * 8,
    b"\x8d" + b"\xff" * 8,
    b"\x95" + b"\xff" * 8,
    b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00",
    b"L" + b"9" * 40 + b"L\n",
]

# --- the target ----------------------------------------------------------------------------------


@dataclass
class Target:
    decoder: Callable[[int], Decoder]
    protocol_error: type[ProtocolError]
    need_data: object


def _load_target(atheris: Any | None) -> Target:
    if atheris is not None:
        # Coverage feedback from logsvc only; the stdlib's C unpickler is not instrumented.
        with atheris.instrument_imports(include=["logsvc"]):
            wire = importlib.import_module("logsvc.wire")
    else:
        wire = importlib.import_module("logsvc.wire")
    errors = importlib.import_module("logsvc.errors")

    def decoder(cap: int) -> Decoder:
        return wire.Decoder(wire.LengthPrefixFramer(cap), wire.PickleFormat())  # type: ignore[no-any-return]

    return Target(decoder, errors.ProtocolError, wire.NEED_DATA)


class InvariantBroken(AssertionError):
    pass


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise InvariantBroken(what)


def _check_plain(value: Any, depth: int = 0) -> None:
    _check(depth < 64, "nesting deeper than the normalization budget")
    t = type(value)
    if t in _SCALARS or t is uuid.UUID:
        return
    if t is dict:
        for k, v in value.items():
            _check(type(k) is str, f"non-str key {k!r}")
            _check_plain(v, depth + 1)
        return
    _check(t is list or t is tuple, f"a {t!r} left the decoder")
    for v in value:
        _check_plain(v, depth + 1)


@dataclass
class Stats:
    inputs: int = 0
    crashes: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    slowest_input: bytes = b""
    started: float = field(default_factory=time.monotonic)


class Fuzzer:
    def __init__(self, target: Target, args: argparse.Namespace, artifacts: Path) -> None:
        self.target = target
        self.args = args
        self.artifacts = artifacts
        self.marker = artifacts / "MARKER"
        self.stats = Stats()
        self.seeds = real_frames()
        self.expected = [self._decode_alone(f) for f in self.seeds]
        # Inputs: control byte + payload. Real frames go as raw streams, hostile bodies wrapped.
        self.corpus = [bytes([0]) + f for f in self.seeds]
        self.corpus += [bytes([0b11]) + b for b in hostile_bodies(self.marker)]
        self.corpus += [bytes([0b1000]) + b"".join(self.seeds[:4]), bytes([0b1010]) + self.seeds[5][:-3]]
        # The input being run, in a shared file mapping (8-byte length, then the bytes): the
        # kernel keeps it when the watchdog _exit()s. A memcpy per input, no system call.
        size = 8 + max(args.max_len, *map(len, self.corpus))
        fd = os.open(artifacts / CURRENT_INPUT, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(fd, size)
        self._current = mmap.mmap(fd, size)
        os.close(fd)
        self._armed_at = 0.0

    def _decode_alone(self, frame: bytes) -> Any:
        dec = self.target.decoder(1 << 20)
        dec.feed(frame)
        rec = dec.next_record()
        _check(rec is not self.target.need_data and dec.next_record() is self.target.need_data, "bad seed")
        return rec

    # One input: the invariant, or an exception.
    def run_one(self, data: bytes) -> str:
        if not data:
            return "empty"
        ctl, payload = data[0], data[1:]
        cap = SMALL_CAP if ctl & 0b100 else 1 << 20
        follower = self.seeds[ctl % len(self.seeds)]
        stream = HEADER.pack(len(payload)) + payload if ctl & 1 else payload
        if ctl & 0b10:
            stream += follower
        step = ctl >> 3
        size = len(stream) or 1 if step == 0 else 1 if step == 1 else 3 * step
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        dec = self.target.decoder(cap)
        records: list[Any] = []
        error: ProtocolError | None = None
        try:
            for chunk in [*chunks, b""]:
                dec.feed(chunk)
                while (rec := dec.next_record()) is not self.target.need_data:
                    _check(type(rec) is dict, f"a {type(rec)!r} came out")
                    _check_plain(rec)
                    records.append(rec)
                _check(dec.buffered_bytes < HEADER.size + cap, f"{dec.buffered_bytes} bytes buffered")
        except self.target.protocol_error as exc:
            error = exc
        if error is not None:
            _check(error.reason in REASONS, f"unknown reason {error.reason!r}")
            _check(error.__cause__ is None, f"a broken promise was wrapped: {error!r}")
            _check(not _WRAPPED.search(str(error)), f"wrapped: {error}")
            _check(dec.buffered_bytes == 0, "buffer kept in the error state")
            try:
                dec.next_record()
            except self.target.protocol_error:
                pass
            else:
                raise InvariantBroken("the error state did not stick")
        else:
            _check(dec.next_record() is self.target.need_data, "no NEED_DATA after a clean EOF")
            if ctl & 0b11 == 0b11:  # body behind a correct header, then a valid frame: in step
                _check(len(records) == 2, f"{len(records)} records from one body and one valid frame")
                _check(records[1] == self.expected[ctl % len(self.seeds)], "the valid frame changed")
        _check(not CALLS, f"a payload ran: {CALLS}")
        return "records" if error is None else error.reason

    def one_input(self, data: bytes) -> None:
        """Run one input, keep the figures, stop when a limit is reached."""
        stats = self.stats
        now = time.monotonic()
        if stats.inputs >= self.args.runs or now - stats.started >= self.args.seconds:
            self.finish()
        # Watchdog (a C thread: it fires even inside a C loop holding the GIL). Re-armed every
        # hang/2 s with a timeout of hang s, so it aborts on an input slower than hang/2..hang s.
        if now - self._armed_at >= self.args.hang_seconds / 2:
            faulthandler.dump_traceback_later(self.args.hang_seconds, exit=True)
            self._armed_at = now
        self._current[:8] = struct.pack("<Q", len(data))
        self._current[8 : 8 + len(data)] = data
        stats.inputs += 1
        start = time.perf_counter()
        try:
            outcome = self.run_one(data)
        except Exception:
            self.crash(data, traceback.format_exc())
            outcome = "crash"
        elapsed = time.perf_counter() - start
        stats.outcomes[outcome] += 1
        if elapsed > stats.slowest:
            stats.slowest, stats.slowest_input = elapsed, data
        if stats.inputs % 1000 == 0:
            self.check_side_effects_and_memory()
        if stats.crashes and not self.args.keep_going:
            self.finish()

    def check_side_effects_and_memory(self) -> None:
        try:
            dec = self.target.decoder(1 << 20)
            dec.feed(b"".join(self.seeds))
            got = [dec.next_record() for _ in self.seeds]
            _check(got == self.expected, "a new decoder no longer decodes the seeds")
            _check(not self.marker.exists(), "os.system ran: the marker file exists")
        except Exception:
            self.crash(b"", traceback.format_exc())
        if peak_rss_mb() > self.args.max_rss_mb:
            print(f"FAIL: peak RSS {peak_rss_mb():.0f} MiB over --max-rss-mb {self.args.max_rss_mb}")
            self.stats.crashes += 1

    def crash(self, data: bytes, tb: str) -> None:
        self.stats.crashes += 1
        path = self.artifacts / f"crash-{hashlib.sha1(data).hexdigest()}"
        path.write_bytes(data)
        print(f"CRASH on {len(data)} bytes, saved to {path}:\n{tb}", flush=True)
        CALLS.clear()

    def finish(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        self.check_final()
        stats = self.stats
        elapsed = time.monotonic() - stats.started
        slow_path = self.artifacts / "slowest-input"
        slow_path.write_bytes(stats.slowest_input)
        rerun = self.rerun_time(stats.slowest_input)
        total = sum(stats.outcomes.values()) or 1
        outcomes = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in stats.outcomes.most_common())
        engine = self.args.engine + (f" (seed {self.args.seed})" if self.args.engine == "random" else "")
        rows = [
            ("engine", engine),
            ("inputs tried", str(stats.inputs)),
            ("crashes", str(stats.crashes)),
            ("hangs", f"0 (the watchdog aborts the run on an input over {self.args.hang_seconds:g} s)"),
            ("elapsed", f"{elapsed:.1f} s ({stats.inputs / max(elapsed, 1e-9):.0f} inputs/s)"),
            ("peak RSS", f"{peak_rss_mb():.1f} MiB (limit {self.args.max_rss_mb} MiB)"),
            (
                "slowest input",
                f"{stats.slowest * 1000:.2f} ms, {len(stats.slowest_input)} bytes: {slow_path}",
            ),
            ("  re-run", f"{rerun} (best of 3: a pause of the machine, or the input itself?)"),
            ("outcomes", outcomes),
            ("artifacts", str(self.artifacts)),
        ]
        print("\n".join(f"{label:<16}{value}" for label, value in rows), flush=True)
        sys.stderr.flush()
        os._exit(1 if stats.crashes else 0)

    def rerun_time(self, data: bytes) -> str:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            try:
                self.run_one(data)
            except Exception:
                return "fails"
            best = min(best, time.perf_counter() - start)
        return f"{best * 1000:.2f} ms"

    def check_final(self) -> None:
        if self.marker.exists() or CALLS:
            print(f"FAIL: a payload ran (marker={self.marker.exists()}, calls={CALLS})")
            self.stats.crashes += 1

    # --- the dependency-free engine ------------------------------------------------------------

    def mutate(self, data: bytes, rng: random.Random, max_len: int) -> bytes:
        """One structure-aware mutation of ``data`` (control byte + payload)."""
        n = len(data)
        kind = rng.randrange(10)
        pos = rng.randrange(n + 1)
        if kind == 0 and n:  # flip a bit
            pos = min(pos, n - 1)
            data = data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :]
        elif kind == 1 and n:  # set a byte (an interesting one, often)
            pos = min(pos, n - 1)
            byte = (
                rng.choice(b"\x00\x01\x7f\x80\xff.()]}tesauR2h\x94\x82")
                if rng.random() < 0.5
                else rng.randrange(256)
            )
            data = data[:pos] + bytes([byte]) + data[pos + 1 :]
        elif kind == 2:  # insert an opcode snippet
            data = data[:pos] + rng.choice(SNIPPETS) + data[pos:]
        elif kind == 3:  # insert random bytes
            data = data[:pos] + rng.randbytes(rng.randint(1, 16)) + data[pos:]
        elif kind == 4:  # delete a range
            data = data[:pos] + data[pos + rng.randint(1, 32) :]
        elif kind == 5:  # truncate
            data = data[:pos]
        elif kind == 6:  # splice with another seed
            other = rng.choice(self.corpus)[1:]
            data = data[:pos] + other[rng.randrange(len(other) + 1) :]
        elif kind == 7:  # duplicate a range
            end = min(n, pos + rng.randint(1, 64))
            data = data[:end] + data[pos:end] + data[end:]
        elif kind == 8:  # rewrite a length header (at a frame start, or anywhere)
            at = rng.choice(_frame_starts(data[1:]) or [0]) + 1 if rng.random() < 0.7 else pos
            old = int.from_bytes(data[at : at + 4].ljust(4, b"\x00"), "big")
            value = rng.choice([0, 1, 5, SMALL_CAP + 1, (1 << 20) + 1, 2**32 - 1, rng.randrange(2**32)])
            if rng.random() < 0.5:
                value = max(0, min(2**32 - 1, old + rng.randint(-8, 8)))
            data = data[:at] + value.to_bytes(4, "big") + data[at + 4 :]
        elif n:  # a new control byte: other chunking, wrapping, cap
            data = bytes([rng.randrange(256)]) + data[1:]
        return data[:max_len]

    def run_random(self) -> None:
        rng = random.Random(self.args.seed)
        while True:
            if rng.random() < 0.05:
                data = rng.randbytes(rng.randint(0, 256))
            else:
                data = rng.choice(self.corpus)
                for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 8))):
                    data = self.mutate(data, rng, self.args.max_len)
            self.one_input(data)  # exits when a limit is reached

    # --- atheris -------------------------------------------------------------------------------

    def run_atheris(self, atheris: Any, libfuzzer_args: list[str]) -> None:
        corpus_dir = self.artifacts / "corpus"
        corpus_dir.mkdir(exist_ok=True)
        for data in self.corpus:
            (corpus_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)

        def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
            rng = random.Random(seed)
            if rng.random() < 0.5:
                return atheris.Mutate(data, max_size)  # type: ignore[no-any-return]
            for _ in range(rng.choice((1, 1, 2, 4))):
                data = self.mutate(data, rng, max_size)
            return data

        argv = [
            sys.argv[0],
            f"-max_len={self.args.max_len}",
            f"-rss_limit_mb={self.args.max_rss_mb}",
            f"-timeout={int(self.args.hang_seconds * 2)}",  # backstop; the watchdog fires first
            "-timeout_exitcode=1",
            "-error_exitcode=1",
            f"-seed={self.args.seed}",
            f"-artifact_prefix={self.artifacts}/",
            *libfuzzer_args,
            str(corpus_dir),
        ]
        atheris.Setup(argv, self.one_input, custom_mutator=custom_mutator)
        atheris.Fuzz()  # never returns: one_input exits when a limit is reached

    def replay(self, paths: list[Path]) -> None:
        failed = 0
        for path in paths:
            data = path.read_bytes()
            if path.name == CURRENT_INPUT:  # 8-byte length, then the input
                data = data[8 : 8 + struct.unpack_from("<Q", data)[0]]
            start = time.perf_counter()
            try:
                outcome = self.run_one(data)
            except Exception:
                outcome = "CRASH\n" + traceback.format_exc()
                failed += 1
            print(f"{path}: {len(data)} bytes, {(time.perf_counter() - start) * 1000:.2f} ms: {outcome}")
        sys.exit(1 if failed else 0)


def _frame_starts(stream: bytes) -> list[int]:
    starts, at = [], 0
    while at + HEADER.size <= len(stream):
        starts.append(at)
        at += HEADER.size + HEADER.unpack_from(stream, at)[0]
    return starts


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    try:
        atheris: Any = importlib.import_module("atheris")
    except ImportError:
        atheris = None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100_000, help="stop after this many inputs (100000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this many seconds (60)")
    parser.add_argument(
        "--engine",
        choices=["atheris", "random"],
        default="atheris" if atheris is not None else "random",
        help="atheris (coverage-guided, the default when installed) or random (seeded, no dependency)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (both engines)")
    parser.add_argument("--max-len", type=int, default=8192, help="largest input in bytes (8192)")
    parser.add_argument("--hang-seconds", type=float, default=10.0, help="watchdog: abort on a slower input")
    parser.add_argument("--max-rss-mb", type=int, default=1024, help="fail when peak RSS exceeds this (1024)")
    parser.add_argument("--artifacts", type=Path, help="where crashes and the corpus go (a new temp dir)")
    parser.add_argument("--keep-going", action="store_true", help="count crashes instead of stopping at one")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="run these inputs and stop")
    args, libfuzzer_args = parser.parse_known_args(argv)
    if args.runs < 1 or args.seconds <= 0:
        parser.error("--runs and --seconds must be positive")
    if args.engine == "atheris" and atheris is None:
        parser.error("atheris is not installed: pip install atheris, or use --engine random")
    if libfuzzer_args and args.engine != "atheris":
        parser.error(f"unknown arguments: {libfuzzer_args}")

    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="logsvc-fuzz-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    target = _load_target(atheris if args.engine == "atheris" and not args.replay else None)
    _arm_extensions()
    fuzzer = Fuzzer(target, args, artifacts)
    if args.replay:
        fuzzer.replay(args.replay)
    print(
        f"fuzzing with {args.engine} for {args.runs} inputs or {args.seconds:g} s; artifacts in {artifacts}"
    )
    print(
        f"(if the watchdog aborts the run, --replay {artifacts / CURRENT_INPUT} reruns its input)", flush=True
    )
    if args.engine == "atheris":
        fuzzer.run_atheris(atheris, libfuzzer_args)
    else:
        fuzzer.run_random()


if __name__ == "__main__":
    main()
