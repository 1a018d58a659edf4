"""Ship the journal to PostgreSQL from the reactor: batches, commits, reconnects.

Theory of operation
-------------------
The sink owns one non-blocking libpq connection and runs at most one protocol generator on
it at a time (``PgDriver``). Its states::

    DOWN --(backoff timer)--> CONNECTING --(schema ok, position read)--> IDLE
    IDLE --(batch due)--> SHIPPING --(committed)--> IDLE
    any  --(connection error)--> DOWN      (back-off doubles from 0.1 s up to 10 s)
    SHIPPING --(statement rejected)--> DOWN (reconnects and re-reads the position)

``shipped_seq`` is never trusted from memory across a failure: every (re)connect reads it
from ``shipped`` in PostgreSQL, the same row each batch moves in its own transaction. So if
the connection drops after PostgreSQL committed but before we heard it, the next batch starts
after what PostgreSQL holds: nothing twice, nothing skipped.

A batch is due when the unshipped records reach ``max_records``, or the oldest of them has
waited ``max_age`` seconds (a timer, so an idle buffer still reaches the database: the
seed's SIGALRM flush, done with the poll timeout), or the service is draining, or, right
after a commit, at least ``BACKLOG_RECORDS`` piled up while that batch was in flight (group
commit: under load, batches grow to what arrives during one COPY and PostgreSQL never waits
for a timer). A batch is
whole journal blocks read back from the segment files (the page cache makes that cheap) and
sent to COPY as they are.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable
from typing import Any

from psycopg import pq

from logsvc import loop as _loop
from logsvc.errors import StoreError
from logsvc.journal import Journal
from logsvc.metrics import Metrics
from logsvc.store import pgproto, schema

log = logging.getLogger("logsvc.store")

RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 10.0
# After a commit, a backlog at least this large is shipped at once instead of waiting for
# its age (the seed's own block size; smaller backlogs wait, so a quiet service still
# batches by --batch-max-age).
BACKLOG_RECORDS = 1000
# Partitions are created days ahead; checking hourly leaves a wide margin.
MAINTENANCE_INTERVAL_S = 3600.0

DOWN, CONNECTING, IDLE, SHIPPING, CLOSED = "down", "connecting", "idle", "shipping", "closed"


class PgDriver:
    """Drive one ``pgproto`` generator at a time on the reactor.

    The socket is registered ``EPOLLONESHOT`` and re-armed at every wait: level semantics on
    re-arm, so a readiness that came before the re-arm is not lost (libpq is not written for
    edge-triggered waiting).
    """

    def __init__(self, reactor: _loop.Reactor) -> None:
        self._reactor = reactor
        self._fd = -1
        self._gen: pgproto.PgGen[Any] | None = None
        self._on_done: Callable[[Any], None] | None = None
        self._on_error: Callable[[BaseException], None] | None = None

    @property
    def busy(self) -> bool:
        return self._gen is not None

    def start(
        self,
        gen: pgproto.PgGen[Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        assert self._gen is None, "one protocol step at a time"
        self._gen, self._on_done, self._on_error = gen, on_done, on_error
        self._advance(None)

    def forget(self) -> None:
        """Drop the socket from epoll; call before the connection is closed."""
        if self._fd >= 0:
            self._reactor.unregister(self._fd)
            self._fd = -1
        if self._gen is not None:
            self._gen.close()
            self._gen = None

    def _advance(self, ready: int | None) -> None:
        gen = self._gen
        assert gen is not None
        try:
            fd, wait = next(gen) if ready is None else gen.send(ready)
        except StopIteration as stop:
            self._finish(self._on_done, stop.value)
            return
        except Exception as exc:
            self._finish(self._on_error, exc)
            return
        events = _loop.EPOLLONESHOT
        if wait & pgproto.Wait.R:
            events |= _loop.EPOLLIN
        if wait & pgproto.Wait.W:
            events |= _loop.EPOLLOUT
        if fd != self._fd:
            if self._fd >= 0:
                self._reactor.unregister(self._fd)
            self._fd = fd
            self._reactor.register(fd, events, self._handle)
        else:
            self._reactor.modify(fd, events)

    def _handle(self, events: int) -> None:
        if self._gen is None:
            return
        ready = 0
        if events & (_loop.EPOLLIN | _loop.EPOLLERR | _loop.EPOLLHUP):
            ready |= pgproto.READY_R
        if events & (_loop.EPOLLOUT | _loop.EPOLLERR | _loop.EPOLLHUP):
            ready |= pgproto.READY_W
        self._advance(ready)

    def _finish(self, callback: Callable[[Any], None] | None, value: Any) -> None:
        self._gen = None
        assert callback is not None
        callback(value)


class PgSink:
    """Batch the journal into PostgreSQL, exactly once, from the reactor."""

    def __init__(
        self,
        reactor: _loop.Reactor,
        journal: Journal,
        metrics: Metrics,
        *,
        conninfo: str,
        schema_name: str,
        max_records: int,
        max_bytes: int,
        max_age: float,
        on_released: Callable[[], None] | None = None,
        retention_days: int | None = None,
        extra_index_keys: tuple[str, ...] = (),
    ) -> None:
        self._reactor = reactor
        self._journal = journal
        self._metrics = metrics
        self._conninfo = conninfo
        self._schema = schema.check_identifier(schema_name)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._on_released = on_released
        self.retention_days = retention_days
        self._extra_index_keys = tuple(schema.check_extra_key(k) for k in extra_index_keys)
        self._driver = PgDriver(reactor)
        self._pgconn: pq.abc.PGconn | None = None
        self.state = DOWN
        self.shipped_seq: int | None = None  # known only while connected
        # The last position PostgreSQL confirmed; a lower bound while disconnected. Until
        # the first connect, the journal's oldest record is taken as unshipped.
        self.confirmed_seq = 0
        self._oldest: float | None = None  # monotonic time the oldest unshipped record was appended
        self._age_timer: _loop.Timer | None = None
        self._retry_timer: _loop.Timer | None = None
        self._backoff = RECONNECT_MIN_S
        self._maintenance_due = False
        self._maintenance_timer: _loop.Timer | None = None
        self._draining = False
        self._on_drained: Callable[[], None] | None = None
        self.last_error = ""

    # -- public ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting; call after the journal is open."""
        self.confirmed_seq = self._journal.first_seq - 1
        self._connect()

    @property
    def unshipped(self) -> int:
        """Records in the journal not yet committed (an upper bound while disconnected)."""
        return max(0, self._journal.next_seq - 1 - self.confirmed_seq)

    def notify_appended(self) -> None:
        """The server appended a block to the journal."""
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._maybe_ship()

    def drain(self, on_drained: Callable[[], None]) -> None:
        """Ship everything now, ignoring ``max_age``; call ``on_drained`` when nothing is left."""
        self._draining = True
        self._on_drained = on_drained
        self._maybe_ship()

    def close(self) -> None:
        self.state = CLOSED
        for t in (self._age_timer, self._retry_timer, self._maintenance_timer):
            self._reactor.cancel(t)
        self._drop_connection()

    # -- connecting ------------------------------------------------------------------------

    def _connect(self) -> None:
        self.state = CONNECTING
        self._driver.start(self._connect_steps(), self._on_connected, self._on_failure)

    def _connect_steps(self) -> pgproto.PgGen[int]:
        pgconn = yield from pgproto.connect(self._conninfo)
        self._pgconn = pgconn
        yield from pgproto.execute(pgconn, schema.create_sql(self._schema))
        if self._extra_index_keys:
            yield from pgproto.execute(pgconn, schema.extra_index_sql(self._schema, self._extra_index_keys))
        yield from pgproto.execute(pgconn, self._maintenance_sql())
        res = yield from pgproto.execute(pgconn, schema.shipped_sql(self._schema, self._journal.journal_id))
        value = res[0].get_value(0, 0) if res and res[0].ntuples else None
        return int(value) if value is not None else 0

    def _on_connected(self, shipped_seq: int) -> None:
        if self.state == CLOSED:
            return
        if shipped_seq >= self._journal.next_seq:
            # PostgreSQL holds records the journal no longer has (a journal tail lost in a
            # machine crash with fsync=never/interval after it was shipped). New records must
            # not reuse those numbers, or they would be skipped as already shipped.
            log.warning(
                "PostgreSQL holds journal %s up to seq %d but the journal ends at %d; "
                "continuing numbering after %d.",
                self._journal.journal_id,
                shipped_seq,
                self._journal.next_seq - 1,
                shipped_seq,
            )
            self._journal.skip_to(shipped_seq + 1)
        self.shipped_seq = shipped_seq
        self.state = IDLE
        self._backoff = RECONNECT_MIN_S
        self._metrics.pg_connected = True
        log.info(
            "Connected to PostgreSQL: schema=%s shipped_seq=%d unshipped=%d.",
            self._schema,
            shipped_seq,
            self.unshipped,
        )
        self._release()
        if self._maintenance_timer is None:
            self._maintenance_timer = self._reactor.call_later(MAINTENANCE_INTERVAL_S, self._maintenance_tick)
        if self.unshipped and self._oldest is None:
            self._oldest = time.monotonic() - self.max_age  # backlog from before: due now
        self._maybe_ship()

    def _on_failure(self, exc: BaseException) -> None:
        reason = exc.reason if isinstance(exc, StoreError) else "internal"
        was = self.state
        self._drop_connection()
        if self.state == CLOSED:
            return
        self.state = DOWN
        msg = str(exc).replace("\n", " ")
        if was == SHIPPING:
            self._metrics.batches_failed[reason] += 1
        if msg != self.last_error or was == IDLE:
            log.error("PostgreSQL %s failed (%s): %s. Retrying in %.1f s.", was, reason, msg, self._backoff)
        self.last_error = msg
        if not isinstance(exc, StoreError):
            log.error("Unexpected error in the store.", exc_info=exc)
        self._retry_timer = self._reactor.call_later(self._backoff, self._connect)
        self._backoff = min(self._backoff * 2, RECONNECT_MAX_S)

    def _drop_connection(self) -> None:
        self._driver.forget()
        if self._pgconn is not None:
            self._pgconn.finish()
            self._pgconn = None
        self.shipped_seq = None
        self._metrics.pg_connected = False

    # -- shipping --------------------------------------------------------------------------

    def _maybe_ship(self) -> None:
        if self.state != IDLE:
            return
        if self._maintenance_due:
            self._maintenance_due = False
            self._run_idle_step(pgproto.execute(self._pgconn_ok(), self._maintenance_sql()))
            return
        pending = self.unshipped
        if pending == 0:
            self._oldest = None
            self._reactor.cancel(self._age_timer)
            self._age_timer = None
            if self._draining and self._on_drained is not None:
                callback, self._on_drained = self._on_drained, None
                callback()
            return
        now = time.monotonic()
        oldest = self._oldest if self._oldest is not None else now
        if pending >= self.max_records or self._draining or now - oldest >= self.max_age:
            self._ship()
        elif self._age_timer is None or not self._age_timer.active:
            self._age_timer = self._reactor.call_at(oldest + self.max_age, self._maybe_ship)

    def _ship(self) -> None:
        assert self.shipped_seq is not None
        blocks = self._journal.read(self.shipped_seq + 1, self.max_records, self.max_bytes)
        if blocks:
            last = blocks[-1]
            to_seq = last.first_seq + last.count - 1
        else:
            # Everything left is a gap: records lost to journal corruption, reported at open.
            # Commit the position past them (an empty COPY), so they are not waited for.
            to_seq = self._journal.next_seq - 1
        count = sum(b.count for b in blocks)
        if to_seq >= self._journal.next_seq - 1:
            self._oldest = None  # this batch takes everything there is
        sql = schema.batch_sql(self._schema, self._journal.journal_id, self.shipped_seq, to_seq)
        self.state = SHIPPING
        started = time.monotonic()
        self._driver.start(
            pgproto.copy_in(self._pgconn_ok(), sql, [b.payload for b in blocks]),
            lambda _: self._on_committed(to_seq, count, started),
            self._on_failure,
        )

    def _on_committed(self, to_seq: int, count: int, started: float) -> None:
        m = self._metrics
        m.records_stored += count
        m.batches_committed += 1
        m.batch_seconds_total += time.monotonic() - started
        self.shipped_seq = to_seq
        self.state = IDLE
        self.last_error = ""
        self._release()
        if self.unshipped >= BACKLOG_RECORDS:
            # Group commit: what piled up while this batch was in flight goes out now. Waiting
            # for its age would leave PostgreSQL idle exactly when the service is busiest.
            self._oldest = time.monotonic() - self.max_age
        self._maybe_ship()

    def _release(self) -> None:
        assert self.shipped_seq is not None
        self.confirmed_seq = self.shipped_seq
        self._journal.release(self.shipped_seq)
        if self._on_released is not None:
            self._on_released()

    # -- maintenance -----------------------------------------------------------------------

    def _maintenance_sql(self) -> str:
        # Partitions ahead of time; with --retention, whole old partitions dropped.
        today = _utc_today()
        sql = schema.partitions_sql(self._schema, today)
        if self.retention_days is not None:
            sql += schema.retention_sql(self._schema, self.retention_days, today)
        return sql

    def _maintenance_tick(self) -> None:
        self._maintenance_due = True
        self._maintenance_timer = self._reactor.call_later(MAINTENANCE_INTERVAL_S, self._maintenance_tick)
        self._maybe_ship()

    def _run_idle_step(self, gen: pgproto.PgGen[Any]) -> None:
        self.state = SHIPPING

        def done(_: Any) -> None:
            self.state = IDLE
            self._maybe_ship()

        self._driver.start(gen, done, self._on_failure)

    def _pgconn_ok(self) -> pq.abc.PGconn:
        assert self._pgconn is not None
        return self._pgconn


def _utc_today() -> _dt.date:
    return _dt.datetime.now(_dt.UTC).date()
