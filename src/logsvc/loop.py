"""The reactor: one ``select.epoll``, a timer heap, a ready queue, and signals as a wakeup fd.

Theory of operation
-------------------
One turn of :meth:`Reactor.run_once`, in this fixed order (tornado 5 ``PollIOLoop.start``):

1. run the callbacks that were ready when the turn began (a snapshot, so a callback that
   schedules another cannot starve the poll), for ``CALLBACK_BUDGET_S`` at most: the rest
   stay first in the queue for the next turn, whose poll then does not wait;
2. run due timers (heap of ``(deadline, seq, timer)`` on ``time.monotonic()``, lazy
   cancellation with compaction once cancelled timers dominate the heap);
3. run the ``before_poll`` hooks (the server turns the records decoded during this turn into
   one journal block there: group commit);
4. ``epoll.poll(timeout)`` where the timeout is 0 if callbacks are ready, otherwise the time
   to the next deadline, otherwise forever;
5. dispatch every event to ``handlers[fd](events)``; an exception in one handler is logged
   with its fd and the loop goes on (tornado L1070-1081).

Between two callbacks or two handlers of steps 1 and 5, the pumps (:meth:`add_pump`) run
once ``PUMP_INTERVAL_S`` has passed since they last ran. A turn in a flood is long (eight
connections each handing over a 1,000-record request is ~100 ms of parsing), and a peer that
is served only once per turn sits idle for most of it: the PostgreSQL connection's pump moves
its COPY on as soon as the socket takes more, so the server is fed during the turn instead
of between turns (OTLP floods 39,000 -> 51,000 records/s, docs/benchmarks.md).

Client sockets are registered edge-triggered (``EPOLLET``): a handler must read until
``BlockingIOError`` or push itself onto the ready queue with :meth:`call_soon` when it stops
early for fairness, because no new edge will come for bytes already in the kernel.

The PostgreSQL socket is not edge-triggered: libpq can hold data in its own buffer where
epoll cannot see it, so its owner registers it ``EPOLLONESHOT`` and re-arms it on every wait
(as psycopg's own ``wait_epoll`` does).

Error bits (``EPOLLERR``/``EPOLLHUP``) are passed to the handler as they are; handlers treat
them as "readable and writable" and discover the error from ``recv``/``send`` themselves
(CPython ``selectors`` L473-476).

Signals: :meth:`add_signal_handler` installs a Python handler that only appends to a list and
``signal.set_wakeup_fd`` writes a byte to a socketpair registered in the same epoll, so a
signal wakes the poll. The callbacks run in the loop, never inside the signal handler.

This module knows nothing about logs, PostgreSQL or the journal.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import heapq
import itertools
import logging
import select
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("logsvc.loop")

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLET = select.EPOLLET
EPOLLRDHUP = select.EPOLLRDHUP
EPOLLONESHOT = select.EPOLLONESHOT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP

# Compact the timer heap once this many timers are cancelled and they are more than half of
# it (tornado v5.1.1 ioloop.py L1007-1014 uses the same numbers).
_CANCELLED_COMPACT_MIN = 512

# epoll.poll(maxevents): how many events one turn takes at most. The kernel round-robins the
# rest to the next turn, so this bounds a turn's work, not what can be served.
MAX_EVENTS_PER_POLL = 1024

# A turn runs its pumps (``add_pump``) between handlers once this long has passed since they
# last ran: often enough that PostgreSQL, fed ~2 MB at a time through the socket (~40 ms of
# COPY work), never runs dry; rarely enough that the poll(0) it costs is noise.
PUMP_INTERVAL_S = 0.002

# How long one turn runs ready callbacks before it goes on to timers, hooks and the poll. In
# a flood the callbacks are whole requests (a 1,000-record _bulk body is ~15 ms of parsing and
# writing), and without a bound one turn ran 30-80 of them, 0.3 s and more while timers,
# acknowledgements and /readyz waited.
CALLBACK_BUDGET_S = 0.05

# The longest loop turn is reported over windows of this many seconds (the current and the
# previous one), so a scrape every 15 s (Prometheus' default) never misses a long turn.
BUSY_WINDOW_S = 10.0

Handler = Callable[[int], None]


class Timer:
    """A scheduled callback. :meth:`cancel` is O(1): the heap entry is skipped when popped."""

    __slots__ = ("callback", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None

    @property
    def active(self) -> bool:
        return self.callback is not None


class Reactor:
    """Edge-triggered epoll reactor with timers, a ready queue and signal wake-ups."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._cancelled = 0
        self._counter = itertools.count()
        self._ready: deque[Callable[[], None]] = deque()
        self._before_poll: list[Callable[[], None]] = []
        self._pumps: list[Callable[[], None]] = []
        self._last_pump = 0.0
        self._stopping = False
        self._signal_callbacks: dict[int, Callable[[int], None]] = {}
        self._pending_signals: list[int] = []
        self._old_signal_handlers: dict[int, object] = {}
        self._old_wakeup_fd: int | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        # Loop health, read by /metrics: turns, seconds spent working (not waiting in poll),
        # and the longest turn lately (``recent_max_busy``).
        self.iterations = 0
        self.busy_seconds = 0.0
        # Exceptions a handler or callback let escape (bugs): logged with a traceback and counted.
        self.handler_errors = 0
        self._max_busy = 0.0
        self._prev_max_busy = 0.0
        self._window_start = time.monotonic()

    # -- file descriptors ------------------------------------------------------------------

    def register(self, fd: int, events: int, handler: Handler) -> None:
        """Watch ``fd`` for ``events`` (``EPOLL*`` bits); call ``handler(events)`` when they fire."""
        self._epoll.register(fd, events)
        self._handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``. Safe to call for an fd that is already closed or unknown."""
        self._handlers.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            # ENOENT/EBADF: never registered, or closed already (closing removes it from the
            # epoll set by itself).
            pass

    # -- callbacks and timers --------------------------------------------------------------

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the next turn; the poll of this turn will not block."""
        self._ready.append(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        heapq.heappush(self._timers, (deadline, next(self._counter), timer))
        return timer

    def cancel(self, timer: Timer | None) -> None:
        if timer is not None and timer.active:
            timer.cancel()
            self._cancelled += 1

    def add_before_poll(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once per turn, after callbacks and timers and just before polling."""
        self._before_poll.append(hook)

    def add_pump(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` between handlers and callbacks of a long turn, every ``PUMP_INTERVAL_S``.

        For a peer that must not wait for the whole turn: the PostgreSQL connection, whose
        server sits idle while a turn of request parsing runs (see ``PUMP_INTERVAL_S``).
        """
        self._pumps.append(hook)

    def _pump(self) -> None:
        now = time.monotonic()
        if now - self._last_pump >= PUMP_INTERVAL_S:
            self._last_pump = now
            for hook in self._pumps:
                self._run_callback(hook)

    # -- signals ---------------------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(signum)`` from the loop when ``signum`` arrives."""
        if self._wake_r is None:
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self.register(self._wake_r.fileno(), EPOLLIN | EPOLLET, self._handle_wakeup)
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._signal_callbacks[signum] = callback
        self._old_signal_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of whatever the loop was doing: only record it. The
        # wakeup fd has already been written by the C-level handler, so the poll returns.
        self._pending_signals.append(signum)

    def _handle_wakeup(self, events: int) -> None:
        assert self._wake_r is not None
        while True:
            try:
                if not self._wake_r.recv(4096):
                    break
            except BlockingIOError:
                break
        self._dispatch_signals()

    def _dispatch_signals(self) -> None:
        while self._pending_signals:
            signum = self._pending_signals.pop(0)
            callback = self._signal_callbacks.get(signum)
            if callback is not None:
                callback(signum)

    # -- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Make :meth:`run` return after the current turn."""
        self._stopping = True

    def run(self) -> None:
        self._stopping = False
        while not self._stopping:
            self.run_once()

    def recent_max_busy(self) -> float:
        """The longest turn's working time over the last one to two windows of ``BUSY_WINDOW_S``.

        Reading it changes nothing (a scrape must not reset what another scraper would see).
        """
        return max(self._max_busy, self._prev_max_busy)

    def run_once(self, max_timeout: float | None = None) -> None:
        """One turn: ready callbacks, due timers, before-poll hooks, poll, dispatch."""
        started = time.monotonic()
        pumps = self._pumps
        ready = self._ready
        budget_end = started + CALLBACK_BUDGET_S
        for _ in range(len(ready)):
            self._run_callback(ready.popleft())
            if pumps:
                self._pump()
            if time.monotonic() >= budget_end:
                break  # the rest run first next turn, after a poll that does not wait

        now = time.monotonic()
        timers = self._timers
        while timers:
            deadline, _, timer = timers[0]
            if timer.callback is None:
                heapq.heappop(timers)
                self._cancelled -= 1
                continue
            if deadline > now:
                break
            heapq.heappop(timers)
            callback, timer.callback = timer.callback, None
            self._run_callback(callback)
        if self._cancelled > _CANCELLED_COMPACT_MIN and self._cancelled > len(timers) >> 1:
            self._timers = timers = [t for t in timers if t[2].callback is not None]
            heapq.heapify(timers)
            self._cancelled = 0

        for hook in self._before_poll:
            self._run_callback(hook)

        if self._ready or self._stopping or self._pending_signals:
            timeout = 0.0
        elif timers:
            timeout = max(0.0, timers[0][0] - time.monotonic())
        else:
            timeout = -1.0
        if max_timeout is not None and (timeout < 0 or timeout > max_timeout):
            timeout = max_timeout

        polling = time.monotonic()
        events = self._epoll.poll(timeout, MAX_EVENTS_PER_POLL)
        polled = time.monotonic()
        handlers = self._handlers
        for fd, mask in events:
            handler = handlers.get(fd)
            if handler is None:
                continue  # unregistered by an earlier handler in this same turn
            try:
                handler(mask)
            except Exception:
                self.handler_errors += 1
                log.exception("Unhandled error in the handler of fd %d; the loop goes on.", fd)
            if pumps:
                self._pump()
        if self._pending_signals:
            self._dispatch_signals()
        busy = (polling - started) + (time.monotonic() - polled)
        self.iterations += 1
        self.busy_seconds += busy
        if polled - self._window_start >= BUSY_WINDOW_S:
            self._prev_max_busy, self._max_busy = self._max_busy, 0.0
            self._window_start = polled
        if busy > self._max_busy:
            self._max_busy = busy

    def _run_callback(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            self.handler_errors += 1
            log.exception("Unhandled error in callback %r; the loop goes on.", callback)

    def close(self) -> None:
        for signum, old in self._old_signal_handlers.items():
            signal.signal(signum, old)  # type: ignore[arg-type]
        self._old_signal_handlers.clear()
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
        self._epoll.close()
        self._handlers.clear()
