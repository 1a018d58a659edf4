"""Batches PostgreSQL refuses: rows isolated into the dead-letter file, or the batch kept.

The sink ships a real journal into a real PostgreSQL, driven by the real reactor (as in
``test_sink.py``); refusals come from constraints and triggers the tests add to the schema.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from logsvc.errors import StoreError
from logsvc.journal import Journal
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.store import pgproto
from logsvc.store.copyfmt import COLUMN_NAMES, ROW_FORMAT, RowEncoder
from logsvc.store.deadletter import DeadLetter, decode_row, read_entries
from logsvc.store.sink import IDLE, ISOLATING, ROWS_REJECTED, PgSink, classify
from tests.helpers import run_until


def run_for(r: Reactor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r.run_once(max_timeout=0.05)


class Rig:
    """A journal, a sink and a reactor over ``tmp``; the dead-letter file goes to its default."""

    def __init__(self, tmp: Path, dsn: str, schema: str, max_records: int = 2000) -> None:
        self.reactor = Reactor()
        self.journal = Journal(tmp / "journal", segment_bytes=1 << 20, fsync="never")
        self.journal.open()
        self.metrics = Metrics()
        self.sink = PgSink(
            self.reactor,
            self.journal,
            self.metrics,
            conninfo=dsn,
            schema_name=schema,
            max_records=max_records,
            max_bytes=16 << 20,
            max_age=0.05,
        )
        self.deadletter_dir = tmp / "deadletter"
        self.enc = RowEncoder()

    def append(self, n: int, poison: frozenset[int] = frozenset()) -> None:
        """Append one block of ``n`` records; those whose seq is in ``poison`` say POISON."""
        now = time.time()
        ts = self.enc.timestamp(now)
        seq = self.journal.next_seq
        rows = [
            self.enc.encode(
                {
                    "msg": f"POISON {seq + i}" if seq + i in poison else f"m {seq + i}",
                    "created": now,
                    "name": "t",
                    "trace": "a\tb\\c",  # escapes in the row, undone in the dead-letter columns
                },
                seq + i,
                "test",
                ts,
            )
            for i in range(n)
        ]
        self.journal.append(b"".join(rows), n, expected_first_seq=seq, row_format=ROW_FORMAT)
        self.sink.notify_appended()

    def settled(self) -> bool:
        return self.sink.state == IDLE and self.sink.unshipped == 0

    def close(self) -> None:
        self.sink.close()
        self.journal.close()
        self.reactor.close()


@pytest.fixture
def rig(tmp_path: Path, dsn: str, schema: str) -> Iterator[Rig]:
    r = Rig(tmp_path, dsn, schema)
    yield r
    r.close()


def sql(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(statement)


def stored_seqs(dsn: str, schema: str) -> list[int]:
    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute(f"SELECT seq FROM {schema}.records ORDER BY seq").fetchall()]


def counted(dsn: str, schema: str) -> int:
    """The rows the histogram's counts table holds (store.rollup): must equal the rows stored."""
    with psycopg.connect(dsn) as c:
        row = c.execute(f"SELECT coalesce(sum(n), 0) FROM {schema}.counts").fetchone()
    return int(row[0]) if row else 0


def shipped(dsn: str, schema: str) -> int | None:
    with psycopg.connect(dsn) as c:
        row = c.execute(f"SELECT max(seq) FROM {schema}.shipped").fetchone()
    return None if row is None else row[0]


def connected(rig: Rig) -> None:
    rig.sink.start()
    run_until(rig.reactor, lambda: rig.sink.state == IDLE)  # the schema exists from here


POISON = frozenset({17, 2500, 4999})


