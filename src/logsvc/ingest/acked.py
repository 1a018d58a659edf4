"""One connection speaking the acknowledged protocol (docs/protocol.md).

A ``StreamConnection`` on a pickle listener (``--listen``, TCP or ``unix:PATH``, ``--listen-tls``)
whose first four bytes are ``\\x89LOG`` hands its bytes to an ``AckedSession`` instead of the
stock pickle decoder. The session:

* reads HELLO, claims the stream in ``StreamPositions`` (one connection per stream) and answers
  WELCOME with what this service holds durably of it;
* for each RECORDS frame: leaves out records at or below what this service has written for the
  stream (sent again after a reconnect), decodes the rest with the format HELLO named, and
  hands them to ``JournalWriter.write_stream`` with their stream seqs;
* asks the writer to be told once those records are synced to disk
  (``when_durable(synced=True)``: one fdatasync per flush for all connections), and then sends
  one cumulative ACK (coalesced: at most one per connection per loop turn);
* on any protocol error sends ERROR with the reason and closes; a record that cannot be
  decoded is counted (``records_rejected_total{kind="acked"}``), not stored, and acknowledged
  like the others, so a client never resends it forever. A pickle naming something no log
  record holds (``forbidden``) closes the connection, as on the stock protocol.

It reads nothing itself: ``StreamConnection`` drains the socket (and parks it while the writer
is not accepting, so a full journal pushes back through TCP and the client's window); the
session only writes, and only small frames (WELCOME, ACK, ERROR), so output waits in a
small buffer for EPOLLOUT at worst.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING

from logsvc import __version__
from logsvc import loop as _loop
from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.acked import AckedDecoder, Hello, Records, encode_ack, encode_error, encode_welcome
from logsvc.wire.json_format import JsonFormat
from logsvc.wire.pickle_format import PickleFormat

if TYPE_CHECKING:
    from logsvc.ingest.intake import Intake
    from logsvc.ingest.stream import StreamConnection

log = logging.getLogger("logsvc.ingest")

KIND = "acked"  # the metrics label of records and frames that came this way
# The largest RECORDS frame read: room for a batch of records, and always for one record of
# --max-frame-bytes (the cap of a single record, as on the stock protocol).
MAX_FRAME_BYTES = 4 << 20
# How many unacknowledged records WELCOME suggests a client keeps in flight.
WINDOW = 10_000
# Output is only WELCOME, ACK and ERROR frames; a client that never reads them is dropped.
MAX_OUTPUT_BYTES = 64 << 10


class AckedSession:
    """The acknowledged protocol on one ``StreamConnection``; see the module doc."""

    __slots__ = (
        "_ack_scheduled",
        "_ack_to",
        "_acked",
        "_conn",
        "_expected",
        "_format",
        "_intake",
        "_out",
        "_want_write",
        "decoder",
        "stream",
    )

    def __init__(self, conn: StreamConnection, intake: Intake) -> None:
        self._conn = conn
        self._intake = intake
        cap = intake.settings.max_frame_bytes
        self.decoder = AckedDecoder(max(MAX_FRAME_BYTES, cap + 64), cap)
        self.stream: bytes | None = None
        self._format: PickleFormat | JsonFormat | None = None
        self._out = bytearray()
        self._want_write = False
        self._acked = 0  # the last seq acknowledged to the client (or in WELCOME)
        self._ack_to = 0  # the last seq durable, to acknowledge
        self._ack_scheduled = False
        self._expected = 1  # the seq a gap-free RECORDS frame starts at
        if conn.sock.family in (socket.AF_INET, socket.AF_INET6):
            # An ACK is a small write that the client waits for: Nagle would hold one back
            # until the client's delayed ACK of the previous one (40 ms on Linux).
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- input -----------------------------------------------------------------------------

    def decode(self) -> bool:
        """Handle every complete frame buffered; False if the connection was closed."""
        conn = self._conn
        dec = self.decoder
        handled = 0
        try:
            while True:
                ev = dec.next_event()
                if ev is None:
                    break
                handled += 1
                if isinstance(ev, Hello):
                    if not self._hello(ev):
                        return False
                elif not self._records(ev):
                    return False
        except ProtocolError as exc:
            self.fail(exc.reason, str(exc))
            return False
        finally:
            conn.slow_clock(handled > 0)  # as for stock frames
        return True

    def _hello(self, hello: Hello) -> bool:
        intake = self._intake
        positions = intake.streams
        busy = positions.claim(hello.stream, self)
        if busy is not None:
            other = busy._conn.peer if isinstance(busy, AckedSession) else "?"
            self.fail(
                "stream_busy", f"stream {hello.stream.decode()} is in use by another connection ({other})"
            )
            return False
        self.stream = hello.stream
        tz = intake.settings.assume_timezone
        self._format = PickleFormat() if hello.format == "pickle" else JsonFormat(tz=tz)
        self._acked = self._ack_to = positions.durable(hello.stream)
        self._expected = self._acked + 1
        intake.metrics.acked_sessions += 1
        self._send(
            encode_welcome(
                acked=self._acked,
                max_frame_bytes=self.decoder.max_frame_bytes,
                max_record_bytes=self.decoder.max_record_bytes,
                window=WINDOW,
                server=f"logsvc/{__version__}",
                journal=intake.writer.journal_id,
            )
        )
        log.debug(
            "%s: acknowledged stream %s (%s), acked=%d.",
            self._conn.peer,
            hello.stream,
            hello.client,
            self._acked,
        )
        return not self._conn.closed

    def _records(self, frame: Records) -> bool:
        intake = self._intake
        m = intake.metrics
        stream = self.stream
        fmt = self._format
        assert stream is not None and fmt is not None
        positions = intake.streams
        first, last = frame.first_seq, frame.last_seq
        if first > self._expected:
            m.acked_seq_gaps += first - self._expected
        self._expected = last + 1
        skip = positions.written(stream) - first + 1
        if skip > 0:
            m.acked_duplicates["server"] += min(skip, len(frame.payloads))
        records: list[tuple[int, RecordDict]] = []
        forbidden: ProtocolError | None = None
        rejected = m.records_rejected
        seq = first + max(skip, 0)
        for payload in frame.payloads[max(skip, 0) :]:
            try:
                records.append((seq, fmt.parse(payload)))
            except RecordRejected as exc:
                rejected[KIND, exc.reason] += 1
            except ProtocolError as exc:
                if exc.reason == "forbidden":
                    forbidden = exc
                    break
                rejected[KIND, exc.reason] += 1  # the framing is intact: only this record is bad
            seq += 1
        conn = self._conn
        if records:
            intake.writer.write_stream(records, stream, KIND, conn.peer, time.time())
        if forbidden is not None:
            # Records before it are kept (and durable like any others); the rest of the frame
            # and the connection are not.
            positions.note_written(stream, seq - 1)
            self.fail("forbidden", str(forbidden))
            return False
        positions.note_written(stream, last)
        intake.writer.when_durable(lambda ok: self._durable(stream, last, ok), synced=True)
        return True

    # -- acknowledgements ------------------------------------------------------------------

    def _durable(self, stream: bytes, last: int, ok: bool) -> None:
        if not ok:
            return  # the service is stopping with the journal failing: nothing is acknowledged
        # Durable whether or not this connection still stands: a reconnect is told so in WELCOME.
        self._intake.streams.note_durable(stream, last)
        if last > self._ack_to:
            self._ack_to = last
        if not self._ack_scheduled and not self._conn.closed:
            self._ack_scheduled = True
            self._intake.reactor.call_soon(self._send_ack)

    def _send_ack(self) -> None:
        self._ack_scheduled = False
        if self._conn.closed or self._ack_to <= self._acked:
            return
        if self._out:
            self._want_write = True  # sent by on_writable once the buffer drains
            return
        self._acked = self._ack_to
        self._intake.metrics.acked_sent += 1
        self._send(encode_ack(self._acked))

    # -- output ----------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        conn = self._conn
        if self._out:
            self._out += data
        else:
            try:
                n = conn.sock.send(data)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                n = 0
            except OSError as exc:
                conn.close("reset", exc)
                return
            if n == len(data):
                return
            self._out += data[n:]
        if len(self._out) > MAX_OUTPUT_BYTES:
            conn.close("not_reading")
            return
        self._intake.reactor.modify(conn.fd, conn.events | _loop.EPOLLOUT)

    def on_writable(self) -> None:
        """EPOLLOUT: send what waits, then the latest ACK if one is owed."""
        conn = self._conn
        if conn.closed:
            return
        if self._out:
            try:
                n = conn.sock.send(self._out)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                conn.close("reset", exc)
                return
            del self._out[:n]
            if self._out:
                return
        self._intake.reactor.modify(conn.fd, conn.events)
        if self._want_write:
            self._want_write = False
            self._send_ack()

    def fail(self, code: str, message: str) -> None:
        """Send ERROR ``code`` (best effort) and close; counted like a stock bad frame."""
        conn = self._conn
        self._intake.metrics.frames_rejected[KIND, code] += 1
        log.warning("Closing %s (acknowledged protocol): %s: %s.", conn.peer, code, message)
        frame = encode_error(code, message)
        try:
            conn.sock.send(bytes(self._out) + frame if self._out else frame)
        except (OSError, ValueError):
            pass
        conn.close(code)

    def closed(self) -> None:
        """The connection closed: let another connection take the stream."""
        if self.stream is not None:
            self._intake.streams.release(self.stream, self)
