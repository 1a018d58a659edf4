"""OTLP/HTTP logs: the request body, both encodings, mapped to records; gzip; the response."""

from __future__ import annotations

import base64
import gzip
from typing import Any

import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.otlp import (
    JSON,
    MAX_ANY_DEPTH,
    PROTOBUF,
    decompress,
    error_response,
    export_response,
    media_type,
    parse_logs,
)

from .helpers import examples

# open-telemetry/opentelemetry-proto examples/logs.json (@36ea555), byte for byte: the
# specification's own example of OTLP JSON.
SPEC_EXAMPLE = b"""{
  "resourceLogs": [
    {
      "resource": {
        "attributes": [
          {
            "key": "service.name",
            "value": {
              "stringValue": "my.service"
            }
          }
        ]
      },
      "scopeLogs": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {
                "key": "my.scope.attribute",
                "value": {
                  "stringValue": "some scope attribute"
                }
              }
            ]
          },
          "logRecords": [
            {
              "timeUnixNano": 1544712660300000000,
              "observedTimeUnixNano": 1544712660300000000,
              "severityText": "Information",
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "body": {
                "stringValue": "Example log record"
              },
              "attributes": [
                {
                  "key": "string.attribute",
                  "value": {
                    "stringValue": "some string"
                  }
                },
                {
                  "key": "boolean.attribute",
                  "value": {
                    "boolValue": true
                  }
                },
                {
                  "key": "int.attribute",
                  "value": {
                    "intValue": 10
                  }
                },
                {
                  "key": "double.attribute",
                  "value": {
                    "doubleValue": 637.704
                  }
                },
                {
                  "key": "array.attribute",
                  "value": {
                    "arrayValue": {
                      "values": [
                        {
                          "stringValue": "many"
                        },
                        {
                          "stringValue": "values"
                        }
                      ]
                    }
                  }
                },
                {
                  "key": "map.attribute",
                  "value": {
                    "kvlistValue": {
                      "values": [
                        {
                          "key": "some.map.key",
                          "value": {
                            "stringValue": "some value"
                          }
                        }
                      ]
                    }
                  }
                }
              ]
            }
          ]
        }
      ]
    }
  ]
}"""


def records(body: bytes, media: str) -> list[RecordDict | RecordRejected]:
    return list(parse_logs(body, media))


def only(body: bytes, media: str) -> RecordDict:
    (rec,) = records(body, media)
    assert isinstance(rec, dict)
    return rec


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def request(
    *log_records: LogRecord, resource: list[KeyValue] | None = None, scope: str = "app.module"
) -> bytes:
    req = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=resource or [kv("service.name", s("billing"))]),
                scope_logs=[ScopeLogs(scope=InstrumentationScope(name=scope), log_records=list(log_records))],
            )
        ]
    )
    return req.SerializeToString()


def as_otlp_json(pb: bytes) -> bytes:
    """The same request in OTLP JSON: proto3's mapping, with hex ids as OTLP requires."""
    req = ExportLogsServiceRequest()
    req.ParseFromString(pb)
    doc = MessageToDict(req)
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for lr in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in lr:
                        lr[key] = base64.b64decode(lr[key]).hex().upper()
    return orjson.dumps(doc)


def test_the_specification_example() -> None:
    rec = only(SPEC_EXAMPLE, JSON)
    # The columns a record does not set are None (for RowEncoder's fast path), as if absent.
    assert {k: v for k, v in rec.items() if v is not None} == {
        "levelno": 20,
        "levelname": "INFO",
        "created": 1544712660.3,
        "msg": "Example log record",
        "name": "my.library",
        "resource": {"service.name": "my.service"},
        "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": {"my.scope.attribute": "some scope attribute"},
        },
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "eee19b7ec3c1b174",
        "severity_text": "Information",
        "string.attribute": "some string",
        "boolean.attribute": True,
        "int.attribute": 10,
        "double.attribute": 637.704,
        "array.attribute": ["many", "values"],
        "map.attribute": {"some.map.key": "some value"},
    }


