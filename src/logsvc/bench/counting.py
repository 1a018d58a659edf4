"""Counting a run in PostgreSQL: how many of its records are stored, and when it is complete.

The run is complete when every sender's last record is in PostgreSQL (records of one
connection are committed in order); one count then gives stored and duplicated. The polls
adapt their interval to the query's cost (at most ~10% of one PostgreSQL core), so measuring
does not slow what is measured. This module only reads the records table; it never writes.

UDP has no backpressure: a service that falls behind loses datagrams in its kernel receive
buffer, and a lost "last" datagram must not leave us waiting for ``--timeout``. So a UDP run
(``wait_settled``) is also over once no new row of it has been stored for ``QUIET_S``.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

from logsvc.bench.records import TAG_PATH
from logsvc.errors import LogsvcError

# A UDP run is over once no new row of it has been stored for this long after the last
# sender finished. The service commits a batch at least every --batch-max-age (200 ms by
# default).
QUIET_S = 3.0


def _nest(path: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


class Counter:
    """Counts a run's rows in ``{schema}.records``.

    Every query selects the run by jsonb containment (``extra @> '{"run": ID}'``), which a GIN
    index on ``extra`` could serve. The tags may sit below the top level of ``extra``
    (``path``: syslog structured data is ``extra["sd"][SD-ID]``); containment then nests the
    same object under that path, and the record id is read with ``extra #>> path || 'i'``.
    """

    def __init__(
        self, dsn: str, schema: str, run_id: str, path: tuple[str, ...] = (), last_value: object = True
    ) -> None:
        from logsvc.store.schema import check_identifier

        self.table = f"{check_identifier(schema)}.records"
        self.run = json.dumps(_nest(path, {"run": run_id}))
        self.last = json.dumps(_nest(path, {"run": run_id, "last": last_value}))
        self.i_path = [*path, "i"]
        try:
            self.conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise LogsvcError(f"cannot connect to PostgreSQL to count the run: {exc}") from None

    @classmethod
    def for_format(cls, dsn: str, schema: str, run_id: str, fmt: str) -> Counter:
        """A counter that finds the tags where ``flood --format fmt`` puts them."""
        path = TAG_PATH.get(fmt, ())
        return cls(dsn, schema, run_id, path, "true" if path else True)

    def _row(self, sql: str, params: list[Any]) -> tuple[Any, ...] | None:
        # None while the table does not exist yet (the service creates it on its first connect).
        try:
            return self.conn.execute(sql, params).fetchone()
        except psycopg.errors.UndefinedTable:
            return None

    def finished_senders(self) -> int:
        row = self._row(f"SELECT count(*) FROM {self.table} WHERE extra @> %s::jsonb", [self.last])
        return int(row[0]) if row else 0

    def progress(self) -> tuple[int, int]:
        """(rows of this run, senders whose last record is among them), in one scan."""
        row = self._row(
            f"SELECT count(*), count(*) FILTER (WHERE extra @> %s::jsonb) FROM {self.table} "
            "WHERE extra @> %s::jsonb",
            [self.last, self.run],
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def totals(self) -> tuple[int, int]:
        """(rows, distinct record ids) of this run."""
        row = self.conn.execute(
            f"SELECT count(*), count(DISTINCT extra #>> %s::text[]) FROM {self.table} "
            "WHERE extra @> %s::jsonb",
            [self.i_path, self.run],
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def latency(self) -> dict[str, float]:
        row = self.conn.execute(
            f"""SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d),
                       percentile_cont(0.99) WITHIN GROUP (ORDER BY d), max(d)
                FROM (SELECT extract(epoch FROM stored - created) AS d FROM {self.table}
                      WHERE extra @> %s::jsonb) t""",
            [self.run],
        ).fetchone()
        assert row is not None
        return {"p50_s": float(row[0] or 0), "p99_s": float(row[1] or 0), "max_s": float(row[2] or 0)}

    def latency_histogram(self, bucket_s: float = 0.02, buckets: int = 50) -> list[int]:
        """Records per ``bucket_s``-wide latency bucket; the last bucket holds the rest."""
        rows = self.conn.execute(
            f"""SELECT least(floor(extract(epoch FROM stored - created) / %s)::int, %s), count(*)
                FROM {self.table} WHERE extra @> %s::jsonb GROUP BY 1""",
            [bucket_s, buckets - 1, self.run],
        ).fetchall()
        hist = [0] * buckets
        for b, n in rows:
            hist[max(0, int(b))] += int(n)
        return hist

    def close(self) -> None:
        self.conn.close()


class SupportsSample(Protocol):
    """What the polls need of ``service.ProcessWatch``: one more memory sample per poll."""

    def sample(self) -> None: ...


class SupportsProgress(Protocol):
    def progress(self) -> tuple[int, int]: ...


def wait_stored(
    counter: Counter,
    senders: int,
    timeout: float,
    watch: SupportsSample,
    progress: Callable[[int], None],
) -> float | None:
    """Poll until every sender's last record is stored; return the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    interval = 0.05
    while True:
        t0 = time.monotonic()
        done = counter.finished_senders()
        now = time.monotonic()
        watch.sample()
        progress(done)
        if done >= senders:
            return now
        if now > deadline:
            return None
        # Keep the poll under ~10% of a PostgreSQL core, however large the table grows.
        interval = max(0.05, 10 * (now - t0))
        time.sleep(interval)


def wait_settled(
    counter: SupportsProgress,
    senders: int,
    timeout: float,
    watch: SupportsSample,
    progress: Callable[[int], None],
    quiet_s: float = QUIET_S,
) -> tuple[float | None, str]:
    """For UDP: poll until every sender's last record is stored, or no new row came for ``quiet_s``.

    Returns:
        (the monotonic time the run's rows were last seen to grow, or every last record was
        seen; None on timeout), and how the run ended: ``last_records``, ``quiet`` or ``timeout``.
    """
    deadline = time.monotonic() + timeout
    rows_seen = -1
    changed = time.monotonic()
    while True:
        t0 = time.monotonic()
        rows, done = counter.progress()
        now = time.monotonic()
        watch.sample()
        progress(done)
        if done >= senders:
            return now, "last_records"
        if rows != rows_seen:
            rows_seen, changed = rows, now
        elif now - changed >= quiet_s:
            return changed, "quiet"
        if now > deadline:
            return None, "timeout"
        # As wait_stored, but often enough to notice the quiet period in time.
        time.sleep(min(max(0.05, 10 * (now - t0)), quiet_s / 4))
