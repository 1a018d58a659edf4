"""PickleFormat against real records and against hand-built hostile pickles.

Every hostile pickle tries to create ``MARKER`` in ``tmp_path`` (``os.system('touch ...')``,
``builtins.exec("open(...)")``, ...). Each test asserts the file never appears and that the
result is a ProtocolError or a record whose value became ``"<unpicklable ...>"``.
"""

from __future__ import annotations

import copyreg
import io
import logging
import pickle
import struct
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError
from logsvc.record import STANDARD_ATTRS, RecordDict
from logsvc.wire import PickleFormat, Placeholder, RestrictedUnpickler
from logsvc.wire.pickle_format import (
    MAX_NORMALIZED_NODES,
    MAX_PREDICTABLE_HASHES,
    MAX_TUPLE_REFS,
    _CodecsEncode,
    _scan,
    _scan_exact,
)

from .helpers import examples, make_frame

# --- building pickles by hand ---------------------------------------------------------------


def S(s: str) -> bytes:
    """BINUNICODE."""
    data = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def G(module: str, name: str) -> bytes:
    """GLOBAL."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def record_with(value: bytes, key: str = "evil") -> bytes:
    """A pickle of ``{"msg": "m", key: <value>}``; ``value`` is the opcodes of one object."""
    return b"}(" + S("msg") + S("m") + S(key) + value + b"u."


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "hostile pickle ran code"


def parse(body: bytes) -> RecordDict | ProtocolError:
    try:
        return PickleFormat().parse(body)
    except ProtocolError as exc:
        return exc


def assert_inert(result: RecordDict | ProtocolError, name: str | None = None) -> None:
    if isinstance(result, ProtocolError):
        return
    assert isinstance(result["evil"], str)
    assert result["evil"].startswith("<unpicklable"), result["evil"]
    if name is not None:
        assert result["evil"] == f"<unpicklable {name}>"


# --- real records -----------------------------------------------------------------------------


def test_typical_record_round_trips() -> None:
    fmt = PickleFormat()
    rec = fmt.parse(make_frame("hi", extra={"trace_id": 17})[4:])
    assert rec["msg"] == "hi"
    assert rec["trace_id"] == 17
    assert STANDARD_ATTRS - {"taskName", "message", "asctime"} <= set(rec)
    assert fmt.placeholders == 0


def test_allow_listed_types_round_trip() -> None:
    extra = {
        "when": datetime.now(UTC),
        "naive": datetime(2024, 1, 2, 3, 4, 5, 6),
        "tz2": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2), "X")),
        "d": Decimal("1.5"),
        "big_d": Decimal("-1.23E+400"),
        "u": uuid.uuid4(),
        "td": timedelta(1, 2, 3),
        "day": date.today(),
        "t": dtime(1, 2),
        "b": b"\x00\xff",
        "empty": b"",
        "ba": bytearray(b"ab"),
        "nested": [1, (2.5, "x"), {"k": None}, True],
    }
    fmt = PickleFormat()
    rec = fmt.parse(make_frame(extra=extra)[4:])
    for key, value in extra.items():
        expected = bytes(value) if isinstance(value, bytearray) else value
        assert rec[key] == expected, key
        assert type(rec[key]) is type(expected), key
    assert fmt.placeholders == 0


def test_non_str_keys_become_strings() -> None:
    rec = PickleFormat().parse(
        make_frame(extra={"m": {1: "a", None: "b", 2.5: "c", (1, 2): "d", b"k": "e"}})[4:]
    )
    assert rec["m"] == {"1": "a", "None": "b", "2.5": "c", "(1, 2)": "d", "b'k'": "e"}
    top = PickleFormat().parse(record_with(S("v")).replace(S("evil"), b"K\x07"))
    assert top["7"] == "v"


def test_unknown_classes_become_placeholders_and_are_counted() -> None:
    fmt = PickleFormat()
    rec = fmt.parse(make_frame(extra={"s": {1, 2}, "e": ValueError("x"), "o": Path("/x")})[4:])
    assert rec["s"] == "<unpicklable builtins.set>"
    assert rec["e"] == "<unpicklable builtins.ValueError>"
    assert rec["o"].startswith("<unpicklable pathlib.")
    assert fmt.placeholders == 3


def test_user_class_instance_via_reconstructor_is_a_placeholder() -> None:
    body = record_with(
        G("copy_reg", "_reconstructor")
        + b"("
        + G("myapp.models", "User")
        + G("__builtin__", "object")
        + b"NtR}"
        + S("name")
        + S("bob")
        + b"sb"
    )
    assert PickleFormat().parse(body)["evil"] == "<unpicklable myapp.models.User>"


def test_top_level_must_be_a_dict() -> None:
    for body in (b"N.", S("x") + b".", b"]."):
        result = parse(body)
        assert isinstance(result, ProtocolError)
        assert result.reason == "not_a_dict"


def test_bytes_after_stop_are_malformed() -> None:
    result = parse(make_frame()[4:] + b"N")
    assert isinstance(result, ProtocolError)
    assert result.reason == "malformed"


def test_protocol_2_to_5_records_decode() -> None:
    d = {"msg": "m", "when": datetime(2024, 1, 1), "u": uuid.UUID(int=5), "b": b"x", "s": frozenset({1})}
    for proto in range(0, 6):
        rec = PickleFormat().parse(pickle.dumps(d, proto))
        assert rec["msg"] == "m" and rec["when"] == d["when"] and rec["u"] == d["u"] and rec["b"] == b"x"


def test_memo_does_not_leak_between_frames() -> None:
    fmt = PickleFormat()
    fmt.parse(pickle.dumps({"a": "secret"}, 1))
    # BINGET 1 refers to an entry of the previous frame: refused, not resolved.
    result = None
    try:
        fmt.parse(b"}q\x00(" + S("a") + b"h\x01u.")
    except ProtocolError as exc:
        result = exc
    assert isinstance(result, ProtocolError)


# --- hostile pickles --------------------------------------------------------------------------


def touch(marker: Path) -> str:
    return f"touch {marker}"


def assert_forbidden(result: RecordDict | ProtocolError) -> None:
    assert isinstance(result, ProtocolError), result
    assert result.reason == "forbidden"


def test_global_reduce_os_system_is_forbidden(marker: Path) -> None:
    assert_forbidden(parse(record_with(G("os", "system") + b"(" + S(touch(marker)) + b"tR")))


def test_global_reduce_posix_system_and_exec_are_forbidden(marker: Path) -> None:
    assert_forbidden(parse(record_with(G("posix", "system") + b"(" + S(touch(marker)) + b"tR")))
    code = f"open({str(marker)!r}, 'w')"
    assert_forbidden(parse(record_with(G("builtins", "exec") + b"(" + S(code) + b"tR")))
    assert_forbidden(parse(record_with(G("__builtin__", "eval") + b"(" + S(code) + b"tR")))


def test_an_applications_own_class_is_a_placeholder_not_an_import() -> None:
    assert_inert(parse(record_with(G("myapp.models", "User") + b"(" + S("x") + b"tR")), "myapp.models.User")


def test_stack_global_protocol_4(marker: Path) -> None:
    body = b"\x80\x04" + record_with(S("os") + S("system") + b"\x93(" + S(touch(marker)) + b"tR")
    assert_forbidden(parse(body))


def test_inst(marker: Path) -> None:
    assert_inert(parse(record_with(b"(" + S(touch(marker)) + b"ios\nsystem\n")), "os.system")


def test_obj(marker: Path) -> None:
    assert_inert(parse(record_with(b"(" + G("os", "system") + S(touch(marker)) + b"o")), "os.system")


def test_newobj(marker: Path) -> None:
    body = record_with(G("subprocess", "Popen") + b"(" + S(touch(marker)) + b"t\x81")
    assert_inert(parse(body), "subprocess.Popen")
    body = record_with(G("os", "system") + b"(" + S(touch(marker)) + b"t\x81")
    assert_inert(parse(body), "os.system")


def test_newobj_ex(marker: Path) -> None:
    body = record_with(G("os", "system") + b"(" + S(touch(marker)) + b"t}" + S("shell") + b"\x88s\x92")
    assert_inert(parse(body), "os.system")


def test_build_with_setstate_stores_nothing(marker: Path) -> None:
    body = record_with(G("os", "system") + b")R}" + S("__class__") + S(touch(marker)) + b"sb")
    assert_inert(parse(body), "os.system")
    # BUILD on the placeholder class itself must not change the cached class either.
    body = record_with(G("os", "system") + b"N}" + S("global_name") + S("spoofed") + b"\x86b")
    assert_inert(parse(body))
    assert_inert(parse(record_with(G("os", "system") + b")R")), "os.system")


def test_build_cannot_rebind_allow_listed_callables() -> None:
    defaults = _CodecsEncode.__new__.__defaults__
    body = record_with(G("_codecs", "encode") + b"N}" + S("__defaults__") + b"(" + S("utf-16") + b"ts\x86b")
    result = parse(body)
    assert isinstance(result, ProtocolError)
    assert _CodecsEncode.__new__.__defaults__ == defaults
    result = parse(record_with(G("uuid", "UUID") + b"}" + S("int") + b"K\x01sb"))
    assert isinstance(result, ProtocolError)


def test_codecs_encode_only_latin1() -> None:
    rec = parse(record_with(G("_codecs", "encode") + b"(" + S("abc") + S("rot13") + b"tR"))
    assert_inert(rec, "_codecs.encode")
    rec = parse(record_with(G("builtins", "bytes") + b"(J\x00\x00\x00\x40tR"))  # bytes(2**30)
    assert_inert(rec, "builtins.bytes")


@pytest.mark.parametrize(
    ("opcode", "code"),
    [(b"\x82", 0xF0), (b"\x83", 0x1F0), (b"\x84", 0x10000F0)],
)
def test_ext_opcodes_are_refused_even_when_registered_and_cached(
    marker: Path, opcode: bytes, code: int
) -> None:
    arg = struct.pack({b"\x82": "<B", b"\x83": "<H", b"\x84": "<i"}[opcode], code)
    copyreg.add_extension("os", "system", code)
    try:
        # Another part of the process resolves the code once: CPython caches it in
        # copyreg._extension_cache and later EXT opcodes skip find_class entirely.
        assert pickle.loads(b"\x80\x02" + opcode + arg + b".") is not None
        body = record_with(opcode + arg + b"(" + S(touch(marker)) + b"tR")
        result = parse(body)
        assert isinstance(result, ProtocolError)
        assert result.reason == "forbidden"
    finally:
        copyreg.remove_extension("os", "system", code)


@pytest.mark.parametrize("value", [b"Pfoo\n", S("foo") + b"Q"])
def test_persistent_ids_are_refused(value: bytes) -> None:
    result = parse(record_with(value))
    assert isinstance(result, ProtocolError)
    assert result.reason == "forbidden"


def test_restricted_unpickler_alone_refuses_persistent_ids_and_imports_nothing(marker: Path) -> None:
    with pytest.raises(Exception, match="persistent"):
        RestrictedUnpickler(io.BytesIO(b"Pfoo\n.")).load()
    with pytest.raises(Exception, match="no log record carries"):
        RestrictedUnpickler(io.BytesIO(G("os", "system") + b"(" + S(touch(marker)) + b"tR.")).load()
    obj = RestrictedUnpickler(io.BytesIO(G("myapp", "Thing") + b"(" + S("x") + b"tR.")).load()
    assert isinstance(obj, Placeholder)
    assert obj.global_name == "myapp.Thing"


def test_out_of_band_buffers_are_refused() -> None:
    result = parse(record_with(b"\x97"))
    assert isinstance(result, ProtocolError)
    assert result.reason == "forbidden"


# --- bounded work -----------------------------------------------------------------------------


def billion_laughs(levels: int = 9, width: int = 10) -> bytes:
    # L0 = ["lol"] * width; L[i] = [L[i-1]] * width via memo GET: width**levels strings.
    body = b"]q\x00(" + S("lol") * width + b"e0"
    for level in range(1, levels):
        body += b"]q" + bytes([level]) + b"(" + (b"h" + bytes([level - 1])) * width + b"e0"
    last = bytes([levels - 1])
    return body + b"}q" + bytes([levels]) + b"(" + S("msg") + S("m") + S("evil") + b"h" + last + b"u."


def test_billion_laughs_is_cut_by_the_node_budget() -> None:
    start = time.perf_counter()
    rec = PickleFormat().parse(billion_laughs())
    assert time.perf_counter() - start < 1.0
    assert len(repr(rec)) < 20 * MAX_NORMALIZED_NODES
    assert "<too large: list>" in repr(rec["evil"])


def test_shared_big_string_is_cut_by_the_char_budget() -> None:
    big = "x" * 100_000
    body = b"}q\x00(" + S("msg") + S(big) + b"q\x01" + S("l") + b"](" + b"h\x01" * 1000 + b"eu."
    rec = PickleFormat().parse(body)
    assert sum(len(s) for s in rec["l"]) <= 4 << 20
    assert rec["l"][-1] == "<too large: str>"


def test_deep_nesting_is_cut_by_the_depth_budget() -> None:
    body = b"}(" + S("msg") + S("m") + S("evil") + b"]" * 100 + b"a" * 99 + b"u."
    rec = PickleFormat().parse(body)
    depth, value = 0, rec["evil"]
    while isinstance(value, list) and value:
        depth, value = depth + 1, value[0]
    assert depth <= 40
    assert value == "<too large: list>"


def test_huge_memo_index_is_refused_without_allocating() -> None:
    # CPython's C unpickler would grow its memo array to 2*index slots: ~16 GiB here.
    for body in (b"Nr\x00\x00\x00\x40.", b"Np1000000000\n.", b"}r\xff\xff\xff\x7fN."):
        start = time.perf_counter()
        result = parse(body)
        assert isinstance(result, ProtocolError)
        assert result.reason == "malformed"
        assert time.perf_counter() - start < 0.1


def test_tuple_hash_bomb_is_refused() -> None:
    # t[i] = (t[i-1], t[i-1]): hashing t[60] as a dict key would take 2**60 steps.
    body = b"}q\x00(" + S("msg") + S("m") + b"K\x01K\x02\x86q\x01"
    for level in range(1, 61):
        body += b"h" + bytes([level]) + b"h" + bytes([level]) + b"\x86q" + bytes([level + 1])
    body += S("v") + b"u."
    result = parse(body)
    assert isinstance(result, ProtocolError)
    assert result.reason == "complexity"


def test_a_few_shared_tuples_are_fine() -> None:
    rec = PickleFormat().parse(pickle.dumps({"msg": "m", "t": [(1, 2)] * MAX_TUPLE_REFS}, 1))
    assert rec["t"] == [(1, 2)] * MAX_TUPLE_REFS


def test_hash_collision_flood_is_refused() -> None:
    p = (1 << 61) - 1
    keys = {5 + i * p: None for i in range(1, MAX_PREDICTABLE_HASHES + 2)}
    start = time.perf_counter()
    result = parse(pickle.dumps({"msg": "m", "flood": keys}, 1))
    assert isinstance(result, ProtocolError)
    assert result.reason == "complexity"
    assert time.perf_counter() - start < 0.5


def test_placeholder_class_creation_is_bounded_per_frame() -> None:
    body = b"}(" + S("msg") + S("m")
    for i in range(200):
        body += S(f"k{i}") + G(f"mod{i}", f"Cls{i}")
    rec = PickleFormat().parse(body + b"u.")
    assert rec["k0"] == "<unpicklable mod0.Cls0>"
    assert rec["k199"] == "<unpicklable (too many distinct globals)>"


# --- the scan agrees with the C unpickler -----------------------------------------------------


def test_fast_and_exact_scans_agree_on_real_records() -> None:
    for frame in (make_frame(), make_frame("y" * 1000, extra={"a": [1.5, None, True]})):
        body = frame[4:]
        assert _scan(body)[0] <= _scan_exact(body)[0]
        assert _scan(body)[1] == _scan_exact(body)[1] or not _scan(body)[1]


_SNIPPETS = [
    b"N",
    b"K\x01",
    b"J\x00\x00\x00\x80",
    b"G" + struct.pack(">d", 1.5),
    S("a"),
    S("x" * 300),
    b"]",
    b"}",
    b")",
    b"(",
    b"t",
    b"l",
    b"d",
    b"a",
    b"e",
    b"s",
    b"u",
    b"0",
    b"1",
    b"2",
    b"\x85",
    b"\x86",
    b"h\x00",
    b"h\x01",
    b"q\x00",
    b"q\x01",
    b"r\x02\x00\x00\x00",
    b"\x94",
    b"R",
    b"b",
    b"o",
    b"\x81",
    G("os", "system"),
    G("datetime", "date"),
    G("_codecs", "encode"),
    G("uuid", "UUID"),
    G("copy_reg", "_reconstructor"),
    b"\x8a\x09" + b"\xff" * 9,
    b"L123L\n",
    b"I12\n",
    b"C\x01z",
    b"\x8f",
    b"\x90",
    b"\x91",
]


@settings(max_examples=examples(500), deadline=None)
@given(st.lists(st.sampled_from(_SNIPPETS), max_size=30))
def test_random_opcode_soup_yields_dict_or_protocol_error(snippets: list[bytes]) -> None:
    body = b"}q\x00(" + S("msg") + S("m") + b"".join(snippets) + b"u."
    result = parse(body)
    if not isinstance(result, ProtocolError):
        assert all(type(k) is str for k in result)


@given(st.lists(st.integers(min_value=0, max_value=pickle.HIGHEST_PROTOCOL), min_size=2, max_size=8))
def test_frames_of_any_protocol_in_any_order_on_one_connection(protocols: list[int]) -> None:
    # Protocol 4 and 5 number their memo entries from the unpickler's memo length (MEMOIZE);
    # an unpickler reused from an earlier frame made their GETs miss: "Memo value not found".
    fmt = PickleFormat()
    for i, proto in enumerate(protocols):
        d = dict(logging.makeLogRecord({"msg": f"m{i}", "args": (i, "x"), "run": "r"}).__dict__)
        d["exc_info"] = None
        got = fmt.parse(pickle.dumps(d, proto))
        assert got["msg"] == f"m{i}" and tuple(got["args"]) == (i, "x")
