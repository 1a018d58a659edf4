"""Protocol generators against a real PostgreSQL (psycopg's test_generators.py in spirit)."""

from __future__ import annotations

import datetime

import psycopg
import pytest

from logsvc.errors import StoreError
from logsvc.store import pgproto, schema
from logsvc.store import schema as sch_mod

JID = "0f" * 16  # a journal id: uuid4 hex, as Journal makes them


def test_connect_and_execute_several_statements(dsn: str) -> None:
    conn = pgproto.run_blocking(pgproto.connect(dsn))
    try:
        results = pgproto.run_blocking(pgproto.execute(conn, "SELECT 1; SELECT 'two'"))
        assert [r.get_value(0, 0) for r in results] == [b"1", b"two"]
    finally:
        conn.finish()


def test_connect_to_nothing_raises_a_connection_error() -> None:
    with pytest.raises(StoreError) as info:
        pgproto.run_blocking(pgproto.connect("host=127.0.0.1 port=1 dbname=x connect_timeout=5"))
    assert info.value.reason == "connection"


def test_a_rejected_statement_keeps_the_connection_usable(dsn: str) -> None:
    conn = pgproto.run_blocking(pgproto.connect(dsn))
    try:
        with pytest.raises(StoreError) as info:
            pgproto.run_blocking(pgproto.execute(conn, "SELECT * FROM no_such_table_anywhere"))
        assert info.value.reason == "rejected"
        assert pgproto.run_blocking(pgproto.execute(conn, "SELECT 3"))[0].get_value(0, 0) == b"3"
    finally:
        conn.finish()


def test_batch_and_position_commit_together_or_not_at_all(dsn: str, schema: str) -> None:
    conn = pgproto.run_blocking(pgproto.connect(dsn))
    try:
        pgproto.run_blocking(pgproto.execute(conn, schema_sql(schema)))
        good = row(1) + row(2)
        pgproto.run_blocking(pgproto.copy_in(conn, schema_batch(schema, 0, 2), [good]))
        # A bad row: neither the rows nor the position move.
        with pytest.raises(StoreError) as info:
            pgproto.run_blocking(pgproto.copy_in(conn, schema_batch(schema, 2, 3), [b"oops\n"]))
        assert info.value.reason == "rejected"
        # The wrong starting position (someone else shipped): refused, nothing stored.
        with pytest.raises(StoreError, match="another logsvc"):
            pgproto.run_blocking(pgproto.copy_in(conn, schema_batch(schema, 1, 3), [row(3)]))
    finally:
        conn.finish()
    with psycopg.connect(dsn) as c:
        assert c.execute(f"SELECT array_agg(seq ORDER BY seq) FROM {schema}.records").fetchone() == ([1, 2],)
        assert c.execute(f"SELECT seq FROM {schema}.shipped WHERE journal_id = '{JID}'").fetchone() == (2,)


def test_large_copy_goes_through_the_nonblocking_buffer(dsn: str, schema: str) -> None:
    conn = pgproto.run_blocking(pgproto.connect(dsn))
    try:
        pgproto.run_blocking(pgproto.execute(conn, schema_sql(schema)))
        chunk = b"".join(row(i, "x" * 500) for i in range(1, 20_001))  # ~10 MB in one put
        pgproto.run_blocking(pgproto.copy_in(conn, schema_batch(schema, 0, 20_000), [chunk]))
    finally:
        conn.finish()
    with psycopg.connect(dsn) as c:
        assert c.execute(f"SELECT count(*), max(seq) FROM {schema}.records").fetchone() == (20_000, 20_000)


def schema_sql(name: str) -> str:
    return schema.create_sql(name) + schema.partitions_sql(name, datetime.date(2026, 1, 1))


def schema_batch(name: str, frm: int, to: int) -> str:
    return schema.batch_sql(name, JID, frm, to)


def row(seq: int, msg: str = "m") -> bytes:
    # seq, created, received, 15 more columns, extra, stream, stream_seq (copyfmt.COLUMNS)
    fields = [str(seq), "2026-01-01 00:00:00+00", "2026-01-01 00:00:01+00"] + ["\\N"] * 15 + ["\\N"] * 3
    fields[6] = msg
    return ("\t".join(fields) + "\n").encode()


def test_an_operator_chosen_extra_index_serves_extra_equality(dsn: str, schema: str) -> None:
    from logsvc.errors import ConfigError

    with pytest.raises(ConfigError):
        sch_mod.extra_index_sql(schema, ["trace_id; DROP TABLE x"])
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(schema_sql(schema))
        c.execute(sch_mod.extra_index_sql(schema, ["trace_id"]))
        c.execute(sch_mod.extra_index_sql(schema, ["trace_id"]))  # idempotent
        names = c.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'records'", [schema]
        ).fetchall()
    assert ("records_extra_trace_id",) in names
