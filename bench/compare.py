"""logsvc against the seed's own design, ``bench flood`` on this machine, in one run.

Usage::

    python bench/compare.py --dsn DSN [--records 300000] [--connections 8] [--repeats 3]
                            [--out bench/results/compare-DATE.json] [--sender logsvc|own]
    python bench/compare.py flood --port PORT --dsn DSN --schema S [--records N] [--connections C]
                            [--service-pid PID]          # the minimal sender on its own

The services take turns (baseline, logsvc, baseline, logsvc, ...) so that whatever else the
machine is doing falls on both alike; each run gets a fresh schema (dropped afterwards) and a
fresh service process, started here, stderr to a file. The load is ``logsvc bench flood
--json`` (``--sender logsvc``, the default) or this file's own minimal sender (``--sender
own``: the same frames, the same JSON fields, no progress bar). The figures printed are per
run, then the medians and the ratio logsvc/baseline; the raw results go to ``--out`` as JSON
and a plot next to it as PNG (matplotlib: throughput per run, and emit -> stored latency
percentiles when the sender reports them).

The baseline is ``bench/seed_design.py``: it unpickles with plain ``pickle.loads``, so it is
only ever started on 127.0.0.1 and fed the load generated here.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import logging.handlers
import multiprocessing
import os
import platform
import re
import shutil
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

import psycopg

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SERVICES = ("baseline", "logsvc")
DEFAULT_DSN = os.environ.get("LOGSVC_BENCH_DSN") or os.environ.get("LOGSVC_TEST_DSN")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
SEND_CHUNK_BYTES = 256 * 1024


# -- the minimal sender (``--sender own``) ----------------------------------------------------
#
# The same frames and the same completion rule as ``logsvc bench flood``: every record carries
# extra run/i, the last one of each connection also "last": true, and the clock stops when
# PostgreSQL holds every connection's last record (one connection's records commit in order).


def _frames(run_id: str, sender: int, count: int) -> bytes:
    handler = logging.handlers.SocketHandler("localhost", 0)
    pid = os.getpid()
    out = []
    for n in range(count):
        rec = logging.LogRecord(
            "bench.flood", logging.INFO, "/srv/app/bench.py", 42, "[%06d] log message %08d", (pid, n), None
        )
        rec.funcName = "flood"
        rec.trace_id = sender
        rec.run = run_id
        rec.i = f"{sender}:{n}"
        if n == count - 1:
            rec.last = True
        out.append(handler.makePickle(rec))
    return b"".join(out)


def _sender(port: int, data: bytes, ready: Any, go: Any) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    ready.put(1)
    go.wait(120)
    view = memoryview(data)
    for off in range(0, len(view), SEND_CHUNK_BYTES):
        sock.sendall(view[off : off + SEND_CHUNK_BYTES])
    sock.close()


def _proc_cpu_s(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


def _proc_hwm_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def own_flood(
    port: int, dsn: str, schema: str, records: int, connections: int, pid: int | None, timeout: float
) -> dict[str, Any]:
    """Send ``records`` pre-encoded frames over ``connections``; count what the table kept."""
    run_id = uuid.uuid4().hex[:12]
    counts = [records // connections + (1 if i < records % connections else 0) for i in range(connections)]
    counts = [c for c in counts if c]
    datas = [_frames(run_id, i, c) for i, c in enumerate(counts)]  # before the clock
    ctx = multiprocessing.get_context("fork")
    ready: Any = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_sender, args=(port, d, ready, go), daemon=True) for d in datas]
    del datas
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    table = f"{schema}.records"
    last = json.dumps({"run": run_id, "last": True})
    complete = False
    with psycopg.connect(dsn, autocommit=True) as conn:
        cpu0 = _proc_cpu_s(pid)
        start = time.monotonic()
        go.set()
        deadline = start + timeout
        sent_at = None
        while True:
            t0 = time.monotonic()
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE extra @> %s::jsonb", [last]).fetchone()
            now = time.monotonic()
            if sent_at is None and not any(p.is_alive() for p in procs):
                sent_at = now
            if row and row[0] >= len(counts):
                complete = True
                break
            if now > deadline:
                break
            time.sleep(max(0.05, 10 * (now - t0)))  # keep polling under ~10% of a PostgreSQL core
        end = now
        cpu = _proc_cpu_s(pid) - cpu0
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        tot = conn.execute(
            f"SELECT count(*), count(DISTINCT extra->>'i') FROM {table} WHERE extra @> %s::jsonb",
            [json.dumps({"run": run_id})],
        ).fetchone()
    assert tot is not None
    rows, distinct = int(tot[0]), int(tot[1])
    seconds = end - start
    sent = sum(counts)
    return {
        "mode": "flood",
        "run_id": run_id,
        "sent": sent,
        "stored": distinct,
        "lost": sent - distinct,
        "duplicated": rows - distinct,
        "seconds": seconds,
        "records_per_s": distinct / seconds if seconds else 0.0,
        "service_pid": pid,
        "service_cpu_s": cpu,
        "cpu_us_per_record": cpu / rows * 1e6 if rows else float("nan"),
        "service_peak_rss_mb": round(_proc_hwm_mb(pid), 1),
        "complete": complete,
        "extra": {
            "connections": len(counts),
            "send_seconds": round((sent_at or end) - start, 3),
            "sender": "bench/compare.py",
        },
    }


def flood_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="compare.py flood", description="the minimal flood sender, alone")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dsn", default=DEFAULT_DSN, required=DEFAULT_DSN is None)
    p.add_argument("--schema", required=True)
    p.add_argument("--records", type=int, default=300_000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--service-pid", type=int)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true", help="accepted for symmetry; the output is always JSON")
    a = p.parse_args(argv)
    r = own_flood(a.port, a.dsn, a.schema, a.records, a.connections, a.service_pid, a.timeout)
    print(json.dumps(r))
    return 0 if r["complete"] and r["lost"] == 0 and r["duplicated"] == 0 else 1


# -- one run: start a service, flood it, stop it ---------------------------------------------


def service_cmd(which: str, dsn: str, schema: str, workdir: Path, serve_args: list[str]) -> list[str]:
    if which == "baseline":
        return [
            sys.executable, str(ROOT / "bench" / "seed_design.py"),
            "--listen", "127.0.0.1:0", "--dsn", dsn, "--schema", schema,
            "--log-file", str(workdir / "seed_design.log"),
        ]  # fmt: skip
    return [
        str(VENV_BIN / "logsvc"), "serve",
        "--listen", "127.0.0.1:0", "--dsn", dsn, "--schema", schema,
        "--data-dir", str(workdir / "data"), "--fsync", "interval",
        *serve_args,
    ]  # fmt: skip


def sender_cmd(sender: str, port: int, dsn: str, schema: str, a: argparse.Namespace, pid: int) -> list[str]:
    common = [
        "--port", str(port), "--dsn", dsn, "--schema", schema,
        "--records", str(a.records), "--connections", str(a.connections),
        "--service-pid", str(pid), "--timeout", str(a.timeout), "--json",
    ]  # fmt: skip
    if sender == "logsvc":
        return [str(VENV_BIN / "logsvc"), "bench", "flood", *common]
    return [sys.executable, str(Path(__file__).resolve()), "flood", *common]


def _wait_listening(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"service did not start listening (rc={proc.poll()}):\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM the service we started (by its pid) and wait; SIGKILL if it will not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


def _parse_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def one_run(which: str, repeat: int, a: argparse.Namespace, sender: str, tag: str) -> dict[str, Any]:
    schema = f"cmp_{tag}_{which[:4]}_{repeat}"
    workdir = Path(tempfile.mkdtemp(prefix=f"compare-{which}-"))
    log = workdir / "service.stderr"
    cmd = service_cmd(which, a.dsn, schema, workdir, a.serve_arg)
    out: dict[str, Any] = {"service": which, "repeat": repeat, "schema": schema, "service_cmd": cmd}
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir)
    try:
        port = _wait_listening(proc, log, 60)
        scmd = sender_cmd(sender, port, a.dsn, schema, a, proc.pid)
        out["sender_cmd"] = scmd
        out["load_before"] = os.getloadavg()[0]
        try:
            res = subprocess.run(
                scmd, capture_output=True, text=True, timeout=a.timeout + 120, stdin=subprocess.DEVNULL
            )
            out["sender_rc"] = res.returncode
            result = _parse_json(res.stdout)
            if result is None:
                out["error"] = f"no JSON from the sender (rc={res.returncode}): {res.stderr[-2000:]}"
            else:
                out["result"] = result
        except subprocess.TimeoutExpired:
            out["error"] = "sender timed out"
    except RuntimeError as e:
        out["error"] = str(e)
    finally:
        out["service_rc"] = _stop(proc, a.stop_timeout)
        out["service_stderr_tail"] = _tail(log, 5)
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            with psycopg.connect(a.dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        else:
            out["workdir"] = str(workdir)
    return out


# -- the whole comparison ----------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], which: str, key: str) -> float:
    vals = [float(r["result"][key]) for r in runs if r["service"] == which and "result" in r]
    vals = [v for v in vals if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def _latency(result: dict[str, Any]) -> dict[str, float]:
    """Emit -> stored percentiles, if the sender reported any (keys like p50_s, p99_s, max_s)."""
    found: dict[str, float] = {}
    for src in (result, result.get("latency"), result.get("extra")):
        if isinstance(src, dict):
            for k, v in src.items():
                if re.fullmatch(r"(latency_)?(p\d+|max)(_s)?", k) and isinstance(v, int | float):
                    found[k.removeprefix("latency_")] = float(v)
    return found


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for which in SERVICES:
        s[which] = {
            k: _median(runs, which, k)
            for k in ("records_per_s", "cpu_us_per_record", "service_peak_rss_mb", "seconds")
        }
        ok = [r["result"] for r in runs if r["service"] == which and "result" in r]
        s[which]["runs_ok"] = len(ok)
        s[which]["lost_total"] = sum(int(r["lost"]) for r in ok)
        s[which]["duplicated_total"] = sum(int(r["duplicated"]) for r in ok)
    b, l_ = s["baseline"]["records_per_s"], s["logsvc"]["records_per_s"]
    s["ratio_logsvc_over_baseline"] = l_ / b if b else float("nan")
    return s


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"baseline": "tab:gray", "logsvc": "tab:blue"}
    lat_runs: dict[str, list[dict[str, float]]] = {w: [] for w in SERVICES}
    for r in runs:
        if "result" in r and (lv := _latency(r["result"])):
            lat_runs[r["service"]].append(lv)
    has_lat = any(lat_runs.values())
    fig, axes = plt.subplots(1, 2 if has_lat else 1, figsize=(11 if has_lat else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    for which in SERVICES:
        pts = [
            (r["repeat"], r["result"]["records_per_s"])
            for r in runs
            if r["service"] == which and "result" in r
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-", color=colors[which], label=f"{which} (median {statistics.median(ys):,.0f})")
    ax.set_xticks(sorted({int(r["repeat"]) for r in runs}))
    ax.set_xlabel("repeat (runs alternate: baseline, logsvc)")
    ax.set_ylabel("records/s committed")
    ax.set_ylim(bottom=0)
    ax.set_title("bench flood throughput per run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if has_lat:
        ax2 = axes[0][1]
        # p50, p99, ..., then max
        keys = sorted(
            {k for lv in lat_runs.values() for d in lv for k in d},
            key=lambda k: (k.startswith("max"), float(re.sub(r"\D", "", k) or 0)),
        )
        width = 0.38
        for j, which in enumerate(SERVICES):
            meds = [
                statistics.median([d[k] for d in lat_runs[which] if k in d] or [float("nan")]) for k in keys
            ]
            ax2.bar(
                [i + (j - 0.5) * width for i in range(len(keys))],
                meds,
                width,
                color=colors[which],
                label=which,
            )
        ax2.set_xticks(range(len(keys)), keys)
        ax2.set_ylabel("seconds (median over runs)")
        ax2.set_title("emit -> stored latency")
        ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sender_available() -> bool:
    try:
        r = subprocess.run(
            [str(VENV_BIN / "logsvc"), "bench", "flood", "--help"], capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def compare_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--dsn",
        default=DEFAULT_DSN,
        required=DEFAULT_DSN is None,
        help="PostgreSQL for both services (default: $LOGSVC_BENCH_DSN, else $LOGSVC_TEST_DSN)",
    )
    p.add_argument("--records", type=int, default=300_000, help="records per run (default: 300,000)")
    p.add_argument("--connections", type=int, default=8, help="sending connections (default: 8)")
    p.add_argument("--repeats", type=int, default=3, help="runs per service, alternating (default: 3)")
    p.add_argument(
        "--sender",
        choices=("auto", "logsvc", "own"),
        default="auto",
        help="logsvc bench flood, or this file's minimal sender (default: logsvc if it exists)",
    )
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for logsvc serve, repeatable (--serve-arg=--batch-max-records=50000)",
    )
    p.add_argument("--out", type=Path, help="JSON results (default: bench/results/compare-DATE.json)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--timeout", type=float, default=300.0, help="per run, for the sender (default: 300 s)")
    p.add_argument("--stop-timeout", type=float, default=30.0, help="wait this long after SIGTERM")
    p.add_argument("--keep", action="store_true", help="keep each run's schema and work dir")
    a = p.parse_args(argv)

    sender = a.sender
    if sender == "auto":
        sender = "logsvc" if _sender_available() else "own"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or ROOT / "bench" / "results" / f"compare-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    print(
        f"compare: {a.repeats} x (baseline, logsvc), {a.records:,} records over {a.connections} connections,"
        f" sender={sender}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for rep in range(a.repeats):
        for which in SERVICES:
            r = one_run(which, rep, a, sender, tag)
            runs.append(r)
            if "result" in r:
                x = r["result"]
                print(
                    f"  {rep} {which:8s} {x['records_per_s']:>10,.0f} rec/s  {x['seconds']:6.2f} s"
                    f"  cpu {x['cpu_us_per_record']:6.1f} us/rec  rss {x['service_peak_rss_mb']:6.1f} MB"
                    f"  lost {x['lost']} dup {x['duplicated']}  (load {r['load_before']:.2f})",
                    flush=True,
                )
            else:
                print(f"  {rep} {which:8s} FAILED: {r.get('error')}", flush=True)
    summary = summarize(runs)
    for which in SERVICES:
        m = summary[which]
        print(
            f"median {which:8s} {m['records_per_s']:>10,.0f} rec/s  cpu {m['cpu_us_per_record']:.1f} us/rec"
            f"  rss {m['service_peak_rss_mb']:.1f} MB  ({m['runs_ok']} runs ok,"
            f" lost {m['lost_total']}, dup {m['duplicated_total']})"
        )
    print(f"ratio logsvc/baseline: {summary['ratio_logsvc_over_baseline']:.2f}x")
    doc = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_end": os.getloadavg(),
        },
        "settings": {
            "records": a.records,
            "connections": a.connections,
            "repeats": a.repeats,
            "sender": sender,
            "serve_args": a.serve_arg,
        },
        "wall_seconds": round(time.monotonic() - t0, 1),
        "summary": summary,
        "runs": runs,
    }
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    if not a.no_plot:
        png = out.with_suffix(".png")
        plot(
            runs,
            png,
            f"{a.records:,} records, {a.connections} connections, {os.cpu_count()} CPUs, {doc['date']}",
        )
        print(f"wrote {png}")
    ok = all(summary[w]["runs_ok"] == a.repeats for w in SERVICES)
    return 0 if ok else 1


def main() -> int:
    if sys.argv[1:2] == ["flood"]:
        return flood_main(sys.argv[2:])
    return compare_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