def test_rows_a_check_constraint_refuses_go_to_the_dead_letter_file_and_the_rest_is_stored(
    rig: Rig, dsn: str, schema: str
) -> None:
    connected(rig)
    sql(dsn, f"ALTER TABLE {schema}.records ADD CONSTRAINT no_poison CHECK (message NOT LIKE '%POISON%')")
    start = time.monotonic()
    for _ in range(5):
        rig.append(1000, POISON)  # 5,000 records in 5 blocks; batches of 2 blocks
    run_until(rig.reactor, rig.settled)
    elapsed = time.monotonic() - start

    expected = [s for s in range(1, 5001) if s not in POISON]
    assert stored_seqs(dsn, schema) == expected  # every good record, exactly once
    assert counted(dsn, schema) == len(expected)  # the isolated pieces counted what they stored
    assert shipped(dsn, schema) == 5000
    entries = list(read_entries(rig.deadletter_dir))
    assert [e["seq"] for e in entries] == sorted(POISON)
    for e in entries:
        assert e["journal_id"] == rig.journal.journal_id
        assert e["sqlstate"] == "23514"
        assert "no_poison" in e["error"]
        assert e["row"].startswith(f"{e['seq']}\t") and e["row"].endswith("\n")
        assert e["columns"]["seq"] == e["seq"]
        assert e["columns"]["message"] == f"POISON {e['seq']}"
        assert e["columns"]["extra"] == {"trace": "a\tb\\c"}
    m = rig.metrics
    assert m.records_stored == 4997
    assert m.records_dead_lettered == 3
    assert m.dead_lettered_by_sqlstate == {"23514": 3}
    assert m.batches_isolated == 3  # batches 1..2000, 2001..4000, 4001..5000: one refused row each
    assert m.batches_failed == {ROWS_REJECTED: m.batches_isolated}
    # It does not loop: once settled, nothing more is tried.
    tried = m.isolation_transactions
    run_for(rig.reactor, 0.3)
    assert m.isolation_transactions == tried
    assert rig.settled()
    print(
        f"\n5,000 records, 3 refused: settled in {elapsed:.2f} s, isolation "
        f"{m.isolation_seconds_total:.2f} s over {m.batches_isolated} batches, {tried} transactions"
    )


def test_without_a_copy_line_in_the_error_the_refused_batch_is_bisected(
    rig: Rig, dsn: str, schema: str
) -> None:
    # A deferred constraint trigger fails at commit, when no COPY line is being processed:
    # PostgreSQL names no row, so the sink must find it by halving.
    connected(rig)
    sql(
        dsn,
        f"""CREATE FUNCTION {schema}.no_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.message LIKE '%POISON%' THEN
                RAISE EXCEPTION 'poison at seq %', NEW.seq USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER no_poison AFTER INSERT ON {schema}.records
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.no_poison();""",
    )
    start = time.monotonic()
    for _ in range(5):
        rig.append(1000, POISON)
    run_until(rig.reactor, rig.settled)
    elapsed = time.monotonic() - start

    assert stored_seqs(dsn, schema) == [s for s in range(1, 5001) if s not in POISON]
    assert counted(dsn, schema) == 5000 - len(POISON)  # refused halves took their counts with them
    assert shipped(dsn, schema) == 5000
    entries = list(read_entries(rig.deadletter_dir))
    assert [(e["seq"], e["sqlstate"]) for e in entries] == [(s, "23514") for s in sorted(POISON)]
    assert entries[0]["error"] == "poison at seq 17"
    m = rig.metrics
    assert m.records_dead_lettered == 3
    print(
        f"\nbisection, 5,000 records, 3 refused: settled in {elapsed:.2f} s, "
        f"{m.isolation_transactions} transactions"
    )


