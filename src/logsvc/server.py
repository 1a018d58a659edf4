"""``logsvc serve``: listeners, client connections, journal and store wired on one reactor.

Theory of operation
-------------------
::

    client sockets --recv--> Decoder --records--> RowEncoder --COPY rows--> pending
        (EPOLLET, drained to EAGAIN,                                     |
         256 KiB budget per turn)                 before each poll: one journal block
                                                                         |
                                          PgSink reads blocks back --COPY--> PostgreSQL

* Every record is encoded once, into the COPY text row PostgreSQL will receive, with its
  journal sequence number. Rows decoded during one loop turn become one journal block
  (group commit): the journal is written before anything is shipped.
* A connection whose reader stopped early (byte budget) is pushed onto the ready queue,
  since edge-triggered epoll will not report bytes that are already waiting.
* When the journal reaches ``journal_max_bytes`` (PostgreSQL down for long), connections
  stop being read and listeners stop accepting: the kernel buffers fill and TCP pushes back
  on the clients. Reading resumes once shipped segments are released. Nothing that was read
  is dropped (a stock SocketHandler drops a record itself when a send blocks for 1 s).
* A bad frame closes only its connection (counted by reason, logged once with the peer).
* If a journal append fails (disk full, I/O error) the rows stay in memory, unchanged (their
  seqs are already in them), reads from clients stop as for a full journal, and the append
  is retried every second until it succeeds. Nothing that was read is dropped.
* Access control happens at accept: ``--allow`` networks, ``--max-connections``. Timeouts are
  one sweep a second over all connections (cheaper than a timer per read at 10k clients):
  idle (nothing received for ``idle_timeout``) and slow (a started frame not finished within
  ``frame_timeout``: slowloris). Every refusal and close is counted by reason.
* TLS listeners do a non-blocking handshake on the same loop. With edge-triggered epoll the
  SSL object's own buffer matters: a record may be decrypted and waiting in OpenSSL while the
  socket has nothing, so reads go on until ``SSLWantReadError``, never until "epoll is quiet".
* SIGTERM/SIGINT: close the listeners, read what every client already sent, journal it,
  ship everything within ``shutdown_timeout``, exit. A second signal exits at once; the
  journal keeps whatever was not shipped for the next start.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import resource
import signal
import socket
import ssl
import stat
import struct
import sys
import time
from functools import partial
from pathlib import Path

from logsvc import loop as _loop
from logsvc import ops
from logsvc.config import Settings
from logsvc.errors import ConfigError, ProtocolError, RecordRejected
from logsvc.http import HttpConnection, Request, Response
from logsvc.journal import Journal
from logsvc.metrics import Metrics
from logsvc.store.copyfmt import RowEncoder
from logsvc.store.sink import PgSink
from logsvc.wire import (
    NEED_DATA,
    Decoder,
    Format,
    JsonFormat,
    LengthPrefixFramer,
    LineFramer,
    PickleDatagramFormat,
    PickleFormat,
    SyslogFormat,
    SyslogFramer,
)
from logsvc.wire.http_body import parse_ingest

log = logging.getLogger("logsvc.server")

# Bytes read from one connection per loop turn before the others get their turn. Big enough
# that a fast client moves in a few large recv calls, small enough that 100 busy clients
# still share a turn in well under a second (tornado reads 64 KiB chunks; asyncio 256 KiB).
READ_BUDGET_BYTES = 256 * 1024
RECV_CHUNK_BYTES = 64 * 1024
# Pending rows are turned into a journal block at the end of each turn, or sooner once
# they reach this size, which bounds the memory a turn can hold.
BLOCK_FLUSH_BYTES = 1 << 20
LISTEN_BACKLOG = 1024
# After EMFILE/ENFILE at accept, wait this long before accepting again (asyncio
# selector_events.py L175-190 does the same with its backlog delay).
ACCEPT_RETRY_S = 1.0
# On shutdown, bytes still read from one client before it is closed.
SHUTDOWN_READ_BYTES = 16 << 20
# After a failed journal append (disk full), how often it is tried again.
JOURNAL_RETRY_S = 1.0
# Descriptors the service needs besides its clients: journal segments, PostgreSQL, epoll,
# listeners, the embedded server's pipes, logging.
RESERVED_FDS = 64
# Refusals at accept are logged at most this often (a flood must not flood the log).
REFUSAL_LOG_INTERVAL_S = 10.0
_PEERCRED = struct.Struct("3i")
# Datagrams read from one UDP socket per loop turn before the others get their turn.
DATAGRAM_BUDGET = 2048
MAX_DATAGRAM_BYTES = 65535
# Asked for as the UDP receive buffer: ~2 s of the seed's load in the kernel while a turn
# runs long. Above net.core.rmem_max only root gets it (SO_RCVBUFFORCE); we try both.
UDP_RCVBUF_BYTES = 8 << 20
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: the drop counter as ancillary data
# Not in CPython 3.11's socket module; 33 on Linux (asm-generic/socket.h). Root only.
_SO_RCVBUFFORCE: int | None = getattr(
    socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None
)
_UINT32 = struct.Struct("I")
# How long a kept-alive HTTP connection may sit between requests (nginx keepalive_timeout).
HTTP_KEEPALIVE_S = 75.0
# What each listener kind speaks, for the start-up log.
_KIND_TEXT = {
    "pickle": "SocketHandler pickle frames",
    "json": "JSON lines",
    "syslog": "syslog over TCP, octet-counted or newline framed",
    "udp": "DatagramHandler pickle datagrams",
    "syslog_udp": "syslog datagrams",
    "http": "HTTP: POST /ingest, /metrics, /healthz, /readyz",
    "metrics": "HTTP: /metrics, /healthz, /readyz",
}
_HTTP_PATHS = frozenset({"/ingest", "/metrics", "/healthz", "/readyz"})

# Errno values that mean "the peer went away": close quietly (tornado _ERRNO_CONNRESET).
_QUIET_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT})
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_EV_READ = _loop.EPOLLIN | _loop.EPOLLRDHUP | _loop.EPOLLET
# TLS may need to write (handshake, key updates) when we only want to read: also wait for
# EPOLLOUT. Edge-triggered, it fires only when the send buffer turns writable, which is rare.
_EV_TLS = _EV_READ | _loop.EPOLLOUT


class Listener:
    """A listening socket and what its connections speak."""

    __slots__ = ("drops_seen", "format", "kind", "name", "read_scheduled", "sock", "tls", "unix_path")

    def __init__(
        self, sock: socket.socket, kind: str, name: str, tls: ssl.SSLContext | None, unix_path: str | None
    ) -> None:
        self.sock = sock
        self.kind = kind  # the format label in logs and metrics: "pickle", ...
        self.name = name
        self.tls = tls
        self.unix_path = unix_path
        self.format: Format | None = None  # datagram listeners: parses one datagram
        self.drops_seen = 0  # datagram listeners: the kernel's drop counter last seen
        self.read_scheduled = False  # datagram listeners: a read is queued for the next turn


class Connection:
    """One client socket and its decoder. Reads are driven by the server."""

    __slots__ = (
        "closed",
        "decoder",
        "fd",
        "handshaking",
        "kind",
        "last_active",
        "partial_since",
        "peer",
        "read_scheduled",
        "sock",
    )

    def __init__(self, sock: socket.socket, peer: str, kind: str, decoder: Decoder, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.kind = kind
        self.decoder = decoder
        self.closed = False
        self.handshaking = isinstance(sock, ssl.SSLSocket)
        self.last_active = now  # monotonic time of the last byte received (or of accept)
        self.partial_since = 0.0  # monotonic time a started frame has been waiting since; 0: none
        self.read_scheduled = False  # a read is queued for the next turn (see _schedule_read)


class Server:
    def __init__(self, settings: Settings, conninfo: str) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.reactor = _loop.Reactor()
        self.journal = Journal(
            Path(settings.data_dir) / "journal",
            segment_bytes=settings.journal_segment_bytes,
            fsync=settings.fsync,
            max_bytes=settings.journal_max_bytes,
        )
        self.sink = PgSink(
            self.reactor,
            self.journal,
            self.metrics,
            conninfo=conninfo,
            schema_name=settings.schema,
            max_records=settings.batch_max_records,
            max_bytes=settings.batch_max_bytes,
            max_age=settings.batch_max_age,
            retention_days=settings.retention,
            extra_index_keys=tuple(k for k in settings.index_extra if k),
            on_released=self._on_journal_released,
            dead_letter_dir=Path(settings.data_dir) / "deadletter",
        )
        self.encoder = RowEncoder()
        self.listeners: list[Listener] = []
        self.conns: dict[int, Connection] = {}
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._paused: dict[int, Connection] = {}
        self._backpressure = False  # the journal is over journal_max_bytes
        self._journal_error: OSError | None = None  # the last append failed; retrying
        self._journal_error_since = 0.0
        self._hold = False  # either of the two: do not read from clients
        self._allow = settings.allow
        self._max_connections = settings.max_connections
        self._refusals_logged = 0.0
        self._tls: ssl.SSLContext | None = None
        self._paused_datagrams: set[Listener] = set()
        self._udp_peers: dict[tuple[str, int], str] = {}  # "ip:port" strings, made once per sender
        self._paused_listeners: set[Listener] = set()
        self.http_conns: dict[int, HttpConnection] = {}
        self._http_waiters: list[tuple[HttpConnection, int, dict[str, int]]] = []
        self._registry = ops.make_registry(self)
        self.started = time.monotonic()
        self._stopping = False
        self._done = False
        self._recv_buf = bytearray(RECV_CHUNK_BYTES)
        self._recv_view = memoryview(self._recv_buf)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Recover the journal, bind the listeners, connect to PostgreSQL (in the loop)."""
        _raise_nofile_limit()
        report = self.journal.open()
        log.info(
            "Journal %s opened: journal_id=%s next_seq=%d segments=%d size=%d bytes.",
            self.journal.directory,
            self.journal.journal_id,
            self.journal.next_seq,
            report.segments,
            self.journal.size_bytes,
        )
        if report.torn_tail_bytes_truncated:
            n = report.torn_tail_records
            log.warning(
                "Journal: truncated a torn tail of %d bytes (%s).",
                report.torn_tail_bytes_truncated,
                f"{n} records lost" if n else "records lost unknown: its header was torn too",
            )
        for path, start, end, lost in report.corrupt:
            log.error(
                "Journal: corrupt range %s bytes %d-%d skipped, %d records lost.", path, start, end, lost
            )
        self._max_connections = _check_nofile_limit(_raise_nofile_limit(), self.settings.max_connections)
        if self.settings.listen_tls:
            self._tls = make_tls_context(self.settings)
        for where in self.settings.listen:
            if isinstance(where, str):
                self._listen_unix(where)
            else:
                self._listen(*where)
        st = self.settings
        for host, port in st.listen_tls:
            self._listen(host, port, tls=self._tls)
        for kind, addrs in (
            ("json", st.listen_json),
            ("syslog", st.listen_syslog),
            ("http", st.listen_http),
        ):
            for host, port in addrs:
                self._listen(host, port, kind=kind)
        for kind, addrs in (("udp", st.listen_udp), ("syslog_udp", st.listen_syslog_udp)):
            for host, port in addrs:
                self._listen_datagrams(host, port, kind)
        if st.metrics is not None:
            try:
                self._listen(*st.metrics, kind="metrics")
            except OSError as exc:
                raise ConfigError(
                    f"--metrics {st.metrics[0]}:{st.metrics[1]}: {exc.strerror}; give another "
                    "address with --metrics HOST:PORT, or --metrics= for none"
                ) from None
        r = self.reactor
        r.add_before_poll(self._flush_pending)
        r.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        r.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        if self.settings.fsync == "interval":
            r.call_later(self.settings.fsync_interval, self._fsync_tick)
        if self.settings.stats_interval > 0:
            r.call_later(self.settings.stats_interval, self._stats_tick)
        if self.settings.idle_timeout > 0 or self.settings.frame_timeout > 0:
            r.call_later(self._sweep_interval(), self._sweep)
        self.sink.start()

    def run(self) -> int:
        """Serve until stopped; return the exit status."""
        try:
            self.reactor.run()
        finally:
            self._close_all()
        return 0

    def _listen(self, host: str, port: int, tls: ssl.SSLContext | None = None, kind: str = "pickle") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        addr = sock.getsockname()[:2]
        shown = f"[{addr[0]}]:{addr[1]}" if family == socket.AF_INET6 else f"{addr[0]}:{addr[1]}"
        self._add_listener(Listener(sock, kind, shown, tls, None))
        what = _KIND_TEXT[kind]
        log.info("Listening on %s (%s).", shown, f"TLS, {what}" if tls else what)

    def _listen_datagrams(self, host: str, port: int, kind: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        for opt in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
            if opt is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, UDP_RCVBUF_BYTES)
                break
            except OSError:
                continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
        except OSError:
            pass  # not Linux: drops are not observable
        addr = sock.getsockname()[:2]
        shown = f"[{addr[0]}]:{addr[1]}" if family == socket.AF_INET6 else f"{addr[0]}:{addr[1]}"
        lst = Listener(sock, kind, shown, None, None)
        if kind == "udp":
            lst.format = PickleDatagramFormat(self.settings.max_frame_bytes)
        else:
            lst.format = SyslogFormat()
        self.listeners.append(lst)
        self.reactor.register(
            sock.fileno(),
            _loop.EPOLLIN | _loop.EPOLLET,
            lambda ev: None if lst.read_scheduled else self._handle_datagrams(lst),
        )
        rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        log.info("Listening on udp %s (%s; receive buffer %d bytes).", shown, _KIND_TEXT[kind], rcvbuf)

    def _listen_unix(self, path: str) -> None:
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The mode is the access control: no moment where the socket exists with wider rights.
        old_umask = os.umask(0o777 & ~self.settings.unix_mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, self.settings.unix_mode)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        self._add_listener(Listener(sock, "pickle", f"unix:{path}", None, path))
        log.info(
            "Listening on unix:%s (mode %o; SocketHandler(%r, None) pickle frames).",
            path,
            self.settings.unix_mode,
            path,
        )

    def _add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)
        self.reactor.register(
            listener.sock.fileno(), _loop.EPOLLIN | _loop.EPOLLET, lambda ev: self._handle_accept(listener)
        )

    def _close_listeners(self) -> None:
        self._paused_datagrams.clear()
        self._paused_listeners.clear()
        for lst in self.listeners:
            self.reactor.unregister(lst.sock.fileno())
            lst.sock.close()
            if lst.unix_path is not None:
                try:
                    os.unlink(lst.unix_path)
                except OSError:
                    pass
        self.listeners.clear()

    # -- accepting -------------------------------------------------------------------------

    def _handle_accept(self, listener: Listener) -> None:
        # Edge-triggered: accept until EAGAIN, "there may be multiple connections waiting"
        # (asyncio selector_events.py L159-172).
        lsock = listener.sock
        if self._hold and listener.kind not in ("http", "metrics"):
            # Paused: new clients wait in the kernel's backlog instead of piling up here as
            # connections nobody reads (a stock SocketHandler whose send times out after 1 s
            # reconnects at once, every second). /metrics and /readyz stay reachable; ingest
            # answers 503 while paused.
            self._paused_listeners.add(listener)
            return
        while not self._stopping and listener in self.listeners:
            try:
                sock, addr = lsock.accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_RESOURCE_ERRNOS:
                    self.metrics.connections_refused["accept_error"] += 1
                    log.error(
                        "Cannot accept on %s: %s (%d connections open; see the open-file limit "
                        "in the start-up log); pausing accept for %.0f s.",
                        listener.name,
                        exc.strerror,
                        len(self.conns),
                        ACCEPT_RETRY_S,
                    )
                    self.reactor.call_later(ACCEPT_RETRY_S, lambda: self._handle_accept(listener))
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up while queued
                raise
            self._accepted(listener, sock, addr)

    def _accepted(self, listener: Listener, sock: socket.socket, addr: object) -> None:
        if sock.family == socket.AF_UNIX:
            peer = _unix_peer(sock)
        else:
            assert isinstance(addr, tuple)
            peer = f"[{addr[0]}]:{addr[1]}" if sock.family == socket.AF_INET6 else f"{addr[0]}:{addr[1]}"
            if self._allow and not _allowed(addr[0], self._allow):
                self._refuse(sock, peer, "not_allowed", "not in --allow")
                return
        if len(self.conns) + len(self.http_conns) >= self._max_connections:
            why = f"--max-connections {self._max_connections} reached"
            self._refuse(sock, peer, "too_many_connections", why)
            return
        sock.setblocking(False)
        if listener.kind in ("http", "metrics"):
            hconn = HttpConnection(
                sock,
                peer,
                self.reactor,
                partial(self._http_app, listener.kind),
                max_body_bytes=self.settings.http_max_body_bytes,
                on_close=self._http_closed,
            )
            self.http_conns[hconn.fd] = hconn
            self.metrics.connections_accepted += 1
            self.metrics.connections_open += 1
            hconn.start()
            return
        if listener.tls is not None:
            try:
                sock = listener.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (ssl.SSLError, OSError) as exc:
                self._refuse(sock, peer, "tls_error", f"TLS set-up failed: {exc}")
                return
        conn = Connection(sock, peer, listener.kind, self._new_decoder(listener.kind), time.monotonic())
        self.conns[conn.fd] = conn
        self.metrics.connections_accepted += 1
        self.metrics.connections_open += 1
        self.reactor.register(conn.fd, _EV_TLS if conn.handshaking else _EV_READ, self._reader(conn))
        # Data may have arrived before registration; with EPOLLET that is an edge we
        # never saw. Read (or shake hands) once now.
        self._schedule_read(conn)

    def _new_decoder(self, kind: str) -> Decoder:
        cap = self.settings.max_frame_bytes
        if kind == "json":
            return Decoder(LineFramer(cap), JsonFormat())
        if kind == "syslog":
            return Decoder(SyslogFramer(cap), SyslogFormat())
        return Decoder(LengthPrefixFramer(max_frame_bytes=cap), PickleFormat())

    def _refuse(self, sock: socket.socket, peer: str, reason: str, why: str) -> None:
        self.metrics.connections_refused[reason] += 1
        try:
            # An RST rather than a FIN: the client learns at once, and no TIME_WAIT is left here.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()
        now = time.monotonic()
        if now - self._refusals_logged >= REFUSAL_LOG_INTERVAL_S:
            self._refusals_logged = now
            log.warning(
                "Refused %s: %s (refused so far: %s; logged at most every %.0f s).",
                peer,
                why,
                dict(self.metrics.connections_refused),
                REFUSAL_LOG_INTERVAL_S,
            )

    # -- reading ---------------------------------------------------------------------------

    def _reader(self, conn: Connection) -> _loop.Handler:
        def on_event(events: int) -> None:
            if not conn.read_scheduled:  # else the queued read will see these bytes too
                self._handle_read(conn)

        return on_event

    def _schedule_read(self, conn: Connection) -> None:
        """Read ``conn`` on the next turn, once: a connection is never queued twice.

        (Each edge while a read was queued used to queue another, so a busy client could
        stack several budgets into one turn: turns of over a second were measured.)
        """
        if not conn.read_scheduled:
            conn.read_scheduled = True
            self.reactor.call_soon(partial(self._scheduled_read, conn))

    def _scheduled_read(self, conn: Connection) -> None:
        conn.read_scheduled = False
        self._handle_read(conn)

    def _handle_read(self, conn: Connection, budget: int = READ_BUDGET_BYTES) -> None:
        if conn.closed:
            return
        if self._hold:
            self._paused[conn.fd] = conn
            return
        if conn.handshaking and not self._handshake(conn):
            return
        sock, view, dec = conn.sock, self._recv_view, conn.decoder
        eof = False
        nread = 0
        while nread < budget:
            try:
                n = sock.recv_into(view)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                # For TLS: OpenSSL's buffer is empty too (we read until it said so), so the
                # next epoll edge is the signal to go on. SSLWantWrite: a key update wants to
                # write; EPOLLOUT is registered for TLS connections.
                break
            except InterruptedError:
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                eof = True
                break
            except OSError as exc:
                self._decode(conn, time.time())
                if isinstance(exc, ssl.SSLError):
                    self._close(conn, "tls_error", exc)
                else:
                    self._close(conn, "reset" if exc.errno in _QUIET_ERRNOS else "error", exc)
                return
            if n == 0:
                eof = True
                break
            dec.feed(view[:n])
            nread += n
        else:
            # Budget spent with data possibly left in the kernel (or in OpenSSL's buffer):
            # finish on the next turn.
            self._schedule_read(conn)
        self.metrics.bytes_received += nread
        if nread:
            conn.last_active = time.monotonic()
            if not self._decode(conn, time.time()):
                return
        if eof:
            dec.feed(b"")
            if self._decode(conn, time.time()):
                self._close(conn, "eof")

    def _handshake(self, conn: Connection) -> bool:
        """Advance a TLS handshake; True once it is done."""
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # EPOLLIN and EPOLLOUT are both registered: the next edge resumes
        except (ssl.SSLError, OSError) as exc:
            self.metrics.connections_refused["tls_error"] += 1
            self._close(conn, "tls_error", exc)
            return False
        conn.handshaking = False
        return True

    def _decode(self, conn: Connection, received: float) -> bool:
        """Turn every complete frame into a pending row; False if the connection was closed."""
        dec = conn.decoder
        enc = self.encoder.encode
        if conn.kind == "syslog":
            dec.format.now = received  # type: ignore[attr-defined]  # RFC 3164 has no year
        received_ts = self.encoder.timestamp(received)
        pending = self._pending
        seq = self.journal.next_seq + len(pending)
        peer = conn.peer
        nbytes = 0
        first = len(pending)
        try:
            while True:
                try:
                    while (rec := dec.next_record()) is not NEED_DATA:
                        row = enc(rec, seq, peer, received_ts)
                        pending.append(row)
                        nbytes += len(row)
                        seq += 1
                    break
                except RecordRejected as exc:
                    # One bad line or message: counted, skipped, the stream goes on.
                    self.metrics.records_rejected[conn.kind, exc.reason] += 1
        except ProtocolError as exc:
            self.metrics.frames_rejected[conn.kind, exc.reason] += 1
            log.warning("Closing %s: bad frame (%s): %s.", peer, exc.reason, exc)
            self._close(conn, exc.reason)
            return False
        finally:
            self._pending_bytes += nbytes
            if len(pending) != first:
                self.metrics.records_received_by[conn.kind] += len(pending) - first
            # Slowloris clock: runs while a started frame is held and no frame completes.
            if len(pending) != first or not dec.buffered_bytes:
                conn.partial_since = 0.0
            if dec.buffered_bytes and not conn.partial_since:
                conn.partial_since = time.monotonic()
            if self._pending_bytes >= BLOCK_FLUSH_BYTES:
                self._flush_pending()
        return True

    # -- datagrams ------------------------------------------------------------------------

    def _handle_datagrams(self, lst: Listener) -> None:
        """Read datagrams until EAGAIN (or the budget); each is one record or one rejection."""
        if self._hold:
            # Not read: the kernel buffer fills and drops, which SO_RXQ_OVFL counts. UDP
            # has no backpressure; this is the best there is.
            self._paused_datagrams.add(lst)
            return
        sock, fmt = lst.sock, lst.format
        assert fmt is not None
        enc = self.encoder.encode
        pending = self._pending
        m = self.metrics
        now = time.time()
        received_ts = self.encoder.timestamp(now)
        if isinstance(fmt, SyslogFormat):
            fmt.now = now
        nbytes = 0
        ok = 0
        ancsize = socket.CMSG_SPACE(_UINT32.size)
        ipv6 = lst.sock.family == socket.AF_INET6
        peers = self._udp_peers
        if len(peers) > 4096:
            peers.clear()
        for _ in range(DATAGRAM_BUDGET):
            try:
                data, anc, _flags, addr = sock.recvmsg(MAX_DATAGRAM_BYTES, ancsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("Receiving on udp %s failed: %s.", lst.name, exc)
                break
            nbytes += len(data)
            for level, typ, value in anc:
                if level == socket.SOL_SOCKET and typ == _SO_RXQ_OVFL and len(value) >= _UINT32.size:
                    total = _UINT32.unpack_from(value)[0]
                    if total > lst.drops_seen:
                        m.udp_datagrams_dropped += total - lst.drops_seen
                        lst.drops_seen = total
            peer = peers.get(addr)
            if peer is None:
                peer = peers[addr] = f"[{addr[0]}]:{addr[1]}" if ipv6 else f"{addr[0]}:{addr[1]}"
            try:
                rec = fmt.parse(data)
            except RecordRejected as exc:
                m.records_rejected[lst.kind, exc.reason] += 1
                continue
            except ProtocolError as exc:  # a format that breaks its promise still costs one datagram
                m.records_rejected[lst.kind, exc.reason] += 1
                continue
            row = enc(rec, self.journal.next_seq + len(pending), peer, received_ts)
            pending.append(row)
            self._pending_bytes += len(row)
            ok += 1
        else:
            if not lst.read_scheduled:
                lst.read_scheduled = True
                self.reactor.call_soon(partial(self._scheduled_datagrams, lst))
        m.bytes_received += nbytes
        if ok:
            m.records_received_by[lst.kind] += ok
        if self._pending_bytes >= BLOCK_FLUSH_BYTES:
            self._flush_pending()

    def _scheduled_datagrams(self, lst: Listener) -> None:
        lst.read_scheduled = False
        if lst in self.listeners:
            self._handle_datagrams(lst)

    # -- HTTP ------------------------------------------------------------------------------

    def _http_app(self, kind: str, conn: HttpConnection, req: Request) -> Response | None:
        path = req.path if req.path in _HTTP_PATHS else "other"
        if req.path == "/ingest" and kind == "http":
            resp = self._ingest(conn, req)
            if resp is None:
                return None  # answered once the records are in the journal
        elif req.method not in ("GET", "HEAD") and req.path in _HTTP_PATHS:
            resp = Response.json(405, {"error": f"{req.method} is not allowed on {req.path}"},
                                 [("Allow", "GET, HEAD")])  # fmt: skip
        elif req.path == "/metrics":
            resp = ops.metrics_response(self._registry)
        elif req.path == "/healthz":
            resp = ops.health(self)
        elif req.path == "/readyz":
            resp = ops.readiness(self)
        else:
            resp = Response.json(404, {"error": f"no such path: {req.path[:200]}"})
        self.metrics.http_requests[path, resp.status] += 1
        return resp

    def _ingest(self, conn: HttpConnection, req: Request) -> Response | None:
        if req.method not in ("POST", "GET"):
            return Response.json(405, {"error": "use POST /ingest"}, [("Allow", "POST, GET")])
        if self._hold or self._stopping:
            why = "the service is stopping" if self._stopping else "the journal is full; retry later"
            return Response.json(503, {"error": why}, [("Retry-After", "1")])
        enc = self.encoder.encode
        pending = self._pending
        received_ts = self.encoder.timestamp(time.time())
        accepted = 0
        rejected: dict[str, int] = {}
        try:
            for item in parse_ingest(req.method, req.headers.get("content-type", ""), req.body, req.query):
                if isinstance(item, RecordRejected):
                    rejected[item.reason] = rejected.get(item.reason, 0) + 1
                    self.metrics.records_rejected["http", item.reason] += 1
                    continue
                row = enc(item, self.journal.next_seq + len(pending), conn.peer, received_ts)
                pending.append(row)
                self._pending_bytes += len(row)
                accepted += 1
        except ProtocolError as exc:
            self.metrics.frames_rejected["http", exc.reason] += 1
            return Response.json(400, {"error": str(exc)})
        self.metrics.records_received_by["http"] += accepted
        if not accepted:
            status = 400 if rejected else 200
            return Response.json(status, {"accepted": 0, "rejected": rejected})
        self._http_waiters.append((conn, accepted, rejected))
        if self._pending_bytes >= BLOCK_FLUSH_BYTES:
            self._flush_pending()
        return None

    def _answer_waiters(self, status: int) -> None:
        waiters, self._http_waiters = self._http_waiters, []
        for conn, accepted, rejected in waiters:
            if status == 200:
                resp = Response.json(200, {"accepted": accepted, "rejected": rejected})
            else:
                resp = Response.json(status, {"error": "the journal could not be written"})
            self.metrics.http_requests["/ingest", status] += 1
            conn.respond(resp)

    def _http_closed(self, conn: HttpConnection, reason: str) -> None:
        self.http_conns.pop(conn.fd, None)
        self.metrics.connections_open -= 1
        self.metrics.connections_closed[reason] += 1

    def udp_drops(self) -> int:
        """Datagrams the kernel dropped on our UDP sockets (full receive buffer).

        ``SO_RXQ_OVFL`` reports the count only with the next datagram received, so drops
        after the last one would go unseen; /proc/net/udp has the current figure per socket.
        """
        listeners = [lst for lst in self.listeners if lst.sock.type == socket.SOCK_DGRAM]
        if not listeners:
            return self.metrics.udp_datagrams_dropped
        inodes = {os.fstat(lst.sock.fileno()).st_ino for lst in listeners}
        total = 0
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if len(parts) > 12 and int(parts[9]) in inodes:
                            total += int(parts[12])
            except (OSError, ValueError, StopIteration):
                continue
        return max(total, self.metrics.udp_datagrams_dropped)

    @property
    def holding(self) -> bool:
        """True while reads from clients are paused (journal full or failing)."""
        return self._hold

    def _close(self, conn: Connection, reason: str, exc: BaseException | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.reactor.unregister(conn.fd)
        self.conns.pop(conn.fd, None)
        self._paused.pop(conn.fd, None)
        try:
            conn.sock.close()
        except OSError:
            pass
        self.metrics.placeholders += conn.decoder.placeholders
        self.metrics.connections_open -= 1
        self.metrics.connections_closed[reason] += 1
        if reason == "error":
            log.warning("Closing %s after a socket error: %s.", conn.peer, exc)
        elif reason == "tls_error":
            log.warning("Closing %s: TLS failed: %s.", conn.peer, exc)

    # -- journal and backpressure ----------------------------------------------------------

    def _flush_pending(self, retry: bool = False) -> None:
        pending = self._pending
        if not pending or (self._journal_error is not None and not retry):
            return
        count = len(pending)
        payload = b"".join(pending)
        before = self.journal.next_seq
        try:
            self.journal.append(payload, count)
        except OSError as exc:
            if self.journal.next_seq == before:
                # Not written (the journal cut the segment back). The rows stay pending as
                # they are: their seqs are in them, and the retry appends exactly them.
                self._journal_failed(exc)
                return
            # Written, but the fdatasync after it (fsync=always) failed: the block is in
            # the page cache and the journal's index; count it as appended.
            self.metrics.journal_write_errors += 1
            log.error("Journal fsync failed after an append: %s; continuing.", exc)
        pending.clear()
        self._pending_bytes = 0
        if self._journal_error is not None:
            log.warning(
                "Journal writes work again after %.1f s; resuming %d paused connections.",
                time.monotonic() - self._journal_error_since,
                len(self._paused),
            )
            self._journal_error = None
            self._update_hold()
        self.metrics.records_received += count
        self.metrics.journal_blocks += 1
        if self._http_waiters:
            self._answer_waiters(200)
        self.sink.notify_appended()
        if not self._backpressure and self.journal.over_limit(self.sink.confirmed_seq):
            self._backpressure = True
            self._update_hold()
            self.metrics.backpressure_episodes += 1
            log.warning(
                "Journal is full (%d unshipped bytes >= journal_max_bytes %d); PostgreSQL is "
                "behind. Pausing reads from clients until it catches up; nothing read is dropped.",
                self.journal.unshipped_bytes(self.sink.confirmed_seq),
                self.settings.journal_max_bytes,
            )

    def _journal_failed(self, exc: OSError) -> None:
        self.metrics.journal_write_errors += 1
        if self._journal_error is None:
            self._journal_error_since = time.monotonic()
            hint = " (the disk is full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
            log.error(
                "Cannot write the journal%s: %s. Pausing reads from all clients and retrying every "
                "%.0f s; the %d records read but not yet journaled are kept in memory, nothing is "
                "dropped. Free space under %s.",
                hint,
                exc,
                JOURNAL_RETRY_S,
                len(self._pending),
                self.journal.directory,
            )
        self._journal_error = exc
        self._update_hold()
        self.reactor.call_later(JOURNAL_RETRY_S, self._retry_journal)

    def _retry_journal(self) -> None:
        if self._journal_error is None or self._done:
            return
        self._flush_pending(retry=True)
        if self._journal_error is None and self._stopping:
            self.sink.drain(self._drained)

    def _update_hold(self) -> None:
        hold = self._backpressure or self._journal_error is not None
        if self._hold and not hold:
            paused = list(self._paused.values())
            self._paused.clear()
            for conn in paused:
                self._schedule_read(conn)
            for lst in self._paused_datagrams:
                self.reactor.call_soon(partial(self._handle_datagrams, lst))
            self._paused_datagrams.clear()
            for lst in self._paused_listeners:
                self.reactor.call_soon(partial(self._handle_accept, lst))
            self._paused_listeners.clear()
        self._hold = hold

    def _on_journal_released(self) -> None:
        if self._backpressure and not self.journal.over_limit(self.sink.confirmed_seq):
            self._backpressure = False
            log.info(
                "Journal has room again (%d unshipped bytes); resuming %d paused connections.",
                self.journal.unshipped_bytes(self.sink.confirmed_seq),
                len(self._paused),
            )
            self._update_hold()

    # -- timers ----------------------------------------------------------------------------

    def _fsync_tick(self) -> None:
        try:
            self.journal.sync()
        except OSError as exc:
            self.metrics.journal_write_errors += 1
            log.error("Journal fsync failed: %s; retrying at the next interval.", exc)
        self.reactor.call_later(self.settings.fsync_interval, self._fsync_tick)

    def _sweep_interval(self) -> float:
        timeouts = [t for t in (self.settings.idle_timeout, self.settings.frame_timeout) if t > 0]
        return min(1.0, max(0.05, min(timeouts) / 4))

    def _sweep(self) -> None:
        """Close idle and slow connections (one pass over all of them)."""
        now = time.monotonic()
        idle_before = now - self.settings.idle_timeout if self.settings.idle_timeout > 0 else -1.0
        slow_before = now - self.settings.frame_timeout if self.settings.frame_timeout > 0 else -1.0
        idle = slow = 0
        for conn in list(self.conns.values()):
            if conn.fd in self._paused:
                continue  # we stopped reading it; its silence is ours
            if conn.last_active < idle_before and not conn.decoder.buffered_bytes:
                self._close(conn, "idle")
                idle += 1
            elif (conn.partial_since and conn.partial_since < slow_before) or (
                conn.handshaking and conn.last_active < slow_before
            ):
                self._close(conn, "slow")
                slow += 1
        keepalive_before = now - HTTP_KEEPALIVE_S
        for hconn in list(self.http_conns.values()):
            if hconn.partial_since and hconn.partial_since < slow_before:
                hconn.timeout(408, "slow")
                slow += 1
            elif not hconn.partial_since and hconn.last_active < keepalive_before:
                hconn.timeout(0, "idle")
                idle += 1
        if idle or slow:
            log.info(
                "Closed %d idle (nothing for %gs) and %d slow (a frame unfinished for %gs) connections.",
                idle,
                self.settings.idle_timeout,
                slow,
                self.settings.frame_timeout,
            )
        self.reactor.call_later(self._sweep_interval(), self._sweep)

    def _stats_tick(self) -> None:
        st = self.encoder.stats
        log.info(
            "Stats: %s unshipped=%d journal_bytes=%d placeholders=%d replaced_chars=%d coerced_fields=%d.",
            self.metrics.summary(),
            self.sink.unshipped,
            self.journal.size_bytes,
            self.metrics.placeholders,
            st.replaced_chars,
            st.bad_fields,
        )
        self.reactor.call_later(self.settings.stats_interval, self._stats_tick)

    # -- stopping --------------------------------------------------------------------------

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._done:
            return
        if self._stopping:
            log.warning(
                "%s again: exiting now; %d unshipped records stay in the journal.", name, self.sink.unshipped
            )
            self.reactor.stop()
            return
        log.info(
            "%s: stopping. No new connections; draining clients and shipping to PostgreSQL (at most %.0f s).",
            name,
            self.settings.shutdown_timeout,
        )
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        self._stopping = True
        self._close_listeners()
        # Read what each client already sent, then close it. (Unless the journal cannot be
        # written: then reading would only pile up records in memory that may never land.)
        self._backpressure = False
        self._update_hold()
        for conn in list(self.conns.values()):
            self._handle_read(conn, budget=SHUTDOWN_READ_BYTES)
            if not conn.closed:
                self._close(conn, "shutdown")
        self._flush_pending()
        self._sync_quietly()
        self.reactor.call_later(self.settings.shutdown_timeout, self._shutdown_timed_out)
        if self._journal_error is None:
            self.sink.drain(self._drained)
        # else: _retry_journal starts the drain once the append succeeds.

    def _sync_quietly(self) -> None:
        try:
            self.journal.sync()
        except OSError as exc:
            log.error("Journal fsync failed: %s.", exc)

    def _drained(self) -> None:
        if self._pending:
            return  # rows still waiting for the journal; _retry_journal drains again
        self._done = True
        log.info("Everything is in PostgreSQL (%s). Bye.", self.metrics.summary())
        self.reactor.stop()

    def _shutdown_timed_out(self) -> None:
        self._done = True
        if self._pending:
            log.error(
                "Shutdown timeout with the journal still failing (%s): %d records read from "
                "clients could not be written and are lost.",
                self._journal_error,
                len(self._pending),
            )
        log.warning(
            "Shutdown timeout: %d records not yet in PostgreSQL stay in the journal and will be "
            "shipped at the next start.",
            self.sink.unshipped,
        )
        self.reactor.stop()

    def _close_all(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn, "shutdown")
        self._close_listeners()
        self._flush_pending()
        if self._http_waiters:
            self._answer_waiters(503)
        for hconn in list(self.http_conns.values()):
            hconn.close("shutdown")
        self.sink.close()
        self._sync_quietly()
        self.journal.close()
        self.reactor.close()


def _raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every connection is a descriptor).

    Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("Could not raise the open-file limit from %d to %d.", soft, target)
    return soft


def _check_nofile_limit(soft: int, max_connections: int) -> int:
    """The number of clients that fit under the open-file limit; says so if it is too low."""
    if soft == resource.RLIM_INFINITY or soft >= max_connections + RESERVED_FDS:
        return max_connections
    fit = max(1, soft - RESERVED_FDS)
    log.warning(
        "The open-file limit is %d (raised to the hard limit), too low for --max-connections %d: "
        "at most %d clients will be accepted. Raise the hard limit (ulimit -Hn; systemd: "
        "LimitNOFILE=) or lower --max-connections.",
        soft,
        max_connections,
        fit,
    )
    return fit


def make_tls_context(settings: Settings) -> ssl.SSLContext:
    """The server-side TLS context of ``--listen-tls`` (TLS 1.2+, the stdlib's secure defaults)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.3 session tickets. The server would send them right after the handshake, a
    # SocketHandler never reads them, and a socket closed with unread bytes sends an RST,
    # on which Linux discards what the server has not read yet: the client's last records.
    # (Clients reconnect rarely; a full handshake on reconnect costs nothing that matters.)
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    assert settings.tls_cert is not None and settings.tls_key is not None
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_client_ca is not None:
            ctx.load_verify_locations(cafile=settings.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the TLS certificate, key or CA: {exc}") from None
    return ctx


def _allowed(host: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:10.1.2.3 on a dual-stack listener is 10.1.2.3
    return any(addr in net for net in networks)


def _unix_peer(sock: socket.socket) -> str:
    """``unix:pid=PID,uid=UID``: who is on the other end (SO_PEERCRED), for the peer column."""
    try:
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        pid, uid, _gid = _PEERCRED.unpack(cred)
    except OSError:
        return "unix"
    return f"unix:pid={pid},uid={uid}"


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a process that is gone; refuse if one still listens."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"--listen unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: left over from a crash
        return
    except OSError:
        return  # bind will report what is wrong
    finally:
        probe.close()
    raise ConfigError(f"--listen unix:{path}: another process is listening on it")
