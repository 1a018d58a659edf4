"""Ship the journal to PostgreSQL from the reactor: batches, commits, reconnects.

Theory of operation
-------------------
The sink owns one non-blocking libpq connection and runs at most one protocol generator on
it at a time (``pgwait.PgDriver``). Its states::

    DOWN --(backoff timer)--> CONNECTING --(schema ok, position read)--> IDLE
    IDLE --(batch due)--> SHIPPING --(committed)--> IDLE
    any  --(connection error)--> DOWN      (back-off doubles from 0.1 s up to 10 s)
    SHIPPING --(refused: the server's state)--> DOWN (reconnects and re-reads the position)
    SHIPPING --(refused: the rows' content)--> ISOLATING --(every row settled)--> IDLE
    ISOLATING --(connection error, or refused: the server's state)--> DOWN

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

Refused batches
---------------
PostgreSQL may refuse a batch while the connection stays up (``pgproto.PgError``, reason
``"rejected"``). Retrying the same batch forever would stall the service behind one bad row;
dropping it would lose every good record with it. The SQLSTATE tells which case it is
(``classify``; the table is ``_SERVER_STATES`` and ``_ROW_CLASSES``):

* **The rows' content** (class 22 data exception, 23 integrity constraint violation, 54
  program limit exceeded such as a btree entry over 2704 bytes from ``--index-extra``, and
  P0 from PL/pgSQL: a trigger's ``RAISE`` with no SQLSTATE of its own, P0001, or an
  ``ASSERT``, P0004). The same rows would be refused again on every retry, whatever the
  operator does to the server. P0 counts as content because a trigger that raises
  without choosing an SQLSTATE is, in practice, a validation rule about the row; a trigger
  that means "not now" should say so with a server-state SQLSTATE (``disk_full``, ...), and
  is then retried like the real thing. Errors naming our own bookkeeping tables
  (``shipped``, ``meta``) are never about the rows (a unique violation on ``shipped`` is two
  services racing for one journal) and count as a conflict.
  -> the batch is **isolated** (state ISOLATING): its rows are re-shipped in pieces, left to
  right, each piece its own ``advance_shipped(from, to)`` + COPY transaction
  (``schema.batch_sql``). A refused piece is split: at the row PostgreSQL named in the
  error's COPY context if it named one (a hint, verified by shipping that row alone), by
  halves otherwise. A single row refused for its content is appended to the dead-letter file
  (``store.deadletter``, fdatasync'd) *before* an empty COPY over just its seq commits the
  position past it. Every piece is smaller than the one it came from, so isolation ends; it
  costs about three transactions per refused row with the hint and ``2 log2(batch)``
  without.
* **The server's state** (class 53 insufficient resources, 53100 being a full disk; 42501
  insufficient privilege and the rest of class 42, a schema changed under us; 25006 read
  only; 55 a lock not granted; 57 operator intervention, 57014 a statement_timeout or a
  cancel; 58 system error; 40 serialization failure or deadlock, including
  ``advance_shipped``'s "another logsvc ships this journal"; XX internal error; anything
  unclassified) -> the batch stays in the journal and is retried with the usual back-off,
  counted in ``batches_failed`` under a stable reason (``pg_disk_full``, ``pg_permission``,
  ...), logged once per distinct error with its SQLSTATE and what the operator should do.
  Nothing is dead-lettered for these: a permission or disk error is about the server, not
  the rows, and dead-lettering every batch while it lasts would empty the database's view
  of the logs for an operator's mistake, with no way to tell the good rows from bad ones
  afterwards. The journal's backpressure (``--journal-max-bytes``) already bounds what
  waits; it then stops reading clients, which is the honest signal.

Exactly once still holds through isolation: every piece moves the position in the same
transaction as its rows, and a dead-lettered row is on disk before the position passes it.
A crash between those two makes the next run refuse, isolate and dead-letter that row again:
the dead-letter file may then hold it twice, under the same ``(journal_id, seq)``, which is
how a reader tells (``deadletter.read_entries(unique=True)``). Within one process a row is
written once even if isolation restarts after a reconnect.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import pq

from logsvc import loop as _loop
from logsvc.errors import JournalCorrupt, StoreError
from logsvc.journal import Block, Journal
from logsvc.metrics import Metrics
from logsvc.pgwait import PgDriver
from logsvc.store import pgproto, rollup, schema, streams
from logsvc.store.copyfmt import ROW_FORMAT
from logsvc.store.deadletter import DeadLetter

log = logging.getLogger("logsvc.store")

RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 10.0
# After a commit, a backlog at least this large is shipped at once instead of waiting for
# its age (the seed's own block size; smaller backlogs wait, so a quiet service still
# batches by --batch-max-age).
BACKLOG_RECORDS = 1000
# Partitions are created days ahead; checking hourly leaves a wide margin.
MAINTENANCE_INTERVAL_S = 3600.0
# lag_seconds() resolution: one (seq, time) mark per this interval at most.
LAG_MARK_INTERVAL_S = 0.1

DOWN, CONNECTING, IDLE, SHIPPING, ISOLATING, CLOSED = (
    "down",
    "connecting",
    "idle",
    "shipping",
    "isolating",
    "closed",
)

# -- what a refusal means (see "Refused batches" in the module docstring) ---------------

# The reason a batch refused for its rows' content is counted under in ``batches_failed``.
ROWS_REJECTED = "pg_rejected_rows"

# SQLSTATE classes about the rows' content: the batch is isolated, refused rows dead-lettered.
_ROW_CLASSES: dict[str, str] = {
    "22": "data exception",
    "23": "integrity constraint violation",
    "54": "program limit exceeded",
    "P0": "raised by PL/pgSQL (a trigger)",
}
_ROWS_ADVICE = (
    "If these records should be accepted, fix the constraint or trigger named in the error; the "
    "refused ones are in the dead-letter file and can be copied in again."
)

# The server's state: (reason, what the operator should do). A full SQLSTATE wins over its
# class. The batch stays in the journal and is retried; nothing is dead-lettered.
_SERVER_STATES: dict[str, tuple[str, str]] = {
    "53100": ("pg_disk_full", "PostgreSQL's disk is full: free space or grow its volume."),
    "53": (
        "pg_resources",
        "PostgreSQL is out of a resource (memory, connections, a configured limit): see its log.",
    ),
    "42501": (
        "pg_permission",
        "The role logsvc connects as lacks a privilege: GRANT it INSERT on records and UPDATE on "
        "shipped in the logsvc schema (or run logsvc as the schema's owner).",
    ),
    "42": (
        "pg_schema",
        "The logsvc schema was changed under it (a table, column or function missing or "
        "altered): restore it; logsvc recreates missing objects when it reconnects.",
    ),
    "25006": (
        "pg_read_only",
        "PostgreSQL is read-only (a standby, or default_transaction_read_only): point --dsn at the primary.",
    ),
    "55": (
        "pg_locked",
        "A lock logsvc needs was not granted (lock_timeout): a long ALTER, VACUUM FULL or query "
        "holds the records table.",
    ),
    "57014": (
        "pg_canceled",
        "The batch was canceled: a statement_timeout shorter than one batch (raise it for this "
        "role, or lower --batch-max-records), or pg_cancel_backend.",
    ),
    "57": ("pg_operator", "PostgreSQL is shutting down, restarting or refusing connections."),
    "58": ("pg_system", "PostgreSQL had an I/O or system error: check its log and its storage."),
    "40": (
        "pg_conflict",
        "A serialization failure or deadlock; if the error says another logsvc ships this "
        "journal, two services share one journal id (a copied data directory): stop one.",
    ),
    "XX": (
        "pg_internal",
        "PostgreSQL reported an internal error or corruption: check its log (REINDEX, restore).",
    ),
}
_UNCLASSIFIED = ("pg_other", "An error logsvc does not classify: check PostgreSQL's log.")
# Our own bookkeeping tables: an error about them is never about the rows being shipped.
_OWN_TABLES = frozenset({"shipped", "meta"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a refused statement means for the batch.

    Attributes:
        isolate: True when the rows' content was refused (isolate and dead-letter them);
            False when the server cannot take the batch now (keep it, retry).
        reason: the stable label for ``batches_failed`` and the log.
        sqlstate: as PostgreSQL sent it, or None.
        advice: one sentence for the operator.
    """

    isolate: bool
    reason: str
    sqlstate: str | None
    advice: str


