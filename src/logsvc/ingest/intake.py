"""Listeners, accept, and the set of open connections (Tornado's ``tcpserver`` role).

``Intake`` binds every listener ``serve`` was asked for, accepts on them (allow-list,
``--max-connections``, refusals counted by reason), creates one ``StreamConnection`` or
``HttpConnection`` per client and one ``DatagramReader`` per UDP socket, and closes clients
that stay silent or never finish a frame. Records go from those to the journal writer; this
module never touches a record.

* Edge-triggered accept loops until ``BlockingIOError`` ("there may be multiple connections
  waiting", asyncio ``selector_events.py`` L159-172). On EMFILE/ENFILE it pauses accepting for
  ``ACCEPT_RETRY_S``, as asyncio does.
* While the writer is not accepting (journal full or failing), record listeners stop
  accepting too: new clients wait in the kernel's backlog instead of piling up as
  connections nobody reads (a stock SocketHandler whose send times out after 1 s reconnects
  at once, every second). HTTP listeners keep accepting, so /metrics and /readyz answer;
  ingest answers 503 then.
* Timeouts are one sweep a second over all connections (cheaper than a timer per read at
  10k clients): idle (nothing received for ``idle_timeout``) and slow (a started frame not
  finished within ``frame_timeout``: slowloris).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import ssl
import stat
import struct
import time
from collections.abc import Callable
from functools import partial

from logsvc import loop as _loop
from logsvc.config import Settings
from logsvc.errors import ConfigError
from logsvc.ingest.app import ListenerConfig
from logsvc.ingest.datagram import DatagramReader, udp_drops
from logsvc.ingest.http import App, HttpConnection
from logsvc.ingest.stream import RECV_CHUNK_BYTES, StreamConnection
from logsvc.journal.streams import StreamPositions
from logsvc.journal.writer import JournalWriter
from logsvc.metrics import Metrics
from logsvc.wire import (
    Decoder,
    GelfDatagramFormat,
    JsonFormat,
    LengthPrefixFramer,
    LineFramer,
    PickleFormat,
    SyslogFormat,
    SyslogFramer,
)

log = logging.getLogger("logsvc.ingest")

LISTEN_BACKLOG = 1024
# After EMFILE/ENFILE at accept, wait this long before accepting again (asyncio
# selector_events.py L175-190 does the same with its backlog delay).
ACCEPT_RETRY_S = 1.0
# Refusals at accept are logged at most this often (a flood must not flood the log).
REFUSAL_LOG_INTERVAL_S = 10.0
# How long a kept-alive HTTP connection may sit between requests (nginx keepalive_timeout).
HTTP_KEEPALIVE_S = 75.0
_PEERCRED = struct.Struct("3i")
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_HTTP_KINDS = frozenset({"http", "otlp", "metrics"})
# What each listener kind speaks, for the start-up log.
_KIND_TEXT = {
    "pickle": "SocketHandler pickle frames",
    "json": "JSON lines",
    "syslog": "syslog over TCP, octet-counted or newline framed",
    "udp": "DatagramHandler pickle datagrams",
    "syslog_udp": "syslog datagrams",
    "gelf": "GELF over TCP, NUL-terminated",
    "gelf_udp": "GELF datagrams, chunked or compressed",
    "http": "HTTP: POST /ingest, /gelf, /v1/logs, /_bulk, /metrics, /healthz, /readyz",
    "otlp": "OTLP/HTTP: POST /v1/logs, /metrics, /healthz, /readyz",
    "metrics": "HTTP: /metrics, /healthz, /readyz",
}


class Listener:
    """A listening stream socket and what its connections speak."""

    __slots__ = ("config", "name", "sock", "tls", "unix_path")

    def __init__(
        self,
        sock: socket.socket,
        config: ListenerConfig,
        name: str,
        tls: ssl.SSLContext | None,
        unix_path: str | None,
    ) -> None:
        self.sock = sock
        self.config = config  # what its connections speak, and how they read JSON
        self.name = name
        self.tls = tls
        self.unix_path = unix_path

    @property
    def kind(self) -> str:
        """The format label in logs and metrics: "pickle", "json", ..."""
        return self.config.kind


class Intake:
    """Every listener and client connection of one ``serve``. See the module docstring.

    Args:
        reactor: the loop.
        writer: where every record goes.
        metrics: connection and byte counts.
        settings: the listeners, limits and timeouts.
        http_app: answers complete HTTP requests (``ingest.app``).
        streams: the acknowledged protocol's stream positions (loaded from the journal).
        max_connections: clients at once (the open-file limit may have lowered the setting).
    """

    def __init__(
        self,
        reactor: _loop.Reactor,
        writer: JournalWriter,
        metrics: Metrics,
        settings: Settings,
        http_app: Callable[[ListenerConfig], App],
        max_connections: int,
        streams: StreamPositions | None = None,
    ) -> None:
        self.reactor = reactor
        # The acknowledged protocol's streams: positions and who uses each (docs/protocol.md).
        self.streams = streams if streams is not None else StreamPositions()
        self.writer = writer
        self.metrics = metrics
        self.settings = settings
        self._http_app = http_app
        self._max_connections = max_connections
        self.listeners: list[Listener] = []
        self.datagrams: list[DatagramReader] = []
        self.conns: dict[int, StreamConnection] = {}
        self.http_conns: dict[int, HttpConnection] = {}
        self._refusals_logged = 0.0
        self._tls: ssl.SSLContext | None = None
        self.stopping = False
        self._recv_buf = bytearray(RECV_CHUNK_BYTES)
        self.recv_view = memoryview(self._recv_buf)  # one buffer for every stream's recv_into

    # -- binding ---------------------------------------------------------------------------

    def bind_all(self) -> None:
        """Bind every listener in the settings; raises ``ConfigError`` or ``OSError``."""
        st = self.settings
        if st.listen_tls or st.metrics_tls:
            self._tls = make_tls_context(st)
        for where in st.listen:
            if isinstance(where, str):
                self._listen_unix(where)
            else:
                self._listen(*where)
        for host, port in st.listen_tls:
            self._listen(host, port, tls=self._tls)
        for kind, json_listens in (("json", st.listen_json), ("http", st.listen_http)):
            for jl in json_listens:
                self._listen(jl.host, jl.port, kind=kind, json_format=jl.json_format)
        for kind, addrs in (
            ("syslog", st.listen_syslog),
            ("gelf", st.listen_gelf),
            ("otlp", st.listen_otlp),
        ):
            for host, port in addrs:
                self._listen(host, port, kind=kind)
        for kind, addrs in (
            ("udp", st.listen_udp),
            ("syslog_udp", st.listen_syslog_udp),
            ("gelf_udp", st.listen_gelf),
        ):
            gelf_tcp = (listener for listener in self.listeners if listener.kind == "gelf")
            for host, port in addrs:
                if kind == "gelf_udp":  # the port its TCP side got, also when asked for :0
                    port = next(gelf_tcp).sock.getsockname()[1]
                reader = DatagramReader.bind(self, host, port, kind, reuse_port=st.reuse_port)
                self.datagrams.append(reader)
                reader.start()
                rcvbuf = reader.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                log.info(
                    "Listening on udp %s (%s; receive buffer %d bytes).",
                    reader.name,
                    _KIND_TEXT[kind],
                    rcvbuf,
                )
        if st.metrics is not None:
            try:
                self._listen(*st.metrics, tls=self._tls if st.metrics_tls else None, kind="metrics")
            except OSError as exc:
                raise ConfigError(
                    f"--metrics {st.metrics[0]}:{st.metrics[1]}: {exc.strerror}; give another "
                    "address with --metrics HOST:PORT, or --metrics= for none"
                ) from None

    def _listen(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        kind: str = "pickle",
        json_format: str | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.settings.reuse_port and kind != "metrics":
                # serve --workers: every worker has its own socket on the port, the kernel
                # spreads new connections over them.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        addr = sock.getsockname()[:2]
        shown = f"[{addr[0]}]:{addr[1]}" if family == socket.AF_INET6 else f"{addr[0]}:{addr[1]}"
        # A listener that names its JSON format reads as it says; the others as --json-format.
        config = ListenerConfig(kind, json_format or self.settings.json_format)
        self._add_listener(Listener(sock, config, shown, tls, None))
        what = _KIND_TEXT[kind] + (f"; JSON read as {json_format}" if json_format else "")
        log.info("Listening on %s (%s).", shown, f"TLS, {what}" if tls else what)

    def _listen_unix(self, path: str) -> None:
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mode = self.settings.unix_mode
        # The mode is the access control: no moment where the socket exists with wider rights.
        old_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        self._add_listener(
            Listener(sock, ListenerConfig("pickle", self.settings.json_format), f"unix:{path}", None, path)
        )
        log.info("Listening on unix:%s (mode %o; SocketHandler(%r, None) pickle frames).", path, mode, path)

    def _add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)
        self.reactor.register(
            listener.sock.fileno(), _loop.EPOLLIN | _loop.EPOLLET, lambda ev: self._handle_accept(listener)
        )

    def close_listeners(self) -> None:
        """Stop taking new clients (TCP, Unix, UDP); open connections stay."""
        for lst in self.listeners:
            self.writer.unpark(lst)
            self.reactor.unregister(lst.sock.fileno())
            lst.sock.close()
            if lst.unix_path is not None:
                try:
                    os.unlink(lst.unix_path)
                except OSError:
                    pass
        self.listeners.clear()
        for reader in self.datagrams:
            reader.close()

    # -- accepting -------------------------------------------------------------------------

    def _handle_accept(self, listener: Listener) -> None:
        if listener.kind not in _HTTP_KINDS and not self.writer.accepting:
            self.writer.park(listener, partial(self._handle_accept, listener))
            return
        lsock = listener.sock
        while not self.stopping and listener in self.listeners:
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
                        len(self.conns) + len(self.http_conns),
                        ACCEPT_RETRY_S,
                    )
                    self.reactor.call_later(ACCEPT_RETRY_S, partial(self._handle_accept, listener))
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
            allow = self.settings.allow
            if allow and not _allowed(addr[0], allow):
                self._refuse(sock, peer, "not_allowed", "not in --allow")
                return
        if len(self.conns) + len(self.http_conns) >= self._max_connections:
            self._refuse(
                sock, peer, "too_many_connections", f"--max-connections {self._max_connections} reached"
            )
            return
        sock.setblocking(False)
        m = self.metrics
        if listener.kind in _HTTP_KINDS:
            if listener.tls is not None:  # --metrics-tls: the handshake runs on the loop
                try:
                    sock = listener.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError) as exc:
                    self._refuse(sock, peer, "tls_error", f"TLS set-up failed: {exc}")
                    return
            hconn = HttpConnection(
                sock,
                peer,
                self.reactor,
                self._http_app(listener.config),
                max_body_bytes=self.settings.http_max_body_bytes,
                on_close=self._http_closed,
            )
            self.http_conns[hconn.fd] = hconn
            m.connections_accepted += 1
            m.connections_open += 1
            hconn.start()
            return
        if listener.tls is not None:
            try:
                sock = listener.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (ssl.SSLError, OSError) as exc:
                self._refuse(sock, peer, "tls_error", f"TLS set-up failed: {exc}")
                return
        conn = self._stream(sock, peer, listener.config)
        self.conns[conn.fd] = conn
        m.connections_accepted += 1
        m.connections_open += 1
        conn.start()

    def _stream(self, sock: socket.socket, peer: str, config: ListenerConfig) -> StreamConnection:
        cap, kind = self.settings.max_frame_bytes, config.kind
        if kind == "json":
            reader = JsonFormat(tz=self.settings.assume_timezone, shape=config.json_format)
            return StreamConnection(self, sock, peer, kind, Decoder(LineFramer(cap), reader))
        if kind == "gelf":  # JSON ended by NUL (wire.gelf), read as GELF always
            reader = JsonFormat(tz=self.settings.assume_timezone, shape="gelf")
            return StreamConnection(self, sock, peer, kind, Decoder(LineFramer(cap, b"\0"), reader))
        if kind == "syslog":
            fmt = self.syslog_format()
            return StreamConnection(
                self, sock, peer, kind, Decoder(SyslogFramer(cap), fmt), partial(setattr, fmt, "now")
            )
        # Pickle listeners also speak the acknowledged protocol, told apart by its preamble.
        return StreamConnection(
            self,
            sock,
            peer,
            kind,
            Decoder(LengthPrefixFramer(max_frame_bytes=cap), PickleFormat()),
            acked=True,
        )

    def syslog_format(self) -> SyslogFormat:
        """A syslog format as this service reads it (one per connection or UDP socket)."""
        return SyslogFormat(tz=self.settings.assume_timezone)

    def gelf_format(self) -> GelfDatagramFormat:
        """A GELF datagram format as this service reads it (one per UDP socket)."""
        json = JsonFormat(tz=self.settings.assume_timezone, shape="gelf")
        return GelfDatagramFormat(json, max_message_bytes=self.settings.max_frame_bytes)

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

    def forget(self, conn: StreamConnection, reason: str) -> None:
        """A stream connection closed itself: drop it from the set and count why."""
        self.conns.pop(conn.fd, None)
        self.metrics.connections_open -= 1
        self.metrics.connections_closed[reason] += 1

    def _http_closed(self, conn: HttpConnection, reason: str) -> None:
        self.http_conns.pop(conn.fd, None)
        self.metrics.connections_open -= 1
        self.metrics.connections_closed[reason] += 1

    # -- timeouts --------------------------------------------------------------------------

    def sweep_interval(self) -> float:
        st = self.settings
        timeouts = [t for t in (st.idle_timeout, st.frame_timeout) if t > 0]
        return min(1.0, max(0.05, min(timeouts) / 4)) if timeouts else 1.0

    def sweep(self) -> None:
        """Close idle and slow connections (one pass over all of them)."""
        st = self.settings
        now = time.monotonic()
        idle_before = now - st.idle_timeout if st.idle_timeout > 0 else -1.0
        slow_before = now - st.frame_timeout if st.frame_timeout > 0 else -1.0
        idle = slow = 0
        # While the writer is not accepting we stopped reading everyone: their silence is ours.
        if self.writer.accepting:
            for conn in list(self.conns.values()):
                if conn.last_active < idle_before and not conn.decoder.buffered_bytes:
                    conn.close("idle")
                    idle += 1
                elif (conn.partial_since and conn.partial_since < slow_before) or (
                    conn.handshaking and conn.last_active < slow_before
                ):
                    conn.close("slow")
                    slow += 1
        wall = time.time()  # the clock DatagramReader.read gives its format
        for reader in self.datagrams:
            reader.sweep(wall)  # GELF chunks that stopped coming: dropped and counted
        keepalive_before = now - HTTP_KEEPALIVE_S
        for hconn in list(self.http_conns.values()):
            if hconn.answering:
                continue  # ours to finish (a long /ingest, or paused while intake is not open)
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
                st.idle_timeout,
                slow,
                st.frame_timeout,
            )

    # -- stopping --------------------------------------------------------------------------

    def drain(self, budget: int) -> None:
        """Read what every stream client already sent (up to ``budget`` bytes each), then close it."""
        for conn in list(self.conns.values()):
            try:
                conn.read(budget=budget)
            finally:
                if not conn.closed:
                    conn.close("shutdown")

    def close(self) -> None:
        """Close every listener and connection (exception-safe: each is closed on its own)."""
        self.stopping = True
        closers: list[Callable[[], None]] = [self.close_listeners]
        closers += [partial(c.close, "shutdown") for c in list(self.conns.values())]
        closers += [partial(h.close, "shutdown") for h in list(self.http_conns.values())]
        for close in closers:
            try:
                close()
            except Exception:
                log.exception("Error while closing; going on with the rest.")

    def udp_drops(self) -> int:
        return udp_drops(self.datagrams, self.metrics.udp_datagrams_dropped)

    @property
    def open_connections(self) -> int:
        return len(self.conns) + len(self.http_conns)


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