def test_unset_columns_encode_as_absent_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # _base starts every record with the LogRecord columns as None: the row is the one the
    # record without them gives, and the encoder's fast path takes both.
    from logsvc.store.copyfmt import COLUMN_NAMES, RowEncoder

    def no_slow_path(*args: object) -> bytes:
        raise AssertionError("took the general path")

    monkeypatch.setattr(RowEncoder, "_encode_slow", no_slow_path)
    enc = RowEncoder()
    line = LogRecord(time_unix_nano=1_700_000_000_000_000_000, body=s("hi"))
    line.attributes.append(kv("code.line.number", AnyValue(int_value=3)))
    for body, media in ((SPEC_EXAMPLE, JSON), (request(line), PROTOBUF)):
        rec = only(body, media)
        sparse = {k: v for k, v in rec.items() if v is not None}
        assert len(sparse) < len(rec)
        row = enc.encode(rec, 7, "peer", "2026-11-29 00:00:00+00").split(b"\t")
        other = enc.encode(sparse, 7, "peer", "2026-11-29 00:00:00+00").split(b"\t")
        # extra's keys may come in another order (a set difference); jsonb keeps no order.
        x = COLUMN_NAMES.index("extra")
        assert orjson.loads(row.pop(x)) == orjson.loads(other.pop(x)) and row == other


def test_the_specification_example_fed_three_ways() -> None:
    # parse_logs takes a whole body; "fed bytewise" has no meaning here, so: whole, with
    # trailing garbage (refused: a body is one message), and cut short (refused).
    assert len(records(SPEC_EXAMPLE, JSON)) == 1
    for bad in (SPEC_EXAMPLE + b"x", SPEC_EXAMPLE[:-1]):
        with pytest.raises(ProtocolError) as info:
            parse_logs(bad, JSON)
        assert info.value.reason == "malformed"


def test_protobuf_record_mapping() -> None:
    trace = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    lr = LogRecord(
        time_unix_nano=1_700_000_000_123_456_789,
        observed_time_unix_nano=1_700_000_001_000_000_000,
        severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR,
        severity_text="ERROR",
        body=s("payment failed"),
        attributes=[
            kv("order", AnyValue(int_value=17)),
            kv("code.file.path", s("/srv/app.py")),
            kv("code.line.number", AnyValue(int_value=42)),
            kv("code.function.name", s("pay")),
            kv("exception.stacktrace", s("Traceback ...")),
            kv("exception.type", s("ValueError")),
            kv("name", s("clashes with the logger column")),
        ],
        trace_id=trace,
        span_id=bytes.fromhex("eee19b7ec3c1b174"),
    )
    rec = only(request(lr, resource=[kv("service.name", s("billing")), kv("host.name", s("vm1")),
                                     kv("process.pid", AnyValue(int_value=4242))]), PROTOBUF)  # fmt: skip
    assert rec["created"] == pytest.approx(1_700_000_000.123_456_789)
    assert (rec["levelno"], rec["levelname"], rec["msg"]) == (40, "ERROR", "payment failed")
    assert (rec["name"], rec["process"], rec["hostname"]) == ("app.module", 4242, "vm1")
    assert (rec["pathname"], rec["lineno"], rec["funcName"], rec["exc_text"]) == (
        "/srv/app.py",
        42,
        "pay",
        "Traceback ...",
    )
    assert (rec["trace_id"], rec["span_id"]) == (trace.hex(), "eee19b7ec3c1b174")
    assert rec["order"] == 17 and rec["exception.type"] == "ValueError"
    assert rec["attributes"] == {"name": "clashes with the logger column"}
    assert rec["resource"] == {"service.name": "billing", "host.name": "vm1", "process.pid": 4242}
    assert "severity_text" not in rec  # "ERROR" says nothing the level does not


def test_observed_time_when_there_is_no_time_and_none_when_neither() -> None:
    rec = only(request(LogRecord(observed_time_unix_nano=2_000_000_000_000_000_000)), PROTOBUF)
    assert rec["created"] == 2_000_000_000.0
    rec = only(request(LogRecord()), PROTOBUF)
    assert rec["created"] is None and rec["msg"] == "" and rec["levelname"] == "INFO"  # None: unset


