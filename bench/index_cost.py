"""COPY rate into the real records table with and without an index on an ``extra`` key.

Usage: python bench/index_cost.py --dsn DSN [--cardinality 8] [--batches 25]

Encodes 20,000 real SocketHandler records once (``trace_id`` cycling through
``--cardinality`` values), then COPYs them ``--batches`` times, one transaction each, into a
fresh schema made by ``store.schema.create_sql``: with no index on ``extra -> 'trace_id'``,
with a btree on it (what ``serve --index-extra trace_id`` creates), and with a hash index.
Prints rows/s for each; the schema ``bench_idx`` is dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import logging.handlers
import time

import psycopg

from logsvc.store import schema as sch
from logsvc.store.copyfmt import COLUMN_NAMES, RowEncoder
from logsvc.wire import PickleFormat

S = "bench_idx"


def rows(cardinality: int) -> bytes:
    handler = logging.handlers.SocketHandler("localhost", 0)
    fmt, enc = PickleFormat(), RowEncoder()
    ts = enc.timestamp(time.time())
    out = []
    for i in range(20_000):
        rec = logging.LogRecord(
            "bench", 10, "/srv/app.py", 42, "[%06d] log message %08d", (1234, i), None, "run"
        )
        rec.trace_id = i % cardinality
        out.append(enc.encode(fmt.parse(handler.makePickle(rec)[4:]), i + 1, "127.0.0.1:5555", ts))
    return b"".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--cardinality", type=int, default=8)
    ap.add_argument("--batches", type=int, default=25)
    args = ap.parse_args()
    batch = rows(args.cardinality)
    base = sch.create_sql(S) + sch.partitions_sql(S, dt.datetime.now(dt.UTC).date())
    variants = {
        "no index on extra": "",
        "btree (extra -> 'trace_id')": sch.extra_index_sql(S, ["trace_id"]),
        "hash (extra -> 'trace_id')": f"CREATE INDEX ON {S}.records USING hash ((extra -> 'trace_id'));",
    }
    copy = f"COPY {S}.records ({', '.join(COLUMN_NAMES)}) FROM STDIN"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        for name, extra_sql in variants.items():
            conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
            conn.execute(base + extra_sql)
            start = time.perf_counter()
            for _ in range(args.batches):
                with conn.transaction(), conn.cursor().copy(copy) as cp:
                    cp.write(batch)
            rate = 20_000 * args.batches / (time.perf_counter() - start)
            print(f"cardinality={args.cardinality:<7} {name:30s} {rate:>10,.0f} rows/s", flush=True)
        conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")


if __name__ == "__main__":
    main()
