"""Latency of the console's API on a large table (``bench/big_table.py``), request by request.

Usage: python bench/console_latency.py --dsn DSN [--schema bench_big] [--rounds 20]

Starts ``logsvc console`` on the schema (loopback, a free port), then times each kind of
request the page makes, ``--rounds`` times each after one warm-up, over one keep-alive
connection, and prints p50/p95/max in milliseconds (wall time on loopback: the server's
time plus a fraction of a millisecond of HTTP). The ids for context and record come from
the first search, so they are recent records, as the page's clicks are. An unfiltered
histogram reads the counts table; filtered ones repeated are served from the console's cache
of settled buckets after the first; the "a new query each time" row changes the query each
round to show the scan. Last, the live tail: a row inserted and committed, then the time
until its event arrives on ``/api/tail`` (the rows are deleted afterwards).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg


def start(dsn: str, schema: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [
        sys.executable,
        "-m",
        "logsvc",
        "console",
        "--dsn",
        dsn,
        "--schema",
        schema,
        "--listen",
        "127.0.0.1:0",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            raise SystemExit(log.read_text())
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("logsvc console did not start")


def timed(conn: http.client.HTTPConnection, route: str, params: dict[str, Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    conn.request("GET", f"/api/{route}?{urlencode(params)}")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    ms = (time.perf_counter() - t) * 1000
    if resp.status != 200:
        raise SystemExit(f"{route} {params}: {resp.status} {body}")
    return ms, body


def tail_latencies(dsn: str, schema: str, port: int, rounds: int) -> list[float]:
    """Milliseconds from a row's commit to its ``records`` event on a live tail, sorted.

    Each round inserts one row (autocommit: the INSERT returns once it is committed) and reads
    the tail's stream until the row's message arrives; the tail asks for it by a word only
    that row has, so every look finds one row or none.
    """
    tag = f"tailprobe{uuid.uuid4().hex[:8]}"
    out: list[float] = []
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        psycopg.connect(dsn, autocommit=True) as db,
    ):
        sock.sendall(f"GET /api/tail?q={tag} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        buf = b""
        while b"live tail started" not in buf:
            buf += sock.recv(65536)
        for i in range(rounds):
            db.execute(
                f"INSERT INTO {schema}.records (seq, created, received, levelno, message) "
                "VALUES (%s, now(), now(), 20, %s)",
                [-1 - i, f"{tag} {i}"],
            )
            t = time.perf_counter()
            want = f'{tag} {i}"'.encode()
            while want not in buf:
                buf += sock.recv(65536)
            out.append((time.perf_counter() - t) * 1000)
        db.execute(f"DELETE FROM {schema}.records WHERE seq < 0 AND message LIKE %s", [f"{tag} %"])
    return sorted(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True)
    p.add_argument("--schema", default="bench_big")
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args()
    log = Path(tempfile.mkdtemp()) / "console.log"
    proc, port = start(a.dsn, a.schema, log)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        _, first = timed(conn, "search", {"since": "1h", "q": "timeout"})
        rid = first["records"][len(first["records"]) // 2]["id"]
        traced = next(r["id"] for r in first["records"] if (r["extra"] or {}).get("trace_id") is not None)
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("first page, last hour, text filter", "search", {"since": "1h", "q": "timeout"}),
            ("first page, last hour, no filter", "search", {"since": "1h"}),
            ("first page, 24 h, level>=error", "search", {"since": "24h", "q": "level>=error"}),
            (
                "first page, 7 d, rare logger + text",
                "search",
                {"since": "7d", "q": "logger:app.billing timeout"},
            ),
            ("histogram, last hour", "histogram", {"since": "1h"}),
            ("histogram, 24 h", "histogram", {"since": "24h"}),
            ("histogram, 24 h, a new query each time", "histogram", {"since": "24h", "q": "-nomatch{i}"}),
            ("histogram, 24 h, text filter", "histogram", {"since": "24h", "q": "timeout"}),
            ("facets, last hour", "facets", {"since": "1h"}),
            ("record by id", "record", {"id": rid}),
            ("context by process, n=20", "context", {"id": rid, "by": "process", "n": 20}),
            ("context by trace, n=20", "context", {"id": traced, "by": "trace", "n": 20}),
        ]
        print(f"{'request':<40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, route, params in cases:
            # "{i}" in the query makes each round a query the histogram cache has not seen.
            def round_of(i: object, params: dict[str, Any] = params) -> dict[str, Any]:
                return {k: v.format(i=i) if isinstance(v, str) else v for k, v in params.items()}

            timed(conn, route, round_of("w"))  # warm-up
            times = sorted(timed(conn, route, round_of(i))[0] for i in range(a.rounds))
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(f"{name:<40} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}")
        times = tail_latencies(a.dsn, a.schema, port, a.rounds)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(
            f"{'live tail, commit to event':<40} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    main()
