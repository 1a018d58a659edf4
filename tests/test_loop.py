"""The reactor, with socketpairs and bounded waits (CPython test_selectors style)."""

from __future__ import annotations

import functools
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from logsvc import loop as L
from tests.helpers import run_until


@pytest.fixture
def reactor() -> Iterator[L.Reactor]:
    r = L.Reactor()
    yield r
    r.close()


def test_timers_fire_in_deadline_order_and_cancelled_ones_never(reactor: L.Reactor) -> None:
    fired: list[str] = []
    reactor.call_later(0.03, lambda: fired.append("c"))
    reactor.call_later(0.01, lambda: fired.append("a"))
    t = reactor.call_later(0.02, lambda: fired.append("cancelled"))
    reactor.call_later(0.01, lambda: fired.append("b"))  # same deadline order: insertion order
    reactor.cancel(t)
    run_until(reactor, lambda: len(fired) == 3, timeout=5.0)
    assert fired == ["a", "b", "c"]


def test_poll_timeout_comes_from_the_next_timer(reactor: L.Reactor) -> None:
    fired: list[float] = []
    start = time.monotonic()
    reactor.call_later(0.2, lambda: fired.append(time.monotonic()))
    reactor.run_once()  # blocks in poll until the timer is due, with nothing else to wake it
    reactor.run_once(max_timeout=1.0)
    assert fired and fired[0] - start >= 0.19


def test_many_cancellations_compact_the_heap(reactor: L.Reactor) -> None:
    timers = [reactor.call_later(100, lambda: None) for _ in range(2000)]
    for t in timers[:1500]:
        reactor.cancel(t)
    reactor.run_once(max_timeout=0)
    assert len(reactor._timers) == 500


def test_edge_triggered_reader_that_drains_sees_all_data(reactor: L.Reactor) -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    got = bytearray()

    def on_read(ev: int) -> None:
        while True:
            try:
                chunk = a.recv(7)  # small reads: many per edge
            except BlockingIOError:
                return
            if not chunk:
                return
            got.extend(chunk)

    reactor.register(a.fileno(), L.EPOLLIN | L.EPOLLET, on_read)
    b.sendall(b"x" * 1000)
    run_until(reactor, lambda: len(got) == 1000, timeout=5.0)
    b.sendall(b"y" * 10)
    run_until(reactor, lambda: len(got) == 1010, timeout=5.0)
    a.close()
    b.close()


def test_call_soon_from_a_callback_runs_next_turn_without_blocking(reactor: L.Reactor) -> None:
    ran: list[int] = []

    def first() -> None:
        ran.append(1)
        reactor.call_soon(lambda: ran.append(2))  # scheduled during the turn: poll must not block

    reactor.call_soon(first)
    start = time.monotonic()
    reactor.run_once()  # would block forever if the ready queue did not force timeout 0
    assert ran == [1]
    reactor.run_once(max_timeout=0)
    assert ran == [1, 2]
    assert time.monotonic() - start < 1.0


def test_a_failing_handler_does_not_stop_the_loop(
    reactor: L.Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    seen: list[str] = []

    def bad(ev: int) -> None:
        raise RuntimeError("boom")

    def good(ev: int) -> None:
        seen.append(c.recv(10).decode())

    reactor.register(a.fileno(), L.EPOLLIN | L.EPOLLET, bad)
    reactor.register(c.fileno(), L.EPOLLIN | L.EPOLLET, good)
    b.send(b"1")
    d.send(b"ok")
    run_until(reactor, lambda: seen == ["ok"], timeout=5.0)
    assert "boom" in caplog.text
    for s in (a, b, c, d):
        s.close()


def test_signal_wakes_the_poll_and_runs_the_callback_in_the_loop(reactor: L.Reactor) -> None:
    got: list[int] = []
    reactor.add_signal_handler(signal.SIGUSR1, got.append)
    reactor.call_later(0.05, lambda: os.kill(os.getpid(), signal.SIGUSR1))
    run_until(reactor, lambda: got == [signal.SIGUSR1], timeout=5.0)


def test_close_restores_the_previous_signal_handler() -> None:
    r = L.Reactor()
    before = signal.getsignal(signal.SIGUSR2)
    r.add_signal_handler(signal.SIGUSR2, lambda s: None)
    assert signal.getsignal(signal.SIGUSR2) != before
    r.close()
    assert signal.getsignal(signal.SIGUSR2) == before


def test_stop_makes_run_return(reactor: L.Reactor) -> None:
    reactor.call_later(0.01, reactor.stop)
    reactor.run()  # returns, or the test times out


def test_pumps_run_between_the_handlers_of_a_long_turn_and_not_in_a_short_one(reactor: L.Reactor) -> None:
    ran: list[str] = []
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        slow = [True]

        def handler(name: str, sock: socket.socket) -> L.Handler:
            def handle(events: int) -> None:
                while True:
                    try:
                        sock.recv(64)
                    except BlockingIOError:
                        break
                if slow[0]:  # a request's parsing: longer than the pump interval
                    end = time.monotonic() + 2 * L.PUMP_INTERVAL_S
                    while time.monotonic() < end:
                        pass
                ran.append(name)

            return handle

        for i, (a, _) in enumerate(pairs):
            a.setblocking(False)
            reactor.register(a.fileno(), L.EPOLLIN | L.EPOLLET, handler(f"h{i}", a))
        reactor.add_pump(lambda: ran.append("pump"))
        for _, b in pairs:
            b.send(b"x")
        reactor.run_once(max_timeout=1.0)
        handlers = [r for r in ran if r != "pump"]
        assert sorted(handlers) == ["h0", "h1", "h2"]
        # After each slow handler the interval has passed: the pump runs before the next one.
        assert ran == [handlers[0], "pump", handlers[1], "pump", handlers[2], "pump"]

        ran.clear()
        slow[0] = False
        time.sleep(2 * L.PUMP_INTERVAL_S)  # the last pump is long past: one is due at once
        for _, b in pairs:
            b.send(b"x")
        reactor.run_once(max_timeout=1.0)
        assert ran.count("pump") == 1 and ran[1] == "pump"  # then not again within the interval
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_ready_callbacks_stop_at_the_turns_budget_and_the_rest_run_first_next_turn(
    reactor: L.Reactor,
) -> None:
    ran: list[int] = []
    step = L.CALLBACK_BUDGET_S / 2.5  # a request's worth of work: the budget holds two or three

    def work(i: int) -> None:
        end = time.monotonic() + step
        while time.monotonic() < end:
            pass
        ran.append(i)

    for i in range(10):
        reactor.call_soon(functools.partial(work, i))
    reactor.call_later(0, lambda: ran.append(-1))  # a due timer: served after the budget, not all ten
    reactor.run_once(max_timeout=5.0)
    assert ran[:-1] == list(range(len(ran) - 1)) and ran[-1] == -1
    assert 2 <= len(ran) - 1 <= 4
    turns = 1
    while len(ran) < 11 and turns < 20:
        start = time.monotonic()
        reactor.run_once(max_timeout=2.0)
        if len(ran) < 11:  # callbacks remained after this turn's budget: its poll did not wait
            assert time.monotonic() - start < 1.0
        turns += 1
    assert [i for i in ran if i >= 0] == list(range(10))  # in order, none lost
    assert turns >= 3
