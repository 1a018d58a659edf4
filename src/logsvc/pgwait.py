"""Waiting for libpq on the reactor: drive one ``store.pgproto`` generator at a time.

This is psycopg's ``waiting.py`` role next to our reactor: ``store.pgproto`` says what to
wait for and never waits; this module registers the PostgreSQL socket with the reactor and
resumes the generator when it is ready. It knows nothing about batches or the journal.

Deadlines
---------
libpq's own ``connect_timeout`` is not enforced on the non-blocking ``PQconnectPoll`` path,
and nothing bounds a statement, so a server whose processes are stopped (SIGSTOP, a hung
VM) would keep a step waiting forever: its kernel still accepts the TCP connection and
acknowledges every byte, so neither keepalives nor ``tcp_user_timeout`` fire. The driver
therefore gives every step a deadline on PostgreSQL's *silence*: a timer armed when the step
starts and pushed back whenever the socket becomes ready (progress), cancelled when the step
ends. When PostgreSQL has said nothing and taken nothing for ``timeout`` seconds, the
generator is closed and the step fails with ``StoreError(reason="timeout")``; the caller
drops the connection and reconnects.

Silence rather than the step's length: a 16 MiB batch over a slow link keeps the socket
moving and is not cut off (a cut batch is retried whole, so a length cap would turn "slow"
into "never"), while a stopped server moves nothing and is noticed after ``timeout``. A step
that legitimately keeps PostgreSQL silent for long (``CREATE INDEX`` on a big table, at the
first connect after ``--index-extra`` is added) is given a longer allowance by its caller:
``timeout`` may be a function, asked again each time the allowance has passed.

The timer is one heap entry per step, re-armed lazily: progress only records the time, and
the timer, when it fires early, re-arms itself for the rest (the usual idle-timeout trick;
no heap push per readiness event). Before declaring a timeout the socket is polled once
without blocking, so a loop turn that ran late (the timer heap is served before epoll's
events) cannot blame PostgreSQL for our own delay.

Between steps
-------------
With ``idle`` given, the driver runs ``idle()`` (``pgproto.watch_idle``) while no step runs:
it waits for the socket to become readable, so a connection the server closes (a restart,
``pg_terminate_backend``, its postmaster killed) or that keepalives find dead is noticed at
once rather than at the next batch. ``start`` closes it silently; its failure goes to
``on_idle_error``. It has no deadline: an idle connection is silent by nature.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import select
import time
from collections.abc import Callable
from types import EllipsisType
from typing import Any, TypeAlias

from logsvc import loop as _loop
from logsvc.errors import StoreError
from logsvc.store import pgproto

# How long PostgreSQL may stay silent during a step before the connection is given up.
# A 20,000-record batch (the default --batch-max-records) commits in well under a second
# on this machine (docs/benchmarks.md), connecting in a few milliseconds; ten seconds is a
# wide margin for a busy server or a slow link, and short enough that /readyz reports a hung
# server within seconds. The same figure as libpq's common connect_timeout advice.
DEFAULT_TIMEOUT_S = 10.0

# The allowance of a step known to keep PostgreSQL silent for long: the schema steps at connect,
# which build an index on the whole table the first time (a new --index-extra key on a table of
# many millions of rows: minutes). Long, but still bounded: a server that froze right then is
# given up on eventually; keepalives meanwhile catch a half-open connection within seconds.
LONG_STEP_TIMEOUT_S = 900.0

# A step's allowance: seconds of silence, a function giving it (asked again each time it has
# passed), or None for no deadline.
Timeout: TypeAlias = "float | Callable[[], float | None] | None"

_POLL_R = select.POLLIN | select.POLLERR | select.POLLHUP
_POLL_W = select.POLLOUT | select.POLLERR | select.POLLHUP


class PgDriver:
    """Drive one ``pgproto`` generator at a time on the reactor, under a deadline.

    The socket is registered ``EPOLLONESHOT`` and re-armed at every wait: level semantics on
    re-arm, so a readiness that came before the re-arm is not lost (libpq is not written for
    edge-triggered waiting).

    Args:
        reactor: the loop to wait on.
        timeout: the default allowance of a step (see the module docstring); ``start`` may
            give another.
        idle: makes the generator that watches the connection between steps, or returns None
            when there is no connection to watch.
        on_idle_error: called with the ``StoreError`` that ``idle``'s generator raised.
    """

    # The module's defaults, for callers that import only the class.
    DEFAULT_TIMEOUT_S = DEFAULT_TIMEOUT_S
    LONG_STEP_TIMEOUT_S = LONG_STEP_TIMEOUT_S

    def __init__(
        self,
        reactor: _loop.Reactor,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT_S,
        idle: Callable[[], pgproto.PgGen[Any] | None] | None = None,
        on_idle_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self.timeout: Timeout = timeout
        self._idle = idle
        self._on_idle_error = on_idle_error
        self._fd = -1
        self._wait = pgproto.Wait.R
        self._gen: pgproto.PgGen[Any] | None = None
        self._idling = False  # _gen is the idle watch, not a step
        self._on_done: Callable[[Any], None] | None = None
        self._on_error: Callable[[BaseException], None] | None = None
        self._step_timeout: Timeout = None
        self._started = 0.0
        self._progress = 0.0  # monotonic time of the last readiness (or of the start)
        self._timer: _loop.Timer | None = None
        self.timeouts = 0  # steps given up for PostgreSQL's silence, for tests and logs

    @property
    def busy(self) -> bool:
        """A step is running (the idle watch does not count)."""
        return self._gen is not None and not self._idling

    def start(
        self,
        gen: pgproto.PgGen[Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        *,
        timeout: Timeout | EllipsisType = ...,
    ) -> None:
        """Run ``gen`` to its end; call ``on_done(value)`` or ``on_error(exc)``.

        ``timeout`` defaults to the driver's. On expiry ``gen`` is closed and ``on_error``
        gets a ``StoreError`` with reason ``"timeout"``.
        """
        if self._idling:
            self._stop_idle()
        assert self._gen is None, "one protocol step at a time"
        self._gen, self._on_done, self._on_error = gen, on_done, on_error
        self._step_timeout = self.timeout if isinstance(timeout, EllipsisType) else timeout
        self._started = self._progress = time.monotonic()
        self._arm(self._started)
        self._advance(None)

    def forget(self) -> None:
        """Drop the socket from epoll; call before the connection is closed."""
        self._cancel_timer()
        if self._fd >= 0:
            self._reactor.unregister(self._fd)
            self._fd = -1
        if self._gen is not None:
            gen, self._gen, self._idling = self._gen, None, False
            gen.close()

    def pump(self) -> None:
        """Move a running step on now if its socket is ready (``Reactor.add_pump``)."""
        if self._gen is None or self._idling:
            return
        ready = self._ready_now()
        if ready:
            self._progress = time.monotonic()
            self._advance(ready)

    # -- stepping --------------------------------------------------------------------------

    def _advance(self, ready: int | None) -> None:
        gen = self._gen
        assert gen is not None
        try:
            fd, wait = next(gen) if ready is None else gen.send(ready)
        except StopIteration as stop:
            self._finish(self._on_done, stop.value)
            return
        except Exception as exc:
            self._finish(self._on_error, exc)
            return
        events = _loop.EPOLLONESHOT
        if wait & pgproto.Wait.R:
            events |= _loop.EPOLLIN
        if wait & pgproto.Wait.W:
            events |= _loop.EPOLLOUT
        self._wait = wait
        if fd != self._fd:
            if self._fd >= 0:
                self._reactor.unregister(self._fd)
            self._fd = fd
            self._reactor.register(fd, events, self._handle)
        else:
            self._reactor.modify(fd, events)

    def _handle(self, events: int) -> None:
        if self._gen is None:
            return
        ready = 0
        if events & (_loop.EPOLLIN | _loop.EPOLLERR | _loop.EPOLLHUP):
            ready |= pgproto.READY_R
        if events & (_loop.EPOLLOUT | _loop.EPOLLERR | _loop.EPOLLHUP):
            ready |= pgproto.READY_W
        self._progress = time.monotonic()
        self._advance(ready)

    def _finish(self, callback: Callable[[Any], None] | None, value: Any) -> None:
        idling = self._idling
        self._gen = None
        self._idling = False
        self._cancel_timer()
        if idling:
            # The idle watch ended: only by raising (it never returns).
            if self._on_idle_error is not None and isinstance(value, BaseException):
                self._on_idle_error(value)
            return
        assert callback is not None
        callback(value)
        if self._gen is None and self._fd >= 0:
            self._start_idle()

    # -- the deadline ----------------------------------------------------------------------

    def _allowance(self) -> float | None:
        t = self._step_timeout
        value = t() if callable(t) else t
        return value if value else None  # 0 or None: no deadline

    def _arm(self, since: float) -> None:
        allowance = self._allowance()
        if allowance is not None:
            self._timer = self._reactor.call_at(since + allowance, self._check_deadline)

    def _cancel_timer(self) -> None:
        self._reactor.cancel(self._timer)
        self._timer = None

    def _check_deadline(self) -> None:
        self._timer = None
        if self._gen is None or self._idling:
            return
        allowance = self._allowance()
        if allowance is None:
            return
        now = time.monotonic()
        if now - self._progress < allowance:
            self._timer = self._reactor.call_at(self._progress + allowance, self._check_deadline)
            return
        if self._socket_ready():
            # Ready, and epoll will say so in this very turn: we ran late, not PostgreSQL.
            self._timer = self._reactor.call_at(now + allowance, self._check_deadline)
            return
        self.timeouts += 1
        gen, self._gen = self._gen, None
        gen.close()
        on_error = self._on_error
        assert on_error is not None
        # The socket stays registered: the caller's on_error drops the connection (forget()).
        on_error(
            StoreError(
                f"PostgreSQL did not answer for {now - self._progress:.1f} s "
                f"(the step had run {now - self._started:.1f} s); giving up on this connection",
                reason="timeout",
            )
        )

    def _socket_ready(self) -> bool:
        return bool(self._ready_now())

    def _ready_now(self) -> int:
        """What the socket can do now of what the step waits for (``READY_*`` bits; 0: nothing)."""
        if self._fd < 0:
            return 0
        poller = select.poll()
        mask = (_POLL_R if self._wait & pgproto.Wait.R else 0) | (
            _POLL_W if self._wait & pgproto.Wait.W else 0
        )
        try:
            poller.register(self._fd, mask)
            got = poller.poll(0)
        except (OSError, ValueError):
            return 0
        revents = got[0][1] if got else 0
        return (pgproto.READY_R if revents & _POLL_R else 0) | (pgproto.READY_W if revents & _POLL_W else 0)

    # -- between steps ---------------------------------------------------------------------

    def _start_idle(self) -> None:
        if self._idle is None:
            return
        gen = self._idle()
        if gen is None:
            return
        self._gen, self._idling = gen, True
        self._on_done = self._on_error = None
        self._advance(None)

    def _stop_idle(self) -> None:
        gen, self._gen, self._idling = self._gen, None, False
        if gen is not None:
            gen.close()
