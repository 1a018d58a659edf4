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
  stop being read: the kernel buffers fill and TCP pushes back on the clients. Reading
  resumes once shipped segments are released. Nothing is dropped.
* A bad frame closes only its connection (counted by reason, logged once with the peer).
* SIGTERM/SIGINT: close the listeners, read what every client already sent, journal it,
  ship everything within ``shutdown_timeout``, exit. A second signal exits at once; the
  journal keeps whatever was not shipped for the next start.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import errno
import logging
import resource
import signal
import socket
import time
from functools import partial
from pathlib import Path

from logsvc import loop as _loop
from logsvc.config import Settings
from logsvc.errors import ProtocolError
from logsvc.journal import Journal
from logsvc.metrics import Metrics
from logsvc.store.copyfmt import RowEncoder
from logsvc.store.sink import PgSink
from logsvc.wire import NEED_DATA, Decoder, LengthPrefixFramer, PickleFormat

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

# Errno values that mean "the peer went away": close quietly (tornado _ERRNO_CONNRESET).
_QUIET_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT})
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_EV_READ = _loop.EPOLLIN | _loop.EPOLLRDHUP | _loop.EPOLLET


class Connection:
    """One client socket and its decoder. Reads are driven by the server."""

    __slots__ = ("closed", "decoder", "fd", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str, max_frame_bytes: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.decoder = Decoder(LengthPrefixFramer(max_frame_bytes=max_frame_bytes), PickleFormat())
        self.closed = False


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
        )
        self.encoder = RowEncoder()
        self.listeners: list[socket.socket] = []
        self.addresses: list[tuple[str, int]] = []
        self.conns: dict[int, Connection] = {}
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._paused: dict[int, Connection] = {}
        self._backpressure = False
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
            log.warning("Journal: truncated a torn tail of %d bytes.", report.torn_tail_bytes_truncated)
        for path, start, end, lost in report.corrupt:
            log.error(
                "Journal: corrupt range %s bytes %d-%d skipped, %d records lost.", path, start, end, lost
            )
        for host, port in self.settings.listen:
            self._listen(host, port)
        r = self.reactor
        r.add_before_poll(self._flush_pending)
        r.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        r.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        if self.settings.fsync == "interval":
            r.call_later(self.settings.fsync_interval, self._fsync_tick)
        if self.settings.stats_interval > 0:
            r.call_later(self.settings.stats_interval, self._stats_tick)
        self.sink.start()

    def run(self) -> int:
        """Serve until stopped; return the exit status."""
        try:
            self.reactor.run()
        finally:
            self._close_all()
        return 0

    def _listen(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        self.listeners.append(sock)
        addr = sock.getsockname()[:2]
        self.addresses.append(addr)
        self.reactor.register(
            sock.fileno(), _loop.EPOLLIN | _loop.EPOLLET, lambda ev: self._handle_accept(sock)
        )
        shown = f"[{addr[0]}]:{addr[1]}" if family == socket.AF_INET6 else f"{addr[0]}:{addr[1]}"
        log.info("Listening on %s (SocketHandler pickle frames).", shown)

    # -- accepting -------------------------------------------------------------------------

    def _handle_accept(self, listener: socket.socket) -> None:
        # Edge-triggered: accept until EAGAIN, "there may be multiple connections waiting"
        # (asyncio selector_events.py L159-172).
        while not self._stopping:
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_RESOURCE_ERRNOS:
                    log.error(
                        "Cannot accept on %s: %s; pausing accept for %.0f s.",
                        listener.getsockname(),
                        exc.strerror,
                        ACCEPT_RETRY_S,
                    )
                    self.reactor.call_later(ACCEPT_RETRY_S, lambda: self._handle_accept(listener))
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up while queued
                raise
            sock.setblocking(False)
            peer = f"[{addr[0]}]:{addr[1]}" if sock.family == socket.AF_INET6 else f"{addr[0]}:{addr[1]}"
            conn = Connection(sock, peer, self.settings.max_frame_bytes)
            self.conns[conn.fd] = conn
            self.metrics.connections_accepted += 1
            self.metrics.connections_open += 1
            self.reactor.register(conn.fd, _EV_READ, self._reader(conn))
            # Data may have arrived before registration; with EPOLLET that is an edge we
            # never saw. Read once now.
            self.reactor.call_soon(partial(self._handle_read, conn))

    # -- reading ---------------------------------------------------------------------------

    def _reader(self, conn: Connection) -> _loop.Handler:
        def on_event(events: int) -> None:
            self._handle_read(conn)

        return on_event

    def _handle_read(self, conn: Connection, budget: int = READ_BUDGET_BYTES) -> None:
        if conn.closed:
            return
        if self._backpressure:
            self._paused[conn.fd] = conn
            return
        sock, view, dec = conn.sock, self._recv_view, conn.decoder
        eof = False
        nread = 0
        while nread < budget:
            try:
                n = sock.recv_into(view)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                self._decode(conn, time.time())
                self._close(conn, "reset" if exc.errno in _QUIET_ERRNOS else "error", exc)
                return
            if n == 0:
                eof = True
                break
            dec.feed(view[:n])
            nread += n
        else:
            # Budget spent with data possibly left in the kernel: finish on the next turn.
            self.reactor.call_soon(partial(self._handle_read, conn))
        self.metrics.bytes_received += nread
        if nread and not self._decode(conn, time.time()):
            return
        if eof:
            dec.feed(b"")
            if self._decode(conn, time.time()):
                self._close(conn, "eof")

    def _decode(self, conn: Connection, received: float) -> bool:
        """Turn every complete frame into a pending row; False if the connection was closed."""
        dec = conn.decoder
        enc = self.encoder.encode
        received_ts = self.encoder.timestamp(received)
        pending = self._pending
        seq = self.journal.next_seq + len(pending)
        peer = conn.peer
        nbytes = 0
        try:
            while (rec := dec.next_record()) is not NEED_DATA:
                row = enc(rec, seq, peer, received_ts)
                pending.append(row)
                nbytes += len(row)
                seq += 1
        except ProtocolError as exc:
            self.metrics.frames_rejected[exc.reason] += 1
            log.warning("Closing %s: bad frame (%s): %s.", peer, exc.reason, exc)
            self._close(conn, exc.reason)
            return False
        finally:
            self._pending_bytes += nbytes
            if self._pending_bytes >= BLOCK_FLUSH_BYTES:
                self._flush_pending()
        return True

    def _close(self, conn: Connection, reason: str, exc: BaseException | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.reactor.unregister(conn.fd)
        self.conns.pop(conn.fd, None)
        self._paused.pop(conn.fd, None)
        conn.sock.close()
        self.metrics.placeholders += conn.decoder.placeholders
        self.metrics.connections_open -= 1
        self.metrics.connections_closed[reason] += 1
        if reason == "error":
            log.warning("Closing %s after a socket error: %s.", conn.peer, exc)

    # -- journal and backpressure ----------------------------------------------------------

    def _flush_pending(self) -> None:
        pending = self._pending
        if not pending:
            return
        count = len(pending)
        payload = b"".join(pending)
        pending.clear()
        self._pending_bytes = 0
        self.journal.append(payload, count)
        self.metrics.records_received += count
        self.metrics.journal_blocks += 1
        self.sink.notify_appended()
        if not self._backpressure and self.journal.over_limit(self.sink.confirmed_seq):
            self._backpressure = True
            self.metrics.backpressure_episodes += 1
            log.warning(
                "Journal is full (%d unshipped bytes >= journal_max_bytes %d); PostgreSQL is "
                "behind. Pausing reads from clients until it catches up; nothing is dropped.",
                self.journal.unshipped_bytes(self.sink.confirmed_seq),
                self.settings.journal_max_bytes,
            )

    def _on_journal_released(self) -> None:
        if self._backpressure and not self.journal.over_limit(self.sink.confirmed_seq):
            self._backpressure = False
            paused = list(self._paused.values())
            self._paused.clear()
            log.info(
                "Journal has room again (%d unshipped bytes); resuming %d paused connections.",
                self.journal.unshipped_bytes(self.sink.confirmed_seq),
                len(paused),
            )
            for conn in paused:
                self.reactor.call_soon(partial(self._handle_read, conn))

    # -- timers ----------------------------------------------------------------------------

    def _fsync_tick(self) -> None:
        self.journal.sync()
        self.reactor.call_later(self.settings.fsync_interval, self._fsync_tick)

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
        for sock in self.listeners:
            self.reactor.unregister(sock.fileno())
            sock.close()
        self.listeners.clear()
        # Read what each client already sent, then close it.
        self._backpressure = False
        for conn in list(self.conns.values()):
            self._handle_read(conn, budget=SHUTDOWN_READ_BYTES)
            if not conn.closed:
                self._close(conn, "shutdown")
        self._flush_pending()
        self.journal.sync()
        self.reactor.call_later(self.settings.shutdown_timeout, self._shutdown_timed_out)
        self.sink.drain(self._drained)

    def _drained(self) -> None:
        self._done = True
        log.info("Everything is in PostgreSQL (%s). Bye.", self.metrics.summary())
        self.reactor.stop()

    def _shutdown_timed_out(self) -> None:
        self._done = True
        log.warning(
            "Shutdown timeout: %d records not yet in PostgreSQL stay in the journal and will be "
            "shipped at the next start.",
            self.sink.unshipped,
        )
        self.reactor.stop()

    def _close_all(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn, "shutdown")
        for sock in self.listeners:
            sock.close()
        self.listeners.clear()
        self._flush_pending()
        self.sink.close()
        self.journal.sync()
        self.journal.close()
        self.reactor.close()


def _raise_nofile_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit: every connection is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("Could not raise the open-file limit from %d to %d.", soft, target)
