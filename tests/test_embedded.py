"""The embedded PostgreSQL is stopped by the last logsvc process that uses it, and only then.

``query`` and ``tail`` start the server when nobody runs it; they must not leave it running
when they exit, whether they finish, fail, or are ended by Ctrl-C, SIGTERM or SIGHUP; a pid
left in the package's list by a killed process must not keep it running either. A server a
``serve`` uses is left alone by a concurrent ``query``.

Each test starts real servers in a directory of its own, outside pytest's tmp_path (run as
root, the package runs PostgreSQL as the user ``pgserver``, which needs the parents open; see
tests/conftest.py), and stops anything still running at the end by its data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logsvc import embedded
from tests.helpers import Service, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="logsvc-embedded-test-"))
    try:
        yield tmp / "data"
    finally:
        pgdata = tmp / "data" / "pg"
        if embedded.postmaster_pid(pgdata.resolve()) is not None:
            embedded._stop(pgdata.resolve())  # only our own test's server
        shutil.rmtree(tmp, ignore_errors=True)


def logsvc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logsvc", *args], capture_output=True, text=True, timeout=timeout
    )


def postgres_processes(pgdata: Path) -> list[int]:
    """Pids of live PostgreSQL processes of ``pgdata``: its postmaster, or anything with it in argv."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and argv and argv[0].endswith(b"postgres") and str(pgdata).encode() in argv:
            found.append(int(entry.name))
    return found


def test_query_stops_the_server_it_started(data_dir: Path) -> None:
    pgdata = (data_dir / "pg").resolve()
    started = time.monotonic()
    done = logsvc("query", "--data-dir", str(data_dir), "--count")
    took = time.monotonic() - started
    # A fresh server has no records table yet: the command says so (exit 2) after starting it.
    assert done.returncode == 2 and "has no records table" in done.stderr, done.stderr
    assert (pgdata / "PG_VERSION").exists(), "the embedded server was never started"
    assert embedded.postmaster_pid(pgdata) is None and postgres_processes(pgdata) == []
    assert not (pgdata / "postmaster.pid").exists()
    print(f"query with initdb, start and stop: {took:.2f} s")


