"""Waiting for libpq on the reactor: drive one ``store.pgproto`` generator at a time.

This is psycopg's ``waiting.py`` role next to our reactor: ``store.pgproto`` says what to
wait for and never waits; this module registers the PostgreSQL socket with the reactor and
resumes the generator when it is ready. It knows nothing about batches or the journal.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from logsvc import loop as _loop
from logsvc.store import pgproto


class PgDriver:
    """Drive one ``pgproto`` generator at a time on the reactor.

    The socket is registered ``EPOLLONESHOT`` and re-armed at every wait: level semantics on
    re-arm, so a readiness that came before the re-arm is not lost (libpq is not written for
    edge-triggered waiting).
    """

    def __init__(self, reactor: _loop.Reactor) -> None:
        self._reactor = reactor
        self._fd = -1
        self._gen: pgproto.PgGen[Any] | None = None
        self._on_done: Callable[[Any], None] | None = None
        self._on_error: Callable[[BaseException], None] | None = None

    @property
    def busy(self) -> bool:
        return self._gen is not None

    def start(
        self,
        gen: pgproto.PgGen[Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        assert self._gen is None, "one protocol step at a time"
        self._gen, self._on_done, self._on_error = gen, on_done, on_error
        self._advance(None)

    def forget(self) -> None:
        """Drop the socket from epoll; call before the connection is closed."""
        if self._fd >= 0:
            self._reactor.unregister(self._fd)
            self._fd = -1
        if self._gen is not None:
            self._gen.close()
            self._gen = None

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
        self._advance(ready)

    def _finish(self, callback: Callable[[Any], None] | None, value: Any) -> None:
        self._gen = None
        assert callback is not None
        callback(value)