@pytest.mark.parametrize(
    ("number", "text", "level"),
    [
        (1, "", (5, "TRACE")),
        (4, "", (5, "TRACE")),
        (5, "", (10, "DEBUG")),
        (9, "INFO", (20, "INFO")),
        (13, "WARN", (30, "WARNING")),
        (16, "", (30, "WARNING")),
        (17, "", (40, "ERROR")),
        (21, "FATAL", (50, "CRITICAL")),
        (24, "", (50, "CRITICAL")),
        (0, "warning", (30, "WARNING")),
        (0, "Error", (40, "ERROR")),
        (0, "", (20, "INFO")),
        (99, "", (20, "INFO")),
    ],
)
def test_severity(number: int, text: str, level: tuple[int, str]) -> None:
    rec = only(request(LogRecord(severity_number=number, severity_text=text)), PROTOBUF)  # type: ignore[arg-type]
    assert (rec["levelno"], rec["levelname"]) == level
    assert "severity_text" not in rec


def test_logger_name_precedence() -> None:
    named = LogRecord(attributes=[kv("logger.name", s("from.attribute"))])
    assert only(request(named), PROTOBUF)["name"] == "from.attribute"
    assert "logger.name" not in only(request(named), PROTOBUF)
    assert only(request(LogRecord()), PROTOBUF)["name"] == "app.module"  # the scope
    assert only(request(LogRecord(), scope=""), PROTOBUF)["name"] == "billing"  # service.name
    assert only(request(LogRecord(), scope="", resource=[kv("a", s("b"))]), PROTOBUF)["name"] is None


def test_structured_bodies_are_json_text() -> None:
    body = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                kv("user", s("ann")),
                kv("n", AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))),
            ]
        )
    )
    rec = only(request(LogRecord(body=body)), PROTOBUF)
    assert orjson.loads(rec["msg"]) == {"user": "ann", "n": [1]}
    rec = only(request(LogRecord(body=AnyValue(bytes_value=b"\x00\x01"))), PROTOBUF)
    assert rec["msg"] == "AAE="  # bytes: their base64, as OTLP JSON writes them
    assert only(request(LogRecord(body=AnyValue(int_value=7))), PROTOBUF)["msg"] == "7"


def nested(depth: int) -> AnyValue:
    v = s("leaf")
    for _ in range(depth):
        v = AnyValue(array_value=ArrayValue(values=[v]))
    return v


def test_a_value_nested_too_deep_rejects_its_record_only() -> None:
    ok = LogRecord(body=s("fine"))
    deep = LogRecord(body=nested(MAX_ANY_DEPTH + 1))
    edge = LogRecord(body=nested(MAX_ANY_DEPTH))
    out = records(request(ok, deep, edge), PROTOBUF)
    assert isinstance(out[0], dict) and isinstance(out[2], dict)
    assert isinstance(out[1], RecordRejected) and out[1].reason == "complexity"
    out = records(as_otlp_json(request(ok, deep, edge)), JSON)
    assert [type(x) for x in out] == [dict, RecordRejected, dict]


def test_otlp_json_int64_as_strings_or_numbers_and_enum_names() -> None:
    doc = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": "1700000000000000000", "severityNumber": 13,
                             "attributes": [{"key": "big", "value": {"intValue": "9007199254740993"}}]},
                            {"timeUnixNano": 1700000000000000000, "severityNumber": "SEVERITY_NUMBER_ERROR2"},
                            {"time_unix_nano": "1700000000000000000", "severity_number": 9,
                             "body": {"string_value": "snake_case names"}},
                            {"timeUnixNano": "not a number"},
                            "not an object",
                        ]
                    }
                ]
            }
        ]
    }  # fmt: skip
    out = records(orjson.dumps(doc), JSON)
    a, b, c, d, e = out
    assert isinstance(a, dict) and isinstance(b, dict) and isinstance(c, dict)
    assert (a["created"], a["levelname"], a["big"]) == (1_700_000_000.0, "WARNING", 9007199254740993)
    assert (b["created"], b["levelname"]) == (1_700_000_000.0, "ERROR")
    assert (c["levelname"], c["msg"]) == ("INFO", "snake_case names")
    assert isinstance(d, RecordRejected) and d.reason == "malformed"
    assert isinstance(e, RecordRejected) and e.reason == "malformed"


