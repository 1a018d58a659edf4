"""Fuzzing the whole pickle decoder with hypothesis: random bytes and mutated real frames.

The invariant is h11's (``fuzz/afl-server.py``): whatever bytes arrive, however they are cut
into chunks, ``Decoder(LengthPrefixFramer(), PickleFormat())`` returns records of plain data or
``NEED_DATA``, or raises ``ProtocolError`` (raised on purpose, with a known reason) and stays in
its error state; nothing else escapes, no input takes long, and the buffer holds at most one
partial frame. A mutated frame must not disturb anything after it either: valid frames fed to a
new decoder still decode, and when a mutated body (with a correct length header) still decodes,
the valid frame that follows it on the *same* decoder decodes exactly as it would alone.

The seeds are real ``SocketHandler.makePickle`` frames of real ``LogRecord``s with extras
(datetime, Decimal, UUID, bytes, nested containers, unpicklable objects, an exception). The
mutations are AFL's usual ones: bit flips, byte sets, insertions (random bytes or opcode
snippets), deletions, truncations, splices of two frames, length header edits, duplications.

The fast tests run a few hundred examples each; the ``slow`` variants run many more (the
standalone ``fuzz/fuzz_decoder.py`` runs for as long as it is told).
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError
from logsvc.record import RecordDict
from logsvc.wire import MAX_FRAME_BYTES, NEED_DATA, Decoder, LengthPrefixFramer, PickleFormat
from logsvc.wire.framing import HEADER_BYTES

from .helpers import examples, frame_of, make_frame, make_record

# --- seeds: real frames --------------------------------------------------------------------------

_HANDLER = logging.handlers.SocketHandler("localhost", 0)  # never connects: makePickle only


def _exception_frame() -> bytes:
    record = make_record("failed", extra={"trace_id": 3}, level=logging.ERROR)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    return _HANDLER.makePickle(record)  # formats the traceback into exc_text


SEEDS: Final = [
    make_frame(),
    make_frame("hello world", extra={"trace_id": 17, "user": "bob"}),
    make_frame("x" * 1000),  # a BINUNICODE of 256+ bytes: off the fast regex path
    make_frame("[000042] {curly} ]}.", extra={"uni": "héllo ☃ \U0001f600"}),
    make_frame(
        extra={"when": datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "naive": datetime(2024, 1, 2, 3, 4, 5, 6)}
    ),
    make_frame(extra={"tz": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2), "X"))}),
    make_frame(extra={"td": timedelta(1, 2, 3), "day": date(2024, 1, 2), "t": dtime(1, 2)}),
    make_frame(extra={"d": Decimal("1.5"), "big_d": Decimal("-1.23E+400"), "u": uuid.UUID(int=5)}),
    make_frame(extra={"b": b"\x00\xff", "empty": b"", "ba": bytearray(b"ab")}),
    make_frame(extra={"nested": [1, (2.5, "x"), {"k": None, 1: "int key"}, True], "shared": [(1, 2)] * 3}),
    make_frame(extra={"big": 2**100, "neg": -(2**70), "f": 1e300, "inf": float("inf")}),
    make_frame(extra={"s": {1, 2}, "e": ValueError("x"), "o": Path("/x")}),  # -> placeholders
    _exception_frame(),
]


def _decode_alone(frame: bytes) -> RecordDict:
    dec = Decoder(LengthPrefixFramer(), PickleFormat())
    dec.feed(frame)
    rec = dec.next_record()
    assert rec is not NEED_DATA
    assert dec.next_record() is NEED_DATA
    return rec


EXPECTED: Final = [_decode_alone(f) for f in SEEDS]


def X(s: str) -> bytes:
    data = s.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


# Opcode fragments worth inserting: imports, calls, refused opcodes, memo and DUP, huge claims.
SNIPPETS: Final = [
    b"cos\nsystem\n",
    b"cbuiltins\neval\n",
    b"ccopy_reg\n_reconstructor\n",
    b"cdatetime\ndatetime\n",
    b"c_codecs\nencode\n",
    X("os") + X("system") + b"\x93",
    b"(" + X("touch /tmp/x") + b"tR",
    b"\x81",
    b"\x92",
    b"o",
    b"b",
    b"R",
    b"\x82\x01",
    b"\x83\x01\x00",
    b"\x84\x01\x00\x00\x00",
    b"Pfoo\n",
    X("id") + b"Q",
    b"\x97",
    b"\x98",
    b"2",
    b"2\x86" * 8,
    b"h\x00",
    b"j\x00\x00\x00\x00",
    b"q\x00",
    b"r\xff\xff\xff\x7f",
    b"\x94",
    b"g0\n",
    b"p0\n",
    b"\x8b\xff\xff\xff\x7f",
    b"\x8e" + b"\xff" * 8,
    b"\x8d" + b"\xff" * 8,
    b"\x95" + b"\xff" * 8,
    b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00",
    b"L" + b"9" * 40 + b"L\n",
    b"(",
    b")",
    b"]",
    b"}",
    b"t",
    b"e",
    b"u",
    b"s",
    b"a",
    b"0",
    b"1",
    b".",
    b"N",
    b"\x88",
]

# --- mutations -----------------------------------------------------------------------------------

HEADER_VALUES: Final = st.one_of(
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, 1, 2, 3, 4, 5, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1, 2**31, 2**32 - 1]),
)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    """1-3 real frames back to back, then 1-4 mutations anywhere (headers included)."""
    data = b"".join(draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=3)))
    for _ in range(draw(st.integers(1, 4))):
        data = draw(mutations(data))
    return data


@st.composite
def mutated_bodies(draw: st.DrawFn) -> tuple[int, bytes]:
    """One seed's body (no header) with 1-4 mutations: (seed index, mutated body)."""
    index = draw(st.integers(0, len(SEEDS) - 1))
    body = SEEDS[index][HEADER_BYTES:]
    for _ in range(draw(st.integers(1, 4))):
        body = draw(mutations(body, headers=False))
    return index, body


