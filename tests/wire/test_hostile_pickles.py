"""Hostile pickles through the whole decoder: nothing runs, and each ends the way it is designed to.

Every payload is assembled opcode by opcode (``pickletools`` names) so that, unpickled by the
stdlib, it *would* leave a trace: call ``_canary`` (which appends to ``CALLS``), construct or
``__setstate__`` a ``_Canary``, set an attribute on ``_Target``, import a module the
``_ImportProbe`` finder watches for, or run ``os.system``/``eval`` to create ``MARKER`` in
``tmp_path``. Each test first proves its payload is armed (the stdlib's ``pickle.loads`` does
leave the trace), then feeds it through ``Decoder(LengthPrefixFramer(), PickleFormat())`` and
checks that the trace is absent and the decoder ended as designed:

- opcodes that import or call (GLOBAL, STACK_GLOBAL, REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD)
  only ever reach ``find_class``, which imports nothing. A global that only an attack names
  (``os.system``, ``posix.system``, ``builtins.eval``/``exec``, ``subprocess.*``) refuses the
  frame as ``forbidden`` and the decoder stays in its error state (the connection is closed).
  Any other name (an application's class, as ``extra=`` sends it) becomes the string
  ``"<unpicklable MODULE.NAME>"``, ``Decoder.placeholders`` counts it, and the record is kept
  with the connection still open (STYLE convention 5: nothing is dropped for its content);
- EXT1/EXT2/EXT4 (even with a registered and already cached copyreg extension), PERSID,
  BINPERSID and out-of-band buffers are refused before unpickling: ``ProtocolError`` with
  ``reason="forbidden"``, after which the decoder stays in its error state.

The second half feeds memory and time bombs (huge length claims, deep nesting, memo and DUP
loops, hash bombs, bad FRAME lengths): each ends in a ``ProtocolError`` with a stable reason or
in a record cut by the normalization budget, within a bounded time and memory, and never lets a
MemoryError or RecursionError through (not even wrapped in a ProtocolError message).
"""

from __future__ import annotations

import copyreg
import importlib.abc
import importlib.machinery
import io
import pickle
import pickletools
import re
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import pytest

from logsvc.errors import ProtocolError
from logsvc.record import RecordDict
from logsvc.wire import MAX_FRAME_BYTES, NEED_DATA, Decoder, LengthPrefixFramer, PickleFormat
from logsvc.wire.pickle_format import MAX_NORMALIZED_DEPTH, MAX_NORMALIZED_NODES

from .helpers import frame_of, make_frame

MODULE: Final = __name__

# --- side effects a payload would leave if it ran ------------------------------------------------

CALLS: list[tuple[str, tuple[object, ...]]] = []


def _canary(*args: object, **kwargs: object) -> str:
    CALLS.append(("call", args))
    return "pwned"


# One copyreg key can hold only one extension code, so each EXT width gets its own name.
_canary_ext1 = _canary_ext2 = _canary_ext4 = _canary


class _Canary:
    def __new__(cls, *args: object, **kwargs: object) -> _Canary:
        CALLS.append(("new", args))
        return object.__new__(cls)

    def __setstate__(self, state: object) -> None:
        CALLS.append(("setstate", (state,)))


class _Target:
    """BUILD on this class itself (no ``__setstate__``) would ``setattr`` on it."""


PROBE_MODULE: Final = "logsvc_hostile_probe"


