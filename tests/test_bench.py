"""Small, fast runs of every ``logsvc bench`` mode against a real service: sent == stored."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Service

pytestmark = pytest.mark.slow


@pytest.fixture
def service(tmp_path: Path, dsn: str, schema: str) -> Iterator[Service]:
    svc = Service(tmp_path / "data", dsn, schema).start()
    yield svc
    assert svc.stop() == 0
    svc.kill()


def bench(*args: str, timeout: float = 120) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "logsvc", "bench", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def target(svc: Service) -> list[str]:
    return ["--port", str(svc.port), "--dsn", svc.dsn, "--schema", svc.schema, "--timeout", "60"]


def test_flood_smoke_stores_every_record_once(service: Service) -> None:
    r = bench("flood", *target(service), "--records", "3000", "--connections", "3")
    assert (r["sent"], r["stored"], r["lost"], r["duplicated"]) == (3000, 3000, 0, 0)
    assert r["complete"] and r["records_per_s"] > 0
    assert service.proc is not None and r["service_pid"] == service.proc.pid
    assert r["cpu_us_per_record"] > 0 and r["service_peak_rss_mb"] > 0


def test_seed_smoke_with_stock_clients(service: Service) -> None:
    r = bench(
        "seed", *target(service), "--procs", "4", "--tasks", "8", "--min-records", "5", "--max-records", "10"
    )
    assert r["sent"] >= 8 * 6
    assert (r["stored"], r["lost"], r["duplicated"]) == (r["sent"], 0, 0)
    assert 0 < r["extra"]["latency_p50_s"] <= r["extra"]["latency_p99_s"] <= r["extra"]["latency_max_s"]


def test_conns_smoke_holds_every_connection_open(service: Service) -> None:
    r = bench("conns", *target(service), "--connections", "300", "--senders", "0.1", "--records", "10")
    assert r["extra"]["still_open"] == 300 and r["extra"]["sending"] == 30
    assert (r["sent"], r["stored"], r["lost"], r["duplicated"]) == (300, 300, 0, 0)


def test_flood_null_measures_the_senders_alone() -> None:
    r = bench("flood", "--null", "--records", "5000", "--connections", "2")
    assert r["mode"] == "flood-null" and r["stored"] == 5000 and r["records_per_s"] > 0


def test_bench_without_a_service_says_so_in_one_line(dsn: str, schema: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        out = subprocess.run(
            [sys.executable, "-m", "logsvc", "bench", "flood", "--port", str(port), "--dsn", dsn,
             "--schema", schema, "--records", "10"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("logsvc: nothing answers on 127.0.0.1:") and "Traceback" not in out.stderr
