"""The HTTP application: ``POST /ingest`` and the operator routes, on ``HttpConnection``.

``/ingest`` (only on ``--listen-http``) parses the body (``wire.http_body``), hands the records
to the journal writer and answers once they are in the journal: the writer's durable
callback sends the ``200``. A request is written ``INGEST_RECORDS_PER_TURN`` records per
loop turn, so a body of millions of tiny lines never stalls the other clients. While the
writer is not accepting (journal full or failing) or the service is stopping, a new request
is answered ``503`` with ``Retry-After`` at once; one already being written waits, parked.
``/metrics``, ``/healthz`` and ``/readyz`` are answered on every HTTP listener from a
``Figures`` snapshot; nothing here reads the server's internals.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from itertools import islice

from prometheus_client import CollectorRegistry

from logsvc import ops
from logsvc.errors import ProtocolError, RecordRejected
from logsvc.ingest.http import App, HttpConnection, Request, Response
from logsvc.journal.writer import JournalWriter
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.record import RecordDict
from logsvc.wire.http_body import parse_ingest

# Records of one /ingest request written per loop turn (~20 ms of work for tiny JSON lines).
INGEST_RECORDS_PER_TURN = 2000
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
        reactor: Reactor,
        tz: datetime.tzinfo = datetime.UTC,
        json_format: str = "auto",
    ) -> None:
        self._reactor = reactor
        self._tz = tz  # --assume-timezone: for times sent without a zone
        self._json_format = json_format  # --json-format: the shape of JSON records
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
        items = parse_ingest(
            req.method,
            req.headers.get("content-type", ""),
            req.body,
            req.query,
            tz=self._tz,
            json_format=self._json_format,
        )
        self._continue(_Job(conn, items, time.time()))
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
                islice(job.records(m), INGEST_RECORDS_PER_TURN), "http", conn.peer, job.received
            )
        except ProtocolError as exc:
            m.frames_rejected["http", exc.reason] += 1
            job.done = True
            if not job.accepted:
                self._answer(conn, Response.json(400, {"error": str(exc)}))
                return
        if not job.done:
            self._reactor.call_soon(lambda: self._continue(job))
            return
        if not job.accepted:
            self._answer(
                conn, Response.json(400 if job.rejected else 200, {"accepted": 0, "rejected": job.rejected})
            )
            return

        def durable(ok: bool) -> None:
            if ok:
                resp = Response.json(200, {"accepted": job.accepted, "rejected": job.rejected})
            else:
                resp = Response.json(503, {"error": "the journal could not be written"})
            self._answer(conn, resp)

        writer.when_durable(durable)

    def _answer(self, conn: HttpConnection, resp: Response) -> None:
        self._metrics.http_requests["/ingest", resp.status] += 1
        conn.respond(resp)


class _Job:
    """One ``/ingest`` request being written, a turn's worth of records at a time."""

    __slots__ = ("_items", "accepted", "conn", "done", "received", "rejected")

    def __init__(
        self, conn: HttpConnection, items: Iterator[RecordDict | RecordRejected], received: float
    ) -> None:
        self.conn = conn
        self._items = items
        self.received = received  # one receive time for the whole request
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.done = False

    def records(self, m: Metrics) -> Iterator[RecordDict]:
        """The good records, counting the bad ones; sets ``done`` once the body is used up."""
        for item in self._items:
            if isinstance(item, RecordRejected):
                self.rejected[item.reason] = self.rejected.get(item.reason, 0) + 1
                m.records_rejected["http", item.reason] += 1
                continue
            yield item
        self.done = True
