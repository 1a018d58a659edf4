"""The sink ships a real journal into a real PostgreSQL, driven by the real reactor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from logsvc.journal import Journal
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.store.copyfmt import ROW_FORMAT, RowEncoder
from logsvc.store.sink import IDLE, SHIPPING, PgSink
from tests.helpers import run_until


class Rig:
    def __init__(self, tmp: Path, dsn: str, schema: str, **kw: float) -> None:
        self.reactor = Reactor()
        self.journal = Journal(tmp / "journal", segment_bytes=1 << 16, fsync="never")
        self.journal.open()
        self.metrics = Metrics()
        self.sink = PgSink(
            self.reactor,
            self.journal,
            self.metrics,
            conninfo=dsn,
            schema_name=schema,
            max_records=int(kw.get("max_records", 1000)),
            max_bytes=1 << 20,
            max_age=kw.get("max_age", 0.05),
        )
        self.enc = RowEncoder()

    def append(self, n: int, msg: str = "m") -> None:
        now = time.time()
        ts = self.enc.timestamp(now)
        seq = self.journal.next_seq
        rows = [
            self.enc.encode({"msg": f"{msg} {i}", "created": now, "name": "t"}, seq + i, "test", ts)
            for i in range(n)
        ]
        self.journal.append(b"".join(rows), n, expected_first_seq=seq, row_format=ROW_FORMAT)
        self.sink.notify_appended()

    def close(self) -> None:
        self.sink.close()
        self.journal.close()
        self.reactor.close()


@pytest.fixture
def rig(tmp_path: Path, dsn: str, schema: str) -> Iterator[Rig]:
    r = Rig(tmp_path, dsn, schema)
    yield r
    r.close()


def stored(dsn: str, schema: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as c:
        row = c.execute(
            f"SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM {schema}.records"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_every_appended_record_is_stored_once_in_order(rig: Rig, dsn: str, schema: str) -> None:
    rig.sink.start()
    for _ in range(30):
        rig.append(250)  # 7,500 records in many blocks, batches of at most 1,000
    run_until(rig.reactor, lambda: rig.sink.shipped_seq == 7500)
    assert stored(dsn, schema) == (7500, 7500, 7500)
    assert rig.metrics.records_stored == 7500
    assert rig.metrics.batches_committed >= 8
    # Shipped segments were released: only the active one (and any not fully shipped) remain.
    assert len(rig.journal.segment_paths) <= 2


def test_an_idle_record_is_shipped_by_the_age_timer(rig: Rig, dsn: str, schema: str) -> None:
    rig.sink.start()
    run_until(rig.reactor, lambda: rig.sink.state == IDLE)
    rig.append(1)  # far below max_records: only max_age can ship it
    start = time.monotonic()
    run_until(rig.reactor, lambda: rig.sink.shipped_seq == 1, timeout=5)
    assert time.monotonic() - start >= 0.04
    assert stored(dsn, schema)[0] == 1


def test_records_journaled_while_down_are_shipped_once_after_restart(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    first = Rig(tmp_path, dsn, schema)
    first.sink.start()
    first.append(100)
    run_until(first.reactor, lambda: first.sink.shipped_seq == 100)
    first.append(50)  # journaled, never shipped by this process
    first.close()

    second = Rig(tmp_path, dsn, schema)  # same journal directory and id: resumes from PostgreSQL's position
    try:
        second.sink.start()
        run_until(second.reactor, lambda: second.sink.shipped_seq == 150)
    finally:
        second.close()
    assert stored(dsn, schema) == (150, 150, 150)


def test_unreachable_postgresql_keeps_records_in_the_journal_and_retries(tmp_path: Path) -> None:
    r = Rig(tmp_path, "host=127.0.0.1 port=1 dbname=x connect_timeout=2", "t_unreachable")
    try:
        r.sink.start()
        r.append(10)
        run_until(r.reactor, lambda: r.sink.last_error != "", timeout=10)
        assert r.sink.shipped_seq is None
        assert r.sink.unshipped == 10
        assert r.journal.read(1, 100, 1 << 20)[0].count == 10
    finally:
        r.close()


def test_a_backlog_that_piled_up_during_a_batch_ships_without_waiting_for_its_age(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    r = Rig(tmp_path, dsn, schema, max_records=2000, max_age=30.0)  # the age alone would wait 30 s
    try:
        r.sink.start()
        run_until(r.reactor, lambda: r.sink.state == IDLE)
        r.append(2000)  # full batch: ships at once
        assert r.sink.state == SHIPPING
        r.append(1500)  # arrives while that batch is in flight
        run_until(r.reactor, lambda: r.sink.shipped_seq == 3500, timeout=10)
    finally:
        r.close()
