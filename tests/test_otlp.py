"""OpenTelemetry logs end to end: the real Python SDK exporting to a real ``logsvc serve``.

The application side is what the OpenTelemetry docs tell a Python user to write: a
``LoggerProvider`` with a resource, the OTLP/HTTP exporter, the SDK's ``LoggingHandler`` on a
stdlib logger, records emitted inside a span. Every record must land with its trace and span
ids, severity, attributes and resource. The exporter speaks protobuf only (its package has no
JSON encoding), so OTLP JSON is sent by hand, in the specification's shape.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from google.protobuf.json_format import Parse
from google.rpc.error_details_pb2 import BadRequest  # type: ignore[import-untyped]
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tests.helpers import Service, wait_for

pytestmark = pytest.mark.slow


class Otlp:
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        log = svc.log()
        self.port: dict[str, int] = {}
        for kind, text in (("otlp", "OTLP/HTTP: POST /v1/logs"), ("http", "HTTP: POST /ingest")):
            m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(" + re.escape(text), log)
            assert m, log
            self.port[kind] = int(m.group(1))

    # The columns these tests read; the query itself is Service.rows.
    COLUMNS = (
        "seq, created, levelno, levelname, logger, message, pathname, lineno, func, process, exc_text, extra"
    )

    def rows(self, where: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.svc.rows(self.COLUMNS, where, params)

    def wait_rows(self, n: int, where: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.svc.wait_rows(n, self.COLUMNS, where, params)

    def post(
        self, body: bytes, content_type: str, *, port: str = "otlp", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port[port], timeout=30)
        try:
            conn.request(
                "POST", "/v1/logs", body=body, headers={"Content-Type": content_type, **(headers or {})}
            )
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def otlp(tmp_path_factory: pytest.TempPathFactory, dsn: str) -> Iterator[Otlp]:
    schema = "t_" + uuid.uuid4().hex[:16]
    svc = Service(
        tmp_path_factory.mktemp("otlp"),
        dsn,
        schema,
        *("--listen-otlp", "127.0.0.1:0", "--listen-http", "127.0.0.1:0", "--http-max-body-bytes", "1MiB"),
    )
    svc.start()
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the database connection")
        yield Otlp(svc)
    finally:
        svc.kill()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def emit_with_sdk(endpoint: str, logger_name: str, compression: Compression) -> tuple[str, str]:
    """Log three records through the SDK inside a span; return the span's (trace_id, span_id)."""
    resource = Resource.create({"service.name": "billing", "deployment.environment": "test"})
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, compression=compression, timeout=10))
    )
    tracer = TracerProvider(resource=resource).get_tracer("checkout")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's own handler, still documented
        handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger(logger_name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        with tracer.start_as_current_span("pay") as span:
            ctx = span.get_span_context()
            logger.info("order %d accepted", 17, extra={"order": 17, "tenant": "acme"})
            logger.warning("card expires soon")
            try:
                raise ValueError("declined")
            except ValueError:
                logger.exception("payment failed")
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_python_sdk_logging_handler_inside_a_span(otlp: Otlp, compression: Compression) -> None:
    name = f"sdk.{compression.value}"
    trace_id, span_id = emit_with_sdk(f"http://127.0.0.1:{otlp.port['otlp']}/v1/logs", name, compression)
    rows = otlp.wait_rows(3, "logger = %s", [name])
    assert [r["message"] for r in rows] == ["order 17 accepted", "card expires soon", "payment failed"]
    assert [(r["levelno"], r["levelname"]) for r in rows] == [(20, "INFO"), (30, "WARNING"), (40, "ERROR")]
    for r in rows:
        extra = r["extra"]
        assert (extra["trace_id"], extra["span_id"]) == (trace_id, span_id)
        assert extra["resource"]["service.name"] == "billing"
        assert extra["resource"]["deployment.environment"] == "test"
        assert extra["resource"]["telemetry.sdk.language"] == "python"
        assert extra["scope"] == {"name": name}
        assert r["pathname"] == __file__ and r["func"] == "emit_with_sdk" and r["lineno"] > 0
    assert (rows[0]["extra"]["order"], rows[0]["extra"]["tenant"]) == (17, "acme")
    assert "ValueError: declined" in rows[2]["exc_text"]
    assert rows[2]["extra"]["exception.type"] == "ValueError"
    assert abs(rows[0]["created"].timestamp() - time.time()) < 300


def test_the_sdk_against_listen_http_too(otlp: Otlp) -> None:
    trace_id, _ = emit_with_sdk(
        f"http://127.0.0.1:{otlp.port['http']}/v1/logs", "sdk.on_http", Compression.Gzip
    )
    rows = otlp.wait_rows(3, "logger = 'sdk.on_http'")
    assert all(r["extra"]["trace_id"] == trace_id for r in rows)


def otlp_json(*records: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "jsonsvc"}}]
                    },
                    "scopeLogs": [{"scope": {"name": ""}, "logRecords": list(records)}],
                }
            ]
        }
    )