@st.composite
def mutations(draw: st.DrawFn, data: bytes, headers: bool = True) -> bytes:
    kinds = ["flip", "set", "insert", "delete", "truncate", "splice", "duplicate"]
    kind = draw(st.sampled_from([*kinds, "header"] if headers else kinds))
    n = len(data)
    pos = draw(st.integers(0, n))
    if kind == "flip" and n:
        pos = min(pos, n - 1)
        return data[:pos] + bytes([data[pos] ^ (1 << draw(st.integers(0, 7)))]) + data[pos + 1 :]
    if kind == "set" and n:
        pos = min(pos, n - 1)
        return data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1 :]
    if kind == "insert":
        piece = draw(st.one_of(st.sampled_from(SNIPPETS), st.binary(min_size=1, max_size=16)))
        return data[:pos] + piece + data[pos:]
    if kind == "delete":
        return data[:pos] + data[pos + draw(st.integers(1, 16)) :]
    if kind == "truncate":
        return data[:pos]
    if kind == "splice":
        other = draw(st.sampled_from(SEEDS))
        other = other if headers else other[HEADER_BYTES:]
        return data[:pos] + other[draw(st.integers(0, len(other))) :]
    if kind == "duplicate":
        end = draw(st.integers(pos, min(n, pos + 64)))
        return data[:end] + data[pos:end] + data[end:]
    if kind == "header":
        # Rewrite a length header where a frame starts (or anywhere, for a misaligned one).
        starts = _frame_starts(data)
        aligned = len(starts) > 0 and draw(st.booleans())
        at = draw(st.sampled_from(starts)) if aligned else pos
        value = draw(HEADER_VALUES)
        if aligned and draw(st.booleans()):  # near the true length: off by a few bytes
            value = max(0, min(2**32 - 1, _header_at(data, at) + draw(st.integers(-8, 8))))
        return data[:at] + value.to_bytes(4, "big") + data[at + 4 :]
    return data


def _header_at(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4].ljust(4, b"\x00"), "big")


def _frame_starts(data: bytes) -> list[int]:
    starts, at = [], 0
    while at + HEADER_BYTES <= len(data):
        starts.append(at)
        at += HEADER_BYTES + _header_at(data, at)
    return starts


