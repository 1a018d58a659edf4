"""Build a large ``records`` table for measuring queries: 10 million rows over 30 days by default.

Usage: python bench/big_table.py --dsn DSN [--schema bench_big] [--rows 10000000] [--days 30]

The schema is dropped and created with ``logsvc.store.schema.create_sql`` (the real table,
partitions and indexes), its daily partitions are created for the whole range, and the rows
are generated inside PostgreSQL (``INSERT ... SELECT ... FROM generate_series``) in chunks,
with the optional indexes dropped first and rebuilt afterwards (``CREATE INDEX`` on full
partitions is much faster than maintaining them row by row). Then ``VACUUM ANALYZE``, so the
measured queries see hint bits set, a visibility map and statistics, as a table in service
long enough would (autovacuum may be off; it is on this machine).

Distributions (seeded, ``setseed``), evenly spaced in time up to the moment of the build so
``--since 1h`` finds the last hour's share (about 14,000 rows of 10 million over 30 days):

- level: DEBUG 30 %, INFO 55 %, WARNING 10 %, ERROR 4.5 %, CRITICAL 0.5 %
- logger: 10 names in 3 families, skewed: ``app.http`` 30 %, ``app.db`` 15 %, ``app.auth``,
  ``app.cache``, ``worker.jobs`` 10 % each, ``app.db.pool``, ``app.http.client``,
  ``app.billing``, ``worker.mail``, ``worker.jobs.retry`` 5 % each
- extra: ``trace_id`` on 80 % of rows, 8 consecutive records per trace (so a trace has a
  handful of records close together in time, ~1.25 million distinct ids), ``user_id`` on
  all, ``duration_ms`` on HTTP rows
- message: realistic formatted lines; ``timeout`` appears in about 1.1 % of them (mostly
  at WARNING and above), so ``--grep timeout --since 1h`` matches about 150 rows
- a traceback in ``exc_text`` on a third of ERROR rows
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time

import psycopg

from logsvc.store import rollup
from logsvc.store import schema as sch

ZERO_UUID = "00000000-0000-0000-0000-000000000000"

CHUNK_ROWS = 1_000_000

# One row per generate_series value i (0 <= i < total). $-placeholders are bound per chunk.
INSERT = """
INSERT INTO {s}.records (seq, created, received, levelno, levelname, logger, message, pathname,
    lineno, func, module, process, process_name, thread, thread_name, exc_text, stack_info, peer,
    extra, stored)
SELECT i, t, t + interval '3 ms', lv, CASE lv WHEN 10 THEN 'DEBUG' WHEN 20 THEN 'INFO'
        WHEN 30 THEN 'WARNING' WHEN 40 THEN 'ERROR' ELSE 'CRITICAL' END,
    lg, msg, '/srv/app/' || replace(lg, '.', '/') || '.py', 10 + (i % 400), 'handle',
    split_part(lg, '.', -1), 1000 + (i % 16), 'MainProcess', 140000000000000 + (i % 8),
    'Thread-' || (i % 8), CASE WHEN lv >= 40 AND r3 < 0.33 THEN
        E'Traceback (most recent call last):\\n  File "/srv/app/x.py", line 12, in handle\\n'
        || 'RuntimeError: ' || msg END,
    NULL, '10.0.' || (i % 16) || '.' || (1 + i % 200) || ':' || (40000 + i % 20000),
    jsonb_strip_nulls(jsonb_build_object(
        'trace_id', CASE WHEN r2 < 0.8 THEN i / 8 END,
        'user_id', (r2 * 100000)::int,
        'duration_ms', CASE WHEN lg LIKE 'app.http%' THEN round((r3 * 900)::numeric, 1) END)),
    t + interval '40 ms'
