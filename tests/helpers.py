"""Running a real ``logsvc serve`` and real stock ``SocketHandler`` clients in tests."""

from __future__ import annotations

import logging
import logging.config
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from logsvc.loop import Reactor


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``cond`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Service:
    """``python -m logsvc serve`` in a child process, its log in a file we can poll."""

    def __init__(self, data_dir: Path, dsn: str, schema: str, *args: str, port: int = 0) -> None:
        self.data_dir = data_dir
        self.dsn = dsn
        self.schema = schema
        self.args = list(args)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "service.log"
        self._log_offset = 0
        # Highest VmHWM (KiB) seen in any run of this Service; sampled just before each stop.
        self.peak_rss_kb = 0

    def start(self, timeout: float = 60.0) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        cmd = [
            sys.executable, "-m", "logsvc", "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--dsn", self.dsn,
            "--schema", self.schema,
            "--data-dir", str(self.data_dir),
            "--batch-max-age", "50ms",
            "--stats-interval", "0",
            "--metrics", "127.0.0.1:0",
            *self.args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        found: list[int] = []

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"logsvc exited with {self.proc.returncode}:\n{self.log()}")
            log = self.log()
            m = re.search(r"Listening on 127\.0\.0\.1:(\d+)", log)
            # The metrics listener is bound last: once it is logged, every port is in the log.
            if m and "HTTP: /metrics" in log:
                found.append(int(m.group(1)))
            return bool(found)

        wait_for(listening, timeout, "logsvc to listen")
        self.port = found[0]
        return self

    def log(self) -> str:
        """What this run of the service has logged so far."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    def sample_peak_rss(self) -> int:
        """Read VmHWM (peak resident set, KiB) of the running service into ``peak_rss_kb``.

        The kernel keeps the high-water mark for the life of the process, so one sample just
        before it stops sees its whole peak. Once it has exited there is nothing to read
        (``/proc/PID`` of a zombie has no memory lines) and the last value stands.
        """
        if self.proc is not None and self.proc.poll() is None:
            try:
                status = Path(f"/proc/{self.proc.pid}/status").read_text()
            except OSError:
                status = ""
            m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
            if m:
                self.peak_rss_kb = max(self.peak_rss_kb, int(m.group(1)))
        return self.peak_rss_kb

    @property
    def peak_rss_mb(self) -> float:
        """``peak_rss_kb`` in MiB, for reports."""
        return self.peak_rss_kb / 1024

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the service (by pid: only the process we started) and wait for it."""
        assert self.proc is not None
        self.sample_peak_rss()
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"logsvc did not exit within {timeout} s after {signum}:\n{self.log()}"
            ) from None

    def rows(
        self, columns: str, where: str = "true", params: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        """``columns`` of the records matching ``where``, in seq order ([] before the table exists)."""
        with psycopg.connect(self.dsn, autocommit=True) as c:
            if c.execute("SELECT to_regclass(%s)", [f"{self.schema}.records"]).fetchone() == (None,):
                return []
            cur = c.execute(
                f"SELECT {columns} FROM {self.schema}.records WHERE {where} ORDER BY seq", params or []
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def wait_rows(
        self, n: int, columns: str, where: str, params: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        """Wait (30 s at most) until exactly ``n`` records match ``where``; return them."""
        wait_for(lambda: len(self.rows(columns, where, params)) >= n, 30, f"{n} rows where {where}")
        got = self.rows(columns, where, params)
        assert len(got) == n, got
        return got

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_peak_rss()
            self.proc.kill()
            self.proc.wait(10)


def client_main(port: int, count: int, trace_id: int, pause: float, run: str) -> None:
    """A stock client, configured the way the seed configures it: dictConfig + SocketHandler."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "svc": {"class": "logging.handlers.SocketHandler", "host": "127.0.0.1", "port": port},
            },
            "loggers": {"bench": {"level": "DEBUG", "handlers": ["svc"], "propagate": False}},
        }
    )
    logger = logging.getLogger("bench")
    pid = os.getpid()
    for n in range(count):
        logger.debug("[%06d] log message %08d", pid, n, extra={"trace_id": trace_id, "run": run})
        if pause:
            time.sleep(pause)
    logging.shutdown()


def start_clients(
    port: int, procs: int, count: int, *, pause: float = 0.0, run: str = "r"
) -> list[multiprocessing.process.BaseProcess]:
    ctx = multiprocessing.get_context("fork")
    ps: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=client_main, args=(port, count, i, pause, run)) for i in range(procs)
    ]
    for p in ps:
        p.start()
    return ps


def join_clients(ps: Sequence[multiprocessing.process.BaseProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in ps:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            kill_clients(ps)
            raise AssertionError("a client process did not finish in time")
        assert p.exitcode == 0


def kill_clients(ps: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """For cleanup: end any client process still running (only the processes we started)."""
    for p in ps:
        if p.is_alive():
            p.kill()
            p.join(10)


def counts(dsn: str, schema: str) -> tuple[int, int, int]:
    """(rows, distinct seqs, max seq) of the records table; zeros before it exists."""
    with psycopg.connect(dsn, autocommit=True) as c:
        if c.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
            return 0, 0, 0
        row = c.execute(
            f"SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM {schema}.records"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def seq_runs(dsn: str, schema: str) -> int:
    """How many unbroken runs of seqs the records table holds (0 when empty).

    One run means no seq is missing between the first and the last. The journal reserves
    seqs ahead of use, so each unclean stop (SIGKILL, power loss) may leave one gap of
    never-used seqs; a record lost after it was numbered leaves a gap of its own too, so a
    test bounds the runs by 1 + the unclean stops it caused.
    """
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            f"SELECT count(*) FROM {schema}.records r "
            f"WHERE NOT EXISTS (SELECT 1 FROM {schema}.records p WHERE p.seq = r.seq - 1)"
        ).fetchone()
    assert row is not None
    return int(row[0])


def run_until(r: Reactor, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Turn the reactor until ``cond`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout:.1f} s")
        r.run_once(max_timeout=0.05)
