"""logsvc_client.Handler against the real service: every record in PostgreSQL exactly once."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import logsvc_client
from tests.helpers import Service

pytestmark = pytest.mark.slow


@pytest.fixture
def service(tmp_path: Path, dsn: str, schema: str) -> Iterator[Service]:
    svc = Service(tmp_path / "data", dsn, schema).start()
    yield svc
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
    h = logsvc_client.Handler("127.0.0.1", service.port, format="json")
    logger = logging.getLogger("e2e.json")
    logger.propagate = False
    logger.addHandler(h)
    try:
        for i in range(50):
            logger.error("json record %d", i, extra={"run": "e2e-json", "i": i})
        h.flush(30)
        assert h.stats()["acked"] == 50
    finally:
        logger.removeHandler(h)
        h.close()
    rows = service.wait_rows(50, "message, levelname, logger, extra", "extra->>'run' = 'e2e-json'")
    assert rows[0]["message"] == "json record 0" and rows[0]["logger"] == "e2e.json"
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
