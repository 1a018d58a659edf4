"""Exactly once across the seam journal writer -> journal -> sink, on a real PostgreSQL.

Each test reproduces a way records were once lost unseen (issue 10) and wires the pieces the
way ``serve`` does: one reactor, a ``Journal``, the ``JournalWriter`` every transport writes
through, and the ``PgSink`` that ships what the journal holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest

from logsvc.errors import JournalSeqMismatch
from logsvc.journal import Journal
from logsvc.journal.writer import BLOCK_BYTES, IntakeState, JournalWriter
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.store.copyfmt import RowEncoder
from logsvc.store.sink import PgSink
from tests.helpers import run_until


class Service:
    """The durability path of ``serve``, in process: writer, journal, sink, one reactor."""

    def __init__(self, data: Path, dsn: str, schema: str, *, fsync: str = "never") -> None:
        self.reactor = Reactor()
        self.metrics = Metrics()
        self.journal = Journal(data / "journal", segment_bytes=1 << 16, fsync=fsync)
        self.report = self.journal.open()
        self.writer = JournalWriter(
            self.reactor,
            self.journal,
            RowEncoder(),
            self.metrics,
            confirmed_seq=lambda: self.sink.confirmed_seq,
        )
        self.sink = PgSink(
            self.reactor,
            self.journal,
            self.metrics,
            conninfo=dsn,
            schema_name=schema,
            max_records=500,
            max_bytes=1 << 20,
            max_age=0.02,
            on_released=self.writer.check_room,
            skip_to=self.writer.skip_to,
            on_read_fault=lambda why: (
                self.writer.fault("journal_read", why) if why else self.writer.clear_fault("journal_read")
            ),
        )
        self.writer.on_appended = self.sink.notify_appended
        self.reactor.add_before_poll(self.writer.flush)

    def all_shipped(self) -> bool:
        """Nothing waits for the journal and PostgreSQL holds everything the journal has."""
        return self.writer.pending_records == 0 and self.sink.shipped_seq == self.journal.next_seq - 1

    def write(self, n: int, run: str) -> None:
        now = time.time()
        self.writer.write(
            ({"msg": f"{run} {i}", "created": now, "run": run} for i in range(n)), "pickle", "t", now
        )

    def close(self) -> None:
        self.writer.close()
        self.sink.close()
        self.journal.close()
        self.reactor.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def rows_by_run(dsn: str, schema: str) -> dict[str, tuple[int, int]]:
    """run -> (rows, distinct seqs)."""
    with psycopg.connect(dsn) as c:
        got = c.execute(
            f"SELECT extra->>'run', count(*), count(DISTINCT seq) FROM {schema}.records GROUP BY 1"
        ).fetchall()
    return {run: (n, d) for run, n, d in got}


def test_a_lost_shipped_tail_never_makes_new_records_look_shipped(data: Path, dsn: str, schema: str) -> None:
    # A power loss takes the journal's tail after PostgreSQL committed it (fsync interval or
    # never). Records that arrive before the sink reconnects used to get the seqs PostgreSQL
    # already held, and were skipped as shipped: lost, while the log said all was stored.
    first = Service(data, dsn, schema)
    first.sink.start()
    for _ in range(4):
        first.write(300, "before")
        run_until(first.reactor, lambda: first.writer.pending_records == 0)
    run_until(first.reactor, first.all_shipped)
    shipped = first.sink.shipped_seq
    assert shipped is not None and shipped >= 1200
    segments = first.journal.segment_paths
    first.close()
    # The power loss: the active segment loses everything it held (the page cache was never
    # written back); the reservation file was fsynced when it was raised, so it survives.
    os.truncate(segments[-1], 0)

    second = Service(data, dsn, schema)
    try:
        assert second.journal.next_seq > shipped, second.report
        second.write(500, "after")  # before the sink has connected: numbered from the journal alone
        run_until(second.reactor, lambda: second.writer.pending_records == 0)
        second.sink.start()
        run_until(second.reactor, second.all_shipped)
    finally:
        second.close()
    got = rows_by_run(dsn, schema)
    assert got["after"] == (500, 500), "every record received after the loss is stored"
    with psycopg.connect(dsn) as c:
        assert c.execute(f"SELECT count(*) = count(DISTINCT seq) FROM {schema}.records").fetchone() == (True,)


def test_a_block_corrupted_after_start_is_reported_counted_and_shipping_goes_on(
    data: Path, dsn: str, schema: str
) -> None:
    svc = Service(data, dsn, schema)
    try:
        for run in ("a", "b", "c"):
            svc.write(100, run)
            svc.writer.flush()  # one block each
        # A byte of the middle block flips on disk after it was written (and before shipping).
        seg = svc.journal.segment_paths[-1]
        raw = seg.read_bytes()
        where = raw.index(b"b 50")
        with open(seg, "r+b") as f:
            f.seek(where)
            f.write(b"X")
        svc.sink.start()
        run_until(svc.reactor, svc.all_shipped)
        assert svc.metrics.journal_corrupt_blocks == 1
        assert svc.metrics.journal_records_lost == 100
        assert svc.writer.state is IntakeState.OPEN
        svc.write(10, "d")  # and records keep coming and going out
        run_until(svc.reactor, svc.all_shipped)
    finally:
        svc.close()
    got = rows_by_run(dsn, schema)
    assert got == {"a": (100, 100), "c": (100, 100), "d": (10, 10)}


def test_a_request_of_tiny_records_becomes_many_blocks_under_the_limit(
    data: Path, dsn: str, schema: str
) -> None:
    # One write() of 16 MiB worth of rows used to become one pending block over the journal's
    # 64 MiB limit after encoding; the append raised ValueError on every turn, forever.
    svc = Service(data, dsn, schema)
    try:
        n = 120_000
        svc.write(n, "big")  # ~140 bytes a row: ~16 MiB
        svc.writer.flush()
        assert svc.writer.state is IntakeState.OPEN and svc.writer.pending_records == 0
        assert svc.metrics.journal_blocks >= 10
        blocks = svc.journal.read(1, 10 * n, 1 << 30)
        assert sum(b.count for b in blocks) == n
        assert max(len(b.payload) for b in blocks) < BLOCK_BYTES + 4096
        svc.sink.start()
        run_until(svc.reactor, lambda: svc.sink.shipped_seq == n, timeout=60)
    finally:
        svc.close()
    assert rows_by_run(dsn, schema) == {"big": (n, n)}


def test_an_append_the_journal_refuses_is_the_failing_state_not_a_traceback_per_turn(
    data: Path, dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = Service(data, dsn, schema)
    try:
        svc.write(5, "x")
        # Someone appends behind the writer's back: the seqs stamped in the writer's rows no
        # longer match where the journal stands. The journal refuses; nothing is written twice.
        enc = RowEncoder()
        seq = svc.journal.next_seq
        svc.journal.append(
            enc.encode({"msg": "intruder"}, seq, "x", enc.timestamp(0.0)), 1, expected_first_seq=seq
        )
        for _ in range(20):
            svc.reactor.run_once(max_timeout=0.01)
        assert svc.writer.state is IntakeState.FAILING
        assert not svc.writer.accepting
        assert "journal_write" in svc.writer.reason or "Cannot write the journal" in svc.writer.reason
        assert svc.metrics.intake_failures["journal_write"] == 1
        assert svc.writer.pending_records == 5, "what was read is kept, not dropped"
        errors = [r for r in caplog.records if r.levelname == "ERROR" and "FAILING" in r.getMessage()]
        assert len(errors) == 1, "one loud line, not one per turn"
        assert isinstance(errors[0].exc_info[1] if errors[0].exc_info else None, JournalSeqMismatch)
    finally:
        left = svc.writer.close()
        svc.sink.close()
        svc.journal.close()
        svc.reactor.close()
    assert left == 5


def test_durable_callbacks_run_after_the_append_and_are_refused_at_close(
    data: Path, dsn: str, schema: str
) -> None:
    svc = Service(data, dsn, schema)
    told: list[tuple[str, bool]] = []
    try:
        svc.write(3, "x")
        svc.writer.when_durable(lambda ok: told.append(("first", ok)))
        assert told == []  # not before the block is in the journal
        assert svc.journal.next_seq == 1
        svc.reactor.run_once(max_timeout=0.01)  # the end of the turn appends
        assert told == [("first", True)] and svc.journal.next_seq == 4
        svc.writer.when_durable(lambda ok: told.append(("nothing pending", ok)))
        svc.reactor.run_once(max_timeout=0.01)
        assert told[-1] == ("nothing pending", True)
    finally:
        svc.close()


def test_skip_to_renumbers_rows_not_yet_appended(data: Path, dsn: str, schema: str) -> None:
    svc = Service(data, dsn, schema)
    try:
        svc.write(4, "x")
        start = svc.journal.next_seq
        svc.writer.skip_to(start + 1000)
        assert svc.writer.next_seq == start + 1004
        svc.writer.flush()
        blocks = svc.journal.read(start + 1000, 100, 1 << 20)
        assert [b.first_seq for b in blocks] == [start + 1000]
        assert [row.split(b"\t", 1)[0] for row in blocks[0].payload.splitlines()] == [
            str(start + 1000 + i).encode() for i in range(4)
        ]
    finally:
        svc.close()
