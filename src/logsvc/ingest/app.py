"""The HTTP application: ``POST /ingest`` and the operator routes, on ``HttpConnection``.

``/ingest`` (only on ``--listen-http``) parses the body (``wire.http_body``), hands the records
to the journal writer and answers once they are in the journal: the writer's durable
callback sends the ``200``. While the writer is not accepting (journal full or failing) or
the service is stopping, it answers ``503`` with ``Retry-After`` at once. ``/metrics``,
``/healthz`` and ``/readyz`` are answered on every HTTP listener from a ``Figures``
snapshot; nothing here reads the server's internals.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry

from logsvc import ops
from logsvc.errors import ProtocolError, RecordRejected
from logsvc.ingest.http import App, HttpConnection, Request, Response
from logsvc.journal.writer import JournalWriter
from logsvc.metrics import Metrics
from logsvc.record import RecordDict
from logsvc.wire.http_body import parse_ingest

_PATHS = frozenset({"/ingest", "/metrics", "/healthz", "/readyz"})


class HttpApp:
    """Routes requests; ``for_listener(kind)`` is the ``App`` of one listener kind."""

    def __init__(
        self,
        writer: JournalWriter,
        metrics: Metrics,
        registry: CollectorRegistry,
        figures: Callable[[], ops.Figures],
        stopping: Callable[[], bool],
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._registry = registry
        self._figures = figures
        self._stopping = stopping

    def for_listener(self, kind: str) -> App:
        return lambda conn, req: self._route(kind, conn, req)

    def _route(self, kind: str, conn: HttpConnection, req: Request) -> Response | None:
        path = req.path if req.path in _PATHS else "other"
        if req.path == "/ingest" and kind == "http":
            resp = self._ingest(conn, req)
            if resp is None:
                return None  # answered once the records are in the journal
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

    def _ingest(self, conn: HttpConnection, req: Request) -> Response | None:
        if req.method not in ("POST", "GET"):
            return Response.json(405, {"error": "use POST /ingest"}, [("Allow", "POST, GET")])
        writer = self._writer
        if self._stopping() or not writer.accepting:
            why = "the service is stopping" if self._stopping() else f"{writer.reason}; retry later"
            return Response.json(503, {"error": why}, [("Retry-After", "1")])
        m = self._metrics
        rejected: dict[str, int] = {}

        def records() -> Iterator[RecordDict]:
            for item in parse_ingest(req.method, req.headers.get("content-type", ""), req.body, req.query):
                if isinstance(item, RecordRejected):
                    rejected[item.reason] = rejected.get(item.reason, 0) + 1
                    m.records_rejected["http", item.reason] += 1
                    continue
                yield item

        try:
            accepted = writer.write(records(), "http", conn.peer, time.time())
        except ProtocolError as exc:
            m.frames_rejected["http", exc.reason] += 1
            return Response.json(400, {"error": str(exc)})
        if not accepted:
            return Response.json(400 if rejected else 200, {"accepted": 0, "rejected": rejected})

        def durable(ok: bool) -> None:
            if ok:
                resp = Response.json(200, {"accepted": accepted, "rejected": rejected})
            else:
                resp = Response.json(503, {"error": "the journal could not be written"})
            m.http_requests["/ingest", resp.status] += 1
            conn.respond(resp)

        writer.when_durable(durable)
        return None
