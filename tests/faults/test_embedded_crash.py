"""The embedded PostgreSQL's postmaster killed (SIGKILL) under load: serve restarts it, catches up.

``serve`` without ``--dsn`` runs the embedded server; its supervisor (``embedded.Supervisor``,
called by the sink when the connection fails) finds the postmaster gone and starts it again
with ``pg_ctl start -W``, without blocking the loop; the sink's reconnects poll for it.
PostgreSQL recovers from its WAL, the sink re-reads its position and ships the backlog.
Every record the clients sent is stored exactly once; the restart is logged once and the
server is stopped when serve exits (the restarted one, not the dead one it first saw).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logsvc import embedded
from tests.faults.conftest import ReliabilityRow
from tests.faults.helpers import ClientPlan, TaggedClients, connected_lines, finish_load, logged_at, tally
from tests.helpers import Service, counts, wait_for

CLIENTS = 3
SCHEMA = "embedded_crash"
RESTART_WITHIN_S = 30.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under tmp_path: the restart in the middle of the test runs PostgreSQL as another user
    # (run as root), which needs the parents open (see the throwaway_pg fixture).
    root = Path(tempfile.mkdtemp(prefix="logsvc-embedded-crash-"))
    try:
        yield root / "data"
    finally:
        pgdata = (root / "data" / "pg").resolve()
        if embedded.postmaster_pid(pgdata) is not None:
            embedded._stop(pgdata)  # only if the test failed before serve stopped it
        shutil.rmtree(root, ignore_errors=True)


def test_embedded_postgresql_killed_under_load_is_restarted_and_nothing_is_lost_or_doubled(
    data_dir: Path, reliability_row: ReliabilityRow
) -> None:
    pgdata = (data_dir / "pg").resolve()
    svc = Service(data_dir, "", SCHEMA)  # --dsn "": the embedded server
    svc.start(timeout=120)
    clients = TaggedClients(svc.port, CLIENTS, ClientPlan(run="crash", pause=0.001, max_seconds=180))
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 60, "the first connection")
        m = re.search(r"Embedded PostgreSQL is up: psql '([^']+)'", svc.log())
        assert m, svc.log()
        dsn = m.group(1)
        clients.start()
        wait_for(lambda: counts(dsn, SCHEMA)[0] >= 2000, 60, "records before the kill")
        first = embedded.postmaster_pid(pgdata)
        assert first is not None
        os.kill(first, signal.SIGKILL)  # the postmaster our serve started
        killed_at = time.monotonic()
        wait_for(lambda: "restarting it" in svc.log(), RESTART_WITHIN_S, "the supervisor to restart it", 0.05)
        wait_for(
            lambda: len(connected_lines(svc.log())) >= 2, RESTART_WITHIN_S, "the service to reconnect", 0.05
        )
        reconnected_s = time.monotonic() - killed_at
        second = embedded.postmaster_pid(pgdata)
        assert second is not None and second != first
        sent, dropped = finish_load(svc, clients, dsn, SCHEMA)  # load after the restart too
    finally:
        clients.kill()
        svc.kill()

    log = svc.log()
    # serve was the server's only user: its exit stops the restarted server too.
    stopped = embedded.postmaster_pid(pgdata) is None
    # Tally through a server of our own now (serve stopped it), deleted by the fixture.
    dsn = embedded.start(data_dir, cleanup="stop")
    t = tally(dsn, SCHEMA, "crash", sent)
    line = re.search(r"restarting it \(restart (\d+), pg_ctl launched in ([\d.]+) ms\)", log)
    restart_at, connected_at = logged_at(log, "restarting it"), None
    for ln in log.splitlines():
        if "Connected to PostgreSQL" in ln:
            connected_at = ln  # the last one
    reliability_row(
        fault="embedded PostgreSQL killed",
        done=f"SIGKILL of the embedded postmaster while {CLIENTS} stock clients sent; serve restarts it",
        tally=t,
        peak_rss_mb=svc.peak_rss_mb,
        figures={
            "reconnected_after_kill_s": round(reconnected_s, 2),
            "pg_ctl_launch_ms": float(line.group(2)) if line else -1,
            "restarts_logged": log.count("restarting it"),
            "dropped_by_stock_clients": dropped,
        },
        not_accepted=dropped,
    )
    print(
        f"reconnected {reconnected_s:.2f} s after the kill; {line.group(0) if line else 'no restart line'}; "
        f"restart logged at {restart_at}, last connect: {connected_at}"
    )
    assert line is not None and line.group(1) == "1" and log.count("restarting it") == 1, log
    assert reconnected_s <= RESTART_WITHIN_S
    assert stopped, "serve's exit left the restarted server running"
    assert (t.duplicated, t.seq_duplicates, t.unexpected, t.other_rows) == (0, 0, 0, 0)
    assert t.lost == dropped
