"""The console's pool on a real reactor and a real PostgreSQL: bounds, session settings, errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from logsvc.console import db as cdb
from logsvc.errors import StoreError
from logsvc.loop import Reactor
from logsvc.store.pgproto import PgError
from tests.helpers import run_until


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    yield r
    r.close()


class Results:
    def __init__(self) -> None:
        self.rows: list[list[cdb.Row]] = []
        self.errors: list[StoreError] = []

    def ok(self, rows: list[cdb.Row]) -> None:
        self.rows.append(rows)

    def err(self, exc: StoreError) -> None:
        self.errors.append(exc)

    @property
    def done(self) -> int:
        return len(self.rows) + len(self.errors)


def test_parameters_travel_as_text_and_rows_come_back_as_bytes(reactor: Reactor, dsn: str) -> None:
    pool = cdb.ConsoleDb(reactor, dsn)
    res = Results()
    text = 'it\'s a "quote" -- and ; DROP TABLE x; é \u2028'
    sql = "SELECT $1::text, $2::bigint + 1, $3::text IS NULL"
    assert pool.submit(sql, [text, "41", None], res.ok, res.err)
    run_until(reactor, lambda: res.done == 1, 15)
    assert res.rows == [[(text.encode(), b"42", b"t")]]
    pool.close()


def test_sessions_are_read_only_utc_and_under_a_statement_timeout(
    reactor: Reactor, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = cdb.SESSION_OPTIONS.replace("statement_timeout=5000", "statement_timeout=200")
    monkeypatch.setattr(cdb, "SESSION_OPTIONS", short)
    pool = cdb.ConsoleDb(reactor, dsn)
    res = Results()
    pool.submit("SHOW TimeZone", [], res.ok, res.err)
    pool.submit("SELECT pg_sleep(2)", [], res.ok, res.err)
    pool.submit("CREATE TABLE console_must_not_write (x int)", [], res.ok, res.err)
    run_until(reactor, lambda: res.done == 3, 15)
    assert res.rows == [[(b"UTC",)]]
    states = sorted(e.sqlstate or "" for e in res.errors if isinstance(e, PgError))
    assert states == ["25006", "57014"]  # read_only_sql_transaction, query_canceled
    # The connections are still good after statements PostgreSQL refused.
    pool.submit("SELECT 1", [], res.ok, res.err)
    run_until(reactor, lambda: res.done == 4, 15)
    assert res.rows[-1] == [(b"1",)]
    pool.close()


def test_the_queue_is_bounded_and_everything_queued_is_answered(reactor: Reactor, dsn: str) -> None:
    pool = cdb.ConsoleDb(reactor, dsn, queue_max=4)
    res = Results()
    taken = [pool.submit("SELECT $1::int", [str(i)], res.ok, res.err) for i in range(10)]
    assert taken == [True] * 4 + [False] * 6
    run_until(reactor, lambda: res.done == 4, 15)
    assert sorted(r[0][0] or b"" for r in res.rows) == [b"0", b"1", b"2", b"3"]
    assert pool.statements == 4
    pool.close()


def test_an_unreachable_server_fails_fast_and_then_at_once(reactor: Reactor) -> None:
    pool = cdb.ConsoleDb(reactor, "host=127.0.0.1 port=1 dbname=x user=x", pg_timeout=2)
    res = Results()
    pool.submit("SELECT 1", [], res.ok, res.err)
    run_until(reactor, lambda: res.done == 1, 15)
    assert res.errors and res.errors[0].reason == "connection"
    # Within RECONNECT_S: answered in the call, without a connect attempt.
    pool.submit("SELECT 1", [], res.ok, res.err)
    assert res.done == 2 and pool.last_error
    pool.close()
