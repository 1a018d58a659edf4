"""logsvc_client.Handler against the real service: every record in PostgreSQL exactly once."""

from __future__ import annotations

import logging
import re
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

import logsvc_client
from tests.client.fake_server import self_signed
from tests.helpers import Service

pytestmark = pytest.mark.slow


@pytest.fixture
def service(tmp_path: Path, dsn: str, schema: str) -> Iterator[Service]:
    svc = Service(tmp_path / "data", dsn, schema).start()
    yield svc
    svc.kill()


def log_through(h: logsvc_client.Handler, run: str, n: int) -> None:
    """``n`` records tagged ``run`` through ``h``, flushed (all acknowledged) and closed."""
    logger = logging.getLogger(f"e2e.{run}")
    logger.propagate = False
    logger.addHandler(h)
    try:
        for i in range(n):
            logger.error("%s record %d", run, i, extra={"run": run, "i": i})
        h.flush(30)
        assert h.stats()["acked"] == n, h.stats()
    finally:
        logger.removeHandler(h)
        h.close()


def test_unix_and_tls_listeners_speak_the_protocol(tmp_path: Path, dsn: str, schema: str) -> None:
    cert, key = self_signed(tmp_path)
    sock = tmp_path / "logsvc.sock"
    svc = Service(
        tmp_path / "data", dsn, schema, "--listen", f"unix:{sock}", "--listen-tls", "127.0.0.1:0",
        "--tls-cert", str(cert), "--tls-key", str(key),
    ).start()  # fmt: skip
    try:
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(TLS", svc.log())
        assert m, svc.log()
        tls = ssl.create_default_context(cafile=str(cert))
        log_through(logsvc_client.Handler("127.0.0.1", int(m.group(1)), ssl_context=tls), "tls", 500)
        log_through(logsvc_client.Handler(unix_path=str(sock)), "unix", 500)
        for run in ("tls", "unix"):
            rows = svc.wait_rows(500, "extra", "extra->>'run' = %s", [run])
            assert sorted(int(r["extra"]["i"]) for r in rows) == list(range(500))
    finally:
        svc.kill()


def test_records_through_the_handler_are_stored_exactly_once(service: Service, tmp_path: Path) -> None:
    n = 3000
    h = logsvc_client.Handler("127.0.0.1", service.port, spool_dir=tmp_path / "spool", backoff_max=0.5)
    logger = logging.getLogger("e2e.acked")
    logger.propagate = False
    logger.addHandler(h)
    try:
        for i in range(n // 2):
            logger.warning("acked record %d", i, extra={"run": "e2e", "i": i})
        h.flush(30)
        # A restart of the service in the middle: nothing is lost, nothing stored twice.
        assert service.stop(signal.SIGTERM) == 0
        for i in range(n // 2, n):
            logger.warning("acked record %d", i, extra={"run": "e2e", "i": i})
        service.start()
        h.flush(30)
        st = h.stats()
        assert st["spool_records"] == 0 and st["acked"] == n, st
    finally:
        logger.removeHandler(h)
        h.close()
    rows = service.wait_rows(n, "message, extra, stream, stream_seq", "extra->>'run' = 'e2e'")
    assert sorted(int(r["extra"]["i"]) for r in rows) == list(range(n))
    assert rows[0]["message"] == "acked record 0"
    assert {r["stream"].hex for r in rows} == {st["stream"]}
    assert len({r["stream_seq"] for r in rows}) == n


def test_bench_flood_with_the_acked_client(service: Service) -> None:
    from tests.test_bench import bench, target

    r = bench("flood", *target(service), "--records", "4000", "--connections", "2", "--client", "acked")
    assert (r["sent"], r["stored"], r["lost"], r["duplicated"]) == (4000, 4000, 0, 0)
    x = r["extra"]
    assert x["client"] == "acked" and x["acked"] == 4000 and x["client_dropped"] == 0
    assert 0 < x["ack_latency_p50_ms"] <= x["ack_latency_p99_ms"]
    assert 0 < x["emit_p50_us"] <= x["emit_p99_us"]


def test_bench_flood_with_the_stock_handler(service: Service) -> None:
    from tests.test_bench import bench, target

    r = bench("flood", *target(service), "--records", "4000", "--connections", "2", "--client", "stock")
    assert (r["sent"], r["stored"], r["lost"], r["duplicated"]) == (4000, 4000, 0, 0)
    assert r["extra"]["client"] == "stock" and r["extra"]["emit_p99_us"] > 0


def test_json_format_records_are_stored_with_their_fields(service: Service) -> None:
    log_through(logsvc_client.Handler("127.0.0.1", service.port, format="json"), "e2e-json", 50)
    rows = service.wait_rows(50, "message, levelname, logger, extra", "extra->>'run' = 'e2e-json'")
    assert rows[0]["message"] == "e2e-json record 0" and rows[0]["logger"] == "e2e.e2e-json"
    assert rows[0]["levelname"] == "ERROR"
    assert sorted(int(r["extra"]["i"]) for r in rows) == list(range(50))


def test_bench_seed_with_the_one_line_switch(service: Service) -> None:
    from tests.test_bench import bench, target

    r = bench(
        "seed", *target(service), "--procs", "3", "--tasks", "6", "--min-records", "20", "--max-records",
        "40", "--no-sleep", "--client", "acked",
    )  # fmt: skip
    assert r["extra"]["client"] == "acked" and r["sent"] >= 6 * 21
    assert (r["stored"], r["lost"], r["duplicated"]) == (r["sent"], 0, 0)