def test_a_pid_left_by_a_killed_process_does_not_keep_the_server_running(data_dir: Path) -> None:
    pgdata = (data_dir / "pg").resolve()
    assert logsvc("query", "--data-dir", str(data_dir), "--count").returncode == 2  # initdb
    # A process that died without taking its pid out (SIGKILL): a pid that is surely not running.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (pgdata / ".handle_pids.json").write_text(json.dumps([dead.pid]))
    assert logsvc("query", "--data-dir", str(data_dir), "--count").returncode == 2
    assert embedded.postmaster_pid(pgdata) is None and postgres_processes(pgdata) == []
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, 0), (signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGHUP, 128 + signal.SIGHUP)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_tail_follow_ended_by_a_signal_stops_the_server_it_started(
    data_dir: Path, signum: int, status: int
) -> None:
    pgdata = (data_dir / "pg").resolve()
    # The schema first (tail needs a records table): a short serve, stopped.
    svc = Service(data_dir, "", "logsvc")
    svc.start()
    wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 60, "serve to connect")
    assert svc.stop() == 0
    assert embedded.postmaster_pid(pgdata) is None, "serve left its server running"

    tail = subprocess.Popen(
        [sys.executable, "-m", "logsvc", "tail", "-f", "--data-dir", str(data_dir), "--poll-interval", "0.2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: embedded.postmaster_pid(pgdata) is not None, 60, "tail to start the server")
        # Following: its pid is in the list once the server is up and it has connected.
        wait_for(
            lambda: tail.pid in json.loads((pgdata / ".handle_pids.json").read_text() or "[]"),
            60,
            "tail to register as a user",
        )
        time.sleep(0.5)  # into its follow loop (a signal during connect is also handled, less tested)
        tail.send_signal(signum)
        assert tail.wait(60) == status, tail.stderr.read() if tail.stderr else ""
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait(10)
    assert embedded.postmaster_pid(pgdata) is None and postgres_processes(pgdata) == []


def test_a_concurrent_query_leaves_the_server_of_a_serve_running(data_dir: Path) -> None:
    pgdata = (data_dir / "pg").resolve()
    svc = Service(data_dir, "", "logsvc")
    svc.start()
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 60, "serve to connect")
        pid = embedded.postmaster_pid(pgdata)
        assert pid is not None
        done = logsvc("query", "--data-dir", str(data_dir), "--count")
        assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr
        assert embedded.postmaster_pid(pgdata) == pid, "query stopped (or restarted) serve's server"
        assert "failed" not in svc.log(), svc.log()
        assert json.loads((pgdata / ".handle_pids.json").read_text()) == [svc.proc.pid if svc.proc else -1]
        assert svc.stop() == 0
    finally:
        svc.kill()
    # serve was the last user: its exit stops the server.
    assert embedded.postmaster_pid(pgdata) is None and postgres_processes(pgdata) == []


def test_the_server_is_not_stopped_while_another_process_uses_it(data_dir: Path) -> None:
    """Two users in this very process's terms: our pytest process plus a query subprocess."""
    pgdata = (data_dir / "pg").resolve()
    # A stand-in for a long-lived user: a process that is alive for the whole test.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert logsvc("query", "--data-dir", str(data_dir), "--count").returncode == 2
        assert embedded.postmaster_pid(pgdata) is None
        (pgdata / ".handle_pids.json").write_text(json.dumps([holder.pid]))
        assert logsvc("query", "--data-dir", str(data_dir), "--count").returncode == 2
        pid = embedded.postmaster_pid(pgdata)
        assert pid is not None, "stopped although another user was alive"
        assert json.loads((pgdata / ".handle_pids.json").read_text()) == [holder.pid]
    finally:
        holder.kill()
        holder.wait(10)
    # The holder is gone now: the next user to leave is the last one.
    assert logsvc("query", "--data-dir", str(data_dir), "--count").returncode == 2
    assert embedded.postmaster_pid(pgdata) is None and postgres_processes(pgdata) == []
    assert os.path.exists(pgdata / "PG_VERSION")


# -- the supervisor, in this process (serve wires it to its sink) ------------------------------


def wait_ready(pgdata: Path, timeout: float = 60) -> int:
    found: list[int] = []

    def ready() -> bool:
        state = embedded._read_pid_file(pgdata)
        if state is not None and state[1] == "ready" and embedded.postmaster_pid(pgdata) is not None:
            found.append(state[0])
            return True
        return False

    wait_for(ready, timeout, "the embedded server to be ready")
    return found[0]


def test_the_supervisor_restarts_a_killed_postmaster_without_waiting_for_it(data_dir: Path) -> None:
    from logsvc.metrics import Metrics

    pgdata = (data_dir / "pg").resolve()
    dsn = embedded.start(data_dir)
    metrics = Metrics()
    supervisor = embedded.Supervisor(data_dir, metrics)
    first = embedded.postmaster_pid(pgdata)
    assert first is not None
    assert supervisor.check() is False  # up and ready: nothing to do
    os.kill(first, signal.SIGKILL)
    started = time.monotonic()
    # The kill is delivered asynchronously: for a moment the postmaster still runs (and a
    # check then rightly finds it up). From the moment it is dead on, every check must say
    # "restarting" until the new one is up.
    while embedded._pid_state(first)[0] == "postgres" and time.monotonic() - started < 10:
        time.sleep(0.01)
    # What the sink does: call check() at each failed connect, sooner while it says True.
    calls = 0
    slowest = 0.0
    while embedded.postmaster_pid(pgdata) in (None, first) and time.monotonic() - started < 30:
        t0 = time.monotonic()
        assert supervisor.check() is True
        slowest = max(slowest, time.monotonic() - t0)
        calls += 1
        time.sleep(0.1)
    second = wait_ready(pgdata)
    restart_s = time.monotonic() - started
    assert second != first
    assert supervisor.restarts == metrics.embedded_pg_restarts == 1
    assert supervisor.check() is False
    import psycopg

    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    print(f"restart: {restart_s:.2f} s after the kill, {calls} checks, slowest check {slowest * 1000:.1f} ms")
    assert slowest < 0.5, "a check blocked the loop"


def test_a_killed_postmaster_that_is_our_child_is_reaped_and_restarted(data_dir: Path) -> None:
    """logsvc as PID 1 of a container: the orphaned postmaster is its child, nobody else reaps it."""
    from logsvc.metrics import Metrics

    pgdata = (data_dir / "pg").resolve()
    embedded.start(data_dir)
    supervisor = embedded.Supervisor(data_dir, Metrics())
    h = embedded._handles[pgdata]
    embedded._stop(pgdata)
    # The postmaster started as our own child (as PID 1 would find it after pg_ctl exits).
    child = subprocess.Popen(
        [str(h.bin_path / "postgres"), "-D", str(pgdata), "-h", "", "-k", str(h.socket_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=h.system_user,
    )
    try:
        assert wait_ready(pgdata) == child.pid
        child.kill()
        wait_for(lambda: embedded._pid_state(child.pid)[0] == embedded._EXITING, 10, "a zombie")
        launched = time.monotonic()
        # Killed is not yet a zombie: while the process tears down, waitpid(WNOHANG) finds
        # nothing to reap and the check says "wait" (True). Each later check reaps or waits.
        deadline = launched + 10
        while embedded._pid_state(child.pid)[0] != embedded._GONE:
            assert time.monotonic() < deadline, "the supervisor never reaped its child"
            assert supervisor.check() is True  # reaped and launched, or still waiting to reap
            time.sleep(0.01)
        while supervisor.restarts == 0:  # reaped by the last check: the next one launches
            assert time.monotonic() < deadline, "the supervisor never relaunched the server"
            supervisor.check()
            time.sleep(0.01)
        second = wait_ready(pgdata)
        assert second != child.pid and supervisor.restarts == 1
        print(f"launch to ready (crash recovery included): {time.monotonic() - launched:.2f} s")
    finally:
        if child.poll() is None:
            child.kill()
