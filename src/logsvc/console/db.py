"""The console's database access: a small pool of non-blocking libpq connections on the reactor.

Theory of operation
-------------------
The console runs inside ``serve``'s one thread, next to ingest. It must never block the loop
and never take the sink's connection, so it has connections of its own (``POOL_SIZE``),
driven the way the sink drives its own: ``store.pgproto`` generators on a ``PgDriver`` that
registers the socket ``EPOLLONESHOT`` with the reactor. A statement is sent with
``PQsendQueryParams`` (every value a text parameter, never part of the SQL) and its rows come
back as text, decoded by the caller (the API asks PostgreSQL for JSON, so most rows are
passed on without being decoded at all).

Bounds, so a console user cannot take the service's time or PostgreSQL's:

* at most ``POOL_SIZE`` statements run at once; at most ``QUEUE_MAX`` wait; past that,
  ``submit`` refuses at once (the API answers 503 "busy");
* every session runs with ``statement_timeout`` (``STATEMENT_TIMEOUT_S``), read-only
  transactions, ``jit=off`` and UTC, set in the connection's startup options, so no query,
  however costly (a regex over a day of records), holds PostgreSQL for longer;
* and without parallel workers: one console statement uses at most one core, so on a small
  machine it cannot take every core from ingest (PostgreSQL's default plans a 15-minute
  count on a busy table with two workers, measured);
* and with sequential scans of records only as a last resort (``enable_seqscan=off``):
  every console statement is bounded in time, so the BRIN indexes on ``created`` and
  ``stored`` serve it, but a day's partition that autovacuum has not analyzed yet (the first
  minutes of a day, a fresh schema under load) is costed by default selectivities, and
  PostgreSQL then reads the whole partition to find the last second of it (120 ms instead
  of 10 on 300,000 rows, measured).
* a connection that fails is dropped; connecting again is tried at the next statement, but
  not more than once per ``RECONNECT_S``: meanwhile statements fail at once with the last
  error (503 in the API), so a down database costs the loop nothing.

The pool is only built when the console is asked for something: an operator port nobody
opens in a browser costs PostgreSQL no connection.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import conninfo as _conninfo
from psycopg import pq

from logsvc import pgwait
from logsvc.errors import StoreError
from logsvc.loop import Reactor
from logsvc.store import pgproto

log = logging.getLogger("logsvc.console")

POOL_SIZE = 2
QUEUE_MAX = 32
STATEMENT_TIMEOUT_S = 5.0
RECONNECT_S = 1.0
# The session settings of every console connection.
SESSION_OPTIONS = (
    f"-c statement_timeout={int(STATEMENT_TIMEOUT_S * 1000)} -c default_transaction_read_only=on "
    "-c TimeZone=UTC -c jit=off -c max_parallel_workers_per_gather=0 -c enable_seqscan=off"
)

Row = tuple[bytes | None, ...]
OnRows = Callable[[list[Row]], None]
OnError = Callable[[StoreError], None]


def run_params(pgconn: pq.abc.PGconn, sql: str, params: list[str | None] | None) -> pgproto.PgGen[list[Row]]:
    """Run one statement with text parameters; return its rows as text (bytes) values.

    ``params=None``: ``sql`` is sent as a simple query, which may hold several statements
    (one implicit transaction; only for SQL this module's callers wrote, with no user
    values in it); the rows are those of every statement, in order.

    Raises StoreError (a ``PgError`` when PostgreSQL refused it). The steps are
    ``store.pgproto``'s own (flush, then fetch with ``is_busy`` checked first).
    """
    if params is None:
        pgconn.send_query(sql.encode())
    else:
        pgconn.send_query_params(sql.encode(), [None if p is None else p.encode() for p in params])
    yield from pgproto._flush(pgconn)
    results = yield from pgproto._results_until_copy_or_end(pgconn)
    pgproto._check(pgconn, results)
    rows: list[Row] = []
    for res in results:
        nf = res.nfields
        for i in range(res.ntuples):
            rows.append(tuple(res.get_value(i, j) for j in range(nf)))
    return rows


@dataclass(slots=True)
class _Job:
    sql: str
    params: list[str | None] | None
    on_rows: OnRows
    on_error: OnError


class _Slot:
    """One connection of the pool and its driver."""

    def __init__(self, reactor: Reactor, timeout: float) -> None:
        self.pgconn: pq.abc.PGconn | None = None
        self.connecting = False
        self.job: _Job | None = None
        self.driver = pgwait.PgDriver(
            reactor,
            timeout=timeout or None,
            idle=lambda: pgproto.watch_idle(self.pgconn) if self.pgconn is not None else None,
            on_idle_error=lambda exc: self.drop(),
        )

    @property
    def free(self) -> bool:
        return self.job is None and not self.connecting

    def drop(self) -> None:
        self.driver.forget()
        if self.pgconn is not None:
            self.pgconn.finish()
            self.pgconn = None
        self.connecting = False


class ConsoleDb:
    """A bounded pool of console connections; statements are queued and run on the reactor.

    Args:
        reactor: the loop the connections are driven on.
        conninfo: the libpq DSN (the service's own, or ``logsvc console --dsn``).
        pg_timeout: seconds PostgreSQL may stay silent in a step (``pgwait``), 0 for none.
    """

    def __init__(
        self,
        reactor: Reactor,
        conninfo: str,
        *,
        pg_timeout: float = 10.0,
        pool_size: int = POOL_SIZE,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        self._reactor = reactor
        self._conninfo = _with_options(pgproto.conninfo_with_timeouts(conninfo, pg_timeout))
        self._slots = [_Slot(reactor, pg_timeout) for _ in range(pool_size)]
        self._queue: deque[_Job] = deque()
        self._queue_max = queue_max
        self._down_until = 0.0
        self.last_error: str | None = None
        self.statements = 0  # for tests and figures
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, sql: str, params: list[str | None] | None, on_rows: OnRows, on_error: OnError) -> bool:
        """Queue a statement; False (and nothing called) when the queue is full or closed.

        ``params=None`` sends ``sql`` as a simple query (see ``run_params``).

        While the database is known to be down (a connect failed less than ``RECONNECT_S``
        ago), ``on_error`` is called at once with that error.
        """
        if self._closed or len(self._queue) >= self._queue_max:
            return False
        if time.monotonic() < self._down_until and not any(s.pgconn for s in self._slots):
            on_error(StoreError(self.last_error or "PostgreSQL is unreachable", reason="connection"))
            return True
        self._queue.append(_Job(sql, params, on_rows, on_error))
        self._pump()
        return True

    def close(self) -> None:
        self._closed = True
        for slot in self._slots:
            slot.drop()
        queue, self._queue = self._queue, deque()
        for job in queue:
            job.on_error(StoreError("the console is closing", reason="connection"))

    # -- running ---------------------------------------------------------------------------

    def _pump(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if not slot.free:
                continue
            if slot.pgconn is None:
                # One connect at a time unless statements pile up, and none for RECONNECT_S
                # after one failed (the healthy connections, if any, go on serving the queue).
                if time.monotonic() >= self._down_until and (
                    not any(s.connecting for s in self._slots) or len(self._queue) > 1
                ):
                    self._connect(slot)
                continue
            self._run(slot, self._queue.popleft())

    def _connect(self, slot: _Slot) -> None:
        slot.connecting = True

        def done(pgconn: pq.abc.PGconn) -> None:
            slot.connecting = False
            slot.pgconn = pgconn
            self.last_error = None
            self._pump()

        def failed(exc: BaseException) -> None:
            slot.drop()
            self._down(exc)

        slot.driver.start(pgproto.connect(self._conninfo), done, failed)

    def _down(self, exc: BaseException) -> None:
        # A connect failed: every waiting statement fails now (503), and the next ones fail
        # at once until RECONNECT_S has passed.
        self.last_error = str(exc)
        self._down_until = time.monotonic() + RECONNECT_S
        if any(s.pgconn is not None for s in self._slots):
            self._pump()
            return
        log.warning("Console: cannot reach PostgreSQL: %s", exc)
        queue, self._queue = self._queue, deque()
        err = exc if isinstance(exc, StoreError) else StoreError(str(exc), reason="connection")
        for job in queue:
            job.on_error(err)

    def _run(self, slot: _Slot, job: _Job) -> None:
        assert slot.pgconn is not None
        slot.job = job
        self.statements += 1

        def done(rows: list[Row]) -> None:
            slot.job = None
            self._reactor.call_soon(self._pump)
            job.on_rows(rows)

        def failed(exc: BaseException) -> None:
            slot.job = None
            err = exc if isinstance(exc, StoreError) else StoreError(str(exc), reason="connection")
            if err.reason != "rejected":
                slot.drop()  # broken or silent: a new connection for the next statement
                self.last_error = str(err)
            self._reactor.call_soon(self._pump)
            job.on_error(err)

        slot.driver.start(run_params(slot.pgconn, job.sql, job.params), done, failed)


def _with_options(conninfo: str) -> str:
    try:
        given = _conninfo.conninfo_to_dict(conninfo)
    except Exception:
        return conninfo  # libpq will say what is wrong with it, at connect
    options = f"{given.get('options') or ''} {SESSION_OPTIONS}".strip()
    extra: dict[str, Any] = {"options": options}
    if "application_name" not in given:
        extra["application_name"] = "logsvc-console"
    return _conninfo.make_conninfo(conninfo, **extra)
