"""The libpq driver's deadline and idle watch, on the real reactor, a real PostgreSQL and a
loopback socket that never answers."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from logsvc import loop as L
from logsvc.errors import StoreError
from logsvc.pgwait import PgDriver
from logsvc.store import pgproto
from tests.helpers import run_until


@pytest.fixture
def reactor() -> Iterator[L.Reactor]:
    r = L.Reactor()
    yield r
    r.close()


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A loopback TCP port whose kernel completes every handshake and nobody ever answers."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=16)
    try:
        yield srv.getsockname()[:2]
    finally:
        srv.close()


class Outcome:
    """What a step ended with, and when."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.at = 0.0

    @property
    def done(self) -> bool:
        return self.at > 0

    def ok(self, value: Any) -> None:
        self.value, self.at = value, time.monotonic()

    def fail(self, exc: BaseException) -> None:
        self.error, self.at = exc, time.monotonic()


def connected(dsn: str) -> Any:
    conn = pgproto.run_blocking(pgproto.connect(dsn))
    conn.notice_handler = lambda res: None  # the ticks below are notices; keep stderr quiet
    return conn


def test_a_server_that_accepts_and_says_nothing_times_out_the_connect(
    reactor: L.Reactor, silent_server: tuple[str, int]
) -> None:
    host, port = silent_server
    # sslmode=disable: the startup packet is the first thing libpq waits on an answer for.
    dsn = f"host={host} port={port} dbname=x user=x sslmode=disable connect_timeout=60"
    driver = PgDriver(reactor, timeout=0.3)
    out = Outcome()
    started = time.monotonic()
    driver.start(pgproto.connect(dsn), out.ok, out.fail)
    assert driver.busy
    run_until(reactor, lambda: out.done, timeout=5.0)
    assert isinstance(out.error, StoreError) and out.error.reason == "timeout", out.error
    # libpq's own connect_timeout (60 s) plays no part on the non-blocking path: the driver's does.
    assert 0.3 <= out.at - started < 1.5
    assert "did not answer for" in str(out.error)
    assert not driver.busy and driver.timeouts == 1
    driver.forget()


def test_the_deadline_is_on_silence_not_on_the_length_of_the_step(reactor: L.Reactor, dsn: str) -> None:
    conn = connected(dsn)
    try:
        driver = PgDriver(reactor, timeout=0.5)
        # Three ticks 0.2 s apart: 0.6 s in all, never silent for 0.5 s (a NOTICE is flushed
        # to the client at once, elog.c send_message_to_frontend).
        ticking = (
            "DO $$ BEGIN FOR i IN 1..3 LOOP PERFORM pg_sleep(0.2); RAISE NOTICE 'tick %', i; END LOOP; END $$"
        )
        out = Outcome()
        started = time.monotonic()
        driver.start(pgproto.execute(conn, ticking), out.ok, out.fail)
        run_until(reactor, lambda: out.done, timeout=10.0)
        assert out.error is None and out.at - started >= 0.6
        # One silence of 1.2 s: given up after 0.5 s.
        out = Outcome()
        started = time.monotonic()
        driver.start(pgproto.execute(conn, "SELECT pg_sleep(1.2)"), out.ok, out.fail)
        run_until(reactor, lambda: out.done, timeout=10.0)
        assert isinstance(out.error, StoreError) and out.error.reason == "timeout"
        assert 0.5 <= out.at - started < 1.1
        driver.forget()
    finally:
        conn.finish()


def test_a_step_may_be_given_a_longer_allowance_of_its_own(reactor: L.Reactor, dsn: str) -> None:
    conn = connected(dsn)
    try:
        driver = PgDriver(reactor, timeout=0.2)
        allowance = [0.2]
        out = Outcome()
        driver.start(
            pgproto.execute(conn, "SELECT pg_sleep(0.5)"), out.ok, out.fail, timeout=lambda: allowance[0]
        )
        allowance[0] = 2.0  # asked again when the first 0.2 s have passed (as _connect does)
        run_until(reactor, lambda: out.done, timeout=10.0)
        assert out.error is None
        out = Outcome()
        driver.start(pgproto.execute(conn, "SELECT pg_sleep(0.3)"), out.ok, out.fail, timeout=0)
        run_until(reactor, lambda: out.done, timeout=10.0)
        assert out.error is None  # 0: no deadline
        driver.forget()
    finally:
        conn.finish()


def test_a_loop_turn_that_ran_late_does_not_blame_postgresql(reactor: L.Reactor, dsn: str) -> None:
    conn = connected(dsn)
    try:
        driver = PgDriver(reactor, timeout=0.3)
        out = Outcome()
        driver.start(pgproto.execute(conn, "SELECT pg_sleep(0.1)"), out.ok, out.fail)
        # The loop is busy elsewhere for 0.6 s: the answer (after 0.1 s) waits in the socket, and
        # the next turn serves the due timer before epoll's event.
        time.sleep(0.6)
        run_until(reactor, lambda: out.done, timeout=10.0)
        assert out.error is None and driver.timeouts == 0
        driver.forget()
    finally:
        conn.finish()


def test_an_idle_connection_the_server_closes_is_noticed_at_once(reactor: L.Reactor, dsn: str) -> None:
    conn = connected(dsn)
    lost: list[BaseException] = []
    try:
        driver = PgDriver(reactor, idle=lambda: pgproto.watch_idle(conn), on_idle_error=lost.append)
        out = Outcome()
        driver.start(pgproto.execute(conn, "SELECT 1"), out.ok, out.fail)
        run_until(reactor, lambda: out.done, timeout=10.0)
        assert out.error is None and not driver.busy  # the idle watch runs, but is not a step
        # A step preempts the idle watch, and the watch comes back after it.
        out = Outcome()
        driver.start(pgproto.execute(conn, "SELECT 2"), out.ok, out.fail)
        run_until(reactor, lambda: out.done, timeout=10.0)
        assert out.value[0].get_value(0, 0) == b"2"
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [conn.backend_pid])
        run_until(reactor, lambda: bool(lost), timeout=5.0)
        assert isinstance(lost[0], StoreError) and lost[0].reason == "connection"
        driver.forget()
    finally:
        conn.finish()


def test_the_idle_watch_has_no_deadline(reactor: L.Reactor, dsn: str) -> None:
    conn = connected(dsn)
    lost: list[BaseException] = []
    try:
        driver = PgDriver(
            reactor, timeout=0.1, idle=lambda: pgproto.watch_idle(conn), on_idle_error=lost.append
        )
        out = Outcome()
        driver.start(pgproto.execute(conn, "SELECT 1"), out.ok, out.fail)
        run_until(reactor, lambda: out.done, timeout=10.0)
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            reactor.run_once(max_timeout=0.05)
        assert lost == [] and driver.timeouts == 0
        driver.forget()
    finally:
        conn.finish()


def test_a_pump_moves_a_running_step_on_without_waiting_for_the_turn(reactor: L.Reactor, dsn: str) -> None:
    conn = connected(dsn)
    try:
        driver = PgDriver(reactor, timeout=5.0)
        driver.pump()  # nothing running: nothing to do
        out = Outcome()
        driver.start(pgproto.execute(conn, "SELECT 1"), out.ok, out.fail)
        # The answer is in the socket; no loop turn runs, as in the middle of a long one.
        assert select.select([conn.socket], [], [], 5.0)[0]
        driver.pump()
        assert out.done and out.error is None
        driver.pump()  # the idle watch is not a step: nothing happens, nothing raises
        driver.forget()
    finally:
        conn.finish()
