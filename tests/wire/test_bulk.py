"""Elasticsearch ``_bulk`` bodies as the shippers send them, and the answer they read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.bulk import BulkRequest, bulk_response, parse_bulk
from logsvc.wire.json_format import JsonFormat

from .helpers import examples

# vectordotdev/vector src/sinks/elasticsearch/tests.rs, sets_create_action_when_configured:
# the body Vector's elasticsearch sink encodes (bulk.action = "create", index = "vector").
VECTOR = b"""{"create":{"_index":"vector","_type":"_doc"}}
{"message":"hello there","timestamp":"2020-12-01T01:02:03Z"}
"""
# fluent/fluent-bit tests/runtime/out_elasticsearch.c and tests/runtime/data/es/json_es.h: the
# es output's action line ({"create":{"_index":...,"_type":"_doc"}}, Write_Operation create,
# the default) before the record of JSON_ES, its time as @timestamp (Time_Key's default) in
# the format the test checks. Assembled from those pieces: the test checks substrings.
FLUENT_BIT = (
    b'{"create":{"_index":"fluent-bit","_type":"_doc"}}\n'
    b'{"@timestamp":"2015-11-24T22:15:40.000Z","key_0":false,"key_1":true,"key_2":"some string",'
    b'"key_3":0.12345678,"key.4":5000,"END_KEY":"JSON_END"}\n'
)
# A Filebeat event (its documented ECS fields) under Filebeat's action line.
FILEBEAT = (
    b'{"create":{"_index":"filebeat-8.11.0"}}\n'
    b'{"@timestamp":"2026-11-28T06:00:00.123Z","message":"GET /health 200","log":{"level":"warn",'
    b'"offset":42,"file":{"path":"/var/log/app.log"}},"input":{"type":"filestream"},'
    b'"ecs":{"version":"8.0.0"},"host":{"name":"web1"},"agent":{"type":"filebeat","version":"8.11.0"}}\n'
)


def take(req: BulkRequest) -> list[RecordDict | RecordRejected]:
    return list(req.records())


def parse(body: bytes, index: str | None = None) -> tuple[BulkRequest, list[RecordDict | RecordRejected]]:
    req = parse_bulk(body, index, JsonFormat())
    return req, take(req)


def test_vector_body() -> None:
    req, (rec,) = parse(VECTOR)
    assert isinstance(rec, dict)
    assert (rec["msg"], rec["created"], rec["_index"]) == ("hello there", 1606784523.0, "vector")
    (item,) = req.items
    assert item["create"]["status"] == 201 and item["create"]["_index"] == "vector"
    answer = orjson.loads(bulk_response(req, 3))
    assert answer["took"] == 3 and answer["errors"] is False
    assert answer["items"][0]["create"]["result"] == "created"


def test_fluent_bit_body() -> None:
    _, (rec,) = parse(FLUENT_BIT)
    assert isinstance(rec, dict)
    assert rec["created"] == 1448403340.0 and rec["_index"] == "fluent-bit"
    assert (rec["key_0"], rec["key_2"], rec["key.4"]) == (False, "some string", 5000)


def test_filebeat_ecs_body() -> None:
    _, (rec,) = parse(FILEBEAT)
    assert isinstance(rec, dict)
    assert (rec["msg"], rec["levelname"], rec["_index"]) == ("GET /health 200", "WARNING", "filebeat-8.11.0")


def test_the_answer_in_the_shape_fluent_bit_reads() -> None:
    # fluent/fluent-bit tests/runtime/data/es/json_es.h JSON_RESPONSE_PARTIALLY_SUCCESS: the
    # keys and nesting its es output walks (errors, items[].create.status, error.type).
    body = (
        VECTOR.replace(b'"create"', b'"index"') + b'{"create":{}}\nnot json\n' + b'{"delete":{"_id":"1"}}\n'
    )
    req, out = parse(body, "from-path")
    assert [type(x) for x in out] == [dict, RecordRejected, RecordRejected]
    answer = orjson.loads(bulk_response(req, 0))
    assert answer["errors"] is True
    ok, bad, gone = answer["items"]
    assert ok["index"]["status"] == 201 and ok["index"]["_index"] == "vector"
    assert bad["create"]["status"] == 400 and bad["create"]["_index"] == "from-path"
    assert bad["create"]["error"]["type"] == "document_parsing_exception"
    assert gone["delete"]["status"] == 400 and gone["delete"]["_id"] == "1"


def test_ids_and_the_path_index() -> None:
    req, (rec,) = parse(b'{"index":{"_id":"abc"}}\n{"message":"m"}\n', "logs-app")
    assert isinstance(rec, dict) and (rec["_index"], rec["_id"]) == ("logs-app", "abc")
    req, (rec,) = parse(b'{"index":{}}\n{"message":"m"}\n')
    assert isinstance(rec, dict) and "_index" not in rec and "_id" not in rec
    assert req.items[0]["index"]["_id"]  # one is made up, as Elasticsearch would


def test_update_consumes_its_document_line() -> None:
    _, out = parse(b'{"update":{"_id":"1"}}\n{"doc":{"a":1}}\n{"index":{}}\n{"message":"after"}\n')
    assert isinstance(out[0], RecordRejected) and isinstance(out[1], dict) and out[1]["msg"] == "after"


def test_blank_lines_and_a_missing_final_newline() -> None:
    _, out = parse(b'\n{"index":{}}\n\n{"message":"a"}\r\n{"index":{}}\n{"message":"b"}')
    assert [r["msg"] for r in out if isinstance(r, dict)] == ["a", "b"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json\n{}\n",
        b'{"index":{}, "create":{}}\n{}\n',
        b'{"upsert":{}}\n{}\n',
        b'{"index":"x"}\n{}\n',
        b"[]\n",
        b'{"index":{}}\n',  # no document line
    ],
)
def test_a_bad_action_line_refuses_the_whole_request(body: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_bulk(body, None, JsonFormat())
    assert info.value.reason == "malformed"


def test_an_empty_body_is_an_empty_answer() -> None:
    req, out = parse(b"")
    assert out == [] and orjson.loads(bulk_response(req, 0)) == {"took": 0, "errors": False, "items": []}


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.sampled_from([b'{"index":{}}', b'{"create":{"_index":"i"}}', b'{"delete":{}}', b"{}", b"x"])
        | st.binary(max_size=20),
        max_size=8,
    ).map(b"\n".join)
)
def test_any_body_gives_records_rejections_or_malformed(body: bytes) -> None:
    try:
        req = parse_bulk(body, None, JsonFormat())
    except ProtocolError as exc:
        assert exc.reason == "malformed"
        return
    out = take(req)
    assert len(out) == len(req.items) == len(req)
    answer: dict[str, Any] = orjson.loads(bulk_response(req, 0))
    assert answer["errors"] == any(isinstance(x, RecordRejected) for x in out)
