"""GELF (Graylog Extended Log Format) transport: UDP chunks, compression, TCP frames.

Sans-IO: bytes in, a record dict, ``None`` (a chunk kept, its message not complete yet) or
``RecordRejected`` out. No clock: the caller sets ``now`` (seconds, any monotonic-enough
clock) before each ``parse``; reassembly timeouts are measured against it. The record itself
is one JSON object read by ``JsonFormat`` with the ``gelf`` shape (``wire.json_format``), the
one owner of "JSON object -> record".

Theory of operation. Over UDP each datagram is one of (GELF 1.1 spec; graypy ``handler.py``;
Docker's ``gelf`` log driver; Graylog ``GelfChunkAggregator``)::

    "{" ...                      a whole message, uncompressed JSON
    0x78 ..  (zlib, RFC 1950)    a whole message, compressed (graypy's default)
    0x1f 0x8b (gzip, RFC 1952)   a whole message, compressed (Docker's default)
    0x1e 0x0f  a chunk:
        +------+------+----------------------+----------+------------+-----------------+
        | 0x1e | 0x0f | message id: 8 bytes  | seq: 1 B | count: 1 B | payload ...     |
        +------+------+----------------------+----------+------------+-----------------+
        seq is 0 .. count-1, count is 1 .. 128. The payloads in seq order are one message
        of the kinds above (so compressed before it was cut, as every sender does).

Over TCP a message is uncompressed JSON ended by a NUL byte (Graylog's GELF TCP input has
no compression); ``LineFramer(delimiter=b"\\0")`` frames it and ``JsonFormat(shape="gelf")``
reads it: nothing here.

Reassembly. ``_pending`` maps a message id to its chunks so far, in arrival order (a dict
keeps insertion order, so the oldest is first). Chunks may come in any order; a duplicate is
ignored. A message leaves when its last chunk arrives, or is dropped (``evicted`` counts it)
when it is older than ``timeout``, or when keeping it would pass ``max_pending_bytes`` or
``max_pending_messages`` (oldest first: a flood of first chunks that never finish cannot grow
memory, it only pushes out other incomplete messages). A message over ``max_message_bytes``,
compressed or once inflated, is rejected; inflating stops at that size
(``decompressobj.decompress(max_length=)``), so a zip bomb costs at most the cap.

This module must not import socket, select, time or psycopg.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import zlib

from logsvc.errors import RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.framing import MAX_FRAME_BYTES
from logsvc.wire.json_format import JsonFormat

__all__ = [
    "CHUNK_MAGIC",
    "CHUNK_TIMEOUT_S",
    "MAX_CHUNKS",
    "MAX_PENDING_BYTES",
    "MAX_PENDING_MESSAGES",
    "GelfDatagramFormat",
]

CHUNK_MAGIC = b"\x1e\x0f"
_CHUNK_HEADER_BYTES = 12
# The GELF spec: "a message MUST NOT consist of more than 128 chunks" (Graylog drops more).
MAX_CHUNKS = 128
# Graylog's GelfChunkAggregator keeps an incomplete message 5 s (VALIDITY_PERIOD); so do we.
CHUNK_TIMEOUT_S = 5.0
# Incomplete messages kept at once, and their bytes. A whole message is at most 128 chunks of
# graypy's WAN_CHUNK (1420 bytes) or LAN_CHUNK (8154): ~1 MiB, MAX_FRAME_BYTES. 32 MiB holds
# 32 such messages in flight, or thousands of ordinary ones; Graylog's aggregator has no byte
# cap at all (only the timeout), which is what a chunk flood exploits.
MAX_PENDING_BYTES = 32 << 20
MAX_PENDING_MESSAGES = 4096
# zlib.decompressobj wbits: 32 + 15 reads both zlib and gzip headers (zlib docs).
_AUTO_WBITS = 47


class _Partial:
    __slots__ = ("count", "first_seen", "have", "nbytes", "parts")

    def __init__(self, count: int, now: float) -> None:
        self.count = count
        self.first_seen = now
        self.have = 0
        self.nbytes = 0
        self.parts: list[bytes | None] = [None] * count


class GelfDatagramFormat:
    """Parses GELF datagrams: whole or chunked, plain, zlib or gzip. See the module docstring.

    Attributes:
        now: the caller's clock, set before each ``parse`` (reassembly timeouts).
        evicted: incomplete messages dropped so far (timed out, or pushed out by a cap).
        json: the ``JsonFormat`` every message goes through (``shape="gelf"`` by default).
    """

    __slots__ = (
        "_pending",
        "_pending_bytes",
        "evicted",
        "json",
        "max_message_bytes",
        "max_pending_bytes",
        "max_pending_messages",
        "now",
        "timeout",
    )

    def __init__(
        self,
        json: JsonFormat | None = None,
        *,
        max_message_bytes: int = MAX_FRAME_BYTES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        max_pending_messages: int = MAX_PENDING_MESSAGES,
        timeout: float = CHUNK_TIMEOUT_S,
    ) -> None:
        if min(max_message_bytes, max_pending_bytes, max_pending_messages) < 1:
            raise ValueError("the GELF caps must be positive")
        self.json = JsonFormat(shape="gelf") if json is None else json
        self.max_message_bytes = max_message_bytes
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_messages = max_pending_messages
        self.timeout = timeout
        self.now = 0.0
        self.evicted = 0
        self._pending: dict[bytes, _Partial] = {}
        self._pending_bytes = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of chunks held for incomplete messages (at most ``max_pending_bytes``)."""
        return self._pending_bytes

    @property
    def pending_messages(self) -> int:
        return len(self._pending)

    def parse(self, datagram: bytes) -> RecordDict | None:
        """Read one datagram.

        Args:
            datagram: the whole datagram as received.

        Returns:
            The record of a whole message, or of the message this chunk completed; None if
            the datagram was a chunk and its message is still incomplete.

        Raises:
            RecordRejected: ``bad_chunk`` (a chunk header out of the spec), ``oversized`` (a
                message over ``max_message_bytes``), ``bad_compression``, or a reason of
                ``JsonFormat.parse`` (``not_json``, ``not_object``). Never anything else.
        """
        self.expire()
        if datagram[:2] == CHUNK_MAGIC:
            message = self._add_chunk(datagram)
            if message is None:
                return None
        else:
            message = datagram
        return self.json.parse(self._inflate(message))

    def expire(self) -> None:
        """Drop (and count in ``evicted``) the incomplete messages older than ``timeout`` at ``now``.

        ``parse`` does this first; a caller with a timer calls it too, so a message whose
        chunks stopped coming is dropped and counted even if no other datagram arrives.
        """
        pending, deadline = self._pending, self.now - self.timeout
        while pending:
            mid = next(iter(pending))
            if pending[mid].first_seen >= deadline:
                break
            self._drop(mid)

    def _drop(self, mid: bytes) -> None:
        self._pending_bytes -= self._pending.pop(mid).nbytes
        self.evicted += 1

    def _add_chunk(self, chunk: bytes) -> bytes | None:
        if len(chunk) < _CHUNK_HEADER_BYTES:
            raise RecordRejected(f"GELF chunk of {len(chunk)} bytes has no whole header.", reason="bad_chunk")
        mid, seq, count = chunk[2:10], chunk[10], chunk[11]
        if not 0 < count <= MAX_CHUNKS or seq >= count:
            raise RecordRejected(f"GELF chunk {seq} of {count} is out of the spec.", reason="bad_chunk")
        payload = chunk[_CHUNK_HEADER_BYTES:]
        part = self._pending.get(mid)
        if part is None:
            if count == 1:
                return payload
            part = self._pending[mid] = _Partial(count, self.now)
        elif part.count != count:
            self._drop(mid)
            raise RecordRejected(
                f"GELF chunk says {count} chunks, an earlier one of its message {part.count}.",
                reason="bad_chunk",
            )
        if part.parts[seq] is not None:
            return None  # a duplicate (UDP may deliver one twice): the first copy stands
        if part.nbytes + len(payload) > self.max_message_bytes:
            self._drop(mid)
            raise RecordRejected(
                f"GELF message over {self.max_message_bytes} bytes in chunks.", reason="oversized"
            )
        part.parts[seq] = payload
        part.nbytes += len(payload)
        part.have += 1
        self._pending_bytes += len(payload)
        if part.have == part.count:
            del self._pending[mid]
            self._pending_bytes -= part.nbytes
            return b"".join(p for p in part.parts if p is not None)
        pending = self._pending
        while self._pending_bytes > self.max_pending_bytes or len(pending) > self.max_pending_messages:
            self._drop(next(iter(pending)))
        return None

    def _inflate(self, message: bytes) -> bytes:
        cap = self.max_message_bytes
        if len(message) >= 2 and (
            message[:2] == b"\x1f\x8b"  # gzip
            or (message[0] & 0x0F == 8 and (message[0] << 8 | message[1]) % 31 == 0)  # zlib
        ):
            d = zlib.decompressobj(_AUTO_WBITS)
            try:
                out = d.decompress(message, cap + 1)
            except zlib.error as exc:
                raise RecordRejected(
                    f"GELF message does not inflate: {exc}.", reason="bad_compression"
                ) from None
            if len(out) > cap:
                raise RecordRejected(f"GELF message inflates past {cap} bytes.", reason="oversized")
            if not d.eof:
                raise RecordRejected("GELF message is cut short (compressed).", reason="bad_compression")
            return out
        if len(message) > cap:
            raise RecordRejected(f"GELF message of {len(message)} bytes is over {cap}.", reason="oversized")
        return message
