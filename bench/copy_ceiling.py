"""The ceiling of one PostgreSQL for our rows: text COPY on one backend and on several at once.

Usage: python bench/copy_ceiling.py --dsn DSN [--batches 10] [--batch-rows 20000] [--repeats 3]
       [--backends 1,2] [--cardinality 8]

Encodes 20,000 real ``SocketHandler`` records once, as the service does (``RowEncoder``: the
COPY text row the journal holds), then ships them the way ``PgSink`` does: one transaction
per batch with ``advance_shipped``, ``SET LOCAL logsvc.journal`` and ``COPY ... FROM STDIN``
(psycopg's ``copy``), into a fresh schema made by ``store.schema.create_sql``: with the
default btree on ``extra -> 'trace_id'`` (what ``serve`` creates) and without it
(``--index-extra=``). With N backends (``--backends``, 1 and 2 by default), N processes each
with its own connection and journal id start together; the rate is all rows over the wall
time from the first start to the last commit. ``trace_id`` cycles through ``--cardinality``
values: few values make concurrent inserts into the btree meet on the same leaf pages.

Each backend's CPU (user + system, from /proc: PostgreSQL on this machine; 0 elsewhere) is
summed and divided by the rows: the CPU PostgreSQL spends per row, which is what a bigger
machine divides among its cores (the backends' own CPU: the WAL writer, checkpointer and
autovacuum are not in it). The WAL written per row (``pg_current_wal_lsn`` before and after,
each run starting after a CHECKPOINT) is the other shared resource: one WAL stream per
server, however many backends.

Runs alternate (each count of backends, for each index setting), ``--repeats`` times;
medians are printed. The schema ``bench_ceiling`` is dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import logging.handlers
import multiprocessing
import os
import statistics
import time
import uuid
from typing import Any

import psycopg

from logsvc.store import schema as sch
from logsvc.store.copyfmt import COPY_COLUMNS, ROW_FORMAT, RowEncoder
from logsvc.wire import PickleFormat

S = "bench_ceiling"
ROWS = 20_000
_TICK = os.sysconf("SC_CLK_TCK")


def encoded_rows(cardinality: int) -> list[bytes]:
    handler = logging.handlers.SocketHandler("localhost", 0)
    fmt, enc = PickleFormat(), RowEncoder()
    ts = enc.timestamp(time.time())
    out = []
    for i in range(ROWS):
        rec = logging.LogRecord(
            "bench", 10, "/srv/app.py", 42, "[%06d] log message %08d", (1234, i), None, "run"
        )
        rec.trace_id = i % cardinality
        out.append(enc.encode(fmt.parse(handler.makePickle(rec)[4:]), i + 1, "127.0.0.1:5555", ts))
    return out


def backend_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a local PostgreSQL backend, from /proc/PID/stat (0: not here)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # PostgreSQL on another machine (a Citus coordinator): its CPU is not seen
    return (int(fields[11]) + int(fields[12])) / _TICK


def backend(dsn: str, block: bytes, rows: int, batches: int, go: Any, out: Any) -> None:
    """One connection shipping ``batches`` batches of ``block`` (``rows`` rows), as PgSink does."""
    copy = f"COPY {S}.records ({', '.join(COPY_COLUMNS[ROW_FORMAT])}) FROM STDIN"
    jid = uuid.uuid4().hex
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(row[0])
        go.wait()
        cpu0, t0 = backend_cpu_s(pid), time.monotonic()
        for b in range(batches):
            with conn.transaction():
                conn.execute(f"SELECT {S}.advance_shipped(%s, %s, %s)", [jid, b * rows, (b + 1) * rows])
                conn.execute(f"SET LOCAL {sch.JOURNAL_SETTING} = '{jid}'")
                with conn.cursor().copy(copy) as cp:
                    cp.write(block)
        t1 = time.monotonic()
        out.put((t0, t1, rows * batches, backend_cpu_s(pid) - cpu0))


def wal_lsn(dsn: str) -> int:
    """PostgreSQL's current WAL position, in bytes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def run(dsn: str, block: bytes, rows: int, batches: int, backends: int) -> tuple[float, float, float]:
    """(rows/s over the wall time, PostgreSQL CPU µs per row, WAL bytes per row) for one run."""
    ctx = multiprocessing.get_context("fork")
    lsn = wal_lsn(dsn)
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=backend, args=(dsn, block, rows, batches, go, out)) for _ in range(backends)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # every backend connected and waiting
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(30)
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    total = sum(r[2] for r in results)
    return total / wall, sum(r[3] for r in results) / total * 1e6, (wal_lsn(dsn) - lsn) / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--batches", type=int, default=10, help="batches per backend per run")
    ap.add_argument("--batch-rows", type=int, default=ROWS, help=f"rows per batch (at most {ROWS})")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cardinality", type=int, default=8, help="distinct trace_id values (index_cost.py's 8)")
    ap.add_argument("--backends", default="1,2", help="how many backends at once, a comma-separated list")
    args = ap.parse_args()
    counts = [int(n) for n in args.backends.split(",")]
    rows = encoded_rows(args.cardinality)[: args.batch_rows]
    block = b"".join(rows)
    print(
        f"row: {len(block) / len(rows):.0f} bytes of COPY text on average; batch: {len(rows)} rows; "
        f"{args.batches} batches per backend per run; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    variants = {"btree on extra->'trace_id' (default)": ["trace_id"], "no extra index": []}
    got: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            for _ in range(args.repeats):
                for name, keys in variants.items():
                    conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
                    conn.execute(sch.create_sql(S, keys))
                    conn.execute(sch.partitions_sql(S, dt.datetime.now(dt.UTC).date()))
                    for backends in counts:
                        conn.execute(f"TRUNCATE {S}.records")
                        conn.execute("CHECKPOINT")
                        result = run(args.dsn, block, len(rows), args.batches, backends)
                        got.setdefault((name, backends), []).append(result)
                        rate, cpu, wal = result
                        what = f"{rate:,.0f} rows/s, {cpu:.2f} µs/row, {wal:.0f} B WAL/row"
                        print(f"  {name}, {backends} backend(s): {what}")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
    print("medians:")
    for (name, backends), results in got.items():
        rate = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        wal = statistics.median(r[2] for r in results)
        print(
            f"  {name:38s} {backends} backend(s): {rate:>9,.0f} rows/s   PostgreSQL CPU {cpu:.2f} µs/row"
            f"   WAL {wal:.0f} B/row"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
