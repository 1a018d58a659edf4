"""POST /ingest bodies: NDJSON, JSON arrays and logging.handlers.HTTPHandler's form."""

from __future__ import annotations

import json
import logging
import logging.handlers
import tracemalloc
import urllib.parse
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.store.copyfmt import COLUMN_NAMES, RowEncoder
from logsvc.wire.http_body import MAX_FORMATTED_CHARS, _format_bound, parse_ingest

from .helpers import examples


def parse(method: str, ctype: str, body: bytes = b"", query: str = "") -> list[RecordDict | RecordRejected]:
    return list(parse_ingest(method, ctype, body, query))


def test_ndjson_keeps_good_lines_and_rejects_bad_ones() -> None:
    body = b'{"message": "a", "level": "warn"}\n\nnot json\r\n[1]\n{"msg": "b"}'
    out = parse("POST", "application/x-ndjson", body)
    assert [type(x) for x in out] == [dict, RecordRejected, RecordRejected, dict]
    assert out[0] == {"msg": "a", "levelname": "WARNING", "levelno": 30}
    assert [x.reason for x in out if isinstance(x, RecordRejected)] == ["not_json", "not_object"]
    assert out[3] == {"msg": "b"}


def test_a_json_array_and_a_single_object() -> None:
    out = parse("POST", "application/json; charset=utf-8", b' [{"message": "x"}, 3, {"log": "y"}]')
    assert out[0] == {"msg": "x"} and out[2] == {"msg": "y"}
    assert isinstance(out[1], RecordRejected) and out[1].reason == "not_object"
    assert parse("POST", "application/json", b'{"message": "one"}') == [{"msg": "one"}]


def test_json_bodies_read_times_without_a_zone_in_the_assumed_one() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    noon_utc = datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    line = b'{"time": "2024-05-01T21:00:00", "message": "x"}'
    for ctype, body in (("application/x-ndjson", line), ("application/json", b"[" + line + b"]")):
        (rec,) = list(parse_ingest("POST", ctype, body, "", tz=tokyo))
        assert isinstance(rec, dict) and rec["created"] == noon_utc
    (rec,) = parse("POST", "application/x-ndjson", line)
    assert isinstance(rec, dict) and rec["created"] == datetime(2024, 5, 1, 21, tzinfo=UTC).timestamp()


def test_a_broken_json_array_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        parse("POST", "application/json", b'[{"message": "x"},')
    assert info.value.reason == "not_json"


def _http_handler_form(record: logging.LogRecord) -> str:
    # Exactly what HTTPHandler.emit sends: urlencode(self.mapLogRecord(record)).
    handler = logging.handlers.HTTPHandler("127.0.0.1:1", "/ingest")
    return urllib.parse.urlencode(handler.mapLogRecord(record))


def test_http_handler_form_post_and_get_become_a_typed_formatted_record() -> None:
    rec = logging.LogRecord(
        "app.web", logging.ERROR, "/srv/app.py", 42, "user %s failed %d times", ("ann", 3), None
    )
    rec.trace_id = 17  # extra= arrives as text, like every field of this form
    form = _http_handler_form(rec)
    for out in (
        parse("POST", "application/x-www-form-urlencoded", form.encode()),
        parse("GET", "", query=form),
    ):
        assert len(out) == 1
        got = out[0]
        assert isinstance(got, dict)
        assert got["msg"] == "user ann failed 3 times" and got["args"] is None
        assert got["name"] == "app.web" and got["levelno"] == 40 and got["lineno"] == 42
        assert got["created"] == pytest.approx(rec.created)
        assert got["process"] == rec.process and got["exc_info"] is None
        assert got["trace_id"] == "17"


def test_http_handler_args_are_never_evaluated_as_code() -> None:
    form = urllib.parse.urlencode({"msg": "%s", "args": "(__import__('os').system('true'),)"})
    out = parse("POST", "application/x-www-form-urlencoded", form.encode())
    assert out == [{"msg": "%s", "args": None, "_args": "(__import__('os').system('true'),)"}]


def test_unformatted_args_reach_the_extra_column() -> None:
    # "args" is a LogRecord attribute, which the encoder never stores: kept as "_args" instead.
    out = parse("POST", "application/x-www-form-urlencoded", b"msg=%25d&args=%28%27x%27%2C%29")
    assert out == [{"msg": "%d", "args": None, "_args": "('x',)"}]
    assert isinstance(out[0], dict)
    enc = RowEncoder()
    row = enc.encode(out[0], 1, "127.0.0.1:1", enc.timestamp(0.0))
    assert row.rstrip(b"\n").split(b"\t")[COLUMN_NAMES.index("extra")] == b'{"_args":"(\'x\',)"}'


def _form(msg: str, args: str) -> bytes:
    return urllib.parse.urlencode({"msg": msg, "args": args}).encode()


