"""PickleDatagramFormat: one ``logging.handlers.DatagramHandler`` datagram -> one ``RecordDict``.

Sans-IO: bytes in, a record dict or ``RecordRejected`` out; the caller owns the UDP socket.

Theory of operation. ``DatagramHandler`` is a ``SocketHandler`` whose ``send`` is one
``sendto`` (logging/handlers.py): each datagram is exactly one ``makePickle`` frame, the same
bytes a TCP client sends::

    +----------------------+-------------------------------+
    | length: 4 bytes, >L  | body: pickle, ``length`` bytes |   one datagram, nothing after
    +----------------------+-------------------------------+

There is no stream to keep in step: every datagram stands alone, so everything wrong with one
(a short datagram, a length that disagrees with its size, a pickle ``PickleFormat`` refuses) is
``RecordRejected`` and the socket reads on. ``PickleFormat``'s ``ProtocolError`` reasons are kept
(``malformed``, ``forbidden``, ``complexity``, ``not_a_dict``), so the metric labels match TCP.

The length is checked against the datagram, which tells a truncated datagram (a receive buffer
smaller than the datagram cuts it silently: read with at least 65535 bytes) from a malformed one.

Syslog over UDP needs no helper: each datagram is one message for ``SyslogFormat.parse``.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import struct

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.framing import MAX_FRAME_BYTES
from logsvc.wire.pickle_format import PickleFormat

__all__ = ["PickleDatagramFormat"]

_HEADER = struct.Struct(">L")
_unpack_header = _HEADER.unpack_from
_HEADER_BYTES = _HEADER.size


class PickleDatagramFormat:
    """Parses ``DatagramHandler`` datagrams (length header + pickle) with ``PickleFormat``.

    Attributes:
        max_frame_bytes: the largest pickle body accepted (a UDP datagram holds at most
            65507 bytes, so the default cap of ``MAX_FRAME_BYTES`` never bites over IPv4).
    """

    __slots__ = ("_format", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self._format = PickleFormat()

    @property
    def placeholders(self) -> int:
        """Running count of unpicklable objects replaced by a placeholder string."""
        return self._format.placeholders

    def parse(self, datagram: bytes) -> RecordDict:
        """Turn one datagram into a record dict.

        Args:
            datagram: the whole datagram as received.

        Returns:
            The record's ``__dict__`` as ``PickleFormat.parse`` returns it.

        Raises:
            RecordRejected: ``truncated`` if the datagram is shorter than its header says (or
                than a header), ``malformed`` if longer or if the length is zero, ``oversized``
                if the length exceeds ``max_frame_bytes``, or any reason of ``PickleFormat``.
                Never anything else.
        """
        size = len(datagram) - _HEADER_BYTES
        if size < 0:
            raise RecordRejected(
                f"Datagram of {len(datagram)} bytes has no length header.", reason="truncated"
            )
        (length,) = _unpack_header(datagram)
        if length > self.max_frame_bytes:
            raise RecordRejected(
                f"Datagram announces {length} bytes, over the cap of {self.max_frame_bytes}.",
                reason="oversized",
            )
        if length != size or length == 0:
            raise RecordRejected(
                f"Datagram header says {length} bytes but {size} follow.",
                reason="truncated" if length > size else "malformed",
            )
        try:
            return self._format.parse(datagram[_HEADER_BYTES:])
        except ProtocolError as exc:
            raise RecordRejected(str(exc), reason=exc.reason) from None
        except Exception as exc:
            # PickleFormat promises ProtocolError only; if it ever breaks that promise, the
            # peer still must not be able to raise anything else through us (as Decoder).
            raise RecordRejected(f"Internal decoder error: {exc!r}", reason="malformed") from exc
