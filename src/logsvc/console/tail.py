"""The console's live tail: ``GET /api/tail?q=`` as server-sent events.

Theory of operation
-------------------
A subscriber is an HTTP connection turned into an event stream (``HttpConnection.
start_stream``) plus a cursor: the newest ``stored`` time it has been sent. One timer
(every ``POLL_S`` while anyone subscribes) asks, for each subscriber whose previous look has
finished, for the rows stored after its cursor that match its query, the newest
``MAX_PER_POLL`` of them and how many there were::

    SELECT <record json>, stored, count(*) OVER () FROM records
    WHERE stored > $cursor AND <query> ORDER BY stored DESC, seq DESC LIMIT $n

They are sent oldest first as ``event: records``; when there were more (over
``MAX_PER_POLL / POLL_S`` records a second), ``event: skipped`` says how many were left out.
Polling rather than LISTEN: it works the same against a read replica (``logsvc console``),
where notifications are not delivered, and ``stored`` has a BRIN index, so a look at the
last half second is a few pages. ``stored`` is the start time of the batch's transaction;
one service's batches commit in that order, so ``stored > cursor`` misses nothing. With
several services shipping into one schema, a batch that started before and committed after
another's may be missed by the tail (never by a search).

While a subscriber is sampling, it is looked for every ``2 * POLL_S`` instead: each look reads
every new row (to count them), and at that rate the reading is what would compete with
ingest for the machine; what is shown is still the newest at each look.

Bounds: ``MAX_CLIENTS`` subscribers (more get 503); a subscriber's unsent bytes over
``MAX_BUFFER_BYTES`` (a browser that stopped reading) make its records counted as skipped
instead of queued; a ``: keepalive`` comment every ``KEEPALIVE_S`` keeps proxies from
closing an idle stream, and a write to a client that went away closes it.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass

import orjson

from logsvc.console import query_lang as ql
from logsvc.console.api import LIST_JSON, SECURITY_HEADERS, ApiError, db_error_response, newest_pages
from logsvc.console.brin import BrinSummarizer
from logsvc.console.db import ConsoleDb, Row
from logsvc.errors import StoreError
from logsvc.ingest.http import HttpConnection, Request
from logsvc.loop import Reactor, Timer

POLL_S = 0.5
MAX_PER_POLL = 100
MAX_CLIENTS = 8
MAX_BUFFER_BYTES = 256 << 10
KEEPALIVE_S = 15.0


@dataclass(slots=True)
class _Subscriber:
    conn: HttpConnection
    where: str
    params: list[str | None]
    cursor: str  # the newest stored time sent, as PostgreSQL printed it
    last_sent: float
    busy: bool = False
    skipped: int = 0
    due: float = 0.0  # monotonic time of the next look
    sampling: bool = False  # the last look found more rows than it sent


class Tail:
    """Live-tail subscribers of one console, polled together."""

    def __init__(
        self,
        reactor: Reactor,
        db: ConsoleDb,
        schema: str,
        *,
        poll_s: float = POLL_S,
        max_per_poll: int = MAX_PER_POLL,
        max_clients: int = MAX_CLIENTS,
        keepalive_s: float = KEEPALIVE_S,
        summarizer: BrinSummarizer | None = None,
    ) -> None:
        self._reactor = reactor
        self._db = db
        self._schema = schema
        self._poll_s = poll_s
        self._max = max_per_poll
        self._max_clients = max_clients
        self._keepalive_s = keepalive_s
        self._subs: list[_Subscriber] = []
        self._starting = 0
        self._timer: Timer | None = None
        self._summarizer = summarizer

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self, conn: HttpConnection, req: Request, q: str) -> ApiError | None:
        """Start the stream for ``conn``; an ``ApiError`` to answer instead when it cannot."""
        self._subs = [s for s in self._subs if not s.conn.closed]
        if len(self._subs) + self._starting >= self._max_clients:
            return ApiError(503, f"too many live tails open (at most {self._max_clients}); close one")
        ps = ql.Params()
        ps.add(None, "timestamptz")  # $1: the cursor, filled at each look
        query = ql.compile_query(q, ps)  # checked by the caller already
        self._starting += 1

        def started(rows: list[Row]) -> None:
            self._starting -= 1
            now = rows[0][0] if rows and rows[0][0] is not None else None
            if now is None or conn.closed:
                return
            headers = [("Cache-Control", "no-store"), ("X-Accel-Buffering", "no"), *SECURITY_HEADERS]
            conn.start_stream(200, "text/event-stream; charset=utf-8", headers)
            conn.send_stream(b"retry: 2000\n: live tail started\n\n")
            self._subs.append(_Subscriber(conn, query.sql, ps.values, now.decode(), time.monotonic()))
            if self._timer is None:
                self._timer = self._reactor.call_later(self._poll_s, self._tick)

        def failed(exc: StoreError) -> None:
            self._starting -= 1
            conn.respond(db_error_response(exc, query.regex_positions))

        # The regexes are compiled once here, so a bad one is a 400 with its position now
        # rather than a stream whose every look fails.
        checks = "".join(f", '' ~* ${i}::text" for i in range(1, len(query.regex_patterns) + 1))
        if not self._db.submit(f"SELECT now(){checks}", list(query.regex_patterns), started, failed):
            self._starting -= 1
            return ApiError(503, "the console is busy (too many queries waiting); retry in a moment")
        return None

    def _sampling_sql(self, where: str) -> str:
        """A look while sampling: every new row counted once, the newest shown found cheaply.

        The rows shown are the newest of today's partition's last pages (``api.newest_pages``)
        instead of a sort of every new row; one aggregate over the new rows gives their count and the newest
        ``stored`` among them, which becomes the cursor, so a row not shown is counted as
        skipped exactly once, wherever it lies. The first row of the answer carries the count
        and the newest time even when nothing is shown (its record column is then NULL).
        """
        s = self._schema
        part, tail = newest_pages(s, _dt.datetime.now(_dt.UTC))
        return (
            f"WITH a AS (SELECT count(*) AS n, max(stored) AS newest FROM {s}.records WHERE {where}), "
            f"k AS MATERIALIZED (SELECT tableoid AS t, ctid AS c FROM {part} WHERE {tail} AND {where} "
            f"ORDER BY stored DESC, seq DESC LIMIT {self._max}), "
            f"r AS (SELECT {LIST_JSON} AS j, stored, seq FROM {s}.records WHERE ctid = ANY (ARRAY(SELECT c "
            f"FROM k)) AND (tableoid, ctid) IN (SELECT t, c FROM k)) "
            f"SELECT r.j, r.stored, a.n, a.newest FROM a LEFT JOIN r ON true "
            f"WHERE a.n > 0 ORDER BY r.stored DESC, r.seq DESC"
        )

    def close(self) -> None:
        self._reactor.cancel(self._timer)
        self._timer = None
        for sub in self._subs:
            sub.conn.close("shutdown")
        self._subs.clear()

    # -- polling ---------------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        self._subs = [s for s in self._subs if not s.conn.closed]
        now = time.monotonic()
        if self._summarizer is not None and any(not s.busy and s.due <= now for s in self._subs):
            self._summarizer.poke()  # queued before the looks, so they find the new rows by the index
        for sub in self._subs:
            if now - sub.last_sent >= self._keepalive_s and sub.conn.buffered_bytes < MAX_BUFFER_BYTES:
                sub.conn.send_stream(b": keepalive\n\n")
                sub.last_sent = now
            if not sub.busy and sub.due <= now:
                self._look(sub)
        if self._subs:
            self._timer = self._reactor.call_later(self._poll_s / 2, self._tick)

    def _look(self, sub: _Subscriber) -> None:
        params = [sub.cursor, *sub.params[1:]]
        # The newest rows are found by their keys alone (a sort of narrow rows), then fetched
        # by their tuple ids and rendered as JSON: a sort carrying every new row whole cost
        # half as much again. New rows are counted only when more came than are sent (the
        # count's scalar subquery runs only in that branch of the CASE).
        s, where = self._schema, f"stored > $1::timestamptz AND {sub.where}"
        sampling = sub.sampling
        if sampling:
            sql = self._sampling_sql(where)
        else:
            sql = (
                f"WITH k AS MATERIALIZED (SELECT tableoid AS t, ctid AS c FROM {s}.records WHERE {where} "
                f"ORDER BY stored DESC, seq DESC LIMIT {self._max}) "
                f"SELECT {LIST_JSON}, stored, CASE WHEN (SELECT count(*) FROM k) < {self._max} "
                f"THEN (SELECT count(*) FROM k) ELSE (SELECT count(*) FROM {s}.records WHERE {where}) END "
                f"FROM {s}.records WHERE ctid = ANY (ARRAY(SELECT c FROM k)) AND (tableoid, ctid) IN "
                f"(SELECT t, c FROM k) ORDER BY stored DESC, seq DESC"
            )
        sub.due = time.monotonic() + self._poll_s

        def got(rows: list[Row]) -> None:
            sub.busy = False
            if not rows or sub.conn.closed:
                return
            newest = rows[0][3] if sampling else rows[0][1]
            assert newest is not None
            sub.cursor = newest.decode()
            total = int(rows[0][2] or 0)
            shown = sum(1 for r in rows if r[0] is not None)
            sub.skipped += total - shown
            sub.sampling = total > self._max
            rows = [r for r in rows if r[0] is not None]
            if total > len(rows):
                # Sampling already: look half as often. What is shown is still the newest at
                # each look; the look costs a scan of every new row, which at this rate is what
                # would take CPU from ingest.
                sub.due += self._poll_s
            if sub.conn.buffered_bytes >= MAX_BUFFER_BYTES:
                sub.skipped += len(rows)  # the browser is not reading: do not pile up more
                return
            out = b""
            if sub.skipped:
                out += b"event: skipped\ndata: " + orjson.dumps({"count": sub.skipped}) + b"\n\n"
                sub.skipped = 0
            if rows:
                records = b",".join(r[0] for r in reversed(rows) if r[0] is not None)
                out += b"event: records\ndata: [" + records + b"]\n\n"
            if not out:
                return
            sub.conn.send_stream(out)
            sub.last_sent = time.monotonic()

        def failed(exc: StoreError) -> None:
            sub.busy = False  # tried again at the next tick
            sub.sampling = False  # (the exact look, should today's partition be missing)

        sub.busy = True
        if not self._db.submit(sql, params, got, failed):
            sub.busy = False