def test_the_format_width_form_of_issue_10_does_not_build_a_200_mb_message() -> None:
    # Issue 10: HTTPHandler's form with a format width; "%200000000d" % (1,) is 200 MB.
    body = _form("%200000000d", "(1,)")
    tracemalloc.start()
    try:
        out = parse("POST", "application/x-www-form-urlencoded", body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out == [{"msg": "%200000000d", "args": None, "_args": "(1,)"}]
    assert peak < 1 << 20


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ("%200000000d", "(1,)"),
        (f"%{MAX_FORMATTED_CHARS + 1}d", "(1,)"),  # one over the cap
        ("%*d", f"({MAX_FORMATTED_CHARS + 1}, 1)"),  # the width from args
        ("%-*d", "(-999999999, 1)"),  # a negative width is a left-aligned one
        ("%.999999999f", "(1.5,)"),
        ("%.*f", "(999999999, 1.5)"),
        ("%.999999999d", "(1,)"),
        ("%(a)99999999s", "{'a': 1}"),
        ("%(a)s" * 100_000, "{'a': 'x' * 20}"),  # not a literal: not evaluated
        ("%(a)s" * 100_000, "{'a': '" + "x" * 20 + "'}"),  # 2 M chars from one short key
        ("%s" * 200_000, "(" + "'xxxxxx'," * 200_000 + ")"),  # args over MAX_ARGS_CHARS
        ("%s%s", "('" + "x" * 40_000 + "', '" + "y" * 20_000 + "')"),
        ("%s" * 2, "(" + "'x' * 3," * 2 + ")"),
        ("x" * (MAX_FORMATTED_CHARS + 1) + "%s", "(1,)"),  # the text alone is over
        ("%f", f"({'9' * 300}.0,)"),
        ("%5%", "(1,)"),
        ("%(a)*d", "{'a': 1}"),
    ],
)
def test_msg_percent_args_never_expands_past_the_cap(msg: str, args: str) -> None:
    out = parse("POST", "application/x-www-form-urlencoded", _form(msg, args))
    (rec,) = out
    assert isinstance(rec, dict)
    assert len(rec["msg"]) <= max(len(msg), MAX_FORMATTED_CHARS)
    if rec["msg"] == msg and "%" in msg:
        assert rec["_args"] == args and rec["args"] is None


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ("%d", "(1e999,)", None),  # OverflowError: float infinity to integer
        ("%d", "(float('nan'),)", None),  # not a literal
        ("%c", "(1114112,)", None),  # OverflowError: not in range(0x110000)
        ("%e", "(" + "9" * 400 + ",)", None),  # OverflowError: int too large to convert to float
        ("%5.2f|%-4d|%x|%#o|%+.3d|%c", "(3.14159, 7, 255, 8, 5, 65)", " 3.14|7   |ff|0o10|+005|A"),
        ("%(a)s and %(b)r", "{'a': 1, 'b': 'two'}", "1 and 'two'"),
        ("%s", "{'a': 1}", "{'a': 1}"),
        ("%*d|%.*f", "(4, 1, 2, 2.5)", "   1|2.50"),
        ("100%% %s", "('sure',)", "100% sure"),
    ],
)
def test_msg_percent_args_formats_what_fits_and_keeps_what_fails(
    msg: str, args: str, expected: str | None
) -> None:
    (rec,) = parse("POST", "application/x-www-form-urlencoded", _form(msg, args))
    assert isinstance(rec, dict)
    if expected is None:
        assert rec == {"msg": msg, "args": None, "_args": args}
    else:
        assert rec == {"msg": expected, "args": None}


def test_an_empty_form_is_rejected() -> None:
    out = parse("GET", "", query="")
    assert len(out) == 1 and isinstance(out[0], RecordRejected)


@settings(max_examples=examples(300), deadline=None)
@given(
    ctype=st.sampled_from(
        ["application/json", "application/x-ndjson", "application/x-www-form-urlencoded", ""]
    ),
    body=st.binary(max_size=400),
)
def test_any_body_gives_records_rejections_or_one_protocol_error(ctype: str, body: bytes) -> None:
    try:
        out = parse("POST", ctype, body)
    except ProtocolError:
        return
    for item in out:
        assert isinstance(item, RecordRejected) or (
            isinstance(item, dict) and all(type(k) is str for k in item)
        )
    json.dumps([x for x in out if isinstance(x, dict)], default=str)


_SPECS = st.sampled_from(
    ["%s", "%r", "%a", "%d", "%i", "%5d", "%-*d", "%.*f", "%*.*e", "%(a)s", "%(b)r", "%(a)5.2f", "%x",
     "%#o", "%X", "%e", "%g", "%c", "%.3s", "%10.2f", "%.0f", "%%", "%5%", "%", "%(", "%z", "%ld",
     "%(a(b))s", "%.s", "%+ 07.3d"]
)  # fmt: skip
_ARG_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner),
    max_leaves=5,
)


@settings(max_examples=examples(500), deadline=None)
@given(
    st.lists(_SPECS | st.text(alphabet="ab %()", max_size=4), max_size=8),
    st.lists(_ARG_VALUES | st.integers(-30, 30), max_size=8).map(tuple)
    | st.dictionaries(st.sampled_from(["a", "b", "a(b)"]), _ARG_VALUES, max_size=3),
)
@example(["%*d"], (10**9, 1))  # the thorough profile's find: a gigabyte if formatted unchecked
@example(["%(a)s"] * 50, {"a": "x" * 30})
def test_the_format_bound_is_never_below_the_formatted_length(
    pieces: list[str], value: tuple[Any, ...] | dict[str, Any]
) -> None:
    msg = "".join(pieces)
    bound = _format_bound(msg, value)
    if bound is None:
        # Not formatted by parse_ingest; nor here: "%*d" with a width of 10**9 from the args is
        # exactly the allocation this guards against (the thorough profile found one, and the
        # test process was killed for memory before the bound was consulted).
        return
    try:
        out = msg % value
    except (TypeError, ValueError, KeyError, OverflowError):
        return
    assert len(out) <= bound