CHUNKINGS: Final = st.one_of(
    st.just([0]),  # whole
    st.just([1]),  # byte by byte
    st.lists(st.integers(1, 97), min_size=1, max_size=6),  # cycled
)
FRAME_CAPS: Final = st.sampled_from([MAX_FRAME_BYTES, MAX_FRAME_BYTES, 4096, 600, 64])

# --- the invariant -------------------------------------------------------------------------------

REASONS: Final = frozenset({"malformed", "forbidden", "complexity", "not_a_dict", "oversized", "truncated"})
# No single next_record() may take this long (a typical frame takes ~20 us; generous for CI).
HANG_SECONDS: Final = 2.0

_SCALARS: Final = frozenset(
    {str, int, float, bool, type(None), bytes, datetime, date, dtime, timedelta, Decimal}
)


def assert_plain(value: Any, depth: int = 0) -> None:
    """Only plain data leaves the decoder: no placeholder object, no class, nothing callable."""
    assert depth < 64
    t = type(value)
    if t in _SCALARS or t is uuid.UUID:
        return
    if t is dict:
        for k, v in value.items():
            assert type(k) is str, k
            assert_plain(v, depth + 1)
        return
    assert t is list or t is tuple, t
    for v in value:
        assert_plain(v, depth + 1)


@dataclass
class Result:
    records: list[RecordDict]
    error: ProtocolError | None

    def label(self) -> str:
        """For ``--hypothesis-show-statistics``: how the examples ended."""
        outcome = self.error.reason if self.error is not None else "clean EOF"
        return f"{len(self.records)} record(s), then {outcome}"


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    if sizes == [0]:
        return [data] if data else []
    out, at, i = [], 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[at : at + size])
        at += size
        i += 1
    return out


def decode_checked(stream: bytes, sizes: list[int], max_frame_bytes: int = MAX_FRAME_BYTES) -> Result:
    """Feed ``stream`` in chunks then EOF, checking the invariant at every step."""
    dec = Decoder(LengthPrefixFramer(max_frame_bytes), PickleFormat())
    records: list[RecordDict] = []
    try:
        for chunk in [*_chunks(stream, sizes), b""]:
            dec.feed(chunk)
            while True:
                start = time.perf_counter()
                rec = dec.next_record()
                assert time.perf_counter() - start < HANG_SECONDS
                if rec is NEED_DATA:
                    break
                assert type(rec) is dict
                assert_plain(rec)
                records.append(rec)
            # Drained: what is left is one partial frame at most.
            assert dec.buffered_bytes < HEADER_BYTES + max_frame_bytes
    except ProtocolError as exc:
        assert exc.reason in REASONS, exc.reason
        assert exc.__cause__ is None, f"a broken promise was wrapped: {exc!r}"
        assert not re.search(r"MemoryError|RecursionError|Internal decoder error", str(exc)), exc
        assert dec.buffered_bytes == 0
        with pytest.raises(ProtocolError, match="error state"):
            dec.next_record()
        return Result(records, exc)
    assert dec.next_record() is NEED_DATA  # after a clean EOF, forever
    assert dec.buffered_bytes == 0
    return Result(records, None)


def assert_fresh_decoder_still_works() -> None:
    # Nothing process-wide (placeholder class cache, copyreg, the C unpickler) was disturbed.
    dec = Decoder(LengthPrefixFramer(), PickleFormat())
    dec.feed(SEEDS[1] + SEEDS[4] + SEEDS[11])
    assert [dec.next_record(), dec.next_record(), dec.next_record()] == [
        EXPECTED[1],
        EXPECTED[4],
        EXPECTED[11],
    ]
    assert dec.next_record() is NEED_DATA


# --- properties (each used twice: fast, and slow with many more examples) -------------------------


def _random_bytes(data: bytes, sizes: list[int], cap: int) -> None:
    event(decode_checked(data, sizes, cap).label())
    assert_fresh_decoder_still_works()


