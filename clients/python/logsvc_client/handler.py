"""``Handler``: a ``logging.Handler`` that keeps every record until logsvc has it durably.

``emit()`` encodes the record and puts it in the spool; it never touches the network. A
daemon thread (``_sender``) sends, reads acknowledgements and trims the spool. See the
package README for the options, the policies when the spool is full, and ``stats()``.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import logging
import os
import ssl
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from logsvc_client import _protocol as proto
from logsvc_client._sender import Address, Sender, Settings
from logsvc_client._spool import DiskSpool, Spool

__all__ = ["Handler"]

FULL_POLICIES = ("block", "drop_oldest")
FSYNC_POLICIES = ("interval", "always", "never")
FORMATS = ("pickle", "json")
_CLIENT = "logsvc_client/0.1.0"
_EXC_FORMATTER = logging.Formatter()
# Every live handler, for the fork hook.
_HANDLERS: weakref.WeakSet[Handler] = weakref.WeakSet()


class Handler(logging.Handler):
    """Sends log records to logsvc with acknowledgements; nothing is lost to a restart.

    In ``dictConfig``, in place of ``logging.handlers.SocketHandler``::

        "svc": {"class": "logsvc_client.Handler", "host": "127.0.0.1", "port": 5000}

    Args:
        host, port: the service's ``--listen`` (or ``--listen-tls``) address.
        unix_path: the path of a ``--listen unix:PATH`` socket instead of host and port.
        ssl_context: TLS to ``--listen-tls`` (``ssl.create_default_context(cafile=...)``).
        server_hostname: the name the certificate must carry (default: ``host``).
        failover: more addresses, ``(host, port)`` pairs, ``"host:port"`` strings or unix
            paths, tried in turn when a connection fails; ``switch_to()`` moves at once.
        spool_dir: keep the spool in this directory (one process each): records survive a
            crash or kill of the application and are sent by the next process using it.
            Default: in memory.
        spool_max_records, spool_max_bytes: the spool's cap (unacknowledged records).
        full_policy: when the spool is full, ``"block"`` waits up to ``block_timeout``
            seconds for room and then drops the new record; ``"drop_oldest"`` drops the
            oldest records at once. Either way counted in ``stats()["dropped"]`` and told
            on stderr once per episode.
        fsync: disk spool only: ``"interval"`` (every ``fsync_interval`` s), ``"always"``
            (before records are sent) or ``"never"``; done by the sender thread, never in
            ``emit()``. A process crash loses nothing in any case; this is for machine crashes.
        window: unacknowledged records in flight at most (the server may ask for fewer).
        connect_timeout: for connecting and for the server's WELCOME, seconds.
        backoff_max: the longest pause between reconnection attempts, seconds.
        close_timeout: how long ``flush()`` and ``close()`` wait for acknowledgements.
        format: ``"pickle"`` (as SocketHandler sends records) or ``"json"``.

    Raises:
        ValueError: an option out of range.
        SpoolError: ``spool_dir`` is used by another process.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        unix_path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        failover: Iterable[Sequence[Any] | str] = (),
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_records: int = 100_000,
        spool_max_bytes: int = 64 << 20,
        full_policy: str = "block",
        block_timeout: float = 1.0,
        fsync: str = "interval",
        fsync_interval: float = 1.0,
        window: int = 10_000,
        connect_timeout: float = 5.0,
        backoff_max: float = 30.0,
        close_timeout: float = 5.0,
        format: str = "pickle",
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        _check(full_policy in FULL_POLICIES, f"full_policy must be one of {FULL_POLICIES}")
        _check(fsync in FSYNC_POLICIES, f"fsync must be one of {FSYNC_POLICIES}")
        _check(format in FORMATS, f"format must be one of {FORMATS}")
        _check(spool_max_records >= 1 and spool_max_bytes >= 1, "the spool's caps must be at least 1")
        _check(window >= 1, "window must be at least 1")
        for name, v in [
            ("block_timeout", block_timeout),
            ("fsync_interval", fsync_interval),
            ("connect_timeout", connect_timeout),
            ("backoff_max", backoff_max),
            ("close_timeout", close_timeout),
        ]:
            _check(v >= 0, f"{name} must not be negative")
        first: Address = unix_path if unix_path else (host, int(port))
        addresses = [first, *(_address(a) for a in failover)]
        self.full_policy = full_policy
        self.block_timeout = block_timeout
        self.close_timeout = close_timeout
        self._format = format
        self._spool_dir = spool_dir
        self._caps = (spool_max_records, spool_max_bytes)
        self._fsync = fsync
        self._settings = Settings(
            addresses=addresses,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            fmt=format,
            window=window,
            connect_timeout=connect_timeout,
            backoff_max=backoff_max,
            fsync=fsync,
            fsync_interval=fsync_interval,
            client=_CLIENT,
        )
        self._warned: set[str] = set()
        self._dropped: dict[str, int] = {}
        self._full = False  # in a "spool full" episode
        self._notice = ""  # a note for stderr, written once the spool's lock is released
        self._emitting = 0  # the thread inside emit(), to catch emit() re-entered
        self._closed = False
        self._flush_gave_up = 0.0
        self._spool = self._new_spool(spool_dir)
        self._sender = Sender(self._spool, self._settings, self._warn)
        self._started = False
        _HANDLERS.add(self)
        if len(self._spool):
            self._start()  # a disk spool left records unacknowledged: send them now

    def _new_spool(self, spool_dir: str | os.PathLike[str] | None) -> Spool:
        if spool_dir is None:
            return Spool(*self._caps)
        return DiskSpool(spool_dir, *self._caps, fsync=self._fsync != "never")

    # -- logging.Handler ------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """Encode ``record`` and put it in the spool; never waits for the network.

        Waits only with ``full_policy="block"`` and a full spool, ``block_timeout`` at most.
        """
        try:
            payload = proto.encode_record(record, self.formatter or _EXC_FORMATTER, self._format)
        except Exception:
            self._drop("encode_error")
            self.handleError(record)
            return
        if self._closed:
            self._drop("closed")
            return
        if len(payload) > proto.DEFAULT_MAX_RECORD_BYTES:
            self._drop("too_large")
            self._warn(
                "too_large",
                f"logsvc_client: a record of {len(payload)} bytes is over the "
                f"{proto.DEFAULT_MAX_RECORD_BYTES} a server takes; dropped "
                "(counted in stats()['dropped']['too_large'])",
            )
            return
        spool = self._spool
        me = threading.get_ident()
        if self._emitting == me:
            # emit() inside emit() on one thread: stderr routed into logging, say. Taking the
            # spool's lock again would deadlock; the record is counted instead.
            self._drop("recursion")
            return
        self._emitting = me
        try:
            with spool.cond:
                if spool.has_room(len(payload)):
                    self._full = False  # an episode of a full spool ends when a record fits again
                elif not self._make_room(spool, len(payload)):
                    return
                spool.put(payload, time.time())
        finally:
            self._emitting = 0
            if self._notice:  # said outside the lock (stderr might lead back into logging)
                notice, self._notice = self._notice, ""
                _stderr(notice)
        if not self._started:
            self._start()
        self._sender.wake()

    def _make_room(self, spool: Spool, size: int) -> bool:
        """The spool is full (``cond`` held): apply the policy; True if the record goes in."""
        if size > spool.max_bytes:
            self._drop("too_large")
            return False
        if self.full_policy == "drop_oldest":
            n = 0
            while not spool.has_room(size) and len(spool):
                spool.drop_oldest()
                n += 1
            self._drop("drop_oldest", n)
            self._episode(spool, "dropping the oldest records (full_policy='drop_oldest')")
            return True
        if not self._full:  # wait once per episode; while it lasts, new records go at once
            deadline = time.monotonic() + self.block_timeout
            while not spool.has_room(size):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                spool.cond.wait(left)
            if spool.has_room(size):
                return True
        self._drop("spool_full")
        self._episode(
            spool,
            f"dropping new records after waiting {self.block_timeout:g} s for room (full_policy='block')",
        )
        return False

    def _episode(self, spool: Spool, what: str) -> None:
        if not self._full:
            self._full = True
            self._notice = (
                f"logsvc_client: the spool is full ({len(spool):,} records, {spool.nbytes:,} bytes "
                f"unacknowledged; server {self._address()}); {what} until it drains. "
                "Counted in stats()['dropped']."
            )

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record emitted so far is acknowledged, ``close_timeout`` at most.

        Returns once they are, or after the timeout (then they stay in the spool and are
        still sent).
        """
        if self._closed or not len(self._spool):
            return
        if not self._started:
            self._start()
        done = self._wait_acked(self.close_timeout if timeout is None else timeout)
        self._flush_gave_up = 0.0 if done else time.monotonic()

    def close(self) -> None:
        """Flush (``close_timeout`` at most), stop the sender, and say on stderr what is left.

        ``logging.shutdown()`` (run at interpreter exit) calls this. With a disk spool, what
        is left is sent by the next process that uses the same ``spool_dir``.
        """
        with self.lock:  # type: ignore[union-attr]  # logging.Handler.createLock made it
            if self._closed:
                super().close()
                return
            self._closed = True
        try:
            if self._started:
                # logging.shutdown() calls flush() just before: do not wait twice for nothing.
                recent = self._flush_gave_up and time.monotonic() - self._flush_gave_up < 1.0
                self._wait_acked(0.0 if recent else self.close_timeout)
                self._sender.stop(2.0)
            spool = self._spool
            with spool.cond:
                left, left_bytes = len(spool), spool.nbytes
            if left:
                where = (
                    f"they stay in {self._spool_dir} and are sent by the next process using it"
                    if spool.persistent
                    else "they are lost (no spool_dir)"
                )
                _stderr(
                    f"logsvc_client: closing with {left:,} records ({left_bytes:,} bytes) not "
                    f"acknowledged by {self._address()} after {self.close_timeout:g} s; {where}."
                )
            spool.close()
        finally:
            _HANDLERS.discard(self)
            super().close()

    # -- the rest of the public API ---------------------------------------------------------------

    def switch_to(self, host: str, port: int | None = None) -> None:
        """Send to another logsvc from now on (``port`` None: ``host`` is a unix socket path).

        The current connection closes; every unacknowledged record goes to the new server,
        which (writing into the same database) stores each exactly once.
        """
        self._sender.switch_to(host if port is None else (host, int(port)))
        if not self._started:
            self._start()

    def wait_connected(self, timeout: float) -> bool:
        """Start the sender now (it otherwise starts at the first record) and wait until it has
        a connection with the server's WELCOME, ``timeout`` seconds at most.

        Returns:
            True if connected; False after the timeout (the sender keeps trying).
        """
        if not self._started:
            self._start()
        deadline = time.monotonic() + timeout
        while not self._sender.connected:
            if time.monotonic() >= deadline or self._closed:
                return False
            time.sleep(0.005)
        return True

    def ack_latencies(self) -> list[float]:
        """The latency samples behind ``stats()["ack_latency_s"]``: seconds, emit to ACK."""
        return list(self._sender.stats.latencies)

    def stats(self) -> dict[str, Any]:
        """The handler's figures, as a dict (a snapshot; cheap enough to poll).

        Keys: ``spool_records``, ``spool_bytes``, ``oldest_unacked_age_s``, ``stream``,
        ``sent`` (resends included), ``resent``, ``acked``, ``dropped`` (by reason:
        ``spool_full``, ``drop_oldest``, ``too_large``, ``encode_error``, ``closed``,
        ``recursion``),
        ``reconnects``, ``connect_failures``, ``errors`` (by kind), ``connected``, ``server``,
        ``ack_latency_s`` (count, p50, p99, max: seconds from emit() to the ACK, over the
        last 20,000 samples; each ACK adds up to 32 samples spread over the records it covers),
        and with a disk spool ``spool_write_errors`` and ``spool_torn_bytes``.
        """
        spool, st = self._spool, self._sender.stats
        with spool.cond:
            records, nbytes, oldest = len(spool), spool.nbytes, spool.oldest_created()
        lat = sorted(st.latencies)
        out: dict[str, Any] = {
            "spool_records": records,
            "spool_bytes": nbytes,
            "oldest_unacked_age_s": 0.0 if oldest is None else max(0.0, time.time() - oldest),
            "stream": spool.stream,
            "sent": st.sent,
            "resent": st.resent,
            "acked": st.acked,
            "dropped": dict(self._dropped),
            "reconnects": max(0, st.connects - 1),
            "connect_failures": st.connect_failures,
            "errors": dict(st.errors),
            "connected": self._sender.connected,
            "server": self._address(),
            "ack_latency_s": {
                "count": len(lat),
                "p50": _pct(lat, 0.50),
                "p99": _pct(lat, 0.99),
                "max": lat[-1] if lat else None,
            },
        }
        if isinstance(spool, DiskSpool):
            out["spool_write_errors"] = spool.write_errors
            out["spool_torn_bytes"] = spool.torn_bytes
        return out

    # -- internals ------------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._spool.cond:
            if self._started:
                return
            self._started = True
        self._sender.start()

    def _wait_acked(self, timeout: float) -> bool:
        spool = self._spool
        deadline = time.monotonic() + timeout
        with spool.cond:
            target = spool.next_seq - 1
            while spool.done_seq < target and len(spool):
                left = deadline - time.monotonic()
                if left <= 0 or not self._sender.alive():
                    return False
                spool.cond.wait(min(left, 0.5))
        return True

    def _drop(self, reason: str, n: int = 1) -> None:
        if n:
            self._dropped[reason] = self._dropped.get(reason, 0) + n

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _stderr(message)

    def _address(self) -> str:
        a = self._sender.address
        return a if isinstance(a, str) else f"{a[0]}:{a[1]}"

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its spool's lock may be held forever:
        # a fresh spool and sender. A disk spool stays the parent's (two writers would number
        # records twice): the child keeps its records in memory, under a stream of its own.
        old = self._spool
        old.abandon()
        self._sender.abandon()
        if old.persistent and not self._closed:
            _stderr(
                f"logsvc_client: process {os.getpid()} was forked from {os.getppid()}; its records are "
                f"kept in memory, not in {self._spool_dir} (one process per spool directory)."
            )
        self._spool = Spool(*self._caps)
        self._sender = Sender(self._spool, self._settings, self._warn)
        self._started = False
        self._full = False
        self._dropped = {}


def _after_fork() -> None:
    for h in list(_HANDLERS):
        h._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)


def _address(a: Sequence[Any] | str) -> Address:
    if isinstance(a, str):
        if a.startswith("/") or a.startswith("."):
            return a
        host, sep, port = a.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"failover address {a!r}: expected 'host:port' or a unix socket path")
        return (host.strip("[]"), int(port))
    if len(a) != 2:
        raise ValueError(f"failover address {a!r}: expected (host, port)")
    return (str(a[0]), int(a[1]))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"logsvc_client.Handler: {message}")


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _stderr(message: str) -> None:
    # Never through logging: this handler may be the one that would carry it.
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # stderr closed or gone at interpreter exit
