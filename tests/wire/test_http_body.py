"""POST /ingest bodies: NDJSON, JSON arrays and logging.handlers.HTTPHandler's form."""

from __future__ import annotations

import json
import logging
import logging.handlers
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.http_body import parse_ingest


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
    assert out == [{"msg": "%s", "args": "(__import__('os').system('true'),)"}]


def test_an_empty_form_is_rejected() -> None:
    out = parse("GET", "", query="")
    assert len(out) == 1 and isinstance(out[0], RecordRejected)


@settings(max_examples=300, deadline=None)
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
