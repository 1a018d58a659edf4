"""HTTP/1.1 connections on the reactor, parsed by h11 (sans-IO), for ingest and operations.

Theory of operation
-------------------
h11 turns bytes into events (``Request``, ``Data``, ``EndOfMessage``) and responses into
bytes; this module owns the socket, as h11 intends ("bring your own I/O"). One
``HttpConnection`` per client, registered edge-triggered for both reading and writing:

* Reads drain the socket to EAGAIN (within a per-turn budget, like the record listeners)
  and feed h11. A request's body is collected up to ``max_body_bytes``; a larger
  ``Content-Length`` is answered ``413`` before the body is read, a body that grows past the
  cap (chunked) likewise. ``Expect: 100-continue`` (curl sends it for bodies over 1 KiB) is
  answered at once so the client does not wait a second for nothing.
* A complete request goes to the application callback, which returns a ``Response`` now or
  ``None`` to answer later with ``respond()``: ingest answers only once its records are in
  the journal, which happens at the end of the loop turn (group commit).
* Writes go out until EAGAIN; the rest waits in ``_out`` for the next EPOLLOUT edge. While a
  response is unsent no further request is parsed (h11 pauses), so a client that never reads
  holds one response's bytes and nothing more.
* Keep-alive follows h11: after both sides are DONE the next cycle starts; if either side
  said ``Connection: close`` h11 is in MUST_CLOSE and we close after the last byte.
* Protocol errors get the status h11 suggests (400, 431, ...) and a close. The server's sweep
  closes connections idle too long and requests that take too long to arrive (408).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import errno
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import h11
import orjson

from logsvc import loop as _loop
from logsvc.ingest.tls import handshake_step

# Request line plus headers: h11's own default (it cites node.js 80 KiB, tomcat 8 KiB).
MAX_HEADER_BYTES = 16 * 1024
READ_BUDGET_BYTES = 256 * 1024
RECV_CHUNK_BYTES = 64 * 1024

_EV = _loop.EPOLLIN | _loop.EPOLLOUT | _loop.EPOLLRDHUP | _loop.EPOLLET
# Reads and writes that must wait for the next edge. Over TLS either may need the other
# direction (a handshake, a key update); both are registered, edge-triggered.
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_TLS_EOF = (ssl.SSLZeroReturnError, ssl.SSLEOFError)
_QUIET_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT})


@dataclass(slots=True)
class Request:
    method: str
    path: str  # the target without its query
    query: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes
    peer: str


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, value: object, headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, orjson.dumps(value) + b"\n", "application/json", headers or [])


App = Callable[["HttpConnection", Request], "Response | None"]


class HttpConnection:
    """One HTTP client socket; the server creates it at accept and the reactor drives it."""

    __slots__ = (
        "_body",
        "_h11",
        "_out",
        "_request",
        "_streaming",
        "_waiting",
        "app",
        "closed",
        "fd",
        "handshaking",
        "last_active",
        "max_body_bytes",
        "on_close",
        "partial_since",
        "peer",
        "reactor",
        "sock",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        reactor: _loop.Reactor,
        app: App,
        *,
        max_body_bytes: int,
        on_close: Callable[[HttpConnection, str], None],
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.reactor = reactor
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_close = on_close
        self.closed = False
        # A TLS socket (the operator port with --metrics-tls) shakes hands on the loop first.
        self.handshaking = isinstance(sock, ssl.SSLSocket)
        self.last_active = time.monotonic()
        self.partial_since = 0.0  # a request has started and is not complete yet
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._out = bytearray()
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._waiting = False  # the app will answer later
        self._streaming = False  # a response body is being sent piecemeal (server-sent events)

    def start(self) -> None:
        self.reactor.register(self.fd, _EV, self._on_events)
        self.reactor.call_soon(lambda: self._on_events(0))

    # -- events ----------------------------------------------------------------------------

    def _on_events(self, mask: int) -> None:
        if self.closed:
            return
        if self.handshaking and not self._handshake():
            return
        if self._out and not self._flush():
            return
        if self._streaming:
            self._read_while_streaming()
            return
        self._read()

    def _handshake(self) -> bool:
        """Advance a TLS handshake on the loop; True once it is done."""
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        done = handshake_step(sock)
        if isinstance(done, Exception):
            self.close("tls_error")
            return False
        self.handshaking = not done
        return done

    def _read(self, budget: int = READ_BUDGET_BYTES) -> None:
        nread = 0
        eof = False
        while nread < budget and not self._waiting and not self._out:
            try:
                data = self.sock.recv(RECV_CHUNK_BYTES)
            except _WOULD_BLOCK:
                break
            except InterruptedError:
                continue
            except _TLS_EOF:
                data = b""
            except OSError as exc:
                self.close("reset" if exc.errno in _QUIET_ERRNOS else "error")
                return
            if not data:
                eof = True
                break
            nread += len(data)
            self._h11.receive_data(data)
            self.last_active = time.monotonic()
            if not self._process():
                return
        else:
            if nread >= budget:
                self.reactor.call_soon(lambda: self._on_events(0))
        if eof:
            self._h11.receive_data(b"")
            if self._process() and not self.closed:
                self.close("eof")
        elif not nread and not self._waiting and not self._out:
            # An edge with no new bytes: a paused h11 may still hold a pipelined request.
            self._process()

    def _process(self) -> bool:
        """Run h11 until it needs data; False once the connection is closed."""
        conn = self._h11
        while not self.closed and not self._waiting and not self._out:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, f"bad request: {exc}")
                return False
            if event is h11.NEED_DATA:
                return True
            if event is h11.PAUSED:
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    continue
                return True
            if isinstance(event, h11.Request):
                self.partial_since = self.partial_since or time.monotonic()
                self._request = event
                self._body = bytearray()
                length = _header(event.headers, b"content-length")
                if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                    self._fail(413, f"the body is over the cap of {self.max_body_bytes} bytes")
                    return False
                if conn.they_are_waiting_for_100_continue:
                    self._out += conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                    if not self._flush():
                        return False
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.max_body_bytes:
                    self._fail(413, f"the body is over the cap of {self.max_body_bytes} bytes")
                    return False
            elif isinstance(event, h11.EndOfMessage):
                self.partial_since = 0.0
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                self.close("eof")
                return False
        return not self.closed

    def _dispatch(self) -> None:
        req = self._request
        assert req is not None
        target = req.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in req.headers}
        request = Request(req.method.decode("latin-1"), path, query, headers, bytes(self._body), self.peer)
        self._body = bytearray()
        self._waiting = True
        resp = self.app(self, request)
        if resp is not None:
            self.respond(resp)

    # -- writing ---------------------------------------------------------------------------

    def respond(self, resp: Response) -> None:
        """Send the response to the current request (now, or later if the app returned None)."""
        if self.closed:
            return
        self._waiting = False
        headers = [
            ("Content-Type", resp.content_type),
            ("Content-Length", str(len(resp.body))),
            ("Server", "logsvc"),
            *resp.headers,
        ]
        conn = self._h11
        try:
            self._out += conn.send(h11.Response(status_code=resp.status, headers=headers))
            if resp.body:
                self._out += conn.send(h11.Data(data=resp.body))
            self._out += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.close("error")
            return
        if self._flush():
            self.reactor.call_soon(lambda: self._on_events(0))  # a pipelined request may wait

    # -- streaming (server-sent events: the console's live tail) -----------------------------

    def start_stream(self, status: int, content_type: str, headers: list[tuple[str, str]]) -> None:
        """Answer the current request with a body of unknown length, sent by ``send_stream``.

        h11 frames it chunked (or until close for an HTTP/1.0 client). While streaming, bytes
        the client sends are read and dropped, so its going away is noticed at once.
        """
        if self.closed:
            return
        self._streaming = True
        head = [("Content-Type", content_type), ("Server", "logsvc"), *headers]
        try:
            self._out += self._h11.send(h11.Response(status_code=status, headers=head))
        except h11.LocalProtocolError:
            self.close("error")
            return
        self._flush()

    def send_stream(self, data: bytes) -> None:
        """Queue and send a piece of the streamed body (see ``buffered_bytes`` for backpressure)."""
        if self.closed or not self._streaming:
            return
        try:
            self._out += self._h11.send(h11.Data(data=data))
        except h11.LocalProtocolError:
            self.close("error")
            return
        self._flush()

    @property
    def buffered_bytes(self) -> int:
        """Bytes queued for the client and not yet taken by the kernel."""
        return len(self._out)

    def _read_while_streaming(self) -> None:
        nread = 0
        while nread < READ_BUDGET_BYTES:
            try:
                data = self.sock.recv(RECV_CHUNK_BYTES)
            except (*_WOULD_BLOCK, InterruptedError):
                return
            except _TLS_EOF:
                data = b""
            except OSError as exc:
                self.close("reset" if exc.errno in _QUIET_ERRNOS else "error")
                return
            if not data:
                self.close("eof")
                return
            nread += len(data)
        self.reactor.call_soon(lambda: self._on_events(0))

    def _flush(self) -> bool:
        """Send what is queued; False if the connection was closed (done, or broken)."""
        out = self._out
        while out:
            try:
                n = self.sock.send(out)
            except _WOULD_BLOCK:
                return True  # the next edge (EPOLLOUT, or EPOLLIN for a TLS read) brings us back
            except InterruptedError:
                continue
            except OSError as exc:
                self.close("reset" if exc.errno in _QUIET_ERRNOS else "error")
                return False
            del out[:n]
        if self._h11.our_state is h11.MUST_CLOSE:
            self.close("done")
            return False
        return True

    def _fail(self, status: int, why: str) -> None:
        """Answer an error (if a response can still be sent) and close."""
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = orjson.dumps({"error": why}) + b"\n"
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ]
            try:
                self._out += self._h11.send(h11.Response(status_code=status, headers=headers))
                self._out += self._h11.send(h11.Data(data=body))
                self._out += self._h11.send(h11.EndOfMessage())
            except h11.LocalProtocolError:
                pass
            # One try to send it; a client that does not read it loses nothing of ours.
            try:
                self.sock.send(self._out)
            except OSError:
                pass
        self.close(f"http_{status}")

    @property
    def answering(self) -> bool:
        """True while the app works on a request (a long /ingest, or one paused by intake)."""
        return self._waiting

    def timeout(self, status: int, reason: str) -> None:
        """Called by the server's sweep: 408 for a slow request, a plain close when idle."""
        if status:
            self._fail(status, "the request took too long to arrive")
        else:
            self.close(reason)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.reactor.unregister(self.fd)
        try:
            self.sock.close()
        except OSError:
            pass
        self.on_close(self, reason)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None