def _random_body(body: bytes, sizes: list[int]) -> None:
    # A correct header, so the bytes reach the unpickler; a valid frame follows.
    result = decode_checked(frame_of(body) + SEEDS[0], sizes)
    event(result.label())
    if result.error is None:
        assert len(result.records) == 2
        assert result.records[1] == EXPECTED[0]
    assert_fresh_decoder_still_works()


def _mutated_stream(stream: bytes, sizes: list[int], cap: int) -> None:
    event(decode_checked(stream, sizes, cap).label())
    assert_fresh_decoder_still_works()


def _mutated_body(seed_and_body: tuple[int, bytes], sizes: list[int], follower: int) -> None:
    index, body = seed_and_body
    result = decode_checked(frame_of(body) + SEEDS[follower], sizes)
    event(result.label())
    if result.error is None:
        # The mutated frame decoded (or was empty): the stream is in step and the unpickler
        # reused for the next frame kept nothing of it.
        assert len(result.records) == 2
        assert result.records[1] == EXPECTED[follower]
        if body == SEEDS[index][HEADER_BYTES:]:
            assert result.records[0] == EXPECTED[index]
    else:
        assert result.records == []
    assert_fresh_decoder_still_works()


_FOLLOWERS = st.integers(0, len(SEEDS) - 1)
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

Property = Callable[..., None]


def _fuzz(prop: Property, n: int, *strategies: st.SearchStrategy[Any], scaled: bool = True) -> Property:
    # scaled: n times the profile's factor (examples()); the _long variants keep their count,
    # which the thorough profile's scaled fast variants already exceed.
    count = examples(n) if scaled else n
    return settings(max_examples=count, deadline=None, suppress_health_check=_HEALTH)(
        given(*strategies)(prop)
    )


_RANDOM_BYTES = (st.binary(max_size=4096), CHUNKINGS, FRAME_CAPS)
_RANDOM_BODY = (st.binary(min_size=1, max_size=4096), CHUNKINGS)
_MUTATED_STREAM = (mutated_streams(), CHUNKINGS, FRAME_CAPS)
_MUTATED_BODY = (mutated_bodies(), CHUNKINGS, _FOLLOWERS)

# Fast: 1 400 examples in all, ~8 s (times the profile's factor: 28 000 when thorough).
test_random_bytes = _fuzz(_random_bytes, 200, *_RANDOM_BYTES)
test_random_body_behind_a_valid_header = _fuzz(_random_body, 200, *_RANDOM_BODY)
test_mutated_real_frames = _fuzz(_mutated_stream, 500, *_MUTATED_STREAM)
test_mutated_real_body_keeps_the_stream_in_step = _fuzz(_mutated_body, 500, *_MUTATED_BODY)

# Slow (selected by default like every slow test; -m "not slow" skips it): 7 000 examples, ~30 s.
test_random_bytes_long = pytest.mark.slow(_fuzz(_random_bytes, 1_000, *_RANDOM_BYTES, scaled=False))
test_random_body_behind_a_valid_header_long = pytest.mark.slow(
    _fuzz(_random_body, 1_000, *_RANDOM_BODY, scaled=False)
)
test_mutated_real_frames_long = pytest.mark.slow(
    _fuzz(_mutated_stream, 2_500, *_MUTATED_STREAM, scaled=False)
)
test_mutated_real_body_keeps_the_stream_in_step_long = pytest.mark.slow(
    _fuzz(_mutated_body, 2_500, *_MUTATED_BODY, scaled=False)
)


# --- the seeds themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[0], [1], [7, 3, 64]], ids=["whole", "bytewise", "mixed"])
def test_all_seeds_back_to_back_decode_in_any_chunking(sizes: list[int]) -> None:
    result = decode_checked(b"".join(SEEDS), sizes)
    assert result.error is None
    assert result.records == EXPECTED


def test_seeds_cover_placeholders_and_allow_listed_types() -> None:
    fmt = PickleFormat()
    for frame in SEEDS:
        fmt.parse(frame[HEADER_BYTES:])
    assert fmt.placeholders == 3  # set, ValueError, Path
    assert EXPECTED[7]["u"] == uuid.UUID(int=5)
    assert "ValueError: boom" in EXPECTED[-1]["exc_text"]