def classify(exc: BaseException) -> Verdict | None:
    """Classify a refusal by its SQLSTATE; None if ``exc`` is not a refusal at all.

    Only ``StoreError`` with reason ``"rejected"`` is a refusal (a lost connection, a
    timeout or a bug is not, and keeps its own reason).
    """
    if not isinstance(exc, StoreError) or exc.reason != "rejected":
        return None
    if not isinstance(exc, pgproto.PgError) or not exc.sqlstate:
        return Verdict(False, "rejected", None, _UNCLASSIFIED[1])
    code = exc.sqlstate
    if code[:2] in _ROW_CLASSES:
        if exc.table in _OWN_TABLES:
            return Verdict(False, "pg_conflict", code, _SERVER_STATES["40"][1])
        return Verdict(True, ROWS_REJECTED, code, _ROWS_ADVICE)
    reason, advice = _SERVER_STATES.get(code) or _SERVER_STATES.get(code[:2]) or _UNCLASSIFIED
    return Verdict(False, reason, code, advice)


@dataclass(slots=True)
class _Isolation:
    """A refused batch being re-shipped in pieces, left to right."""

    first_seq: int  # the batch covered (first_seq - 1, to_seq]
    to_seq: int
    seqs: list[int]  # the journal seq of each row
    rows: list[bytes]  # COPY text rows, each ending in b"\n"
    started: float
    row_format: int  # the layout of ``rows`` (one per batch)
    # Row index ranges [i, j) still to ship; the next one is last (a stack: leftmost on top).
    todo: list[tuple[int, int]] = field(default_factory=list)
    stored: int = 0
    dead: int = 0
    transactions: int = 0