class _ImportProbe(importlib.abc.MetaPathFinder):
    """Records every attempt to import ``PROBE_MODULE``; finds nothing."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] == PROBE_MODULE:
            self.attempts.append(fullname)
        return None


@dataclass
class Traces:
    marker: Path
    probe: _ImportProbe

    def seen(self) -> list[str]:
        out = [f"{kind}{args!r}" for kind, args in CALLS]
        out += [f"import {name}" for name in self.probe.attempts]
        if self.marker.exists():
            out.append(f"created {self.marker}")
        if "pwned" in vars(_Target):
            out.append("setattr _Target.pwned")
        return out

    def clear(self) -> None:
        CALLS.clear()
        self.probe.attempts.clear()
        self.marker.unlink(missing_ok=True)
        if "pwned" in vars(_Target):
            delattr(_Target, "pwned")


EXT_CODES: Final = {"EXT1": 0xE1, "EXT2": 0x1E1, "EXT4": 0x10000E1}


@pytest.fixture
def traces(tmp_path: Path) -> Iterator[Traces]:
    """Import probe installed, copyreg extensions registered *and cached*, all traces cleared."""
    probe = _ImportProbe()
    sys.meta_path.insert(0, probe)
    for family, code in EXT_CODES.items():
        copyreg.add_extension(MODULE, f"_canary_{family.lower()}", code)
        # Once anything in the process has resolved a code, CPython's unpicklers take it from
        # copyreg._extension_cache without calling find_class: that is the dangerous state.
        assert pickle.loads(b"\x80\x02" + OP[family] + _ext_arg(family, code) + b".") is _canary
    t = Traces(tmp_path / "MARKER", probe)
    t.clear()
    try:
        yield t
    finally:
        sys.meta_path.remove(probe)
        for family, code in EXT_CODES.items():
            copyreg.remove_extension(MODULE, f"_canary_{family.lower()}", code)
        t.clear()


# --- assembling pickles by opcode name -----------------------------------------------------------

OP: Final = {op.name: op.code.encode("latin1") for op in pickletools.opcodes}


def _ext_arg(family: str, code: int) -> bytes:
    return struct.pack({"EXT1": "<B", "EXT2": "<H", "EXT4": "<i"}[family], code)


@dataclass(frozen=True)
class Enc:
    """Writes values with the opcodes a pickler of protocol ``proto`` would choose."""

    proto: int

    def text(self, s: str) -> bytes:
        if self.proto == 0:
            return OP["UNICODE"] + s.encode("raw-unicode-escape") + b"\n"
        data = s.encode("utf-8")
        if self.proto >= 4 and len(data) < 256:
            return OP["SHORT_BINUNICODE"] + bytes([len(data)]) + data
        return OP["BINUNICODE"] + struct.pack("<I", len(data)) + data

    def int(self, n: int) -> bytes:
        if self.proto == 0 or not -(2**31) <= n < 2**31:
            return OP["INT"] + b"%d\n" % n
        if 0 <= n < 256:
            return OP["BININT1"] + bytes([n])
        return OP["BININT"] + struct.pack("<i", n)

    def value(self, v: object) -> bytes:
        if v is None:
            return OP["NONE"]
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, float):
            if self.proto == 0:
                return OP["FLOAT"] + repr(v).encode() + b"\n"
            return OP["BINFLOAT"] + struct.pack(">d", v)
        if type(v) is int:
            return self.int(v)
        raise TypeError(type(v))

    def glob(self, module: str, name: str) -> bytes:
        if self.proto < 3:  # what a protocol 0-2 pickler writes for these (fix_imports)
            module = {"builtins": "__builtin__", "copyreg": "copy_reg"}.get(module, module)
        return OP["GLOBAL"] + f"{module}\n{name}\n".encode()

    def whole(self, body: bytes) -> bytes:
        """``body`` (opcodes pushing one object) as a complete pickle of this protocol."""
        if self.proto >= 4:
            body = OP["FRAME"] + struct.pack("<Q", len(body) + 1) + body
        if self.proto >= 2:
            body = OP["PROTO"] + bytes([self.proto]) + body
        return body + OP["STOP"]


def tup(*items: bytes) -> bytes:
    return OP["MARK"] + b"".join(items) + OP["TUPLE"]


def lst(*items: bytes) -> bytes:
    return OP["MARK"] + b"".join(items) + OP["LIST"]


def dct(*items: bytes) -> bytes:
    return OP["MARK"] + b"".join(items) + OP["DICT"]


# --- the families --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One opcode family: how to push a hostile object, and how the decoder must end."""

    name: str
    protocols: range
    push: Callable[[Enc], bytes]
    placeholder: str | None  # "<unpicklable ...>" value kept; None: refused as "forbidden"
    # Stdlib unpickling that proves the payload armed; None means plain pickle.loads.
    control: Callable[[bytes], object] | None = None


