"""One stream client (TCP, TLS or Unix socket): its socket, its decoder, its reads.

A ``StreamConnection`` owns a connection's bytes (Tornado's ``iostream`` role): it drains the
socket edge-triggered within a budget per turn, feeds the sans-IO decoder, and hands every
record to the journal writer, the one place records are numbered and journaled. It knows
nothing about blocks, seqs or the journal: while the writer is not accepting, it parks itself
and stops reading, and the kernel's buffers push back on the client.

* Edge-triggered means drain: ``recv_into`` until ``BlockingIOError``, or until the budget is
  spent, and then the connection queues itself for the next turn (once), because no new
  edge will come for bytes already in the kernel (STYLE.md convention 7).
* TLS: the handshake runs on the same loop. A record may be decrypted and waiting in
  OpenSSL's buffer while the socket has nothing, so reads go on until ``SSLWantReadError``.
* A bad frame closes only this connection (counted by reason, logged once with the peer); one
  bad record in a stream that stays in step (a JSON line, a syslog message) is counted and
  skipped.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from logsvc import loop as _loop
from logsvc.errors import ProtocolError, RecordRejected
from logsvc.ingest.acked import AckedSession
from logsvc.ingest.tls import handshake_step
from logsvc.record import RecordDict
from logsvc.wire import Decoder
from logsvc.wire.acked import PREAMBLE_HEAD, AckedDecoder

if TYPE_CHECKING:
    from logsvc.ingest.intake import Intake

log = logging.getLogger("logsvc.ingest")

# Bytes read from one connection per loop turn before the others get their turn. Big enough
# that a fast client moves in a few large recv calls, small enough that 100 busy clients
# still share a turn in well under a second (tornado reads 64 KiB chunks; asyncio 256 KiB).
READ_BUDGET_BYTES = 256 * 1024
RECV_CHUNK_BYTES = 64 * 1024

# Errno values that mean "the peer went away": close quietly (tornado _ERRNO_CONNRESET).
QUIET_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT})

EV_READ = _loop.EPOLLIN | _loop.EPOLLRDHUP | _loop.EPOLLET
# TLS may need to write (handshake, key updates) when we only want to read: also wait for
# EPOLLOUT. Edge-triggered, it fires only when the send buffer turns writable, which is rare.
EV_TLS = EV_READ | _loop.EPOLLOUT


class StreamConnection:
    """One client socket and its decoder; created by ``Intake`` at accept."""

    __slots__ = (
        "_intake",
        "closed",
        "decoder",
        "fd",
        "handshaking",
        "kind",
        "last_active",
        "partial_since",
        "peer",
        "read_scheduled",
        "session",
        "set_now",
        "sniff",
        "sock",
    )

    def __init__(
        self,
        intake: Intake,
        sock: socket.socket,
        peer: str,
        kind: str,
        decoder: Decoder,
        set_now: Callable[[float], None] | None = None,
        *,
        acked: bool = False,
    ) -> None:
        self._intake = intake
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.kind = kind  # the listener kind, for metrics labels: "pickle", "json", "syslog"
        self.decoder: Decoder | AckedDecoder = decoder
        self.set_now = set_now  # tells a format the receive time (RFC 3164 has no year)
        self.closed = False
        self.handshaking = isinstance(sock, ssl.SSLSocket)
        self.last_active = time.monotonic()  # of the last byte received (or of accept)
        self.partial_since = 0.0  # monotonic time a started frame has been waiting since; 0: none
        self.read_scheduled = False  # a read is queued for the next turn (see schedule_read)
        # A pickle listener also speaks the acknowledged protocol (docs/protocol.md): its first
        # four bytes decide. Until they are in, they wait here (``acked``: the listener may).
        self.sniff: bytearray | None = bytearray() if acked else None
        self.session: AckedSession | None = None

    @property
    def events(self) -> int:
        """The epoll events this connection is registered for when it has nothing to write."""
        return EV_TLS if isinstance(self.sock, ssl.SSLSocket) else EV_READ

    def start(self) -> None:
        self._intake.reactor.register(self.fd, EV_TLS if self.handshaking else EV_READ, self._on_event)
        # Data may have arrived before registration; with EPOLLET that is an edge we never
        # saw. Read (or shake hands) once now.
        self.schedule_read()

    def _on_event(self, events: int) -> None:
        if events & _loop.EPOLLOUT and self.session is not None:
            self.session.on_writable()
        if not self.read_scheduled:  # else the queued read will see these bytes too
            self.read()

    def schedule_read(self) -> None:
        """Read on the next turn, once: a connection is never queued twice.

        (Each edge while a read was queued used to queue another, so a busy client could
        stack several budgets into one turn: turns of over a second were measured.)
        """
        if not self.read_scheduled:
            self.read_scheduled = True
            self._intake.reactor.call_soon(self._scheduled_read)

    def _scheduled_read(self) -> None:
        self.read_scheduled = False
        self.read()

    def read(self, budget: int = READ_BUDGET_BYTES) -> None:
        """Drain the socket into the decoder and the records into the journal writer."""
        if self.closed:
            return
        intake = self._intake
        if not intake.writer.accepting:
            intake.writer.park(self, self.schedule_read)
            return
        if self.handshaking and not self._handshake():
            return
        sock, view, dec = self.sock, intake.recv_view, self.decoder
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
                self._decode()
                if isinstance(exc, ssl.SSLError):
                    self.close("tls_error", exc)
                else:
                    self.close("reset" if exc.errno in QUIET_ERRNOS else "error", exc)
                return
            if n == 0:
                eof = True
                break
            if self.sniff is None:
                dec.feed(view[:n])
            else:
                self._sniff(view[:n])
                dec = self.decoder
            nread += n
        else:
            # Budget spent with data possibly left in the kernel (or in OpenSSL's buffer):
            # finish on the next turn.
            self.schedule_read()
        intake.metrics.bytes_received += nread
        if nread:
            self.last_active = time.monotonic()
            if not self._decode():
                return
        if eof:
            if self.sniff is not None:  # fewer than four bytes, ever: the stock decoder judges them
                if self.sniff:  # (an empty feed would be an EOF of its own)
                    self.decoder.feed(self.sniff)
                self.sniff = None
            self.decoder.feed(b"")
            if self._decode():
                self.close("eof")

    def _sniff(self, data: memoryview) -> None:
        # The first bytes of a pickle listener's connection: a stock frame or the preamble?
        sniff = self.sniff
        assert sniff is not None
        sniff += data
        if len(sniff) < len(PREAMBLE_HEAD):
            return
        self.sniff = None
        if sniff[: len(PREAMBLE_HEAD)] == PREAMBLE_HEAD:
            self.session = AckedSession(self, self._intake)
            self.kind = "acked"
            self.decoder = self.session.decoder
        self.decoder.feed(sniff)

    def _handshake(self) -> bool:
        """Advance a TLS handshake; True once it is done."""
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        done = handshake_step(sock)
        if isinstance(done, Exception):
            self._intake.metrics.connections_refused["tls_error"] += 1
            self.close("tls_error", done)
            return False
        self.handshaking = not done
        return done

    def _records(self) -> Iterator[RecordDict]:
        # Every complete record; a bad one that leaves the stream in step is counted and
        # skipped. A ProtocolError (the stream is lost) propagates.
        dec = self.decoder
        assert isinstance(dec, Decoder)
        return dec.records(self._rejected)

    def _rejected(self, exc: RecordRejected) -> None:
        self._intake.metrics.records_rejected[self.kind, exc.reason] += 1

    def _decode(self) -> bool:
        """Hand every complete record to the writer; False if the connection was closed."""
        if self.session is not None:
            return self.session.decode()
        now = time.time()
        if self.set_now is not None:
            self.set_now(now)
        n = 0
        try:
            n = self._intake.writer.write(self._records(), self.kind, self.peer, now)
        except ProtocolError as exc:
            self._intake.metrics.frames_rejected[self.kind, exc.reason] += 1
            log.warning("Closing %s: bad frame (%s): %s.", self.peer, exc.reason, exc)
            self.close(exc.reason)
            return False
        finally:
            self.slow_clock(n > 0)
        return True

    def slow_clock(self, progressed: bool) -> None:
        """The slowloris clock: runs while a started frame is held and no frame completes."""
        buffered = self.decoder.buffered_bytes
        if progressed or not buffered:
            self.partial_since = 0.0
        if buffered and not self.partial_since:
            self.partial_since = time.monotonic()

    def close(self, reason: str, exc: BaseException | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        intake = self._intake
        intake.reactor.unregister(self.fd)
        intake.writer.unpark(self)
        try:
            self.sock.close()
        except OSError:
            pass
        m = intake.metrics
        m.placeholders += self.decoder.placeholders
        if self.session is not None:
            self.session.closed()
        intake.forget(self, reason)
        if reason == "error":
            log.warning("Closing %s after a socket error: %s.", self.peer, exc)
        elif reason == "tls_error":
            log.warning("Closing %s: TLS failed: %s.", self.peer, exc)
