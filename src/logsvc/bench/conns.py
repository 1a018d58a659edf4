"""``logsvc bench conns``: K connections held open at once, a fraction of them sending.

Measures what holding many connections costs the service (its memory with all of them open)
and checks that none was dropped: after the senders' records are stored, every connection,
sending or not, must still be open. Raises this process's open-file limit as needed; it
cannot raise the hard limit, and says so.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import resource
import socket
import time
import uuid

from logsvc.bench.counting import wait_stored
from logsvc.bench.records import flood_frames
from logsvc.bench.report import Result, progress_bar, report
from logsvc.bench.service import attach
from logsvc.errors import ConfigError


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        target = min(want, hard) if hard != resource.RLIM_INFINITY else want
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < want:
            raise ConfigError(
                f"need {want} open files but the hard limit is {hard}; "
                "raise it (ulimit -Hn) or use fewer connections"
            )


def _still_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the service has not closed: a read would block."""
    still_open = 0
    for s in socks:
        s.setblocking(False)
        try:
            still_open += s.recv(1) != b""
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    return still_open


def run_conns(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:12]
    _raise_nofile(args.connections + 256)
    watch, counter = attach(args, run_id)
    nsend = max(1, round(args.connections * args.senders)) if args.senders > 0 else 0
    socks: list[socket.socket] = []
    watch.start()
    start = time.monotonic()
    update, stop = progress_bar(args.connections, "connections open", args.json)
    try:
        for i in range(args.connections):
            socks.append(socket.create_connection((args.host, args.port), timeout=30))
            if i % 100 == 0:
                update(i + 1)
        update(args.connections)
        opened_at = time.monotonic()
        watch.sample()
        rss_idle = watch.rss_kb()
        for k in range(nsend):
            socks[k * len(socks) // nsend].sendall(flood_frames(run_id, k, args.records))
        done = wait_stored(counter, nsend, args.timeout, watch, lambda n: None)
        still_open = _still_open(socks)
    finally:
        stop()
        for s in socks:
            s.close()
    result = Result("conns", run_id, sent=nsend * args.records, service_pid=watch.pid)
    result.finish(counter, watch, start, done)
    result.extra = {
        "connections": args.connections,
        "sending": nsend,
        "still_open": still_open,
        "connect_seconds": round(opened_at - start, 2),
        "service_rss_mb_all_open": round(rss_idle / 1024, 1),
    }
    counter.close()
    status = report(result, args.json)
    return status if still_open == args.connections else 1
