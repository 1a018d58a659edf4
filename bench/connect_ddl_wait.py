"""Does a (re)connect wait behind another instance's open write on ``records``?

Usage: python bench/connect_ddl_wait.py --dsn DSN

A session (another instance's batch) inserts into ``records`` and leaves its transaction
open: it holds ROW EXCLUSIVE on the table, as a COPY does until it commits. Then:

1. each DDL statement the connect path used to run on every connect (before issue 13),
   with a 4 s statement_timeout, and a second writer (the next COPY of a third instance)
   started 0.5 s later: does the DDL wait, and does the writer queue behind it?
2. the connect path of this release (``PgSink`` from connect to IDLE: the catalog check,
   the leader-only maintenance and the position), under the same open write, and again
   while another session also holds the schema's advisory lock.

Uses the schema ``bench_ddl_wait``, dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from logsvc.journal import Journal
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.store import schema as sch
from logsvc.store.sink import IDLE, PgSink

S = "bench_ddl_wait"
INSERT = f"INSERT INTO {S}.records (seq, created, received) VALUES (1, now(), now())"


def _timed(dsn: str, sql: str, timeout: str = "4s") -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"SET statement_timeout = '{timeout}'")
        t = time.monotonic()
        try:
            c.execute(sql)
        except psycopg.errors.QueryCanceled:
            return f"waited {time.monotonic() - t:.3f} s, cancelled by statement_timeout"
        return f"done in {time.monotonic() - t:.3f} s"


def old_statements(dsn: str) -> None:
    statements = [
        f"CREATE INDEX IF NOT EXISTS records_created_brin ON {S}.records USING brin (created)",
        f"CREATE INDEX IF NOT EXISTS records_extra_trace_id ON {S}.records ((extra -> 'trace_id'))",
        f"CREATE TABLE IF NOT EXISTS {S}.records_default PARTITION OF {S}.records DEFAULT",
    ]
    for sql in statements:
        writer = psycopg.connect(dsn)
        writer.execute(INSERT)
        ddl: list[str] = []
        th = threading.Thread(target=lambda sql=sql, ddl=ddl: ddl.append(_timed(dsn, sql)))
        th.start()
        time.sleep(0.5)  # the DDL is in the lock queue by now (or done)
        nxt = _timed(dsn, INSERT.replace("(1,", "(2,"))
        th.join()
        writer.rollback()
        writer.close()
        print(f"  {sql.replace(S, 's')[:78]}\n      DDL: {ddl[0]}; next writer: {nxt}")


def new_connect(dsn: str, hold_lock: bool) -> None:
    writer = psycopg.connect(dsn)
    leader = psycopg.connect(dsn, autocommit=True)
    reactor = Reactor()
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal", fsync="never")
        journal.open()
        sink = PgSink(
            reactor, journal, Metrics(), conninfo=dsn, schema_name=S, max_records=100,
            max_bytes=1 << 20, max_age=0.05, retention_days=7, extra_index_keys=("trace_id",),
        )  # fmt: skip
        try:
            writer.execute(INSERT)
            if hold_lock:
                leader.execute("SELECT pg_advisory_lock(hashtext(%s))", [f"logsvc.schema.{S}"])
            t = time.monotonic()
            sink.start()
            deadline = t + 30
            while sink.state != IDLE and not sink.last_error and time.monotonic() < deadline:
                reactor.run_once(max_timeout=0.01)
            took = time.monotonic() - t
            state = sink.state if not sink.last_error else f"{sink.state}: {sink.last_error}"
            what = "open write + schema lock held elsewhere" if hold_lock else "open write"
            print(f"  PgSink connect -> {state} in {took:.3f} s ({what})")
        finally:
            sink.close()
            journal.close()
            reactor.close()
            writer.rollback()
            writer.close()
            leader.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--dsn", required=True)
    args = ap.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
        c.execute(sch.create_sql(S, ["trace_id"]))
        c.execute(sch.partitions_sql(S, _dt.datetime.now(_dt.UTC).date()))
        version = c.execute("SHOW server_version").fetchone()
    try:
        print(f"PostgreSQL {version[0] if version else '?'}; a transaction holding ROW EXCLUSIVE on records:")
        print("1. statements the connect path ran on every connect before issue 13:")
        old_statements(args.dsn)
        print("2. the connect path now:")
        new_connect(args.dsn, hold_lock=False)
        new_connect(args.dsn, hold_lock=True)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")


if __name__ == "__main__":
    main()
