"""The histogram's counts (``store.rollup``): the encoder's tally equals a count of its rows."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.journal import Journal
from logsvc.journal.writer import JournalWriter
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.store import rollup
from logsvc.store.copyfmt import RowEncoder
from logsvc.store.streams import has_stream_rows
from tests.wire.helpers import examples

RECEIVED = 1_700_000_000.25

_created = st.one_of(
    st.none(),
    st.floats(min_value=-1e10, max_value=4e11),
    st.just(float("nan")),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.text(max_size=5),
)
_levelno = st.one_of(
    st.none(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([10, 20, 30, 40, 50]),
    st.text(max_size=3),
)


def _record(created: Any, levelno: Any, msg: str, full: bool) -> dict[str, Any]:
    if full:  # as SocketHandler sends it: every LogRecord key (the encoder's fast path)
        rec = dict(logging.makeLogRecord({"msg": msg, "name": "r"}).__dict__)
    else:  # as JSON lines or syslog give it: a few keys (the slow path's shapes too)
        rec = {"msg": msg}
    rec["created"] = created
    rec["levelno"] = levelno
    return rec


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.tuples(_created, _levelno, st.text(max_size=20), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_the_encoders_tally_is_a_count_of_the_rows_it_wrote(
    records: list[tuple[Any, Any, str, bool]],
) -> None:
    enc = RowEncoder()
    ts = enc.timestamp(RECEIVED)
    rows = [
        enc.encode(_record(c, lv, m, full), i + 1, "peer", ts) for i, (c, lv, m, full) in enumerate(records)
    ]
    from_rows = rollup.count_rows([b"".join(rows)])
    assert rollup.from_tally(enc.take_tally()) == from_rows
    assert sum(from_rows.values()) == len(records)
    assert all(b % rollup.BUCKET_S == 0 and 0 <= lvl < rollup.LEVELS for b, lvl in from_rows)
    assert enc.take_tally() == {}  # taken: the next block starts from nothing


def test_level_classes_are_the_histograms_columns() -> None:
    assert [rollup.level_class(v) for v in (None, -5, 0, 10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 10**9)] == [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4,
    ]  # fmt: skip


def test_the_upsert_adds_and_refuses_a_journal_id_that_is_not_one() -> None:
    sql = rollup.upsert_sql("logsvc", "0" * 32, {(10, 1): 3, (5, 0): 2})
    assert sql.index("to_timestamp(5)") < sql.index("to_timestamp(10)")  # one order: no lock cycles
    assert "ON CONFLICT (bucket, journal, level) DO UPDATE SET n = c.n + excluded.n" in sql
    assert rollup.upsert_sql("logsvc", "0" * 32, {}) == ""
    with pytest.raises(ValueError):
        rollup.upsert_sql("logsvc", "'; DROP TABLE x; --" + "0" * 14, {(0, 0): 1})


def test_the_writers_block_tallies_match_each_blocks_rows(tmp_path: Path) -> None:
    # Small blocks, so write() and write_stream() seal in the middle of a call: each block's
    # tally must be of its own rows, and a block without one is counted from its rows.
    reactor = Reactor()
    journal = Journal(tmp_path / "journal", fsync="never")
    journal.open()
    try:
        writer = JournalWriter(reactor, journal, RowEncoder(), Metrics(), block_bytes=2000)
        now = time.time()
        recs = [{"msg": f"m{i}", "created": now - i * 3.0, "levelno": 10 * (i % 6)} for i in range(200)]
        writer.write(iter(recs[:120]), "json", "peer", now)
        writer.write_stream([(i + 1, r) for i, r in enumerate(recs[120:])], b"a" * 32, "acked", "peer", now)
        writer.flush()
        blocks = journal.read(1, 10_000, 1 << 30)
        assert len(blocks) > 5 and sum(b.count for b in blocks) == 200
        assert len(writer.tallies) == len(blocks)
        for b in blocks:
            assert writer.tallies.counts([b]) == rollup.count_rows([b.payload])
            # The writer's note spares the sink its search for stream rows, and must agree with it.
            assert writer.tallies.without_streams([b]) is not has_stream_rows(b.payload)
        assert any(writer.tallies.without_streams([b]) for b in blocks)
        assert not writer.tallies.without_streams(blocks)  # the stream rows' blocks are among them
        assert writer.tallies.counted_from_rows == 0
        writer.tallies.forget(blocks[2].first_seq + blocks[2].count - 1)
        assert len(writer.tallies) == len(blocks) - 3
        assert not writer.tallies.without_streams(blocks[:1])  # forgotten: unknown, so searched
        assert writer.tallies.counts(blocks) == rollup.count_rows(b.payload for b in blocks)
        assert writer.tallies.counted_from_rows == sum(b.count for b in blocks[:3])
    finally:
        journal.close()
        reactor.close()