def test_all_zero_ids_are_absent() -> None:
    rec = only(request(LogRecord(trace_id=bytes(16), span_id=bytes(8))), PROTOBUF)
    assert "trace_id" not in rec and "span_id" not in rec
    rec = only(b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"0000","spanId":""}]}]}]}', JSON)
    assert "trace_id" not in rec and "span_id" not in rec


@pytest.mark.parametrize(
    ("body", "media"),
    [
        (b"garbage", PROTOBUF),
        (b"\xff\xff\xff\xff", PROTOBUF),
        (b"\x0a\x05\x0a\x03", PROTOBUF),  # a length running past the end
        (b"garbage", JSON),
        (b"[]", JSON),
        (b'{"resourceLogs": 7}', JSON),
        (b"", JSON),
    ],
)
def test_undecodable_bodies(body: bytes, media: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_logs(body, media)
    assert info.value.reason == "malformed"


def test_an_empty_request_has_no_records() -> None:
    assert records(b"", PROTOBUF) == []
    assert records(b"{}", JSON) == []


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=200), st.sampled_from([PROTOBUF, JSON]))
def test_any_bytes_give_records_rejections_or_malformed(body: bytes, media: str) -> None:
    try:
        out = records(body, media)
    except ProtocolError as exc:
        assert exc.reason == "malformed"
        return
    for item in out:
        assert isinstance(item, dict | RecordRejected)


_any_leaf = st.one_of(
    st.text(max_size=10).map(s),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.floats(allow_nan=False).map(lambda f: AnyValue(double_value=f)),
)
_any = st.recursive(
    _any_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: AnyValue(array_value=ArrayValue(values=xs))),
        st.dictionaries(st.text(max_size=5), inner, max_size=3).map(
            lambda d: AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in d.items()]))
        ),
    ),
    max_leaves=8,
)


# Any key, and the ones the mapping treats apart: logger names, columns, names it reserves.
_ATTR_KEYS = st.text(min_size=1, max_size=8) | st.sampled_from(
    ["logger.name", "log.logger", "code.line.number", "code.file.path", "thread.id", "exception.stacktrace",
     "name", "msg", "trace_id", "resource", "scope", "attributes", "hostname"]
)  # fmt: skip


@settings(max_examples=examples(200), deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 30),
    st.text(max_size=8),
    _any,
    st.dictionaries(_ATTR_KEYS, _any, max_size=4),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=8, max_size=8),
)
def test_protobuf_and_json_give_the_same_records(
    t: int, sev: int, text: str, body: AnyValue, attrs: dict[str, AnyValue], trace: bytes, span: bytes
) -> None:
    lr = LogRecord(
        time_unix_nano=t,
        severity_number=sev,  # type: ignore[arg-type]
        severity_text=text,
        body=body,
        attributes=[kv(k, v) for k, v in attrs.items()],
        trace_id=trace,
        span_id=span,
    )
    pb = request(lr)
    assert records(pb, PROTOBUF) == records(as_otlp_json(pb), JSON)


def test_gzip() -> None:
    body = request(LogRecord(body=s("zipped")))
    assert decompress(gzip.compress(body), "gzip", 1 << 20) == body
    assert decompress(body, "", 1 << 20) == body and decompress(body, "identity", 1 << 20) == body


