"""Keeping the BRIN indexes current for the console's reads of the newest records.

Theory of operation
-------------------
Every console statement is bounded in time and finds its rows through the BRIN indexes on
``created`` and ``stored``. A BRIN index knows nothing of the page ranges added since it was
last summarized, so a scan reads every one of them, whatever its time condition. PostgreSQL
summarizes new ranges at VACUUM, which autovacuum runs on an insert-only table only after
many inserts and at best every ``autovacuum_naptime``; under load the unsummarized end of
today's partition is minutes of records, and the live tail, asking twice a second for the
last half second, would read all of it at every look (300,000 rows: 120 ms a look instead of
10, measured).

So while the console is in use, :meth:`BrinSummarizer.poke` (called by the tail before its
looks and by every API request) summarizes the new page ranges of today's and yesterday's
partitions and of the default one, at most once per ``INTERVAL_S``. ``brin_summarize_new_values``
reads each new page once: the cost of one scan of the new rows, paid once, instead of at
every look. Nobody on the console, no summarizing.

It is best effort. It waits at most ``LOCK_TIMEOUT_MS`` for its lock (it conflicts with
VACUUM, ANALYZE and some DDL, never with COPY or a query) and is skipped on a timeout. Where
it cannot run at all (a hot standby, a role that does not own the tables: ``logsvc console``
against a replica or as a read-only role) it is switched off with one log line; queries are
then as fast as autovacuum keeps the indexes.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import logging
import time

from logsvc.console.db import ConsoleDb, Row
from logsvc.errors import StoreError
from logsvc.store.schema import check_identifier

log = logging.getLogger("logsvc.console")

INTERVAL_S = 0.5
LOCK_TIMEOUT_MS = 100
_LOCK_NOT_AVAILABLE = "55P03"


def summarize_sql(schema: str) -> str:
    """One simple query: summarize the new ranges of the BRIN indexes of the recent partitions."""
    s = check_identifier(schema)
    today = "to_char(timezone('UTC', now()), 'YYYYMMDD')"
    yesterday = "to_char(timezone('UTC', now()) - interval '1 day', 'YYYYMMDD')"
    parts = (
        f"to_regclass('{s}.records_' || {today}), to_regclass('{s}.records_' || {yesterday}), "
        f"to_regclass('{s}.records_default')"
    )
    return (
        f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'; "
        "SELECT coalesce(sum(brin_summarize_new_values(i.indexrelid)), 0) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
        f"WHERE a.amname = 'brin' AND i.indrelid = ANY (ARRAY[{parts}]::oid[])"
    )


class BrinSummarizer:
    """Summarizes the recent partitions' new BRIN ranges while the console is used (see above)."""

    def __init__(self, db: ConsoleDb, schema: str, *, interval_s: float = INTERVAL_S) -> None:
        self._db = db
        self._sql = summarize_sql(schema)
        self._interval_s = interval_s
        self._due = 0.0
        self._busy = False
        self.enabled = True
        self.ranges = 0  # page ranges summarized, for tests and figures
        self.skipped = 0  # lock timeouts

    def poke(self) -> None:
        """Summarize now unless it was done less than ``interval_s`` ago or is running."""
        now = time.monotonic()
        if not self.enabled or self._busy or now < self._due:
            return
        self._due = now + self._interval_s
        self._busy = self._db.submit(self._sql, None, self._done, self._failed)

    def _done(self, rows: list[Row]) -> None:
        self._busy = False
        if rows and rows[-1][0] is not None:
            self.ranges += int(rows[-1][0])

    def _failed(self, exc: StoreError) -> None:
        self._busy = False
        if getattr(exc, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            self.skipped += 1  # VACUUM or ANALYZE has the partition: next time
            return
        if exc.reason != "rejected":
            return  # the connection, not the statement: tried again at the next poke
        self.enabled = False
        log.warning(
            "Console: cannot summarize the BRIN indexes of new records (%s); searches and the live "
            "tail read the newest records by the indexes as autovacuum keeps them (slower under load).",
            exc,
        )
