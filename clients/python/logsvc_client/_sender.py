"""The sender thread: connects, resends what was never acknowledged, streams, trims on ACK.

One daemon thread per handler does all the network I/O, so ``emit()`` never waits for it.
Per connection::

    connect (TCP, unix or TLS; connect_timeout), preamble + HELLO, read WELCOME (same timeout)
    drop from the spool every record up to WELCOME.acked (the server has them)
    loop: take records from the first unsent one on, at most window - in flight of them and
          max_frame_bytes in one RECORDS frame; send without blocking; read ACKs, trim the
          spool; sleep in poll() on the socket and a wake-up socketpair emit() writes to
          when the thread is idle

Any failure (refused, reset, EOF, an ERROR frame, a frame this client cannot read) closes the
connection and the thread tries again after a jittered exponential back-off (0.1 s doubling
up to ``backoff_max``; after a connection that worked, the first retry comes at once). Every
unacknowledged record stays in the spool and is sent on the next connection, from the first
seq the server does not have. An ERROR is written to stderr once per kind.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import collections
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from logsvc_client import _protocol as proto
from logsvc_client._spool import Spool

Address = tuple[str, int] | str  # (host, port), or a unix socket path

# Records in one RECORDS frame at most. The thread builds a frame holding the GIL, and every
# microsecond it holds it is one an emit() in the application may wait: 256 records take
# ~40 us to frame, and a frame still carries ~100 KiB of typical records.
FRAME_MAX_RECORDS = 256
# Latency samples taken per ACK at most (evenly spread over the records it covers): an ACK may
# cover the whole window, and a sample per record would hold the GIL for as long again.
SAMPLES_PER_ACK = 32
BACKOFF_MIN = 0.1
# The longest the thread sleeps in poll() between its timers (fsync interval, acked file).
TICK_SECONDS = 0.2
# While records come, the thread polls the spool this often instead of being woken by emit()
# (up to 1 ms more latency to the ACK, and no system call in emit()); it stops polling once none
# has come for LINGER_SECONDS.
POLL_SECONDS = 0.001
LINGER_SECONDS = 1.0
# How many recent acknowledgement latencies stats() summarises.
LATENCY_SAMPLES = 20_000  # sorted by each stats() call: ~2 ms
# Linux: acknowledge the server's segments at once rather than after the delayed-ACK timer
# (up to 40 ms). Each ACK frame is a small write; a server with Nagle on holds its next ACK
# until our TCP acknowledgement of the last one arrives. Reset by the kernel: set per read.
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Disconnected(Exception):
    """The connection ended; the message says how (for the stderr note)."""


@dataclass(slots=True)
class SenderStats:
    sent: int = 0  # records written into sockets, resends included
    resent: int = 0  # of those, records sent before on an earlier connection
    acked: int = 0  # records the server acknowledged (WELCOME.acked included)
    connects: int = 0  # connections that reached WELCOME
    connect_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # ERROR frames and failures, by kind
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES)
    )


@dataclass(frozen=True, slots=True)
class Settings:
    addresses: list[Address]
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    fmt: str
    window: int
    connect_timeout: float
    backoff_max: float
    fsync: str  # always | interval | never
    fsync_interval: float
    client: str


class Sender:
    """The thread and its connection; ``wake()`` is the only method emit() calls."""

    def __init__(self, spool: Spool, settings: Settings, warn: Callable[[str, str], None]) -> None:
        self.spool = spool
        self.cfg = settings
        self.warn = warn
        self.stats = SenderStats()
        self.idle = False
        self.connected = False
        self.address: Address = settings.addresses[0]
        self._addresses = list(settings.addresses)
        self._index = 0
        self._switch_to: Address | None = None
        self._stopping = False
        self._kick = threading.Event()  # cuts a back-off short (stop, switch_to)
        self._sent_high = 0  # highest seq ever written to a socket by this process
        self._sock: socket.socket | None = None  # the connection, for a forked child to close
        self._worked = False  # the current connection got an ACK
        self._switched = False  # it ended for switch_to()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="logsvc_client-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Tell an idle thread there is something to send (cheap when it is busy)."""
        if self.idle:
            self.idle = False
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # the pair is full: the thread has wake-ups waiting already

    def switch_to(self, address: Address) -> None:
        """Use ``address`` from now on: the current connection closes, nothing is lost."""
        self._switch_to = address
        self._kick.set()
        self.idle = True
        self.wake()

    def stop(self, timeout: float) -> None:
        """End the thread (the caller has waited for acknowledgements already)."""
        self._stopping = True
        self._kick.set()
        self.idle = True
        self.wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for s in (self._wake_r, self._wake_w):
            s.close()

    def abandon(self) -> None:
        """In a forked child: close the parent's descriptors (its thread does not exist here).

        Closing the child's copy of the connection leaves the parent's connection open; left
        open, it would keep the stream busy at the server after the parent reconnects.
        """
        for s in (self._sock, self._wake_r, self._wake_w):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF_MIN
        while not self._stopping:
            try:
                worked = self._once()
            except Exception as e:  # a bug here must not end the thread: the records wait
                self.stats.errors["internal"] = self.stats.errors.get("internal", 0) + 1
                self.warn("internal", f"logsvc_client: the sender failed: {e!r}; it carries on")
                worked = False
            if self._stopping:
                break
            if worked:
                # A connection that was acknowledged and then ended (a restart of the service):
                # try again at once, with a little jitter so clients do not come back in step.
                delay = BACKOFF_MIN
                self._backoff(BACKOFF_MIN)
            else:
                self._backoff(delay)
                delay = min(delay * 2, self.cfg.backoff_max)
        self._sync()
        with self.spool.cond:
            self.spool.save_acked()

    def _once(self) -> bool:
        """One connection, from connecting to its end; True if the server acknowledged on it."""
        if self._switch_to is not None:
            self._use(self._switch_to)
        try:
            sock, welcome = self._connect(self.address)
        except (OSError, proto.ProtocolError, _Disconnected) as e:
            self.stats.connect_failures += 1
            self._note(e)
            self._next_address()
            return False
        self.stats.connects += 1
        self.connected = True
        self._sock = sock
        self._worked = self._switched = False
        try:
            self._stream(sock, welcome)
        except (OSError, proto.ProtocolError, _Disconnected) as e:
            self._note(e)
        finally:
            self.connected = False
            self._sock = None
            sock.close()
        return self._worked or self._switched

    def _use(self, address: Address) -> None:
        self._switch_to = None
        if address not in self._addresses:
            self._addresses.insert(0, address)
        self._index = self._addresses.index(address)
        self.address = address

    def _next_address(self) -> None:
        self._index = (self._index + 1) % len(self._addresses)
        self.address = self._addresses[self._index]

    def _backoff(self, delay: float) -> None:
        # Full jitter in [delay/2, delay]: clients that failed together spread out.
        self._kick.wait(random.uniform(delay / 2, delay))
        self._kick.clear()

    def _note(self, e: BaseException) -> None:
        if isinstance(e, _Disconnected):
            kind, what = e.args[0], ": ".join(str(a) for a in e.args if a)
        else:
            kind, what = type(e).__name__, str(e) or type(e).__name__
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        self.warn(
            f"conn:{kind}",
            f"logsvc_client: the connection to {_show(self.address)} failed or ended ({what}); "
            "records stay in the spool until acknowledged and are sent after a reconnect "
            "(said once per kind of failure; see stats()['errors'])",
        )

    def _connect(self, address: Address) -> tuple[socket.socket, proto.Welcome]:
        timeout = self.cfg.connect_timeout
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection(address, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.cfg.ssl_context is not None:
                host = self.cfg.server_hostname or (address[0] if isinstance(address, tuple) else None)
                sock = self.cfg.ssl_context.wrap_socket(sock, server_hostname=host)
            sock.sendall(proto.hello(self.spool.stream, self.cfg.fmt, self.cfg.client))
            reader = proto.FrameReader()
            deadline = time.monotonic() + timeout
            while (frame := reader.next_frame()) is None:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                data = sock.recv(65536)
                if not data:
                    raise _Disconnected("closed_before_welcome", "the server closed before WELCOME")
                reader.feed(data)
        except BaseException:
            sock.close()
            raise
        if isinstance(frame, proto.Error):
            sock.close()
            raise _Disconnected(frame.error, frame.message)
        if not isinstance(frame, proto.Welcome):
            sock.close()
            raise proto.ProtocolError(f"{type(frame).__name__} before WELCOME")
        self._reader = reader
        return sock, frame

    def _stream(self, sock: socket.socket, welcome: proto.Welcome) -> None:
        """Send and read until the connection ends, the thread stops or switch_to() is called.

        Sets ``_worked`` once the server acknowledges something on this connection.
        """
        sock.setblocking(False)
        spool, st, cfg = self.spool, self.stats, self.cfg
        window = max(1, min(cfg.window, welcome.window))
        max_frame = min(welcome.max_frame_bytes, proto.DEFAULT_MAX_FRAME_BYTES * 16)
        with spool.cond:
            created = spool.trim(welcome.acked)
            acked = spool.done_seq
            # The server knows this stream further than this process has numbered it (a spool
            # directory restored from an old copy): new records must not look like resends.
            spool.skip_to(welcome.acked + 1)
            spool.cond.notify_all()
        st.acked += len(created)
        next_seq = acked + 1  # the first seq not sent on this connection
        sent_through = acked
        out: memoryview | None = None
        reader = self._reader
        fsync_due = time.monotonic() + cfg.fsync_interval
        save_due = time.monotonic() + TICK_SECONDS
        last_sent = 0.0
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        writing = False
        while not self._stopping and self._switch_to is None:
            progressed = False
            if out is None and sent_through - acked < window:
                count = min(window - (sent_through - acked), FRAME_MAX_RECORDS)
                budget = max_frame - proto.RECORDS_OVERHEAD - proto.RECORD_OVERHEAD * count
                with spool.cond:
                    first, payloads = spool.take(next_seq, count, budget)
                if payloads:
                    size = proto.records_frame_size(sum(map(len, payloads)), len(payloads))
                    if size > max_frame:  # one record the server will not take in a frame
                        self._drop_too_large(first, size, max_frame)
                        next_seq = first + 1
                        continue
                    if cfg.fsync == "always":
                        self._sync()
                    out = memoryview(proto.records_frame(first, payloads))
                    last = first + len(payloads) - 1
                    st.sent += len(payloads)
                    if first <= self._sent_high:
                        st.resent += min(last, self._sent_high) - first + 1
                    self._sent_high = max(self._sent_high, last)
                    next_seq = last + 1
                    sent_through = last
                    last_sent = time.monotonic()
            if out is not None:
                try:
                    n = sock.send(out)
                except _WOULD_BLOCK:
                    n = 0
                if n:
                    progressed = True
                    out = out[n:] if n < len(out) else None
            # Read whatever the server sent: ACKs (and an ERROR before it closes).
            while True:
                try:
                    data = sock.recv(65536)
                except _WOULD_BLOCK:
                    break
                if not data:
                    raise _Disconnected("closed_by_server", "the server closed the connection")
                if _QUICKACK is not None and not isinstance(self.address, str):
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                reader.feed(data)
                while (frame := reader.next_frame()) is not None:
                    if isinstance(frame, proto.Ack):
                        if frame.seq > sent_through:
                            # Records not sent yet cannot be acknowledged: a server bug, and
                            # trusting it would drop them unsent.
                            raise proto.ProtocolError(
                                f"an ACK of seq {frame.seq}, above the last one sent ({sent_through})"
                            )
                        if frame.seq > acked:
                            acked = frame.seq
                            self._acked(frame.seq)
                            self._worked = progressed = True
                    elif isinstance(frame, proto.Error):
                        raise _Disconnected(frame.error, frame.message)
                    else:
                        raise proto.ProtocolError("a second WELCOME")
            now = time.monotonic()
            if cfg.fsync == "interval" and now >= fsync_due:
                self._sync()
                fsync_due = now + cfg.fsync_interval
            if now >= save_due:
                with spool.cond:
                    spool.save_acked()
                save_due = now + TICK_SECONDS
                if spool.write_errors:
                    self.warn(
                        "spool_write",
                        "logsvc_client: writing the spool directory failed (disk full? see "
                        "stats()['spool_write_errors']); records are still sent, but those not "
                        "on disk are lost if the process dies before they are acknowledged",
                    )
            if progressed and out is None:
                continue
            # Nothing to do right now. While records come (the last one sent less than
            # LINGER_SECONDS ago) the thread looks again every POLL_SECONDS on its own; only
            # after that does it sleep until emit() writes to the wake-up pair. A write there
            # from emit() is a system call in the application's thread and hands this thread
            # the GIL at once, which is what a busy logger should not pay per record.
            if now - last_sent < LINGER_SECONDS:
                wait = POLL_SECONDS
            else:
                wait = TICK_SECONDS
                self.idle = True
            if out is None and sent_through - acked < window:
                with spool.cond:
                    more = spool.has_from(next_seq)
                if more:
                    self.idle = False
                    continue
            # poll(), not select(): an application may hold more than FD_SETSIZE descriptors.
            if writing != (out is not None):
                writing = out is not None
                poller.modify(sock, select.POLLIN | select.POLLOUT if writing else select.POLLIN)
            ready = poller.poll(wait * 1000)
            # Drain the wake-up pair whenever it is readable, not only while idle: wake() sets
            # idle to False itself, and an undrained pair made every later poll() return at
            # once, a busy loop (measured: ~50 us of CPU per record, half of it in the kernel).
            if self.idle or any(fd == self._wake_r.fileno() for fd, _ in ready):
                self.idle = False
                try:
                    while self._wake_r.recv(4096):
                        pass
                except _WOULD_BLOCK:
                    pass
        self._switched = self._switch_to is not None

    def _acked(self, seq: int) -> None:
        spool = self.spool
        with spool.cond:
            created = spool.trim(seq)
            spool.cond.notify_all()
        if created:
            now = time.time()
            self.stats.acked += len(created)
            step = max(1, len(created) // SAMPLES_PER_ACK)
            self.stats.latencies.extend([now - c for c in created[::step]])

    def _drop_too_large(self, seq: int, size: int, max_frame: int) -> None:
        self.stats.errors["too_large"] = self.stats.errors.get("too_large", 0) + 1
        self.warn(
            "too_large",
            f"logsvc_client: a record of {size} bytes does not fit the server's frames "
            f"({max_frame} bytes); it is not sent (counted in stats()['errors']['too_large'])",
        )

    def _sync(self) -> None:
        if self.cfg.fsync != "never":
            self.spool.sync()


def _show(address: Address) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"
