"""What one kind of console request costs PostgreSQL during a flood, in CPU per request.

Usage: python bench/console_cost.py --dsn DSN [--records 400000] PATH [PATH ...]

For each PATH (for example ``/api/search?since=15m``): a fresh ``logsvc serve`` and schema,
200,000 records stored first, then a flood of ``--records`` more while PATH is requested once
a second on the operator port. The CPU time of the console's PostgreSQL backends
(``application_name = 'logsvc-console'``, read from ``/proc``: run it on the database's
machine, as root or as postgres) over the flood, divided by the requests made, is what one
request cost; every request also pokes the BRIN summarizer (``console/brin.py``), so a path
the console does not know (``/api/none``) measures that share alone.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from console_ingest import flood, start_serve, stop_serve


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def console_backends(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'logsvc-console'"
        ).fetchall()
    return [int(r[0]) for r in rows]


def measure(dsn: str, path: str, records: int) -> str:
    schema = f"bench_console_cost_{uuid.uuid4().hex[:8]}"
    data = Path(tempfile.mkdtemp(prefix="logsvc-console-cost-"))
    proc, port, ops = start_serve(dsn, schema, data)
    try:
        flood(dsn, schema, port, proc.pid, 200_000)
        conn = http.client.HTTPConnection("127.0.0.1", ops, timeout=30)
        conn.request("GET", "/api/search?since=1m")  # opens the console's connections
        conn.getresponse().read()
        pids = console_backends(dsn)
        before = {p: cpu_seconds(p) for p in pids}
        service = cpu_seconds(proc.pid)
        t = threading.Thread(target=flood, args=(dsn, schema, port, proc.pid, records))
        t.start()
        n, t0 = 0, time.monotonic()
        while t.is_alive() and time.monotonic() - t0 < 600:
            conn.request("GET", path)
            conn.getresponse().read()
            n += 1
            time.sleep(max(0.0, 1 - (time.monotonic() - t0) % 1))
        t.join(600)
        spent = sum(cpu_seconds(p) - before[p] for p in pids)
        return (
            f"{path}: {n} requests in {time.monotonic() - t0:.1f} s, console backends {spent:.2f} s of CPU = "
            f"{spent / max(n, 1) * 1000:.0f} ms a request; "
            f"the service {cpu_seconds(proc.pid) - service:.1f} s"
        )
    finally:
        stop_serve(proc, dsn, schema, data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True)
    p.add_argument("--records", type=int, default=400_000)
    p.add_argument("paths", nargs="+", help="console requests, e.g. '/api/facets?since=15m'")
    a = p.parse_args()
    for path in a.paths:
        print(measure(a.dsn, path, a.records), flush=True)


if __name__ == "__main__":
    main()
