"""Framers: cut a byte stream into frames, knowing nothing of what a frame contains.

Sans-IO: no sockets, no clocks, no logging. A framer looks at a ``ReceiveBuffer`` and either
consumes one whole frame from it or leaves it untouched; it raises ``ProtocolError`` when the
stream cannot be framed. Framing is kept apart from the format (vector ``decoding/framing/`` vs
``decoding/format/``), so a line framer plus a JSON format is a new pair, not a new decoder.

Byte layout of the stdlib ``logging.handlers.SocketHandler`` stream (``makePickle``)::

    +----------------------+---------------------------+
    | length: 4 bytes, >L  | body: ``length`` bytes     |
    +----------------------+---------------------------+
      repeated back to back, no trailer, no checksum.
"""

from __future__ import annotations

import struct

from logsvc.errors import ProtocolError
from logsvc.wire.buffer import ReceiveBuffer

__all__ = ["HEADER_BYTES", "MAX_FRAME_BYTES", "LengthPrefixFramer"]

# The largest body we accept for one record: 1 MiB. A typical record pickles to ~500 bytes, one
# with a long traceback in exc_text to a few KiB, so this is ~200x the normal size and still a
# bound on what one connection can make us hold. Precedents for capping an incomplete event:
# h11 DEFAULT_MAX_INCOMPLETE_EVENT_SIZE = 16 KiB (it cites node.js 80 KiB and tomcat 8 KiB for
# HTTP headers), vector's framers take a ``max_length`` (character_delimited.rs), tornado
# IOStream ``max_buffer_size`` defaults to 100 MiB for whole streams.
MAX_FRAME_BYTES = 1 << 20

_HEADER = struct.Struct(">L")
HEADER_BYTES = _HEADER.size


class LengthPrefixFramer:
    """Frames prefixed by a 4-byte big-endian unsigned length (``struct`` format ``>L``).

    The length is checked against ``max_frame_bytes`` as soon as the 4 header bytes are in,
    before any of the body is waited for, so an oversized header costs us 4 bytes of memory.
    """

    __slots__ = ("max_frame_bytes",)

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes

    def maybe_extract(self, buf: ReceiveBuffer) -> bytes | None:
        """Consume and return the next frame body, or None if it is not complete yet.

        Args:
            buf: the connection's receive buffer.

        Returns:
            The body (without its length header), or None if more bytes are needed. On None
            nothing was consumed.

        Raises:
            ProtocolError: ``oversized`` if the header announces more than ``max_frame_bytes``,
                ``malformed`` if it announces zero bytes.
        """
        header = buf.unpack_from(_HEADER)
        if header is None:
            return None
        length: int = header[0]
        if length > self.max_frame_bytes:
            raise ProtocolError(
                f"Frame of {length} bytes exceeds the cap of {self.max_frame_bytes} bytes.",
                reason="oversized",
            )
        if length == 0:
            raise ProtocolError("Frame of length zero.", reason="malformed")
        return buf.maybe_extract_exact(length, HEADER_BYTES)

    def extract_all(self, buf: ReceiveBuffer) -> list[bytes]:
        """Consume and return every complete frame body in ``buf``, in order (``[]``: none).

        The same frames as calling :meth:`maybe_extract` until it returns None, in one pass
        (``Decoder.records``: per frame, a slice instead of four method calls). It stops
        before a header it would refuse; the next :meth:`maybe_extract` raises for it.

        Each buffered byte is copied at most twice: the buffer is copied only once its first
        frame is complete, so a large frame arriving in pieces is not copied per piece.
        """
        header = buf.unpack_from(_HEADER)
        if header is None or not 0 < header[0] <= self.max_frame_bytes:
            return []
        n = len(buf)
        if HEADER_BYTES + header[0] > n:
            return []
        data = buf.peek(n)
        assert data is not None
        cap = self.max_frame_bytes
        unpack = _HEADER.unpack_from
        out = []
        pos = 0
        last = n - HEADER_BYTES
        while pos <= last:
            length: int = unpack(data, pos)[0]
            end = pos + HEADER_BYTES + length
            if end > n or length > cap or length == 0:
                break
            out.append(data[pos + HEADER_BYTES : end])
            pos = end
        buf.skip(pos)
        return out