def test_a_full_disk_keeps_the_batch_in_the_journal_and_retries_until_it_is_fixed(
    rig: Rig, dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    connected(rig)
    sql(
        dsn,
        f"""CREATE FUNCTION {schema}.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
        END $$;
        CREATE TRIGGER disk_full BEFORE INSERT ON {schema}.records
            FOR EACH ROW EXECUTE FUNCTION {schema}.disk_full();""",
    )
    caplog.set_level(logging.INFO, logger="logsvc.store")
    rig.append(300)
    rig.append(200)
    run_until(rig.reactor, lambda: rig.metrics.batches_failed["pg_disk_full"] >= 4, timeout=20)
    m = rig.metrics
    assert rig.sink.state != ISOLATING
    assert rig.sink.unshipped == 500
    assert stored_seqs(dsn, schema) == []
    assert m.records_dead_lettered == 0 and m.batches_isolated == 0
    assert not rig.deadletter_dir.exists()
    assert set(m.batches_failed) == {"pg_disk_full"}
    refusals = [r for r in caplog.records if "SQLSTATE 53100" in r.getMessage()]
    assert len(refusals) == 1, "one log line per distinct error, not one per retry"
    assert refusals[0].levelno == logging.ERROR
    assert "disk is full" in refusals[0].getMessage()
    assert "Nothing is dropped" in refusals[0].getMessage()

    sql(dsn, f"DROP TRIGGER disk_full ON {schema}.records")
    run_until(rig.reactor, rig.settled, timeout=20)  # the back-off is at most 10 s
    assert stored_seqs(dsn, schema) == list(range(1, 501))
    assert shipped(dsn, schema) == 500
    assert m.records_stored == 500 and m.records_dead_lettered == 0
    assert any("takes batches again" in r.getMessage() for r in caplog.records)


class Crash(BaseException):
    """Stands for the process dying: no handler in the loop catches it."""


class CrashAfterWrite(DeadLetter):
    def write(self, *args: Any, **kwargs: Any) -> Path:
        path = super().write(*args, **kwargs)
        raise Crash(path)


def test_a_crash_after_a_dead_letter_write_stores_nothing_twice(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    first = Rig(tmp_path, dsn, schema)
    try:
        connected(first)
        sql(dsn, f"ALTER TABLE {schema}.records ADD CONSTRAINT no_poison CHECK (message NOT LIKE '%POISON%')")
        first.sink.dead_letter = CrashAfterWrite(first.deadletter_dir)
        first.append(1000, frozenset({500}))
        with pytest.raises(Crash):
            run_until(first.reactor, lambda: False)
    finally:
        first.close()  # the connection goes with the "process": nothing more commits
    # The row is on disk; PostgreSQL's position has not passed it.
    assert [e["seq"] for e in read_entries(first.deadletter_dir)] == [500]
    assert (shipped(dsn, schema) or 0) < 500

    second = Rig(tmp_path, dsn, schema)  # the same journal, a fresh process
    try:
        connected(second)
        run_until(second.reactor, second.settled)
    finally:
        second.close()
    assert stored_seqs(dsn, schema) == [s for s in range(1, 1001) if s != 500]
    assert shipped(dsn, schema) == 1000
    # Refused again after the restart: written twice, under one (journal_id, seq).
    raw = list(read_entries(second.deadletter_dir))
    assert [(e["journal_id"], e["seq"]) for e in raw] == [(second.journal.journal_id, 500)] * 2
    assert [e["seq"] for e in read_entries(second.deadletter_dir, unique=True)] == [500]


# -- the pieces, without the sink ----------------------------------------------------------


def test_a_refused_statement_carries_its_sqlstate_message_and_copy_line(dsn: str) -> None:
    conn = pgproto.run_blocking(pgproto.connect(dsn))
    try:
        pgproto.run_blocking(pgproto.execute(conn, "CREATE TEMP TABLE t (n int CHECK (n > 0))"))
        with pytest.raises(pgproto.PgError) as info:
            pgproto.run_blocking(pgproto.copy_in(conn, "COPY t FROM STDIN", [b"1\n2\n-3\n4\n"]))
        err = info.value
        assert err.reason == "rejected"  # the reasons callers already use are unchanged
        assert err.sqlstate == "23514"
        assert err.primary is not None and "t_n_check" in err.primary
        assert err.copy_line == 3
        assert err.table == "t"
        # Still usable, as any "rejected".
        assert pgproto.run_blocking(pgproto.execute(conn, "SELECT 1"))[0].get_value(0, 0) == b"1"
    finally:
        conn.finish()


def pg_error(sqlstate: str | None, table: str | None = None) -> pgproto.PgError:
    return pgproto.PgError("x", reason="rejected", sqlstate=sqlstate, table=table)


@pytest.mark.parametrize(
    ("sqlstate", "isolate", "reason"),
    [
        ("23514", True, ROWS_REJECTED),  # check_violation
        ("23505", True, ROWS_REJECTED),  # unique_violation
        ("22021", True, ROWS_REJECTED),  # character_not_in_repertoire
        ("22P02", True, ROWS_REJECTED),  # invalid_text_representation
        ("54000", True, ROWS_REJECTED),  # program_limit_exceeded (index row too big)
        ("P0001", True, ROWS_REJECTED),  # raise_exception from a trigger
        ("53100", False, "pg_disk_full"),
        ("53200", False, "pg_resources"),  # out_of_memory
        ("42501", False, "pg_permission"),
        ("42P01", False, "pg_schema"),  # undefined_table
        ("25006", False, "pg_read_only"),
        ("55P03", False, "pg_locked"),
        ("57014", False, "pg_canceled"),
        ("57P01", False, "pg_operator"),
        ("58030", False, "pg_system"),
        ("40001", False, "pg_conflict"),
        ("40P01", False, "pg_conflict"),
        ("XX001", False, "pg_internal"),
        ("0A000", False, "pg_other"),
        (None, False, "rejected"),
    ],
)
def test_classification(sqlstate: str | None, isolate: bool, reason: str) -> None:
    verdict = classify(pg_error(sqlstate))
    assert verdict is not None
    assert (verdict.isolate, verdict.reason) == (isolate, reason)
    assert verdict.advice


def test_errors_about_our_bookkeeping_tables_or_the_connection_are_never_isolated() -> None:
    verdict = classify(pg_error("23505", table="shipped"))  # two services racing for one journal
    assert verdict is not None and not verdict.isolate
    assert classify(StoreError("gone", reason="connection")) is None
    assert classify(pgproto.PgError("bye", reason="connection", sqlstate="57P01")) is None
    assert classify(ValueError("bug")) is None


def test_decode_row_undoes_copy_text_escapes() -> None:
    enc = RowEncoder()
    ts = enc.timestamp(1_700_000_000.25)
    rec = {"msg": "tab\there\nnew\\line\r", "created": 1_700_000_000.25, "name": None, "k": 'q"\\'}
    cols = decode_row(enc.encode(rec, 42, "10.0.0.1:5000", ts).decode())
    assert cols is not None
    assert list(cols) == list(COLUMN_NAMES)
    assert cols["seq"] == 42 and cols["message"] == "tab\there\nnew\\line\r"
    assert cols["logger"] is None and cols["peer"] == "10.0.0.1:5000"
    assert cols["extra"] == {"k": 'q"\\'}
    assert decode_row("1\t2\n") is None  # not a records row: no columns, the raw row is kept
    octal_hex = decode_row("\\101\\x42\\q" + "\t\\N" * (len(COLUMN_NAMES) - 1))
    assert octal_hex is not None and octal_hex["seq"] == "ABq" and octal_hex["extra"] is None


def test_a_torn_last_line_and_a_row_that_is_not_utf8_are_handled(tmp_path: Path) -> None:
    dl = DeadLetter(tmp_path / "dl")
    path = dl.write("ab", 1, b"1\tfine\n", sqlstate="23514", error="e1", detail="d")
    dl.close()
    with path.open("ab") as f:
        f.write(b'{"journal_id": "ab", "seq": 2, "tor')  # a crash mid-write
    dl = DeadLetter(tmp_path / "dl")
    dl.write("ab", 3, b"3\t\xff\n", sqlstate="22021", error="invalid byte sequence")
    dl.close()
    entries = list(read_entries(tmp_path / "dl"))
    assert [e["seq"] for e in entries] == [1, 3]
    assert entries[0]["detail"] == "d" and "columns" not in entries[0]
    assert base64.b64decode(entries[1]["row_base64"]) == b"3\t\xff\n"
    assert entries[1]["row"] == "3\t\\xff\n"
