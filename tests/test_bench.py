"""Small, fast runs of every ``logsvc bench`` mode against a real service: sent == stored."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logsvc.bench.counting import wait_settled
from logsvc.bench.flood import DEFAULT_DATAGRAM_RATE
from logsvc.bench.records import DATAGRAM_FORMATS, FORMATS, HTTP_FORMATS
from logsvc.bench.service import ProcessWatch
from tests.helpers import Service, wait_for

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


# -- flood --format: one listener of every kind on one service -------------------------------

# The start-up log line of each listener kind (server.py _KIND_TEXT), and the flag opening it.
_LISTENERS = {
    "json": ("--listen-json", r"Listening on 127\.0\.0\.1:(\d+) \(JSON lines\)"),
    "syslog": ("--listen-syslog", r"Listening on 127\.0\.0\.1:(\d+) \(syslog over TCP"),
    "http": ("--listen-http", r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: POST /ingest"),
    "udp": ("--listen-udp", r"Listening on udp 127\.0\.0\.1:(\d+) \(DatagramHandler"),
    "syslog-udp": ("--listen-syslog-udp", r"Listening on udp 127\.0\.0\.1:(\d+) \(syslog datagrams"),
    "metrics": ("--metrics", r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: /metrics"),
}


@pytest.fixture
def every_listener(tmp_path: Path, dsn: str, schema: str) -> Iterator[tuple[Service, dict[str, int]]]:
    """A service listening for every format on loopback, and the port of each."""
    args = [a for flag, _ in _LISTENERS.values() for a in (flag, "127.0.0.1:0")]
    svc = Service(tmp_path / "data", dsn, schema, *args).start()
    ports: dict[str, int] = {"pickle": svc.port}

    def all_listening() -> bool:
        log = svc.log()
        for kind, (_, pattern) in _LISTENERS.items():
            m = re.search(pattern, log)
            if m:
                ports[kind] = int(m.group(1))
        return len(ports) == len(_LISTENERS) + 1

    wait_for(all_listening, 30, "every listener to be logged")
    yield svc, ports
    assert svc.stop() == 0
    svc.kill()


@pytest.mark.parametrize("fmt", FORMATS)
def test_flood_format_stores_every_record_once(
    every_listener: tuple[Service, dict[str, int]], fmt: str
) -> None:
    svc, ports = every_listener
    port = ports["http" if fmt in HTTP_FORMATS else fmt]  # /v1/logs and /_bulk are on --listen-http
    args = ["flood", *target(svc), "--port", str(port), "--format", fmt, "--records", "3000"]
    args += ["--connections", "3", "--metrics-url", f"http://127.0.0.1:{ports['metrics']}/metrics"]
    if fmt in HTTP_FORMATS:
        args += ["--http-batch", "400"]
    r = bench(*args)
    assert (r["sent"], r["stored"], r["lost"], r["duplicated"]) == (3000, 3000, 0, 0)
    assert r["complete"] and r["records_per_s"] > 0
    assert svc.proc is not None and r["service_pid"] == svc.proc.pid  # found by its TCP or UDP socket
    assert r["cpu_us_per_record"] > 0 and r["service_peak_rss_mb"] > 0
    e = r["extra"]
    assert e["format"] == fmt and e["connections"] == 3 and e["senders_failed"] == 0
    assert e["send_seconds"] >= 0 and e["offered_records_per_s"] > 0
    if fmt in HTTP_FORMATS:
        # 1,000 records per sender in bodies of 400 records: 3 requests each, every one a 200.
        assert e["http_requests"] == 9 and e["http_non_200"] == 0
        assert e["http_status"] == {"200": 9} and e["http_accepted"] == 3000
    if fmt in DATAGRAM_FORMATS:
        # Paced by default. 3,000 datagrams (~1.2 KiB each in the kernel's accounting) fit in
        # the service's receive buffer even if it stalled for the whole run: none can drop.
        assert e["rate_per_sender"] == DEFAULT_DATAGRAM_RATE and e["send_errors"] == 0
        assert e["send_seconds"] >= 0.9 * 1000 / DEFAULT_DATAGRAM_RATE  # 1,000 datagrams per sender
        assert e["service_udp_dropped"] == 0 and e["completion"] == "last_records"
    else:
        assert e["rate_per_sender"] is None and e["completion"] == "last_records"


@pytest.mark.parametrize("fmt", ["otlp", "bulk"])
def test_flood_otlp_and_bulk_records_keep_their_fields(
    tmp_path: Path, dsn: str, schema: str, fmt: str
) -> None:
    # The bench's records are what the SDK and Filebeat send: they land with their fields.
    import psycopg

    svc = Service(tmp_path / "data", dsn, schema, "--listen-http", "127.0.0.1:0").start()
    try:
        wait_for(lambda: re.search(_LISTENERS["http"][1], svc.log()) is not None, 30, "the HTTP listener")
        m = re.search(_LISTENERS["http"][1], svc.log())
        assert m is not None
        r = bench("flood", *target(svc), "--port", m.group(1), "--format", fmt, "--records", "10",
                  "--connections", "1", "--http-batch", "4")  # fmt: skip
        assert (r["stored"], r["lost"], r["duplicated"]) == (10, 0, 0) and r["extra"]["http_requests"] == 3
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                f"SELECT logger, levelname, message, extra FROM {schema}.records WHERE extra->>'i' = '0:9'"
            ).fetchone()
    finally:
        assert svc.stop() == 0
        svc.kill()
    assert row is not None
    name, level, msg, extra = row
    assert name == "bench.flood" and level == "INFO" and msg.endswith("log message 00000009")
    assert extra["run"] == r["run_id"] and extra["last"] is True
    if fmt == "otlp":
        assert (
            extra["trace_id"] == "00000000000000010000000000000009" and extra["span_id"] == "000000000000000a"
        )
        assert extra["resource"]["telemetry.sdk.language"] == "python" and extra["scope"] == {
            "name": "bench.flood"
        }
    else:
        assert extra["_index"] == "filebeat-8.15.0" and extra["trace_id"] == 0


def test_flood_rate_paces_a_tcp_sender(service: Service) -> None:
    r = bench("flood", *target(service), "--records", "1000", "--connections", "2", "--rate", "1000")
    assert (r["stored"], r["lost"], r["duplicated"]) == (1000, 0, 0)
    assert r["extra"]["rate_per_sender"] == 1000 and 0.45 <= r["extra"]["send_seconds"] < 5


def test_flood_udp_without_a_bound_socket_says_so(dsn: str, schema: str) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))  # a TCP port: no UDP socket is bound to it
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "logsvc", "bench", "flood", "--format", "udp", "--port", str(port),
             "--dsn", dsn, "--schema", schema, "--records", "10"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 1
    assert (
        out.stderr.startswith("logsvc: nothing is bound to udp 127.0.0.1:") and "--listen-udp" in out.stderr
    )


def test_flood_null_is_for_pickle_only() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "logsvc", "bench", "flood", "--null", "--format", "json", "--records", "10"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--null" in out.stderr and "Traceback" not in out.stderr


class _Rows:
    """A fake Counter whose run stops growing before one sender's last record came."""

    def __init__(self, rows: list[int]) -> None:
        self.rows = rows
        self.calls = 0

    def progress(self) -> tuple[int, int]:
        self.calls += 1
        return self.rows[min(self.calls, len(self.rows)) - 1], 1  # 1 of 2 senders finished


def test_wait_settled_ends_a_udp_run_when_rows_stop_growing() -> None:
    fake = _Rows([0, 100, 200])
    t0 = time.monotonic()
    end, how = wait_settled(fake, 2, 10, ProcessWatch(None), lambda n: None, quiet_s=0.3)
    assert how == "quiet" and end is not None
    # The end is when the rows last grew (third poll), not when the quiet period ran out.
    assert t0 < end < time.monotonic() - 0.25 and time.monotonic() - t0 < 5


def test_wait_settled_ends_at_once_when_every_last_record_is_in() -> None:
    class AllIn:
        def progress(self) -> tuple[int, int]:
            return 50, 2

    end, how = wait_settled(AllIn(), 2, 10, ProcessWatch(None), lambda n: None, quiet_s=5)
    assert how == "last_records" and end is not None
