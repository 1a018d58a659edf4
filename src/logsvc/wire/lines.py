"""LineFramer: newline-delimited frames (JSON lines, and any other one-record-per-line text).

Sans-IO: no sockets, no clocks, no logging. Like ``LengthPrefixFramer`` it looks at a
``ReceiveBuffer`` and either consumes one frame or waits; unlike it, a bad frame does not cost
the connection, because the next ``"\\n"`` puts us back in step.

Theory of operation. The stream is::

    line "\\n" line "\\r\\n" "\\n" line ... [last line at EOF, unterminated]

- A frame is the bytes before a ``"\\n"``, without one ``"\\r"`` just before it (CRLF senders).
- Empty lines (``"\\n"`` or ``"\\r\\n"`` alone) are skipped silently: ``printf '%s\\n\\n'``-style
  senders and keep-alives are not errors.
- ``max_line_bytes`` counts a line without its terminator. A longer line is never buffered
  whole: once more than ``max_line_bytes + 1`` bytes (the ``+ 1`` leaves room for a ``"\\r"``)
  are buffered with no ``"\\n"``, they are dropped, ``RecordRejected(reason="oversized")`` is
  raised once, and the framer enters a discarding state in which every later byte is dropped as
  it arrives until the next ``"\\n"``. So memory stays at ``max_line_bytes`` plus whatever one
  ``feed`` added, and the stream is in step again afterwards (vector
  ``framing/character_delimited.rs``: "discarding" until the next delimiter).
- At EOF, a last line without ``"\\n"`` is still a record: the ``Decoder`` calls
  ``maybe_extract_at_eof`` (vector's ``decode_eof`` does the same for delimited framing).

Searching: ``bytearray.find`` from where the previous unsuccessful search stopped, so a line
that arrives in many small reads is scanned once, not once per read (h11 ``_receivebuffer.py``
"avoid rescanning"). That offset is state of this framer, so a ``LineFramer`` belongs to one
buffer (one ``Decoder``) and must not be shared.

``ReceiveBuffer`` has no ``find``; this module reads its ``_data``/``_start`` directly (the
same package, and the only way to search without copying the buffer on every call).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

from logsvc.errors import RecordRejected
from logsvc.wire.buffer import ReceiveBuffer

__all__ = ["MAX_LINE_BYTES", "LineFramer"]

# The longest line we accept: 1 MiB, the same bound as a pickled frame (framing.MAX_FRAME_BYTES)
# so one JSON record may be as large as one pickled record. Precedents: vector's
# newline_delimited framer takes a ``max_length`` (unbounded by default), Fluent Bit's tcp
# input ``Buffer_Size`` (32 KiB by default), rsyslog ``maxMessageSize`` 8 KiB, h11 16 KiB
# for HTTP headers.
MAX_LINE_BYTES = 1 << 20


class LineFramer:
    """Frames ended by ``"\\n"`` (one ``"\\r"`` before it is dropped); see the module docstring.

    Attributes:
        max_line_bytes: the longest line accepted, terminator excluded.
        delimiter: the byte that ends a frame: ``b"\n"``, or ``b"\0"`` for GELF over TCP
            (``wire.gelf``); everything said of ``"\n"`` above holds for it.
    """

    __slots__ = ("_discarding", "_scanned", "delimiter", "max_line_bytes")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES, delimiter: bytes = b"\n") -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        if len(delimiter) != 1:
            raise ValueError("the delimiter is one byte")
        self.max_line_bytes = max_line_bytes
        self.delimiter = delimiter
        self._scanned = 0  # bytes from the buffer's start known to hold no "\n"
        self._discarding = False  # inside an oversized line: drop bytes up to its "\n"

    def maybe_extract(self, buf: ReceiveBuffer) -> bytes | None:
        """Consume and return the next non-empty line, or None if no whole line is buffered.

        Args:
            buf: the connection's receive buffer.

        Returns:
            The line without its terminator, or None. On None nothing that belongs to a
            future frame was consumed (empty lines and discarded bytes may have been).

        Raises:
            RecordRejected: ``oversized`` once per line longer than ``max_line_bytes``. The
                bytes buffered so far were dropped; the rest of that line will be dropped as it
                arrives, and the next call goes on.
        """
        data = buf._data  # the same bytearray for the buffer's lifetime (see module docstring)
        delimiter = self.delimiter
        while True:
            start = buf._start
            if self._discarding:
                i = data.find(delimiter, start)
                if i < 0:
                    buf.skip(len(data) - start)
                    return None
                buf.skip(i + 1 - start)
                self._discarding = False
                continue
            i = data.find(delimiter, start + self._scanned)
            if i < 0:
                n = len(data) - start
                if n > self.max_line_bytes + 1:
                    self._scanned = 0
                    self._discarding = True
                    buf.skip(n)
                    raise RecordRejected(
                        f"Line longer than {self.max_line_bytes} bytes; discarded up to its end.",
                        reason="oversized",
                    )
                self._scanned = n
                return None
            self._scanned = 0
            end = i - 1 if i > start and data[i - 1] == 0x0D else i  # drop one "\r"
            if end == start:
                buf.skip(i + 1 - start)  # an empty line: skipped silently
                continue
            if end - start > self.max_line_bytes:
                buf.skip(i + 1 - start)
                raise RecordRejected(
                    f"Line of {end - start} bytes exceeds the cap of {self.max_line_bytes} bytes.",
                    reason="oversized",
                )
            line = bytes(data[start:end])
            buf.skip(i + 1 - start)
            return line

    def maybe_extract_at_eof(self, buf: ReceiveBuffer) -> bytes | None:
        """At EOF: consume what is left and return it as a last line, if it is not empty.

        Call only after ``maybe_extract`` returned None (so no ``"\\n"`` is buffered and the
        rest is at most ``max_line_bytes + 1`` bytes).

        Raises:
            RecordRejected: ``oversized`` if the last line is one byte over the cap.
        """
        line = bytes(buf)
        buf.skip(len(line))
        self._scanned = 0
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line_bytes:  # max_line_bytes + 1 bytes, no "\r": one too many
            raise RecordRejected(
                f"Last line of {len(line)} bytes exceeds the cap of {self.max_line_bytes} bytes.",
                reason="oversized",
            )
        return line or None
