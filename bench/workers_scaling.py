"""``serve --workers N`` against ``--workers 1``: the same flood, alternating, on loopback.

    .venv/bin/python bench/workers_scaling.py [--rounds 3] [--records 300000] [--workers 1 2]

Each round starts ``serve --workers W`` (fresh schema and data directory), floods it with
``logsvc bench flood`` (pre-encoded SocketHandler frames from 8 connections), and reads the
service's CPU from /proc: the supervisor and every worker (their pids are in its log). Prints
one line per run and the medians: records/s committed, service CPU µs per record, lost,
duplicated. Only loopback addresses; only the processes started here are stopped, by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent.parent
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def run_one(workers: int, records: int, dsn: str, port: int) -> dict[str, float]:
    schema = f"bench_workers_{workers}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    data = Path(tempfile.mkdtemp(prefix="logsvc-workers-"))
    log = open(data / "log", "wb")
    proc = subprocess.Popen(
        [PY, "-m", "logsvc", "serve", "--listen", f"127.0.0.1:{port}", "--dsn", dsn, "--schema", schema,
         "--data-dir", str(data), "--stats-interval", "0", "--metrics", "127.0.0.1:0",
         "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = (data / "log").read_text()
            if text.count("Connected to PostgreSQL") >= workers:
                break
            time.sleep(0.1)
        text = (data / "log").read_text()
        m = re.search(r"Supervising \d+ workers \(pids ([\d, ]+)\)", text)
        pids = [proc.pid] + ([int(p) for p in m.group(1).split(", ")] if m else [])
        before = cpu_seconds(pids)
        out = subprocess.run(
            [PY, "-m", "logsvc", "bench", "flood", "--port", str(port), "--records", str(records),
             "--dsn", dsn, "--schema", schema, "--service-pid", str(proc.pid), "--json"],
            capture_output=True, text=True, timeout=900, check=True,
        )  # fmt: skip
        used = cpu_seconds(pids) - before
        r = json.loads(out.stdout)
        return {
            "records_per_s": float(r["records_per_s"]),
            "cpu_us_per_record": used / records * 1e6,
            "lost": float(r["lost"]),
            "duplicated": float(r["duplicated"]),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(data, ignore_errors=True)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--records", type=int, default=300_000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--port", type=int, default=47300)
    p.add_argument(
        "--dsn",
        default=os.environ.get("LOGSVC_TEST_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres"),
    )
    a = p.parse_args()
    results: dict[int, list[dict[str, float]]] = {w: [] for w in a.workers}
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.cpu_count()} CPUs; {a.records:,} records per run")
    print("round workers records_per_s cpu_us_per_record lost duplicated")
    for rnd in range(1, a.rounds + 1):
        for w in a.workers:
            r = run_one(w, a.records, a.dsn, a.port)
            results[w].append(r)
            figures = (r["records_per_s"], r["cpu_us_per_record"], r["lost"], r["duplicated"])
            print(rnd, w, "{:.0f} {:.1f} {:.0f} {:.0f}".format(*figures), flush=True)
    base = statistics.median(r["records_per_s"] for r in results[a.workers[0]])
    print("# medians")
    for w, rs in results.items():
        rate = statistics.median(r["records_per_s"] for r in rs)
        cpu = statistics.median(r["cpu_us_per_record"] for r in rs)
        lost, dup = sum(r["lost"] for r in rs), sum(r["duplicated"] for r in rs)
        print(
            f"workers={w} records_per_s={rate:.0f} ({rate / base:.2f}x) cpu_us_per_record={cpu:.1f} "
            f"lost={lost:.0f} duplicated={dup:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
