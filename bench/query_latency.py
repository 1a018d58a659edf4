"""Query latency on the big table, and what each index costs ingest.

Usage::

    python bench/big_table.py --dsn DSN                  # once: 10 million rows, schema bench_big
    python bench/query_latency.py --dsn DSN [--runs 7] [--ingest-rows 400000] [--skip-ingest]

Latency: each typical ``logsvc query`` (``logsvc.query.select``, the SQL and the
newest-first ranges the command uses, ``--limit`` 100) is run ``--runs`` times on
``bench_big``; the median and the first (coldest) run are printed, first with every index
of ``store.schema.INDEXES``, then without each of them in turn (the index is dropped
inside a transaction that is rolled back, so nothing is rebuilt). The time is execute +
fetch in this process; a ``logsvc query`` command adds its own start-up (about 0.15 s of
Python imports here), printed once at the end for the record.

Ingest: rows are copied out of ``bench_big`` as COPY text (real rows, shifted to now), then
shipped into fresh schemas through the service's own batch path (``schema.batch_sql`` +
``pgproto.copy_in``, 20,000-row batches, one commit each), once per index set: BRIN on
``created`` only (the baseline), the baseline plus each index, all of ``INDEXES``, and
rejected candidates. The sets take turns, ``--runs`` rounds, and the median rate is
printed with its ratio to the baseline. This is PostgreSQL's share of ingest alone; the
service's own decoding and journal come on top, so these ratios are the worst case.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from logsvc import query as q
from logsvc.store import pgproto
from logsvc.store import schema as sch
from logsvc.store.copyfmt import COLUMN_NAMES

BIG = "bench_big"
BATCH_ROWS = 20_000

QUERIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--level ERROR --since 1h", {"level": 40, "since": 3600}),
    ("--logger app.db --since 1d", {"loggers": ("app.db",), "since": 86400}),
    ("--extra trace_id=N", {"extra": (("trace_id", None),)}),
    ("--grep timeout --since 1h", {"grep": "timeout", "since": 3600}),
    ("--level ERROR --logger app.db --extra trace_id=N --since 1d", {}),
    ("--count --since 1d --logger app.db", {}),
    ("tail -f: one follow look (stored > now - 2 s)", {}),
)

# Indexes considered and not kept; measured for ingest only (see docs/query.md for why).
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("records_created_btree", "(created)"),
    ("records_extra_gin", "USING gin (extra jsonb_path_ops)"),
    ("records_logger_pattern", "(logger text_pattern_ops, created)"),
    ("records_level_partial", "(created) WHERE levelno >= 30"),
    ("records_message_trgm", "USING gin (message gin_trgm_ops)"),
)


def filters_for(label: str, spec: dict[str, Any], now: _dt.datetime, trace: int) -> q.Filters:
    since = spec.get("since")
    extra = tuple((k, trace) for k, _ in spec.get("extra", ()))
    return q.Filters(
        since=now - _dt.timedelta(seconds=since) if since else None,
        level=spec.get("level"),
        loggers=spec.get("loggers", ()),
        grep=spec.get("grep"),
        extra=extra,
    )


def runner(
    conn: psycopg.Connection[Any], label: str, spec: dict[str, Any], now: _dt.datetime, trace: int
) -> Callable[[], int]:
    """A function running the query the way ``logsvc`` does; returns the number of rows."""
    if label.startswith("--count"):
        sql, params = q.build_count(BIG, q.Filters(since=now - _dt.timedelta(days=1), loggers=("app.db",)))
    elif label.startswith("tail"):
        sql, params = q.build_follow(BIG, q.Filters(), now - _dt.timedelta(seconds=2))
    else:
        if label.startswith("--level ERROR --logger"):
            f = q.Filters(
                since=now - _dt.timedelta(days=1), level=40, loggers=("app.db",), extra=(("trace_id", trace),)
            )
        else:
            f = filters_for(label, spec, now, trace)
        # query.select: the newest-first windows included, as `logsvc query` runs it.
        return lambda: len(q.select(conn, BIG, f, 100, False, now))
    return lambda: len(conn.execute(sql, params).fetchall())


def time_queries(
    conn: psycopg.Connection[Any], runs: int, now: _dt.datetime
) -> list[tuple[float, float, int]]:
    # A trace from the last day, so the combined query finds something.
    row = conn.execute(
        f"SELECT (extra->>'trace_id')::bigint FROM {BIG}.records WHERE created > %s - interval '3 h' "
        "AND levelno >= 40 AND logger = 'app.db' AND extra ? 'trace_id' LIMIT 1",
        [now],
    ).fetchone()
    trace = int(row[0]) if row else 17
    out = []
    for label, spec in QUERIES:
        run = runner(conn, label, spec, now, trace)
        times = []
        n = 0
        for _ in range(runs):
            t = time.perf_counter()
            n = run()
            times.append(time.perf_counter() - t)
        out.append((statistics.median(times) * 1000, times[0] * 1000, n))
    return out


def latency(dsn: str, runs: int) -> None:
    with psycopg.connect(dsn, autocommit=True, options=q.SESSION_OPTIONS) as conn:
        newest = conn.execute(f"SELECT max(created), count(*) FROM {BIG}.records").fetchone()
        assert newest is not None
        now = _dt.datetime.now(_dt.UTC)
        print(f"{BIG}.records: {newest[1]:,} rows, newest {now - newest[0]} ago")
        if now - newest[0] > _dt.timedelta(minutes=30):
            print("  (stale: --since 1h finds little; rebuild with bench/big_table.py)")
        sets: list[tuple[str, str | None]] = [("all INDEXES", None)]
        sets += [(f"without {name}", name) for name, _ in sch.INDEXES]
        results = {}
        for title, drop in sets:
            with conn.transaction(force_rollback=True):
                if drop:
                    conn.execute(f"DROP INDEX {BIG}.{drop}")
                results[title] = time_queries(conn, runs, now)
        print(f"\nquery latency, ms: median of {runs} (first run), rows returned")
        header = f"{'query':<62}" + "".join(f"{t:>28}" for t, _ in sets)
        print(header)
        for i, (label, _) in enumerate(QUERIES):
            cells = "".join(
                f"{results[t][i][0]:>14.1f} ({results[t][i][1]:>7.1f}) {results[t][i][2]:>4}" for t, _ in sets
            )
            print(f"{label:<62}{cells}")
    # The whole command, for the record: Python start-up and imports dominate it.
    cmd = [sys.executable, "-m", "logsvc", "query", "--dsn", dsn, "--schema", BIG, "--level", "ERROR"]
    cmd += ["--since", "1h"]
    walls = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t)
    print(
        "\nwhole command `logsvc query --level ERROR --since 1h`: "
        f"median {statistics.median(walls) * 1000:.0f} ms"
    )


def sample_rows(conn: psycopg.Connection[Any], n: int) -> list[bytes]:
    """``n`` real rows of bench_big as COPY text, shifted so the newest is now: 20k-row batches."""
    cols = ", ".join(COLUMN_NAMES)
    # bench_big numbers traces in order (cheap to generate); real trace ids are random, which
    # is what an index on them pays for: scramble them, one fixed permutation.
    shifted = (
        cols.replace("created,", "created + d AS created,")
        .replace("received,", "received + d AS received,")
        .replace(
            "extra",
            "CASE WHEN extra ? 'trace_id' THEN jsonb_set(extra, '{trace_id}', "
            "to_jsonb(abs(hashint8((extra->>'trace_id')::bigint)))) ELSE extra END",
        )
    )
    sql = (
        f"COPY (SELECT {shifted} FROM (SELECT *, now() - max(created) OVER () AS d FROM "
        f"(SELECT * FROM {BIG}.records ORDER BY created DESC LIMIT {int(n)}) r) s ORDER BY created) TO STDOUT"
    )
    data = bytearray()
    with conn.cursor().copy(sql) as cp:
        for chunk in cp:
            data += chunk
    lines = bytes(data).splitlines(keepends=True)
    return [b"".join(lines[i : i + BATCH_ROWS]) for i in range(0, len(lines), BATCH_ROWS)]


def ship(dsn: str, schema: str, batches: Sequence[bytes], start_seq: int) -> float:
    """Ship the batches the way PgSink does; return seconds."""
    pgconn = pgproto.run_blocking(pgproto.connect(dsn))
    try:
        seq = start_seq
        t = time.perf_counter()
        for b in batches:
            n = b.count(b"\n")
            sql = sch.batch_sql(schema, "be7c4", seq, seq + n)
            pgproto.run_blocking(pgproto.copy_in(pgconn, sql, [b]), timeout=120)
            seq += n
        return time.perf_counter() - t
    finally:
        pgconn.finish()


def ingest(dsn: str, rows: int, runs: int) -> None:
    chosen = [name for name, _ in sch.INDEXES]
    sets: list[tuple[str, list[tuple[str, str]]]] = [("BRIN on created only (baseline)", [])]
    sets += [(f"+ {name}", [(name, how)]) for name, how in sch.INDEXES]
    sets += [("+ all of INDEXES (kept)", list(sch.INDEXES))]
    sets += [(f"+ {name} (candidate)", [(name, how)]) for name, how in CANDIDATES]
    with psycopg.connect(dsn, autocommit=True) as conn:
        batches = sample_rows(conn, rows)
        had_trgm = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        schemas = []
        today = _dt.datetime.now(_dt.UTC).date()
        for i, (_, extra) in enumerate(sets):
            s = f"bench_ingest_{i}"
            schemas.append(s)
            conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
            conn.execute(sch.create_sql(s))
            conn.execute(sch.partitions_sql(s, today))
            for name in chosen:
                conn.execute(f"DROP INDEX {s}.{name}")
            for name, how in extra:
                conn.execute(f"CREATE INDEX {name} ON {s}.records {how}")
    nrows = sum(b.count(b"\n") for b in batches)
    rates: dict[int, list[float]] = {i: [] for i in range(len(sets))}
    seqs = dict.fromkeys(range(len(sets)), 0)
    for _ in range(runs):
        for i, s in enumerate(schemas):
            secs = ship(dsn, s, batches, seqs[i])
            seqs[i] += nrows
            rates[i].append(nrows / secs)
    base = statistics.median(rates[0])
    print(
        f"\ningest through batch_sql + COPY, {nrows:,} rows per run "
        f"in {BATCH_ROWS:,}-row batches, {runs} runs"
    )
    print(f"{'index set':<50}{'rows/s (median)':>16}{'vs baseline':>13}{'min..max':>22}")
    for i, (title, _) in enumerate(sets):
        r = rates[i]
        print(
            f"{title:<50}{statistics.median(r):>16,.0f}{statistics.median(r) / base:>12.0%}"
            f"{min(r):>11,.0f}..{max(r):<10,.0f}"
        )
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in schemas:
            conn.execute(f"DROP SCHEMA {s} CASCADE")
        if not had_trgm:
            conn.execute("DROP EXTENSION IF EXISTS pg_trgm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True, help="PostgreSQL connection string (bench_big built there)")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--ingest-rows", type=int, default=400_000)
    p.add_argument("--ingest-runs", type=int, default=3)
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    a = p.parse_args()
    if not a.skip_latency:
        latency(a.dsn, a.runs)
    if not a.skip_ingest:
        ingest(a.dsn, a.ingest_rows, a.ingest_runs)


if __name__ == "__main__":
    main()
