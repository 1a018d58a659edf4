"""PostgreSQL's side of each flood format: COPY rate of its rows into the records table.

Usage: python bench/format_copy.py --dsn DSN [--rounds 5]

Encodes 20,000 records of ``flood --format http`` (NDJSON), ``otlp`` (the SDK-shaped protobuf
records: resource and scope in every row's extra, a distinct trace id per record) and ``bulk``
(Filebeat-shaped ECS documents) once, as the service would (``RowEncoder``), and ``otlp-slim``
(the OTLP rows without the resource, scope and hostname they repeat: what storing a resource
once, elsewhere, would leave; no such layout exists), then COPYs each
batch in its own transaction into a fresh schema made by ``store.schema.create_sql``, with the
default btree on ``extra -> 'trace_id'`` and without it, alternating the formats ``--rounds``
times. Prints the row size and the median rows/s of each; PostgreSQL's CPU per row is what it
takes from the cores the service and the senders share. The schema ``bench_fmtcopy`` is dropped
afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

import psycopg

from logsvc.bench.records import flood_records, otlp_bodies
from logsvc.record import RecordDict
from logsvc.store import schema as sch
from logsvc.store.copyfmt import COLUMN_NAMES, RowEncoder
from logsvc.wire.bulk import parse_bulk
from logsvc.wire.json_format import JsonFormat
from logsvc.wire.otlp import PROTOBUF, parse_logs

S = "bench_fmtcopy"
N = 20_000
# What an OTLP row repeats from its resource and scope (``wire.otlp._base``).
_PER_RESOURCE = frozenset({"resource", "scope", "hostname"})


def records(fmt: str) -> list[RecordDict]:
    out: list[RecordDict] = []
    if fmt.startswith("otlp"):
        for body, _ in otlp_bodies("abcdef123456", 0, N, 1000):
            out += [r for r in parse_logs(body, PROTOBUF) if isinstance(r, dict)]
        if fmt == "otlp-slim":  # what rows would be with the resource stored once, elsewhere
            out = [{k: v for k, v in r.items() if k not in _PER_RESOURCE} for r in out]
    elif fmt == "bulk":
        pairs = flood_records("bulk", "abcdef123456", 0, N)
        for k in range(0, N, 1000):
            out += [r for r in parse_bulk(b"".join(pairs[k : k + 1000]), None, JsonFormat()).records()
                    if isinstance(r, dict)]  # fmt: skip
    else:
        out = [JsonFormat().parse(line.rstrip(b"\n")) for line in flood_records("http", "abcdef123456", 0, N)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    enc = RowEncoder()
    ts = enc.timestamp(time.time())
    batches = {
        fmt: b"".join(enc.encode(r, i + 1, "127.0.0.1:5555", ts) for i, r in enumerate(records(fmt)))
        for fmt in ("http", "otlp", "otlp-slim", "bulk")
    }
    base = sch.create_sql(S) + sch.partitions_sql(S, dt.datetime.now(dt.UTC).date())
    copy = f"COPY {S}.records ({', '.join(COLUMN_NAMES)}) FROM STDIN"
    rates: dict[tuple[str, str], list[float]] = {}
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        for index in ("btree on extra->'trace_id'", "no index on extra"):
            conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
            conn.execute(base + (sch.extra_index_sql(S, ["trace_id"]) if index.startswith("btree") else ""))
            for _ in range(args.rounds):
                for fmt, batch in batches.items():
                    start = time.perf_counter()
                    with conn.transaction(), conn.cursor().copy(copy) as cp:
                        cp.write(batch)
                    rates.setdefault((fmt, index), []).append(N / (time.perf_counter() - start))
        conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
    for (fmt, index), rs in rates.items():
        print(
            f"{fmt:9s} {len(batches[fmt]) // N:4d} bytes/row  {index:27s} "
            f"median {statistics.median(rs):>9,.0f} rows/s  ({' '.join(f'{r:,.0f}' for r in rs)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
