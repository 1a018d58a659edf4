"""logsvc against the seed's own design, ``bench flood`` on this machine, in one run.

Usage::

    python bench/compare.py --dsn DSN [--records 300000] [--connections 8] [--repeats 3]
                            [--out bench/results/compare-DATE.json]

The services take turns (baseline, logsvc, baseline, logsvc, ...) so that whatever else the
machine is doing falls on both alike; each run gets a fresh schema (dropped afterwards) and a
fresh service process, started here, stderr to a file. The load is ``logsvc bench flood
--json``. The figures printed are per
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
import os
import platform
import re
import shutil
import signal
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


def sender_cmd(port: int, dsn: str, schema: str, a: argparse.Namespace, pid: int) -> list[str]:
    return [
        str(VENV_BIN / "logsvc"), "bench", "flood",
        "--port", str(port), "--dsn", dsn, "--schema", schema,
        "--records", str(a.records), "--connections", str(a.connections),
        "--service-pid", str(pid), "--timeout", str(a.timeout), "--json",
    ]  # fmt: skip


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


def one_run(which: str, repeat: int, a: argparse.Namespace, tag: str) -> dict[str, Any]:
    schema = f"cmp_{tag}_{which[:4]}_{repeat}"
    workdir = Path(tempfile.mkdtemp(prefix=f"compare-{which}-"))
    log = workdir / "service.stderr"
    cmd = service_cmd(which, a.dsn, schema, workdir, a.serve_arg)
    out: dict[str, Any] = {"service": which, "repeat": repeat, "schema": schema, "service_cmd": cmd}
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir)
    try:
        port = _wait_listening(proc, log, 60)
        scmd = sender_cmd(port, a.dsn, schema, a, proc.pid)
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

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or ROOT / "bench" / "results" / f"compare-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    print(
        f"compare: {a.repeats} x (baseline, logsvc), {a.records:,} records over {a.connections} connections,"
        f" {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for rep in range(a.repeats):
        for which in SERVICES:
            r = one_run(which, rep, a, tag)
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
    return compare_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
