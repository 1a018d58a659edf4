"""SIGTERM under load: the service drains and exits 0 within its shutdown bound.

On SIGTERM the service closes its listeners, reads what every client already sent, closes
them, and ships everything before exiting. The stock clients keep logging: whatever they send
after their connection is closed is dropped by the handler (it cannot connect any more), and
that loss is measured. What must hold: PostgreSQL holds exactly the records the service says
it read in its last log line, each once, and each client's stored records are an unbroken
prefix of what it logged (the loss is only at the end).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.faults.conftest import ReliabilityRow
from tests.faults.helpers import ClientPlan, TaggedClients, final_counts, tally
from tests.helpers import Service, counts, wait_for

CLIENTS = 3
RUN = "sigterm"
SHUTDOWN_TIMEOUT_S = 10.0
# Python's start-up is not the issue here, only the exit: signal -> drained -> exit 0.
EXIT_MARGIN_S = 3.0


def test_sigterm_under_load_drains_everything_received_and_exits_zero_in_time(
    tmp_path: Path, dsn: str, schema: str, reliability_row: ReliabilityRow
) -> None:
    svc = Service(tmp_path / "data", dsn, schema, "--shutdown-timeout", f"{SHUTDOWN_TIMEOUT_S:g}s")
    svc.start()
    plan = ClientPlan(run=RUN, pause=0.0002, retry_start=0.1, retry_max=0.5, max_seconds=120)
    clients = TaggedClients(svc.port, CLIENTS, plan)
    try:
        clients.start()
        clients_started = time.monotonic()
        wait_for(lambda: counts(dsn, schema)[0] >= 3000, 60, "records stored before SIGTERM")
        stored_before = counts(dsn, schema)[0]
        sent_before = clients.total_sent()
        started = time.monotonic()
        rate = sent_before / (started - clients_started)
        status = svc.stop(signal.SIGTERM, timeout=SHUTDOWN_TIMEOUT_S + 20)
        shutdown_s = time.monotonic() - started
        # The clients are still logging into a closed port; let them notice, then stop them.
        after_exit = clients.total_sent()
        wait_for(lambda: clients.total_sent() >= after_exit + 100, 30, "the clients to keep logging")
        clients.stop()
    finally:
        clients.kill()
        svc.kill()

    sent = clients.sent
    t = tally(dsn, schema, RUN, sent)
    final = final_counts(svc.log())
    row = reliability_row(
        fault="SIGTERM under load",
        done=(
            f"SIGTERM while {CLIENTS} stock clients send ({rate:,.0f} records/s together, "
            f"{sent_before:,} sent by then); --shutdown-timeout {SHUTDOWN_TIMEOUT_S:g}s; the clients "
            "keep logging after the listener closes"
        ),
        tally=t,
        peak_rss_mb=svc.peak_rss_mb,
        figures={
            "exit_status": status,
            "shutdown_s": round(shutdown_s, 2),
            "read_by_service": final.read,
            "shipped_during_shutdown": t.rows - stored_before,
            # Accepted by the kernel after the service's last read, or a frame cut in half.
            "lost_in_flight_at_close": t.lost - sum(clients.dropped),
            # Logged after the connection was closed: grows with how long the clients run on.
            "dropped_by_stock_clients": sum(clients.dropped),
        },
    )
    assert status == 0
    assert shutdown_s < SHUTDOWN_TIMEOUT_S + EXIT_MARGIN_S
    assert "Everything is in PostgreSQL" in svc.log()
    assert (t.duplicated, t.seq_duplicates, t.unexpected, t.other_rows) == (0, 0, 0, 0)
    # Nothing the service read is missing: its own counts are what PostgreSQL holds.
    assert final.read == final.journaled == final.stored == t.rows
    assert row["lost_by_logsvc"] == 0 and row["read_exact"]
    rows, distinct, max_seq = counts(dsn, schema)
    assert rows == distinct == max_seq == t.rows
    # Per client, the loss is a tail: everything up to some record is stored, nothing after.
    for i in range(CLIENTS):
        kept = len(t.ns(i))
        assert t.missing[i] == list(range(kept, sent[i])), i
