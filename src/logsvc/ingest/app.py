"""The HTTP application: ``POST /ingest`` and the operator routes, on ``HttpConnection``.

``/ingest`` (only on ``--listen-http``) parses the body (``wire.http_body``), hands the records
to the journal writer and answers once they are in the journal: the writer's durable
callback sends the ``200``. A request is written ``INGEST_RECORDS_PER_TURN`` records per
loop turn, so a body of millions of tiny lines never stalls the other clients. While the
writer is not accepting (journal full or failing) or the service is stopping, a new request
is answered ``503`` with ``Retry-After`` at once; one already being written waits, parked.
``/metrics``, ``/healthz`` and ``/readyz`` are answered on every HTTP listener from a
``Figures`` snapshot; nothing here reads the server's internals.

``POST /v1/logs`` (OpenTelemetry logs, OTLP/HTTP; on ``--listen-http`` and ``--listen-otlp``)
takes the same path as ``/ingest``: the body is decoded whole (``wire.otlp``; gzip within the
body cap, else 413; undecodable, 400; an unknown Content-Type, 415), then its records go
through the same ``_Job``, a turn's worth at a time, and the answer, an
ExportLogsServiceResponse with ``partial_success`` when records were rejected, is sent once
they are durable. 503 with ``Retry-After`` while intake is not open (the exporters retry).
Every refusal's body is a ``google.rpc.Status`` in the request's encoding (``otlp.error_response``).

``POST /_bulk`` and ``POST /{index}/_bulk`` (Elasticsearch's bulk API, on ``--listen-http``)
go the same way (``wire.bulk``): the action lines are read first (a bad one is a 400 for the
whole request), the documents are records like JSON lines, and the answer, in the shape
Filebeat, Fluent Bit and Vector check (``took``, ``errors``, ``items`` with a status each), is
sent once they are durable. ``GET /`` answers what those shippers read at connect: a version.

``POST /gelf`` (GELF over HTTP, on ``--listen-http``; graypy's ``GELFHTTPHandler``, Graylog's
GELF HTTP input) takes one GELF message per request, plain or gzip/zlib compressed (told
apart by its first bytes, as Graylog does: ``wire.compression``), capped after inflating
(413), read by the one ``JsonFormat`` in its ``gelf`` shape, written through the same
``_Job`` and answered ``202 Accepted`` with an empty body once durable, as Graylog answers;
a body that is not a GELF object is a 400.

Each listener's ``App`` comes from ``for_listener(ListenerConfig)``: its kind (which routes
it serves, the metrics label) and the JSON format its ``/ingest`` and ``/_bulk`` read
(``--listen-http HOST:PORT=FORMAT``, else ``--json-format``).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from urllib.parse import unquote

from prometheus_client import CollectorRegistry

from logsvc import ops
from logsvc.errors import ProtocolError, RecordRejected
from logsvc.ingest.http import App, HttpConnection, Request, Response
from logsvc.journal.writer import JournalWriter
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.record import RecordDict
from logsvc.wire import compression, otlp
from logsvc.wire.bulk import bulk_response, parse_bulk
from logsvc.wire.http_body import parse_ingest
from logsvc.wire.json_format import JsonFormat

# Records of one /ingest request written per loop turn (~20 ms of work for tiny JSON lines).
INGEST_RECORDS_PER_TURN = 2000
_PATHS = frozenset({"/ingest", "/v1/logs", "/gelf", "/metrics", "/healthz", "/readyz"})
# ProtocolError reasons of an OTLP body -> the status that answers it.
_OTLP_STATUS = {"oversized": 413, "unsupported_encoding": 415}
# Elasticsearch clients (go-elasticsearch v8, elasticsearch-py 8) refuse a server that does not
# say it is one; what GET / answers, the version shippers choose their request format by (8:
# no _type) and Filebeat's check that it is not older than itself.
_ES_HEADERS = [("X-Elastic-Product", "Elasticsearch")]
_ES_INFO = {
    "name": "logsvc",
    "cluster_name": "logsvc",
    "version": {"number": "8.11.0", "build_flavor": "default", "lucene_version": "9.8.0"},
    "tagline": "You Know, for Search",
}


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """What one listener is, as its connections' handlers need to know it.

    Attributes:
        kind: what it speaks, and its label in logs and metrics: "http", "otlp", "json", ...
        json_format: the ``JsonFormat`` shape its JSON records are read in (``SHAPES``).
    """

    kind: str
    json_format: str = "auto"


class HttpApp:
    """Routes requests; ``for_listener(config)`` is the ``App`` of one listener."""

    def __init__(
        self,
        writer: JournalWriter,
        metrics: Metrics,
        registry: CollectorRegistry,
        figures: Callable[[], ops.Figures],
        stopping: Callable[[], bool],
        reactor: Reactor,
        tz: datetime.tzinfo = datetime.UTC,
        console: App | None = None,
        console_claims: Callable[[str], bool] = lambda path: False,
    ) -> None:
        self._reactor = reactor
        # The web console (logsvc.console) answers its paths on the operator port.
        self._console = console
        self._console_claims = console_claims
        self._tz = tz  # --assume-timezone: for times sent without a zone
        self._gelf = JsonFormat(tz, "gelf")  # holds no state between records
        self._writer = writer
        self._metrics = metrics
        self._registry = registry
        self._figures = figures
        self._stopping = stopping

    def for_listener(self, config: ListenerConfig) -> App:
        json = JsonFormat(self._tz, config.json_format)  # holds no state between records
        return lambda conn, req: self._route(config.kind, json, conn, req)

    def _route(self, kind: str, json: JsonFormat, conn: HttpConnection, req: Request) -> Response | None:
        if kind == "metrics" and self._console is not None and self._console_claims(req.path):
            resp = self._console(conn, req)
            if resp is not None:
                self._metrics.http_requests["/console", resp.status] += 1
            return resp
        path = req.path if req.path in _PATHS else "other"
        if req.path == "/ingest" and kind == "http":
            resp = self._ingest(conn, req, json.shape)
            if resp is None:
                return None  # answered once the records are in the journal
        elif req.path == "/gelf" and kind == "http":
            resp = self._gelf_http(conn, req)
            if resp is None:
                return None  # answered once the record is in the journal
        elif req.path == "/v1/logs" and kind in ("http", "otlp"):
            resp = self._otlp(conn, req, kind)
            if resp is None:
                return None  # answered once the records are in the journal
        elif kind == "http" and (target := _bulk_target(req.path))[0]:
            path = "/_bulk"
            resp = self._bulk(conn, req, target[1], json)
            if resp is None:
                return None  # answered once the records are in the journal
        elif kind == "http" and req.path == "/" and req.method in ("GET", "HEAD"):
            path = "/"
            resp = Response.json(200, _ES_INFO, list(_ES_HEADERS))
        elif req.method not in ("GET", "HEAD") and req.path in _PATHS:
            resp = Response.json(405, {"error": f"{req.method} is not allowed on {req.path}"},
                                 [("Allow", "GET, HEAD")])  # fmt: skip
        elif req.path == "/metrics":
            resp = ops.metrics_response(self._registry)
        elif req.path == "/healthz":
            resp = ops.health(self._figures())
        elif req.path == "/readyz":
            resp = ops.readiness(self._figures(), stopping=self._stopping())
        else:
            resp = Response.json(404, {"error": f"no such path: {req.path[:200]}"})
        self._metrics.http_requests[path, resp.status] += 1
        return resp

    def _ingest(self, conn: HttpConnection, req: Request, json_format: str) -> Response | None:
        if req.method not in ("POST", "GET"):
            return Response.json(405, {"error": "use POST /ingest"}, [("Allow", "POST, GET")])
        writer = self._writer
        if self._stopping() or not writer.accepting:
            why = "the service is stopping" if self._stopping() else f"{writer.reason}; retry later"
            return Response.json(503, {"error": why}, [("Retry-After", "1")])
        items = parse_ingest(
            req.method,
            req.headers.get("content-type", ""),
            req.body,
            req.query,
            tz=self._tz,
            json_format=json_format,
        )
        self._continue(_Job(conn, items, time.time()))
        return None

    def _otlp(self, conn: HttpConnection, req: Request, kind: str) -> Response | None:
        # Every refusal carries a google.rpc.Status in the request's encoding (otlp.error_response).
        media = otlp.media_type(req.headers.get("content-type", ""))
        if req.method != "POST":
            return _otlp_error(media, 405, "use POST /v1/logs", [("Allow", "POST")])
        writer = self._writer
        if self._stopping() or not writer.accepting:
            why = "the service is stopping" if self._stopping() else f"{writer.reason}; retry later"
            return _otlp_error(media, 503, why, [("Retry-After", "1")])
        if media is None:
            return _otlp_error(media, 415, f"use Content-Type {otlp.PROTOBUF} or {otlp.JSON}")
        try:
            body = compression.decompress(
                req.body, req.headers.get("content-encoding", ""), conn.max_body_bytes
            )
            items = otlp.parse_logs(body, media)
        except ProtocolError as exc:
            self._metrics.frames_rejected[kind, exc.reason] += 1
            return _otlp_error(media, _OTLP_STATUS.get(exc.reason, 400), str(exc))

        def reply(job: _Job) -> Response:
            rejected = sum(job.rejected.values())
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(job.rejected.items()))
            return Response(200, otlp.export_response(media, rejected, why), media)

        job = _Job(conn, items, time.time(), kind, "/v1/logs", reply)
        job.error = lambda status, message: _otlp_error(media, status, message)
        self._continue(job)
        return None

    def _gelf_http(self, conn: HttpConnection, req: Request) -> Response | None:
        # Graylog's GELF HTTP input: one message per POST, 202 with no body once taken.
        if req.method != "POST":
            return Response.json(405, {"error": "use POST /gelf"}, [("Allow", "POST")])
        writer = self._writer
        if self._stopping() or not writer.accepting:
            why = "the service is stopping" if self._stopping() else f"{writer.reason}; retry later"
            return Response.json(503, {"error": why}, [("Retry-After", "1")])
        # graypy sends "gzip,deflate" over a zlib body: the header only has to name codings a
        # GELF sender uses; the body's first bytes say which one it is (wire.compression).
        codings = {c.strip() for c in req.headers.get("content-encoding", "").lower().split(",")}
        if not codings <= compression.GELF_ENCODINGS:
            self._metrics.frames_rejected["http", "unsupported_encoding"] += 1
            why = f"Content-Encoding {req.headers.get('content-encoding', '')[:40]!r} is not supported"
            return Response.json(415, {"error": f"{why}; send gzip, zlib or plain JSON"})
        try:
            body = compression.inflate_sniffed(req.body, conn.max_body_bytes)
        except ProtocolError as exc:
            self._metrics.frames_rejected["http", exc.reason] += 1
            return Response.json(_OTLP_STATUS.get(exc.reason, 400), {"error": str(exc)})
        item: RecordDict | RecordRejected
        try:
            item = self._gelf.parse(body)
        except RecordRejected as exc:
            item = exc

        def reply(job: _Job) -> Response:
            if not job.accepted:
                why = ", ".join(sorted(job.rejected)) or "nothing to store"
                return Response.json(400, {"error": f"not a GELF message: {why}"})
            return Response(202, b"", "text/plain")

        self._continue(_Job(conn, iter([item]), time.time(), "http", "/gelf", reply))
        return None

    def _bulk(
        self, conn: HttpConnection, req: Request, index: str | None, json: JsonFormat
    ) -> Response | None:
        if req.method not in ("POST", "PUT"):
            return Response.json(405, {"error": "use POST /_bulk"}, [("Allow", "POST, PUT"), *_ES_HEADERS])
        writer = self._writer
        if self._stopping() or not writer.accepting:
            why = "the service is stopping" if self._stopping() else f"{writer.reason}; retry later"
            # 429 is what Elasticsearch answers when it cannot take more; every shipper retries it.
            return Response.json(429, {"error": why, "status": 429}, [("Retry-After", "1"), *_ES_HEADERS])
        try:
            body = compression.decompress(
                req.body, req.headers.get("content-encoding", ""), conn.max_body_bytes
            )
            bulk = parse_bulk(body, index, json)
        except ProtocolError as exc:
            self._metrics.frames_rejected["http", exc.reason] += 1
            status = _OTLP_STATUS.get(exc.reason, 400)
            err = {"type": "illegal_argument_exception", "reason": str(exc)}
            return Response.json(status, {"error": err, "status": status}, list(_ES_HEADERS))

        def reply(job: _Job) -> Response:
            took = max(0, int((time.time() - job.received) * 1000))
            return Response(200, bulk_response(bulk, took), "application/json", list(_ES_HEADERS))

        self._continue(_Job(conn, bulk.records(), time.time(), "http", "/_bulk", reply))
        return None

    def _continue(self, job: _Job) -> None:
        # At most INGEST_RECORDS_PER_TURN records of one request per loop turn: a 16 MiB body
        # of tiny lines is two million records, some 18 s of work, and every other client
        # must keep being served meanwhile. Paused like any reader while intake is not open.
        conn, writer, m = job.conn, self._writer, self._metrics
        if conn.closed:
            return  # what was written stays written; nobody is left to answer
        if not writer.accepting:
            writer.park(job, lambda: self._continue(job))
            return
        try:
            job.accepted += writer.write(
                islice(job.records(m), INGEST_RECORDS_PER_TURN), job.kind, conn.peer, job.received
            )
        except ProtocolError as exc:
            m.frames_rejected[job.kind, exc.reason] += 1
            job.done = True
            if not job.accepted:
                self._answer(conn, job.error(400, str(exc)), job.path)
                return
        if not job.done:
            self._reactor.call_soon(lambda: self._continue(job))
            return
        if not job.accepted:
            self._answer(conn, job.reply(job), job.path)
            return

        def durable(ok: bool) -> None:
            if ok:
                resp = job.reply(job)
            else:
                resp = job.error(503, "the journal could not be written")
            self._answer(conn, resp, job.path)

        writer.when_durable(durable)

    def _answer(self, conn: HttpConnection, resp: Response, path: str = "/ingest") -> None:
        self._metrics.http_requests[path, resp.status] += 1
        conn.respond(resp)


def _otlp_error(
    media: str | None, status: int, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    body, content_type = otlp.error_response(media, status, message)
    return Response(status, body, content_type, headers or [])


def _bulk_target(path: str) -> tuple[bool, str | None]:
    # "/_bulk" -> (True, None), "/{index}/_bulk" -> (True, index), anything else -> (False, None).
    if path == "/_bulk":
        return True, None
    if path.endswith("/_bulk") and path.count("/") == 2 and len(path) > 7:
        return True, unquote(path[1:-6])
    return False, None


def _ingest_reply(job: _Job) -> Response:
    # /ingest: 400 when every record was refused, else 200 with the counts.
    status = 400 if job.rejected and not job.accepted else 200
    return Response.json(status, {"accepted": job.accepted, "rejected": job.rejected})


class _Job:
    """One ingest request (``/ingest``, ``/v1/logs``) being written, a turn's worth at a time.

    ``kind`` labels its records and rejections in the metrics; ``reply`` makes the answer
    once they are durable (or at once when none was accepted).
    """

    __slots__ = (
        "_items",
        "accepted",
        "conn",
        "done",
        "error",
        "kind",
        "path",
        "received",
        "rejected",
        "reply",
    )

    def __init__(
        self,
        conn: HttpConnection,
        items: Iterator[RecordDict | RecordRejected],
        received: float,
        kind: str = "http",
        path: str = "/ingest",
        reply: Callable[[_Job], Response] = _ingest_reply,
    ) -> None:
        self.conn = conn
        self._items = items
        self.kind = kind
        self.path = path
        self.reply = reply
        # A refusal's answer: JSON {"error"}; OTLP answers with a google.rpc.Status instead.
        self.error: Callable[[int, str], Response] = lambda status, message: Response.json(
            status, {"error": message}
        )
        self.received = received  # one receive time for the whole request
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.done = False

    def records(self, m: Metrics) -> Iterator[RecordDict]:
        """The good records, counting the bad ones; sets ``done`` once the body is used up."""
        for item in self._items:
            if isinstance(item, RecordRejected):
                self.rejected[item.reason] = self.rejected.get(item.reason, 0) + 1
                m.records_rejected[self.kind, item.reason] += 1
                continue
            yield item
        self.done = True