@pytest.mark.parametrize(
    ("data", "encoding", "reason"),
    [
        (gzip.compress(b"\x00" * 1_000_001), "gzip", "oversized"),  # 1 kB that grows past the cap
        (gzip.compress(b"x" * 100)[:-5], "gzip", "malformed"),
        (b"not gzip", "gzip", "malformed"),
        (b"x", "br", "unsupported_encoding"),
        (b"x", "deflate", "unsupported_encoding"),
    ],
)
def test_gzip_refusals(data: bytes, encoding: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decompress(data, encoding, 1_000_000)
    assert info.value.reason == reason


def test_gzip_exactly_at_the_cap_is_kept() -> None:
    assert len(decompress(gzip.compress(b"\x00" * 1000), "gzip", 1000)) == 1000


def test_media_types() -> None:
    assert media_type("application/x-protobuf") == PROTOBUF
    assert media_type("Application/JSON; charset=utf-8") == JSON
    assert media_type("text/plain") is None and media_type("") is None


def test_export_response() -> None:
    resp = ExportLogsServiceResponse()
    resp.ParseFromString(export_response(PROTOBUF, 0, ""))
    assert not resp.HasField("partial_success")
    resp.ParseFromString(export_response(PROTOBUF, 3, "3 records nest too deep"))
    assert (resp.partial_success.rejected_log_records, resp.partial_success.error_message) == (
        3,
        "3 records nest too deep",
    )
    assert export_response(JSON, 0, "") == b"{}"
    doc: dict[str, Any] = orjson.loads(export_response(JSON, 2, "why"))
    assert doc == {"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "why"}}


def test_bodies_and_attributes_read_from_their_bytes() -> None:
    # The protobuf path reads a body and each attribute from its bytes (_Shadow), remembering
    # scalar attributes per request: long strings (multi-byte lengths), non-string bodies,
    # repeated attributes and more distinct ones than are remembered all read as they were sent.
    bodies = ["", "x" * 127, "é" * 128, "y" * 20_000, "z" * 2_000_000]
    shared = AnyValue(kvlist_value=KeyValueList(values=[kv("k", s("v"))]))
    lrs = [LogRecord(body=s(b), attributes=[kv("same", s("a")), kv("map", shared)]) for b in bodies]
    lrs.append(LogRecord(body=AnyValue(int_value=7)))
    lrs.append(LogRecord(body=AnyValue(bool_value=True), attributes=[kv("a\tb", AnyValue(double_value=0.5))]))
    lrs += [LogRecord(attributes=[kv(f"k{n}", AnyValue(int_value=n))]) for n in range(5000)]
    recs = [r for r in records(request(*lrs), PROTOBUF) if isinstance(r, dict)]
    assert len(recs) == len(lrs)
    assert [r["msg"] for r in recs[: len(bodies) + 2]] == [*bodies, "7", "true"]
    assert all(r["same"] == "a" and r["map"] == {"k": "v"} for r in recs[: len(bodies)])
    assert recs[0]["map"] is not recs[1]["map"]  # a container is each record's own
    assert recs[len(bodies) + 1]["a\tb"] == 0.5
    assert [r[f"k{n}"] for n, r in enumerate(recs[len(bodies) + 2 :])] == list(range(5000))
    assert records(request(*lrs), PROTOBUF) == records(as_otlp_json(request(*lrs)), JSON)


@pytest.mark.parametrize("status", [400, 405, 413, 415, 429, 503, 500])
def test_error_response_is_a_google_rpc_status(status: int) -> None:
    from google.protobuf.json_format import Parse
    from google.rpc.error_details_pb2 import BadRequest  # type: ignore[import-untyped]
    from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]

    message = "the body is not an OTLP request: ünïcode " * 10
    body, content_type = error_response(PROTOBUF, status, message)
    assert content_type == PROTOBUF
    st = Status.FromString(body)
    text, json_type = error_response(JSON, status, message)
    assert json_type == JSON and error_response(None, status, message) == (text, JSON)
    assert Parse(text, Status()) == st
    codes = {400: 3, 405: 12, 413: 3, 415: 3, 429: 8, 503: 14}  # google.rpc.Code; 2 UNKNOWN
    assert st.message == message and st.code == codes.get(status, 2)
    if status == 400:
        bad = BadRequest()
        assert st.details[0].Unpack(bad) and bad.field_violations[0].description == message
    else:
        assert not st.details