def test_otlp_json_and_partial_success(otlp: Otlp) -> None:
    deep: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(40):
        deep = {"arrayValue": {"values": [deep]}}
    body = otlp_json(
        {
            "timeUnixNano": "1700000000000000000",
            "severityNumber": 17,
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "body": {"stringValue": "json one"},
            "attributes": [{"key": "big", "value": {"intValue": "9007199254740993"}}],
        },
        {"timeUnixNano": 1700000000000000000, "body": deep},
        {"observedTimeUnixNano": "1700000001000000000", "body": {"kvlistValue": {"values": []}}},
    )
    status, headers, reply = otlp.post(body, "application/json")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(reply) == {
        "partialSuccess": {"rejectedLogRecords": "1", "errorMessage": "1 complexity"}
    }
    rows = otlp.wait_rows(2, "logger = 'jsonsvc'")
    assert [r["message"] for r in rows] == ["json one", "{}"]
    assert rows[0]["levelname"] == "ERROR" and rows[0]["extra"]["big"] == 9007199254740993
    assert rows[0]["extra"]["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert rows[0]["created"].timestamp() == 1_700_000_000.0
    assert rows[1]["created"].timestamp() == 1_700_000_001.0


def test_gzip_json(otlp: Otlp) -> None:
    body = gzip.compress(otlp_json({"body": {"stringValue": "gzipped json"}}))
    status, _, reply = otlp.post(body, "application/json", headers={"Content-Encoding": "gzip"})
    assert (status, reply) == (200, b"{}")
    otlp.wait_rows(1, "message = 'gzipped json'")


def test_protobuf_answer_is_an_export_logs_service_response(otlp: Otlp) -> None:
    status, headers, reply = otlp.post(b"", "application/x-protobuf")
    assert status == 200 and headers["content-type"] == "application/x-protobuf"
    resp = ExportLogsServiceResponse()
    resp.ParseFromString(reply)
    assert not resp.HasField("partial_success")


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status"),
    [
        (b"\xff\xff\xff garbage", "application/x-protobuf", {}, 400),
        (b"{not json", "application/json", {}, 400),
        (b"not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400),
        (gzip.compress(b"\x00" * (2 << 20)), "application/x-protobuf", {"Content-Encoding": "gzip"}, 413),
        (b"{}", "text/plain", {}, 415),
        (b"{}", "application/json", {"Content-Encoding": "br"}, 415),
    ],
)
def test_refused_bodies(
    otlp: Otlp, body: bytes, content_type: str, headers: dict[str, str], status: int
) -> None:
    # OTLP/HTTP: every 4xx/5xx body is a google.rpc.Status, protobuf for a protobuf request and
    # its JSON form otherwise; a 400 says what was bad in a google.rpc.BadRequest.
    got, reply_headers, reply = otlp.post(body, content_type, headers=headers)
    assert got == status, reply
    st = rpc_status(reply_headers, reply, protobuf=content_type == "application/x-protobuf")
    assert st.code == {400: 3, 413: 3, 415: 3}[status] and st.message
    if status == 400:
        (detail,) = st.details
        bad = BadRequest()
        assert detail.Unpack(bad) and bad.field_violations[0].description == st.message
    else:
        assert not st.details


def rpc_status(headers: dict[str, str], reply: bytes, *, protobuf: bool) -> Status:
    """The google.rpc.Status of a refusal, read with googleapis-common-protos as clients read it."""
    if protobuf:
        assert headers["content-type"] == "application/x-protobuf"
        return Status.FromString(reply)
    assert headers["content-type"] == "application/json"
    return Parse(reply, Status())  # the proto3 JSON mapping; resolves the BadRequest Any


def test_other_methods_and_the_ingest_route(otlp: Otlp) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", otlp.port["otlp"], timeout=10)
    try:
        conn.request("GET", "/v1/logs", headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        assert resp.status == 405 and resp.getheader("Allow") == "POST"
        assert Status.FromString(resp.read()).code == 12  # UNIMPLEMENTED
        conn.request("POST", "/ingest", body=b'{"message": "x"}\n')
        resp = conn.getresponse()
        assert resp.status == 405  # /ingest lives on --listen-http only, as on --metrics
        resp.read()
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    finally:
        conn.close()


def export_one_with_sdk(endpoint: str, timeout: float) -> bool:
    """Log one record through the SDK's OTLP/HTTP exporter; whether its export succeeded."""
    results: list[bool] = []

    class Recording(OTLPLogExporter):
        def export(self, batch: Any) -> Any:
            result = super().export(batch)
            results.append(result.name == "SUCCESS")
            return result

    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(Recording(endpoint=endpoint, timeout=timeout)))
    provider.get_logger("probe").emit(body="probe")
    provider.shutdown()
    (ok,) = results
    return ok


def test_503_with_retry_after_while_the_journal_is_full(
    tmp_path: Path, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: PostgreSQL is unreachable, so the journal only grows until
    # intake closes (as tests/test_http.py does for /ingest).
    unreachable = "host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=1"
    svc = Service(
        tmp_path / "data",
        unreachable,
        schema,
        *("--listen-otlp", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"),
        *("--journal-segment-bytes", "64KiB", "--journal-max-bytes", "128KiB"),
    ).start()
    try:
        o = Otlp(svc)
        body = otlp_json(*({"body": {"stringValue": "x" * 200}} for _ in range(200)))
        statuses = []
        for _ in range(100):  # bounded: 128 KiB is reached after a few requests
            status, headers, reply = o.post(body, "application/json")
            statuses.append(status)
            if status == 503:
                assert headers.get("retry-after") == "1"
                assert rpc_status(headers, reply, protobuf=False).code == 14  # UNAVAILABLE
                break
        assert statuses[-1] == 503 and set(statuses[:-1]) == {200}
        # The same refusal to a protobuf request is a protobuf Status.
        status, headers, reply = o.post(b"", "application/x-protobuf")
        assert status == 503 and headers.get("retry-after") == "1"
        assert rpc_status(headers, reply, protobuf=True).message
        # The real SDK exporter takes it as retryable (it waits Retry-After and tries again)
        # and gives up at its deadline: the batch is reported failed, not dropped silently.
        with caplog.at_level(logging.WARNING):
            assert not export_one_with_sdk(f"http://127.0.0.1:{o.port['otlp']}/v1/logs", timeout=2)
        assert any("Transient error" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        svc.kill()
