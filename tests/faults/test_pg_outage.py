"""PostgreSQL stopped and started again while clients send: the service loses nothing, stores nothing twice.

The shared server must never be stopped by a test, so this one starts its own throwaway
PostgreSQL (the embedded package, in a temporary directory, deleted afterwards).

Besides loss and duplicates, it measures how the service comes back: how long after
PostgreSQL is up again the service reconnects (its back-off doubles from 0.1 s to 10 s),
the backlog it then holds (its own "Connected" line says), how fast it ships that backlog
while taking new records again, and when the backlog is gone.

The stock clients are not blocked for as long as reads are paused: ``SocketHandler``'s socket
keeps the 1 s timeout it was connected with, so a ``sendall`` the service does not read for a
second fails, and the handler drops that record, closes the connection (perhaps mid-frame)
and opens a new one. Those records are lost on the client side; the test counts them there and
requires that they are all that is missing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from tests.faults.conftest import ReliabilityRow
from tests.faults.helpers import (
    ClientPlan,
    TaggedClients,
    connected_lines,
    final_counts,
    logged_at,
    stored_count,
    tally,
)
from tests.helpers import Service, counts, wait_for

CLIENTS = 3
# The backlog must be several batches (--batch-max-records, 20,000 by default) for the
# catch-up rate to mean anything: a 16 MiB journal holds ~55,000 of these records.
PER_CLIENT = 30_000
JOURNAL_MAX = "16MiB"
POLL_S = 0.02


def test_postgresql_down_mid_stream_then_back_the_service_loses_and_duplicates_nothing(
    tmp_path: Path, throwaway_pg: Any, reliability_row: ReliabilityRow
) -> None:
    dsn = throwaway_pg.get_uri()
    schema = "outage"
    # A small journal cap, so the outage also drives the service into backpressure.
    svc = Service(
        tmp_path / "data", dsn, schema, "--journal-segment-bytes", "1MiB", "--journal-max-bytes", JOURNAL_MAX
    )
    svc.start()
    clients = TaggedClients(svc.port, CLIENTS, ClientPlan(run="outage", max_count=PER_CLIENT, pause=0.0002))
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the first connection")
        clients.start()
        wait_for(lambda: counts(dsn, schema)[0] >= 1000, 60, "records before the outage")
        throwaway_pg._stop()
        down_at = time.monotonic()
        wait_for(lambda: "failed (connection)" in svc.log(), 30, "the service to notice the outage")
        wait_for(lambda: "Journal is full" in svc.log(), 60, "backpressure while PostgreSQL is down")
        throwaway_pg.ensure_postgres_running()
        back_at = time.monotonic()

        # The service retries on its own back-off; poll its log for the second connection.
        wait_for(lambda: len(connected_lines(svc.log())) >= 2, 30, "the service to reconnect", POLL_S)
        reconnected_at = time.monotonic()
        shipped_seq, backlog = connected_lines(svc.log())[-1]
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_for(
                lambda: stored_count(conn, schema) >= shipped_seq + backlog,
                60,
                "the backlog to be shipped",
                POLL_S,
            )
        gone_at = time.monotonic()

        clients.join(timeout=120)
        sent = clients.sent
        wait_for(lambda: counts(dsn, schema)[0] >= sum(sent) - sum(clients.dropped), 60, "the last records")
        assert svc.stop() == 0
    finally:
        clients.kill()
        svc.kill()

    t = tally(dsn, schema, "outage", sent)
    final = final_counts(svc.log())
    dropped = sum(clients.dropped)
    catch_up_s = gone_at - reconnected_at
    log = svc.log()
    paused_at, resumed_at = logged_at(log, "Journal is full"), logged_at(log, "Journal has room again")
    paused_s = (resumed_at - paused_at).total_seconds() if paused_at and resumed_at else -1.0
    row = reliability_row(
        fault="PostgreSQL outage",
        done=(
            f"PostgreSQL stopped under load ({CLIENTS} stock clients x {PER_CLIENT:,}) until the journal "
            f"(--journal-max-bytes {JOURNAL_MAX}) was full and reads paused, then started again"
        ),
        tally=t,
        peak_rss_mb=svc.peak_rss_mb,
        figures={
            "outage_s": round(back_at - down_at, 2),
            "reads_paused_s": round(paused_s, 2),
            "reconnect_after_pg_back_s": round(reconnected_at - back_at, 2),
            "backlog_records": backlog,
            "catch_up_records_per_s": round(backlog / catch_up_s) if catch_up_s > 0 else 0,
            "backlog_gone_after_pg_back_s": round(gone_at - back_at, 2),
            "dropped_by_stock_clients": dropped,
            "cut_frames_closed": log.count("bad frame (truncated)"),
        },
    )
    assert (t.duplicated, t.seq_duplicates, t.unexpected, t.other_rows) == (0, 0, 0, 0)
    # The service lost nothing it was given: what it read is what PostgreSQL holds.
    assert final.read == final.journaled == final.stored == t.rows
    assert row["lost_by_logsvc"] == 0 and row["read_exact"]
    rows, distinct, max_seq = counts(dsn, schema)
    assert rows == distinct == max_seq == t.rows
    # The stock handler drops a record when its send times out (its socket keeps a 1 s
    # timeout); anything missing must be one of those, never a record the service had.
    assert t.lost == dropped
    assert "resuming" in log