FROM (
    SELECT i, t, lv, r2, r3, lg,
        CASE
            WHEN (lv >= 30 AND r3 < 0.06) OR r3 < 0.0025 THEN
                format('upstream timeout after %s ms calling %s', (r2 * 30000)::int, lg)
            WHEN lg LIKE 'app.http%' THEN
                format('GET /api/items/%s %s in %s ms', i % 100000,
                       CASE WHEN lv >= 40 THEN 500 WHEN lv = 30 THEN 404 ELSE 200 END, (r3 * 900)::int)
            WHEN lg LIKE 'app.db%' THEN format('query %s rows=%s', md5((i % 5000)::text), i % 1000)
            ELSE format('[%s] job %s step %s done', lg, i / 50, i % 7)
        END AS msg
    FROM (
        SELECT i, $1::timestamptz + (i * $2::float8) * interval '1 s' AS t,
            CASE WHEN r1 < 0.30 THEN 10 WHEN r1 < 0.85 THEN 20 WHEN r1 < 0.95 THEN 30
                 WHEN r1 < 0.995 THEN 40 ELSE 50 END AS lv,
            r2, r3,
            (ARRAY['app.http', 'app.http', 'app.http', 'app.http', 'app.http', 'app.http',
                   'app.db', 'app.db', 'app.db', 'app.db.pool', 'app.auth', 'app.auth',
                   'worker.jobs', 'worker.jobs', 'worker.mail', 'app.cache', 'app.cache',
                   'worker.jobs.retry', 'app.billing', 'app.http.client'])[1 + (r4 * 20)::int % 20]
                AS lg
        FROM (SELECT i, random() AS r1, random() AS r2, random() AS r3, random() AS r4
              FROM generate_series($3::bigint, $4::bigint) AS i) g
    ) h
) k
"""


def build(dsn: str, schema: str, rows: int, days: int) -> None:
    s = sch.check_identifier(schema)
    end = _dt.datetime.now(_dt.UTC)
    start = end - _dt.timedelta(days=days)
    step = (end - start).total_seconds() / rows
    t0 = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        conn.execute(sch.create_sql(s))
        names = [name for name, _ in sch.INDEXES]
        for name in names:
            conn.execute(f"DROP INDEX IF EXISTS {s}.{name}")
        first = start.date()
        for d in range((end.date() - first).days + 1 + sch.PARTITION_DAYS_AHEAD):
            conn.execute(f"SELECT {s}.ensure_partition(%s)", [first + _dt.timedelta(days=d)])
        conn.execute("SELECT setseed(0.42)")
        # psycopg placeholders are %s, and the SQL above is full of format()'s own %s.
        sql = INSERT.format(s=s).replace("%", "%%")
        for n in range(1, 5):
            sql = sql.replace(f"${n}", "%s")
        for lo in range(0, rows, CHUNK_ROWS):
            hi = min(rows, lo + CHUNK_ROWS) - 1
            conn.execute(sql, [start, step, lo, hi])
            print(f"  rows {hi + 1:>11,} at {time.monotonic() - t0:6.0f} s", file=sys.stderr)
        # The histogram's counts, as the sink writes them with each batch (store.rollup), and
        # counts_since before the first row: every row here is counted there.
        t = time.monotonic()
        g, lvl = (
            rollup.BUCKET_S,
            "CASE WHEN levelno IS NULL OR levelno <= 10 THEN 0 ELSE least(4, (levelno - 1) / 10) END",
        )
        conn.execute(
            f"INSERT INTO {s}.counts (bucket, journal, level, n) SELECT "
            f"to_timestamp(floor(extract(epoch FROM created) / {g}) * {g}), "
            f"coalesce(journal, '{ZERO_UUID}'), {lvl}, count(*) FROM {s}.records GROUP BY 1, 2, 3"
        )
        conn.execute(
            f"UPDATE {s}.meta SET value = %s WHERE key = 'counts_since'",
            [(start - _dt.timedelta(days=1)).isoformat()],
        )
        print(f"  counts in {time.monotonic() - t:.0f} s", file=sys.stderr)
        for name, how in sch.INDEXES:
            t = time.monotonic()
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {s}.records {how}")
            print(f"  index {name} in {time.monotonic() - t:.0f} s", file=sys.stderr)
        conn.execute(f"VACUUM ANALYZE {s}.records")
        size = conn.execute(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s",
            [s],
        ).fetchone()
    print(
        f"built {s}.records: {rows:,} rows from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, "
        f"{size[0] if size else '?'} with indexes, in {time.monotonic() - t0:.0f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    p.add_argument("--schema", default="bench_big", help="schema to (re)create (dropped first!)")
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=30)
    a = p.parse_args()
    build(a.dsn, a.schema, a.rows, a.days)


if __name__ == "__main__":
    main()
