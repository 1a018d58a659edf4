"""The service under load, seen from outside: is it listening, which pid, its CPU, memory and metrics.

Read-only: this module looks at ``/proc`` and at the service's ``/metrics`` page and never
signals or configures the service. ``attach`` is what every mode does first: check that
something answers on the port, find the pid of the process that listens there (for CPU and
memory figures), and open the PostgreSQL connection that counts the run.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import http.client
import ipaddress
import os
import socket
import urllib.request
from dataclasses import dataclass

from logsvc import config
from logsvc.bench.counting import Counter
from logsvc.bench.records import DATAGRAM_FORMATS
from logsvc.errors import LogsvcError

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# The serve option that opens each format's listener, for error messages.
_LISTEN_FLAG = {
    "pickle": "--listen",
    "json": "--listen-json",
    "syslog": "--listen-syslog",
    "http": "--listen-http",
    "udp": "--listen-udp",
    "syslog-udp": "--listen-syslog-udp",
}


def _bound_inodes(port: int, udp: bool) -> set[str]:
    """Socket inodes of TCP listeners (state 0A) or bound, unconnected UDP sockets (07) on ``port``."""
    tables, state = (
        (("/proc/net/udp", "/proc/net/udp6"), "07") if udp else (("/proc/net/tcp", "/proc/net/tcp6"), "0A")
    )
    inodes: set[str] = set()
    for table in tables:
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == state and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    return inodes


def pid_listening_on(port: int, udp: bool = False) -> int | None:
    """The pid of the process with a listening TCP (or bound UDP) socket on ``port``, if visible."""
    inodes = _bound_inodes(port, udp)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return int(pid)
        except OSError:
            continue
    return None


def read_metric(url: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` on a Prometheus text page; None if unreadable."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError, http.client.HTTPException):
        return None  # URLError is an OSError; a malformed URL is a ValueError
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _cpu_of(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):  # ppid
            found.append(int(entry))
    return found


@dataclass(slots=True)
class ProcessWatch:
    """CPU seconds and resident memory of the service, read from /proc."""

    pid: int | None
    cpu_start: float = 0.0
    peak_rss_kb: int = 0

    def cpu_seconds(self) -> float:
        """utime + stime of the service: the process and its workers (``serve --workers``).

        A worker is a child running the same executable; other children (the embedded
        PostgreSQL) are not the service's CPU. A worker that exited between two readings is
        missing from the second: read the figure over a run whose workers stay up.
        """
        if self.pid is None:
            return float("nan")
        total = _cpu_of(self.pid)
        if total is None:
            return float("nan")
        try:
            exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return total
        for child in _children(self.pid):
            try:
                same = os.readlink(f"/proc/{child}/exe") == exe
            except OSError:
                continue
            if same:
                total += _cpu_of(child) or 0.0
        return total

    def rss_kb(self) -> int:
        if self.pid is None:
            return 0
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def start(self) -> None:
        self.cpu_start = self.cpu_seconds()
        self.sample()

    def sample(self) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, self.rss_kb())


def check_listening(host: str, port: int, fmt: str = "pickle") -> None:
    """Fail with a one-line ``LogsvcError`` naming the serve option if nothing takes ``fmt`` there."""
    if fmt in DATAGRAM_FORMATS:
        # UDP has no handshake to try. On this machine, a bound socket is what we can check.
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if local and not _bound_inodes(port, udp=True):
            raise LogsvcError(
                f"nothing is bound to udp {host}:{port}; start `logsvc serve {_LISTEN_FLAG[fmt]} "
                f"{host}:{port}` or give --host/--port"
            )
        return
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        how = "`logsvc serve`" if fmt == "pickle" else f"`logsvc serve {_LISTEN_FLAG[fmt]} HOST:PORT`"
        raise LogsvcError(
            f"nothing answers on {host}:{port} ({exc.strerror or exc}); start {how} or give --host/--port"
        ) from None


def attach(args: argparse.Namespace, run_id: str, fmt: str = "pickle") -> tuple[ProcessWatch, Counter]:
    """Check the service answers, find its pid, and open the counting connection."""
    check_listening(args.host, args.port, fmt)
    settings = config.resolve(args)
    watch = ProcessWatch(args.service_pid or pid_listening_on(args.port, udp=fmt in DATAGRAM_FORMATS))
    return watch, Counter.for_format(config.conninfo(settings), settings.schema, run_id, fmt)