def _naive_persistent_loads(data: bytes) -> object:
    # What an application with a persistent_load that resolves ids would do.
    class Naive(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> object:
            return {"canary": _canary}[pid]

    return Naive(io.BytesIO(data)).load()


def _call_args(e: Enc) -> bytes:
    return tup(e.text("ran"))


def _ext_call(ext: str) -> Callable[[Enc], bytes]:
    # EXTn <code of _canary_extn> ("ran",) REDUCE: resolved through copyreg, not find_class.
    def push(e: Enc) -> bytes:
        return OP[ext] + _ext_arg(ext, EXT_CODES[ext]) + _call_args(e) + OP["REDUCE"]

    return push


FAMILIES: Final = [
    # GLOBAL alone: the stdlib imports the module it names; find_class must not.
    Family("GLOBAL", range(6), lambda e: e.glob(PROBE_MODULE, "payload"), f"{PROBE_MODULE}.payload"),
    Family(
        "STACK_GLOBAL",
        range(4, 6),
        lambda e: e.text(MODULE) + e.text("_canary") + OP["STACK_GLOBAL"] + _call_args(e) + OP["REDUCE"],
        f"{MODULE}._canary",
    ),
    Family(
        "REDUCE",
        range(6),
        lambda e: e.glob(MODULE, "_canary") + _call_args(e) + OP["REDUCE"],
        f"{MODULE}._canary",
    ),
    Family(
        "INST",
        range(6),
        lambda e: OP["MARK"] + e.text("ran") + OP["INST"] + f"{MODULE}\n_canary\n".encode(),
        f"{MODULE}._canary",
    ),
    Family(
        "OBJ",
        range(1, 6),
        lambda e: OP["MARK"] + e.glob(MODULE, "_canary") + e.text("ran") + OP["OBJ"],
        f"{MODULE}._canary",
    ),
    Family(
        "NEWOBJ",
        range(2, 6),
        lambda e: e.glob(MODULE, "_Canary") + _call_args(e) + OP["NEWOBJ"],
        f"{MODULE}._Canary",
    ),
    Family(
        "NEWOBJ_EX",
        range(4, 6),
        lambda e: e.glob(MODULE, "_Canary") + _call_args(e) + dct(e.text("kw"), e.int(1)) + OP["NEWOBJ_EX"],
        f"{MODULE}._Canary",
    ),
    # BUILD through the allow-listed copyreg._reconstructor, as protocol 0/1 pickle user objects.
    Family(
        "BUILD-setstate",
        range(6),
        lambda e: (
            e.glob("copyreg", "_reconstructor")
            + tup(e.glob(MODULE, "_Canary"), e.glob("builtins", "object"), OP["NONE"])
            + OP["REDUCE"]
            + dct(e.text("state"), e.int(1))
            + OP["BUILD"]
        ),
        f"{MODULE}._Canary",
    ),
    # BUILD on a class with (None, slotstate): the stdlib setattr()s on the class itself.
    Family(
        "BUILD-setattr",
        range(6),
        lambda e: e.glob(MODULE, "_Target") + tup(OP["NONE"], dct(e.text("pwned"), e.int(1))) + OP["BUILD"],
        f"{MODULE}._Target",
    ),
    *[Family(ext, range(2, 6), _ext_call(ext), None) for ext in ("EXT1", "EXT2", "EXT4")],
    Family(
        "PERSID",
        range(6),
        lambda e: OP["PERSID"] + b"canary\n" + _call_args(e) + OP["REDUCE"],
        None,
        _naive_persistent_loads,
    ),
    Family(
        "BINPERSID",
        range(1, 6),
        lambda e: e.text("canary") + OP["BINPERSID"] + _call_args(e) + OP["REDUCE"],
        None,
        _naive_persistent_loads,
    ),
]
FAMILY_CASES: Final = [
    pytest.param(f, proto, id=f"{f.name}-p{proto}") for f in FAMILIES for proto in f.protocols
]


# --- where the hostile object hides --------------------------------------------------------------

PH = "PLACEHOLDER"  # stands for the decoded hostile value in the expected records below
_PREFIX: Final[RecordDict] = pickle.loads(make_frame("prefix")[4:])  # our own frame: plain data


@dataclass(frozen=True)
class Placement:
    name: str
    body: Callable[[Enc, bytes], bytes]  # record pickle body around the hostile opcodes
    expected: RecordDict  # with PH where the hostile value must show up
    after_valid_frame: bool = False


def _record(e: Enc, *pairs: bytes) -> bytes:
    return dct(e.text("msg"), e.text("m"), *pairs)


PLACEMENTS: Final = [
    Placement("value", lambda e, v: _record(e, e.text("evil"), v), {"msg": "m", "evil": PH}),
    Placement(
        "in_list",
        lambda e, v: _record(e, e.text("evil"), lst(e.int(1), v, e.int(2))),
        {"msg": "m", "evil": [1, PH, 2]},
    ),
    Placement(
        "in_tuple",
        lambda e, v: _record(e, e.text("evil"), tup(e.text("a"), v)),
        {"msg": "m", "evil": ("a", PH)},
    ),
    Placement(
        "in_dict",
        lambda e, v: _record(e, e.text("evil"), dct(e.text("inner"), v)),
        {"msg": "m", "evil": {"inner": PH}},
    ),
    Placement(
        "nested",
        lambda e, v: _record(e, e.text("evil"), lst(dct(e.text("k"), tup(v)))),
        {"msg": "m", "evil": [{"k": (PH,)}]},
    ),
    Placement("as_key", lambda e, v: _record(e, v, e.text("evil")), {"msg": "m", PH: "evil"}),
    Placement(
        "after_valid_prefix",
        lambda e, v: dct(*[e.text(k) + e.value(x) for k, x in _PREFIX.items()], e.text("evil"), v),
        {**_PREFIX, "evil": PH},
    ),
    Placement(
        "frame_after_valid_frame",
        lambda e, v: _record(e, e.text("evil"), v),
        {"msg": "m", "evil": PH},
        after_valid_frame=True,
    ),
]
PLACEMENT_CASES: Final = [pytest.param(p, id=p.name) for p in PLACEMENTS]


def _substitute(expected: object, value: str) -> Any:
    if expected == PH:
        return value
    if isinstance(expected, dict):
        return {_substitute(k, value): _substitute(v, value) for k, v in expected.items()}
    if isinstance(expected, list):
        return [_substitute(x, value) for x in expected]
    if isinstance(expected, tuple):
        return tuple(_substitute(x, value) for x in expected)
    return expected


# --- feeding -------------------------------------------------------------------------------------

VALID_FRAME: Final = make_frame("valid", extra={"trace_id": 7})
VALID_RECORD: Final = pickle.loads(VALID_FRAME[4:])


@dataclass
class Outcome:
    records: list[RecordDict]
    error: ProtocolError | None
    decoder: Decoder


def run(stream: bytes, bytewise: bool = False, max_frame_bytes: int = MAX_FRAME_BYTES) -> Outcome:
    dec = Decoder(LengthPrefixFramer(max_frame_bytes), PickleFormat())
    chunks = [stream[i : i + 1] for i in range(len(stream))] if bytewise else [stream]
    records: list[RecordDict] = []
    try:
        for chunk in chunks:
            dec.feed(chunk)
            while (rec := dec.next_record()) is not NEED_DATA:
                records.append(rec)
    except ProtocolError as exc:
        return Outcome(records, exc, dec)
    return Outcome(records, None, dec)


def assert_clean_error(exc: ProtocolError, reason: str) -> None:
    assert exc.reason == reason, exc
    # Raised on purpose, not a broken promise caught by Decoder's last-resort wrapper.
    assert exc.__cause__ is None, exc
    assert not re.search(r"MemoryError|RecursionError|Internal decoder error", str(exc)), exc


def assert_error_state(dec: Decoder, reason: str) -> None:
    """h11 rule: after a ProtocolError the decoder raises again, whatever is fed."""
    assert dec.buffered_bytes == 0
    dec.feed(VALID_FRAME)
    assert dec.buffered_bytes == 0
    for _ in range(2):
        with pytest.raises(ProtocolError, match="error state") as again:
            dec.next_record()
        assert again.value.reason == reason


def assert_still_open(dec: Decoder) -> None:
    dec.feed(VALID_FRAME)
    assert dec.next_record() == VALID_RECORD
    assert dec.next_record() is NEED_DATA


# --- the family x protocol x placement matrix ----------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENT_CASES)
@pytest.mark.parametrize(("family", "proto"), FAMILY_CASES)
def test_hostile_opcode_never_runs(family: Family, proto: int, placement: Placement, traces: Traces) -> None:
    enc = Enc(proto)
    body = enc.whole(placement.body(enc, family.push(enc)))
    last_op, _, last_pos = list(pickletools.genops(body))[-1]
    assert (last_op.name, last_pos) == ("STOP", len(body) - 1)  # well formed, to the last byte

    # Armed: the stdlib leaves a trace (the GLOBAL probe module does not exist, so it raises).
    control = family.control or pickle.loads
    try:
        control(body)
    except ImportError:
        assert family.name == "GLOBAL"
    assert traces.seen(), "the payload would not have done anything: the test proves nothing"
    traces.clear()

    prefix = VALID_FRAME if placement.after_valid_frame else b""
    for bytewise in (False, True):
        out = run(prefix + frame_of(body), bytewise)
        assert traces.seen() == []
        valid = [VALID_RECORD] if placement.after_valid_frame else []
        if family.placeholder is None:
            assert out.records == valid
            assert out.error is not None
            assert_clean_error(out.error, "forbidden")
            assert_error_state(out.decoder, "forbidden")
        else:
            assert out.error is None, out.error
            value = f"<unpicklable {family.placeholder}>"
            assert out.records == [*valid, _substitute(placement.expected, value)]
            assert out.decoder.placeholders == 1
            assert_still_open(out.decoder)
        assert traces.seen() == []


# --- well-known dangerous callables, for the families that call -----------------------------------


@dataclass(frozen=True)
class Dangerous:
    module: str
    name: str
    arg: Callable[[Path], str]


DANGEROUS: Final = [
    pytest.param(Dangerous("os", "system", lambda m: f"touch {m}"), id="os.system"),
    pytest.param(Dangerous("posix", "system", lambda m: f"touch {m}"), id="posix.system"),
    pytest.param(
        Dangerous("builtins", "eval", lambda m: f"open({str(m)!r}, 'w').close()"), id="builtins.eval"
    ),
    pytest.param(
        Dangerous("builtins", "exec", lambda m: f"open({str(m)!r}, 'w').close()"), id="builtins.exec"
    ),
    pytest.param(
        Dangerous("subprocess", "getoutput", lambda m: f"touch {m}"),
        id="subprocess.getoutput",
    ),
]


def _call_via(family: str, e: Enc, d: Dangerous, arg: str) -> bytes:
    if family == "REDUCE":
        return e.glob(d.module, d.name) + tup(e.text(arg)) + OP["REDUCE"]
    if family == "STACK_GLOBAL":
        return e.text(d.module) + e.text(d.name) + OP["STACK_GLOBAL"] + tup(e.text(arg)) + OP["REDUCE"]
    if family == "INST":
        return OP["MARK"] + e.text(arg) + OP["INST"] + f"{d.module}\n{d.name}\n".encode()
    assert family == "OBJ"
    return OP["MARK"] + e.glob(d.module, d.name) + e.text(arg) + OP["OBJ"]


CALLING_CASES: Final = [
    pytest.param(family, proto, id=f"{family}-p{proto}")
    for family, protos in (
        ("REDUCE", (0, 1, 2, 3, 4, 5)),
        ("STACK_GLOBAL", (4, 5)),
        ("INST", (0, 1, 5)),
        ("OBJ", (1, 5)),
    )
    for proto in protos
]


@pytest.mark.parametrize("target", DANGEROUS)
@pytest.mark.parametrize(("family", "proto"), CALLING_CASES)
def test_real_world_callables_are_forbidden_and_close_the_connection(
    family: str, proto: int, target: Dangerous, traces: Traces
) -> None:
    enc = Enc(proto)
    body = enc.whole(
        _record(enc, enc.text("evil"), _call_via(family, enc, target, target.arg(traces.marker)))
    )
    pickle.loads(body)  # armed: it really creates the marker
    assert traces.marker.exists()
    traces.clear()

    out = run(VALID_FRAME + frame_of(body))
    assert traces.seen() == []
    # The valid frame before it is kept; this one is refused and the stream is over.
    assert out.records == [VALID_RECORD]
    assert out.error is not None
    assert_clean_error(out.error, "forbidden")
    assert f".{target.name}, which no log record carries" in str(out.error)
    assert_error_state(out.decoder, "forbidden")


@pytest.mark.parametrize(
    "opcodes",
    [OP["NEXT_BUFFER"], OP["NEXT_BUFFER"] + OP["READONLY_BUFFER"]],
    ids=["NEXT_BUFFER", "READONLY_BUFFER"],
)
def test_out_of_band_buffers_are_forbidden(opcodes: bytes) -> None:
    enc = Enc(5)
    out = run(VALID_FRAME + frame_of(enc.whole(_record(enc, enc.text("evil"), opcodes))))
    assert out.records == [VALID_RECORD]
    assert out.error is not None
    assert_clean_error(out.error, "forbidden")
    assert_error_state(out.decoder, "forbidden")


def test_the_hostile_frame_does_not_poison_later_connections(traces: Traces) -> None:
    # Placeholder classes are cached process-wide: a class made for one connection must still be
    # inert, and still named the same, for the next one.
    enc = Enc(2)
    reduce = next(f for f in FAMILIES if f.name == "REDUCE")
    body = frame_of(enc.whole(_record(enc, enc.text("evil"), reduce.push(enc))))
    for _ in range(3):
        out = run(body + VALID_FRAME)
        assert out.records == [{"msg": "m", "evil": f"<unpicklable {MODULE}._canary>"}, VALID_RECORD]
    assert traces.seen() == []


# --- memory and time bombs -----------------------------------------------------------------------


def X(s: str) -> bytes:
    """BINUNICODE."""
    return Enc(1).text(s)


def _record_of(value: bytes) -> bytes:
    """``{"msg": "m", "evil": value}`` with EMPTY_DICT/SETITEMS, as protocol 1 writes it."""
    return OP["EMPTY_DICT"] + OP["MARK"] + X("msg") + X("m") + X("evil") + value + OP["SETITEMS"] + OP["STOP"]


def _proto4(body: bytes, frame_len: int) -> bytes:
    return OP["PROTO"] + b"\x04" + OP["FRAME"] + struct.pack("<Q", frame_len) + body


_R4 = _record_of(X("v"))
_DEEP = 500_000  # ~1 MB of EMPTY_LIST + APPEND, just under MAX_FRAME_BYTES
_BIG_INT = OP["LONG4"] + struct.pack("<i", 100_000) + b"\x01" * 100_000  # 100 KB


def _nested(kind: str) -> Callable[[Any], None]:
    """Check: the value is ``MAX_NORMALIZED_DEPTH`` nested ``kind``s, then a budget marker."""

    def check(value: Any) -> None:
        depth = 0
        while type(value).__name__ == kind and value:
            depth += 1
            value = value[0] if kind != "dict" else next(iter(value.values()))
        assert depth == MAX_NORMALIZED_DEPTH
        assert value == f"<too large: {kind}>"

    return check


def _too_large(kind: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        assert value == f"<too large: {kind}>"

    return check


def _equals(expected: object) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        assert value == expected

    return check


def _laughs_cut(value: Any) -> None:
    # 10**9 "lol"s by reference; the node budget stops the expansion early.
    assert "<too large: list>" in repr(value)
    assert len(repr(value)) < 20 * MAX_NORMALIZED_NODES


def _self_nested(value: Any) -> None:
    # d["me"] = d: cut at the depth budget like any nesting.
    depth = 0
    while isinstance(value, dict):
        assert value["msg"] == "m"
        depth += 1
        value = value["me"]
    assert depth == MAX_NORMALIZED_DEPTH
    assert value == "<too large: dict>"


@dataclass(frozen=True)
class Bomb:
    body: bytes
    reason: str | None  # the ProtocolError reason, or None: a record comes out...
    check: Callable[[Any], None] | None = None  # ... and check(record["evil"]) passes
    key: str = "evil"


BOMBS: Final = {
    # Length claims: refused by the opcode scan before anything is allocated.
    "LONG4-2GiB-claim": Bomb(
        _record_of(OP["LONG4"] + struct.pack("<i", 2**31 - 1) + b"\x01" * 8), "malformed"
    ),
    "LONG4-negative-claim": Bomb(_record_of(OP["LONG4"] + struct.pack("<i", -1)), "malformed"),
    "BINBYTES8-8EiB-claim": Bomb(_record_of(OP["BINBYTES8"] + struct.pack("<Q", 2**63) + b"x"), "malformed"),
    "BINBYTES8-max-claim": Bomb(_record_of(OP["BINBYTES8"] + struct.pack("<Q", 2**64 - 1)), "malformed"),
    "BINUNICODE8-claim": Bomb(_record_of(OP["BINUNICODE8"] + struct.pack("<Q", 2**62) + b"x"), "malformed"),
    "BYTEARRAY8-claim": Bomb(_record_of(OP["BYTEARRAY8"] + struct.pack("<Q", 2**40)), "malformed"),
    "BINUNICODE-4GiB-claim": Bomb(_record_of(OP["BINUNICODE"] + struct.pack("<I", 2**32 - 1)), "malformed"),
    "BINBYTES-4GiB-claim": Bomb(_record_of(OP["BINBYTES"] + struct.pack("<I", 2**32 - 1)), "malformed"),
    "BINSTRING-2GiB-claim": Bomb(_record_of(OP["BINSTRING"] + struct.pack("<i", 2**31 - 1)), "malformed"),
    "LONG-text-500k-digits": Bomb(_record_of(OP["LONG"] + b"9" * 500_000 + b"L\n"), "malformed"),
    # Memo: indices far beyond what was stored (the C memo would grow to 2*index slots).
    "LONG_BINPUT-huge-index": Bomb(
        _record_of(OP["NONE"] + OP["LONG_BINPUT"] + struct.pack("<I", 2**30)), "malformed"
    ),
    "GET-never-stored": Bomb(_record_of(OP["BINGET"] + b"\x07"), "malformed"),
    # Nesting: built iteratively by the C unpickler, cut at the depth budget by normalization.
    "deep-lists": Bomb(
        _record_of(OP["EMPTY_LIST"] * _DEEP + OP["APPEND"] * (_DEEP - 1)), None, _nested("list")
    ),
    "deep-MARK-lists": Bomb(_record_of(OP["MARK"] * 100_000 + OP["LIST"] * 100_000), None, _nested("list")),
    "deep-dicts": Bomb(
        _record_of(
            (OP["EMPTY_DICT"] + OP["BININT1"] + b"\x00") * 100_000
            + OP["EMPTY_DICT"]
            + OP["SETITEM"] * 100_000
        ),
        None,
        _nested("dict"),
    ),
    "deep-tuples-1000": Bomb(_record_of(OP["EMPTY_TUPLE"] + OP["TUPLE1"] * 1000), None, _nested("tuple")),
    "deep-tuples-2000": Bomb(_record_of(OP["EMPTY_TUPLE"] + OP["TUPLE1"] * 2000), "complexity"),
    "MARK-flood": Bomb(_record_of(OP["MARK"] * 1_000_000), "malformed"),
    # Memo loops: a list holding itself, the record dict holding itself, 500k GETs of one list.
    "MEMOIZE-GET-self-list": Bomb(
        _record_of(OP["EMPTY_LIST"] + OP["MEMOIZE"] + OP["BINGET"] + b"\x00" + OP["APPEND"]),
        None,
        _nested("list"),
    ),
    "MEMOIZE-GET-self-dict": Bomb(
        OP["EMPTY_DICT"]
        + OP["MEMOIZE"]
        + OP["MARK"]
        + X("msg")
        + X("m")
        + X("me")
        + OP["BINGET"]
        + b"\x00"
        + OP["SETITEMS"]
        + OP["STOP"],
        None,
        _self_nested,
        key="me",
    ),
    "GET-flood": Bomb(
        _record_of(
            OP["EMPTY_LIST"]
            + OP["MARK"]
            + OP["EMPTY_LIST"]
            + OP["MEMOIZE"]
            + (OP["BINGET"] + b"\x00") * 500_000
            + OP["APPENDS"]
        ),
        None,
        _too_large("list"),
    ),
    # L0 = ["lol"] * 10, L[i] = [L[i-1]] * 10 through memo GETs: 10**9 strings by reference.
    "billion-laughs": Bomb(
        _record_of(
            OP["EMPTY_LIST"]
            + OP["MEMOIZE"]
            + OP["MARK"]
            + X("lol") * 10
            + OP["APPENDS"]
            + OP["POP"]
            + b"".join(
                OP["EMPTY_LIST"]
                + OP["MEMOIZE"]
                + OP["MARK"]
                + (OP["BINGET"] + bytes([i - 1])) * 10
                + OP["APPENDS"]
                + OP["POP"]
                for i in range(1, 9)
            )
            + OP["BINGET"]
            + b"\x08"
        ),
        None,
        _laughs_cut,
    ),
    # DUP: 300k references to one object, and DUP-built hash bombs (no memo involved).
    "DUP-flood": Bomb(
        _record_of(OP["EMPTY_LIST"] + OP["MARK"] + X("x") + OP["DUP"] * 300_000 + OP["APPENDS"]),
        None,
        _too_large("list"),
    ),
    "DUP-list-flood": Bomb(
        _record_of(OP["EMPTY_LIST"] + OP["MARK"] + OP["EMPTY_LIST"] + OP["DUP"] * 300_000 + OP["APPENDS"]),
        None,
        _too_large("list"),
    ),
    # t = (t, t) sixty times: 130 bytes whose hash takes 2**60 steps as a dict key.
    "DUP-tuple-hash-bomb": Bomb(
        OP["EMPTY_DICT"]
        + OP["MARK"]
        + X("msg")
        + X("m")
        + OP["BININT1"]
        + b"\x01"
        + (OP["DUP"] + OP["TUPLE2"]) * 60
        + X("v")
        + OP["SETITEMS"]
        + OP["STOP"],
        "complexity",
    ),
    # One 100 KB int hashed 100 000 times into a set: O(size * refs), ~minutes at 1 MiB.
    "DUP-big-int-into-set": Bomb(
        _record_of(OP["EMPTY_SET"] + OP["MARK"] + _BIG_INT + OP["DUP"] * 100_000 + OP["ADDITEMS"]),
        "complexity",
    ),
    "GET-big-int-into-set": Bomb(
        _record_of(
            OP["EMPTY_SET"]
            + OP["MARK"]
            + _BIG_INT
            + OP["MEMOIZE"]
            + (OP["BINGET"] + b"\x00") * 100_000
            + OP["ADDITEMS"]
        ),
        "complexity",
    ),
    "DUP-big-int-dict-keys": Bomb(
        _record_of(OP["EMPTY_DICT"] + OP["MARK"] + _BIG_INT + OP["DUP"] * 100_001 + OP["SETITEMS"]),
        "complexity",
    ),
    # FRAME: a length past the end is refused; a shorter one is only a read-ahead hint to the
    # C unpickler (it does not check frame boundaries), so the record decodes as with the stdlib.
    "FRAME-too-long": Bomb(_proto4(_R4, len(_R4) + 1), "malformed"),
    "FRAME-8EiB": Bomb(_proto4(_R4, 2**63), "malformed"),
    "FRAME-max": Bomb(_proto4(_R4, 2**64 - 1), "malformed"),
    "FRAME-too-short": Bomb(_proto4(_R4, 1), None, _equals("v")),
    "FRAME-zero": Bomb(_proto4(_R4, 0), None, _equals("v")),
}

_HWM = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # Linux >= 4.0: resets VmHWM to the current RSS
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    match = re.search(r"VmHWM:\s+(\d+) kB", _HWM.read_text())
    assert match is not None
    return int(match.group(1)) * 1024


# Generous bounds for slow CI machines: measured here, the worst bomb takes ~0.5 s and ~70 MB.
BOMB_SECONDS = 5.0
BOMB_PEAK_BYTES = 256 << 20


@pytest.mark.parametrize("bomb", [pytest.param(b, id=name) for name, b in BOMBS.items()])
def test_bomb_is_bounded(bomb: Bomb) -> None:
    assert len(bomb.body) <= MAX_FRAME_BYTES
    measure = _reset_peak_rss()
    base = _peak_rss_bytes() if measure else 0
    start = time.perf_counter()
    out = run(VALID_FRAME + frame_of(bomb.body))
    elapsed = time.perf_counter() - start
    peak = _peak_rss_bytes() - base if measure else 0
    assert elapsed < BOMB_SECONDS
    assert peak < BOMB_PEAK_BYTES
    assert out.records[:1] == [VALID_RECORD]
    if bomb.reason is not None:
        assert out.records == [VALID_RECORD]
        assert out.error is not None
        assert_clean_error(out.error, bomb.reason)
        assert_error_state(out.decoder, bomb.reason)
    else:
        assert out.error is None, out.error
        assert len(out.records) == 2
        assert bomb.check is not None
        bomb.check(out.records[1][bomb.key])
        assert_still_open(out.decoder)


def test_oversized_header_costs_four_bytes() -> None:
    dec = Decoder(LengthPrefixFramer(), PickleFormat())
    dec.feed(struct.pack(">L", 2**32 - 1))
    with pytest.raises(ProtocolError) as info:
        dec.next_record()
    assert_clean_error(info.value, "oversized")
    assert_error_state(dec, "oversized")


def test_bomb_cut_mid_frame_is_truncated_at_eof() -> None:
    out = run(frame_of(BOMBS["deep-lists"].body)[:1000])
    assert out.error is None and out.records == []
    out.decoder.feed(b"")
    with pytest.raises(ProtocolError) as info:
        out.decoder.next_record()
    assert_clean_error(info.value, "truncated")