class PgSink:
    """Batch the journal into PostgreSQL, exactly once, from the reactor.

    ``dead_letter_dir`` is where rows PostgreSQL refuses for their content go (see
    ``store.deadletter``); by default ``deadletter`` next to the journal's directory, which is
    ``DATA_DIR/deadletter`` for the server's ``DATA_DIR/journal``.
    """

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
        dead_letter_dir: Path | None = None,
        skip_to: Callable[[int], None] | None = None,
        on_read_fault: Callable[[str | None], None] | None = None,
        pg_timeout: float = PgDriver.DEFAULT_TIMEOUT_S,
        schema_timeout: float = PgDriver.LONG_STEP_TIMEOUT_S,
        on_connection_lost: Callable[[], bool] | None = None,
        tallies: rollup.BlockTallies | None = None,
    ) -> None:
        """See the class docstring for ``dead_letter_dir``; the rest is the server's settings.

        ``pg_timeout``: how long PostgreSQL may stay silent during a step (connecting, a
        batch) before the connection is dropped and re-opened (``pgwait``; 0: never); also
        libpq's connect_timeout and tcp_user_timeout, added to ``conninfo`` with keepalives
        unless it sets them (``pgproto.conninfo_with_timeouts``). ``schema_timeout``: the same
        for the schema steps after connecting, which may build an index on a large table.
        ``on_connection_lost``: called when the connection fails or times out; True means
        the server is being (re)started (``embedded.Supervisor.check``), so reconnect at the
        shortest back-off. ``tallies``: the journal writer's tallies of the blocks it
        appended, for the histogram's counts (``store.rollup``); without them every block is
        counted from its rows.
        """
        self._reactor = reactor
        self._tallies = tallies if tallies is not None else rollup.BlockTallies()
        self._journal = journal
        self._metrics = metrics
        self._conninfo = pgproto.conninfo_with_timeouts(conninfo, pg_timeout)
        self._pg_timeout = pg_timeout
        self._schema_timeout = schema_timeout
        self._on_connection_lost = on_connection_lost
        self._schema = schema.check_identifier(schema_name)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._on_released = on_released
        # Seqs are the journal writer's: it renumbers what it holds before the journal skips.
        self._skip_to = skip_to if skip_to is not None else journal.skip_to
        # Told why the journal cannot be read back (None: it can again); the server makes
        # that the FAILING state.
        self._on_read_fault = on_read_fault
        self._read_fault = False
        self._read_retry: _loop.Timer | None = None
        self._last_corrupt_seq = 0
        self.retention_days = retention_days
        self._extra_index_keys = tuple(schema.check_extra_key(k) for k in extra_index_keys)
        self._driver = PgDriver(
            reactor,
            timeout=pg_timeout,
            # Between steps the idle connection is watched, so a server that closes it (or
            # that keepalives find gone) is noticed at once, not at the next batch.
            idle=lambda: pgproto.watch_idle(self._pgconn) if self._pgconn is not None else None,
            on_idle_error=self._on_failure,
        )
        reactor.add_pump(self._driver.pump)
        self._pgconn: pq.abc.PGconn | None = None
        self.state = DOWN
        self.shipped_seq: int | None = None  # known only while connected
        # The last position PostgreSQL confirmed; a lower bound while disconnected. Until
        # the first connect, the journal's oldest record is taken as unshipped.
        self.confirmed_seq = 0
        self._oldest: float | None = None  # monotonic time the oldest unshipped record was appended
        self._append_marks: deque[tuple[int, float]] = deque()  # for lag_seconds()
        self._started = time.monotonic()
        self._age_timer: _loop.Timer | None = None
        self._retry_timer: _loop.Timer | None = None
        self._backoff = RECONNECT_MIN_S
        self._maintenance_due = False
        self._maintenance_timer: _loop.Timer | None = None
        self._draining = False
        self._on_drained: Callable[[], None] | None = None
        self.last_error = ""
        if dead_letter_dir is None:
            dead_letter_dir = Path(journal.directory).parent / "deadletter"
        self.dead_letter = DeadLetter(dead_letter_dir)
        self._isolation: _Isolation | None = None
        # The highest seq this process wrote to the dead-letter file: an isolation that starts
        # over (after a reconnect) does not write the same row twice.
        self._dead_lettered_seq = 0
        # Set while the server refuses batches for its state: (reason, refusals so far).
        self._held: tuple[str, int] | None = None
        self._quiet_reconnect = False

    # -- public ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting; call after the journal is open."""
        self.confirmed_seq = self._journal.first_seq - 1
        self._connect()

    @property
    def unshipped(self) -> int:
        """Records in the journal not yet committed (an upper bound while disconnected)."""
        return self._journal.records_after(self.confirmed_seq)

    def notify_appended(self) -> None:
        """The server appended a block to the journal."""
        now = time.monotonic()
        if self._oldest is None:
            self._oldest = now
        marks = self._append_marks
        if not marks or now - marks[-1][1] >= LAG_MARK_INTERVAL_S:
            marks.append((self._journal.next_seq - 1, now))
        self._maybe_ship()

    def lag_seconds(self) -> float:
        """Roughly how long the oldest unshipped record has waited (0 when all are shipped).

        From marks ``(last seq appended, time)`` taken at most every ``LAG_MARK_INTERVAL_S``,
        so the figure is good to about that much and the marks stay few during a long outage.
        Records journaled before this process started count from its start.
        """
        marks = self._append_marks
        oldest = self.confirmed_seq + 1
        while marks and marks[0][0] < oldest:
            marks.popleft()
        if not self.unshipped:
            return 0.0
        since = marks[0][1] if marks else self._started
        return max(0.0, time.monotonic() - since)

    def drain(self, on_drained: Callable[[], None]) -> None:
        """Ship everything now, ignoring ``max_age``; call ``on_drained`` when nothing is left."""
        self._draining = True
        self._on_drained = on_drained
        self._maybe_ship()

    def close(self) -> None:
        self.state = CLOSED
        for t in (self._age_timer, self._retry_timer, self._maintenance_timer, self._read_retry):
            self._reactor.cancel(t)
        self._isolation = None
        self._drop_connection()
        self.dead_letter.close()

    # -- connecting ------------------------------------------------------------------------

    def _connect(self) -> None:
        self.state = CONNECTING
        # pg_timeout until the connection is made (_connect_steps sets _pgconn: libpq does not
        # enforce connect_timeout on a non-blocking connect); then the schema steps' allowance.
        # pg_timeout 0 turns both off.
        self._driver.start(
            self._connect_steps(),
            self._on_connected,
            self._on_failure,
            timeout=lambda: (
                self._pg_timeout if self._pgconn is None or not self._pg_timeout else self._schema_timeout
            ),
        )

    def _connect_steps(self) -> pgproto.PgGen[int]:
        pgconn = yield from pgproto.connect(self._conninfo)
        self._pgconn = pgconn
        yield from self._schema_steps(pgconn)
        yield from pgproto.execute(pgconn, self._maintenance_sql())
        res = yield from pgproto.execute(pgconn, schema.shipped_sql(self._schema, self._journal.journal_id))
        value = res[0].get_value(0, 0) if res and res[0].ntuples else None
        return int(value) if value is not None else 0

    def _schema_steps(self, pgconn: pq.abc.PGconn) -> pgproto.PgGen[None]:
        # A (re)connect only reads the catalogs; DDL runs only when something is missing or
        # older, under a try-lock, each statement with a lock timeout ("Several instances on
        # one database" in docs/design.md). A newer schema is refused before anything changes.
        res = yield from pgproto.execute(pgconn, schema.check_sql(self._schema, self._extra_index_keys))
        missing = [res[0].get_value(i, 0) for i in range(res[0].ntuples)] if res else []
        version: int | None = None
        if f"{self._schema}.meta".encode() not in missing:
            res = yield from pgproto.execute(pgconn, schema.version_sql(self._schema))
            value = res[0].get_value(0, 0) if res and res[0].ntuples else None
            version = int(value) if value is not None else None
        schema.refuse_newer(self._schema, version)
        if version == schema.SCHEMA_VERSION and not missing:
            return
        log.info(
            "Schema %s is at version %s (this logsvc: %d)%s: creating or upgrading it.",
            self._schema,
            version if version is not None else "none",
            schema.SCHEMA_VERSION,
            "; missing " + ", ".join(m.decode() for m in missing if m is not None) if missing else "",
        )
        try:
            yield from pgproto.execute(
                pgconn, schema.create_sql(self._schema, self._extra_index_keys, wait=False)
            )
        except pgproto.PgError as exc:
            # Raised by create_sql itself: the version check (a newer logsvc got there first),
            # or the try-lock / a lock timeout (another instance is at it, or writes hold the
            # table longer than the DDL may wait). Nothing was changed; retried with back-off.
            if exc.sqlstate == "P0001":
                raise StoreError(exc.primary or str(exc), reason="schema_newer") from exc
            if exc.sqlstate == "55P03":
                raise StoreError(
                    f"{exc.primary or exc}: the schema is not ready yet, retrying", reason="schema_locked"
                ) from exc
            raise

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
            self._skip_to(shipped_seq + 1)
        self.shipped_seq = shipped_seq
        self.state = IDLE
        self._backoff = RECONNECT_MIN_S
        self._metrics.pg_connected = True
        # After a refusal already logged (the server's state, retried), the reconnects of each
        # retry are not news.
        log.log(
            logging.DEBUG if self._quiet_reconnect else logging.INFO,
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
        verdict = classify(exc)
        if verdict is not None:
            reason = verdict.reason
        else:
            reason = exc.reason if isinstance(exc, StoreError) else "internal"
        was = self.state
        self._isolation = None
        self._drop_connection()
        if self.state == CLOSED:
            return
        self.state = DOWN
        if self._on_connection_lost is not None and reason in ("connection", "timeout"):
            try:
                if self._on_connection_lost():
                    self._backoff = RECONNECT_MIN_S  # it is starting: poll for it
            except Exception:
                log.exception("The connection-lost hook failed; reconnecting as usual.")
        msg = str(exc).replace("\n", " ")
        if was in (SHIPPING, ISOLATING):
            self._metrics.batches_failed[reason] += 1
            if verdict is not None:
                refusals = self._held[1] if self._held is not None else 0
                self._held = (reason, refusals + 1)
        logged = msg != self.last_error or was == IDLE
        if logged and verdict is not None:
            primary = exc.primary if isinstance(exc, pgproto.PgError) and exc.primary else msg
            log.error(
                "PostgreSQL refused the %s (%s, SQLSTATE %s): %s. %s Nothing is dropped: the "
                "records stay in the journal; retrying in %.1f s, then up to every %.0f s.",
                "batch" if was in (SHIPPING, ISOLATING) else f"{was} step",
                reason,
                verdict.sqlstate or "unknown",
                primary,
                verdict.advice,
                self._backoff,
                RECONNECT_MAX_S,
            )
        elif logged:
            log.error("PostgreSQL %s failed (%s): %s. Retrying in %.1f s.", was, reason, msg, self._backoff)
        self._quiet_reconnect = not logged and verdict is not None
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
        try:
            blocks = self._journal.read(self.shipped_seq + 1, self.max_records, self.max_bytes)
        except JournalCorrupt as exc:
            self._corrupt_block(exc)
            return
        except Exception as exc:
            self._read_failed(exc)
            return
        if self._read_fault:
            self._read_fault = False
            if self._on_read_fault is not None:
                self._on_read_fault(None)
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
        # read() never mixes row formats in one call: one COPY column list per batch.
        row_format = blocks[0].row_format if blocks else ROW_FORMAT
        try:
            sql = self._batch_sql(to_seq, row_format, self._tallies.counts(blocks))
        except StoreError as exc:
            self._read_failed(exc)
            return
        self.state = SHIPPING
        started = time.monotonic()
        first_seq = self.shipped_seq + 1
        plain = self._tallies.without_streams(blocks)
        self._driver.start(
            self._copy(sql, to_seq, [b.payload for b in blocks], row_format, plain=plain),
            lambda stored: self._on_committed(to_seq, count if stored is None else stored, started),
            lambda exc: self._on_batch_failed(exc, blocks, first_seq, to_seq),
        )

    def _batch_sql(self, to_seq: int, row_format: int, counts: rollup.Counts) -> str:
        """``schema.batch_sql`` from the current position to ``to_seq``, with these rows' counts."""
        assert self.shipped_seq is not None
        jid = self._journal.journal_id
        return schema.batch_sql(
            self._schema,
            jid,
            self.shipped_seq,
            to_seq,
            row_format,
            rollup.upsert_sql(self._schema, jid, counts),
        )

    def _copy(
        self, sql: str, to_seq: int, chunks: list[bytes], row_format: int, *, plain: bool = False
    ) -> pgproto.PgGen[int | None]:
        """The generator shipping ``chunks`` under ``sql``; returns the rows stored (None: all).

        Rows of the acknowledged protocol's streams go through ``store.streams`` (exactly once
        per stream seq, whichever instance stored it first): when it leaves rows out, the
        batch's counts are those of the rows it kept. Other batches are a plain COPY.
        ``plain``: the writer's notes say no chunk holds stream rows (else they are searched).
        """
        pgconn = self._pgconn_ok()
        if row_format < 2 or plain or not any(streams.has_stream_rows(c) for c in chunks):
            yield from pgproto.copy_in(pgconn, sql, chunks)
            return None

        def sql_for(kept: Sequence[bytes] | None) -> str:
            return sql if kept is None else self._batch_sql(to_seq, row_format, rollup.count_rows(kept))

        stored, duplicates = yield from streams.copy_dedup(pgconn, self._schema, sql_for, chunks)
        if duplicates:
            self._metrics.acked_duplicates["postgresql"] += duplicates
        return stored

    def _corrupt_block(self, exc: JournalCorrupt) -> None:
        # A block failed its checksum when read back: handled as one found at open. The
        # journal took it out of its index (a gap now); log it with its records, count it,
        # and ship on past it. The same block twice means the journal could not drop it.
        seq = getattr(exc, "first_seq", 0)
        if seq and seq == self._last_corrupt_seq:
            self._read_failed(exc)
            return
        self._last_corrupt_seq = seq
        lost = int(getattr(exc, "records_lost", 0))
        m = self._metrics
        m.journal_corrupt_blocks += 1
        m.journal_records_lost += lost
        log.error(
            "Journal block at seq %s failed its check when read back for shipping (%s); %d records "
            "lost and skipped, shipping goes on. Check the disk under %s.",
            seq or "?",
            exc,
            lost,
            self._journal.directory,
        )
        self._reactor.call_soon(self._maybe_ship)

    def _read_failed(self, exc: BaseException) -> None:
        # The journal cannot be read back (EIO, a bug): the server's FAILING state, retried.
        if not self._read_fault:
            self._read_fault = True
            if self._on_read_fault is not None:
                self._on_read_fault(f"cannot read the journal back for shipping: {exc}")
            if not isinstance(exc, OSError | JournalCorrupt):
                log.error("Unexpected error reading the journal.", exc_info=exc)
        if self._read_retry is None or not self._read_retry.active:
            self._read_retry = self._reactor.call_later(RECONNECT_MAX_S / 10, self._maybe_ship)

    def _on_committed(self, to_seq: int, count: int, started: float) -> None:
        m = self._metrics
        m.records_stored += count
        m.batches_committed += 1
        m.observe_batch(time.monotonic() - started)
        self.shipped_seq = to_seq
        self._tallies.forget(to_seq)
        self.state = IDLE
        self.last_error = ""
        self._quiet_reconnect = False
        if self._held is not None:
            reason, refusals = self._held
            self._held = None
            log.info("PostgreSQL takes batches again, after %d refusals (%s).", refusals, reason)
        self._release()
        if self.unshipped >= BACKLOG_RECORDS:
            # Group commit: what piled up while this batch was in flight goes out now. Waiting
            # for its age would leave PostgreSQL idle exactly when the service is busiest.
            self._oldest = time.monotonic() - self.max_age
        self._maybe_ship()

    # -- isolating a batch refused for its rows' content ---------------------------------------

    def _on_batch_failed(
        self, exc: BaseException, blocks: Sequence[Block], first_seq: int, to_seq: int
    ) -> None:
        verdict = classify(exc)
        if verdict is None or not verdict.isolate or self.state != SHIPPING:
            self._on_failure(exc)
            return
        try:
            seqs, rows = _split_rows(blocks)
        except JournalCorrupt as corrupt:
            self._on_failure(corrupt)
            return
        m = self._metrics
        m.batches_failed[verdict.reason] += 1
        m.batches_isolated += 1
        log.warning(
            "PostgreSQL refused the batch of seqs %d..%d for its content (SQLSTATE %s): %s. "
            "Isolating the records it refuses into %s; the others will be stored.",
            first_seq,
            to_seq,
            verdict.sqlstate,
            exc.primary if isinstance(exc, pgproto.PgError) and exc.primary else str(exc),
            self.dead_letter.directory,
        )
        iso = _Isolation(
            first_seq, to_seq, seqs, rows, time.monotonic(), blocks[0].row_format if blocks else ROW_FORMAT
        )
        self._isolation = iso
        self.state = ISOLATING
        if rows:
            self._split(iso, 0, len(rows), exc)
        self._isolate_next()

    def _split(self, iso: _Isolation, i: int, j: int, exc: BaseException) -> None:
        # Rows [i, j) were refused together: queue smaller pieces, leftmost on top. Where
        # PostgreSQL named the COPY line it failed at, the rows before it went through this
        # very statement, and that line alone is the suspect: three pieces. Otherwise halves.
        line = exc.copy_line if isinstance(exc, pgproto.PgError) else None
        if line is not None and 1 <= line <= j - i:
            k = i + line - 1
            pieces = [(i, k), (k, k + 1), (k + 1, j)]
        else:
            mid = (i + j) // 2
            pieces = [(i, mid), (mid, j)]
        iso.todo.extend(p for p in reversed(pieces) if p[0] < p[1])

    def _isolate_next(self) -> None:
        iso = self._isolation
        assert iso is not None and self.shipped_seq is not None
        if iso.todo:
            i, j = iso.todo.pop()
            to_seq = iso.seqs[j - 1]
            self._isolation_step(
                to_seq,
                [b"".join(iso.rows[i:j])],
                lambda stored: self._on_piece_committed(iso, j - i if stored is None else stored),
                lambda exc: self._on_piece_failed(iso, i, j, exc),
            )
        elif self.shipped_seq < iso.to_seq:
            # Seqs after the last row (lost to journal corruption) are still in the batch.
            self._isolation_step(iso.to_seq, [], lambda _: self._isolate_next(), self._on_failure)
        else:
            self._isolation_done(iso)

    def _isolation_step(
        self,
        to_seq: int,
        data: list[bytes],
        on_done: Callable[[int | None], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        # One transaction: advance the position from where it stands to to_seq, COPY data.
        # on_done gets the rows stored (None: all of data; fewer when stream rows were had).
        assert self._isolation is not None and self.shipped_seq is not None
        self._isolation.transactions += 1
        self._metrics.isolation_transactions += 1
        row_format = self._isolation.row_format
        sql = self._batch_sql(to_seq, row_format, rollup.count_rows(data))

        def done(stored: int | None) -> None:
            if self.state != ISOLATING:
                return
            self.shipped_seq = to_seq
            self._release()
            on_done(stored)

        self._driver.start(self._copy(sql, to_seq, data, row_format), done, on_error)

    def _on_piece_committed(self, iso: _Isolation, stored: int) -> None:
        iso.stored += stored
        self._metrics.records_stored += stored
        self._isolate_next()

    def _on_piece_failed(self, iso: _Isolation, i: int, j: int, exc: BaseException) -> None:
        verdict = classify(exc)
        if verdict is None or not verdict.isolate:
            # The server's state or the connection, not these rows: the whole isolation
            # waits for the retry, which starts it over from PostgreSQL's position.
            self._on_failure(exc)
            return
        if j - i > 1:
            self._split(iso, i, j, exc)
            self._isolate_next()
            return
        seq = iso.seqs[i]
        if seq > self._dead_lettered_seq:
            pg = exc if isinstance(exc, pgproto.PgError) else None
            try:
                path = self.dead_letter.write(
                    self._journal.journal_id,
                    seq,
                    iso.rows[i],
                    sqlstate=verdict.sqlstate,
                    error=(pg.primary if pg is not None and pg.primary else str(exc)),
                    detail=pg.detail if pg is not None else None,
                )
            except OSError as err:
                # Without the row on disk, the position must not pass it: keep the batch.
                self._on_failure(
                    StoreError(
                        f"cannot write the dead-letter file in {self.dead_letter.directory}: {err}",
                        reason="deadletter_io",
                    )
                )
                return
            self._dead_lettered_seq = seq
            self._metrics.records_dead_lettered += 1
            self._metrics.dead_lettered_by_sqlstate[verdict.sqlstate or "unknown"] += 1
            if iso.dead == 0:
                log.warning(
                    "Dead-lettered record seq=%d (SQLSTATE %s) into %s: %s.",
                    seq,
                    verdict.sqlstate,
                    path,
                    pg.primary if pg is not None and pg.primary else exc,
                )
        iso.dead += 1
        # An empty COPY over just this seq: the position passes the row, which is now on disk.
        self._isolation_step(seq, [], lambda _: self._isolate_next(), self._on_failure)

    def _isolation_done(self, iso: _Isolation) -> None:
        elapsed = time.monotonic() - iso.started
        self._isolation = None
        self._metrics.isolation_seconds_total += elapsed
        self.state = IDLE
        self.last_error = ""
        log.warning(
            "Isolated the batch of seqs %d..%d in %.2f s (%d transactions): %d records stored, "
            "%d dead-lettered into %s.",
            iso.first_seq,
            iso.to_seq,
            elapsed,
            iso.transactions,
            iso.stored,
            iso.dead,
            self.dead_letter.directory,
        )
        if self.unshipped >= BACKLOG_RECORDS:
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
        # Partitions ahead of time; with --retention, whole old partitions dropped. By the
        # leader of the moment: another instance holding the schema's lock makes it a no-op.
        return schema.maintenance_sql(self._schema, _utc_today(), self.retention_days)

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


def _split_rows(blocks: Sequence[Block]) -> tuple[list[int], list[bytes]]:
    """Return the seq and the COPY text row (with its b"\\n") of every record in ``blocks``.

    Raises:
        JournalCorrupt: reason ``"rows"`` if a block does not hold ``count`` rows.
    """
    seqs: list[int] = []
    rows: list[bytes] = []
    for b in blocks:
        parts = b.payload.split(b"\n")
        if parts[-1] or len(parts) - 1 != b.count:
            raise JournalCorrupt(
                f"block at seq {b.first_seq} holds {len(parts) - 1} rows, not {b.count}", reason="rows"
            )
        seqs.extend(range(b.first_seq, b.first_seq + b.count))
        rows.extend(r + b"\n" for r in parts[:-1])
    return seqs, rows


def _utc_today() -> _dt.date:
    return _dt.datetime.now(_dt.UTC).date()
