"""ReceiveBuffer: the bytes a connection has received and not yet framed.

Sans-IO: this module only stores and hands out bytes. It never reads a socket and never parses.

Theory of operation (after h11 ``_receivebuffer.py`` and tornado's ``_StreamBuffer``):

The buffer is one ``bytearray`` plus a read offset ``_start``. ``feed`` appends at the end;
``maybe_extract_*`` hands out ``data[_start : _start + n]`` and moves ``_start`` forward. We do
not ``del data[:n]`` on every extract: for a stream of small frames arriving in one large chunk
(the common case: a client flushes 64 KiB of 500-byte records) that is a memmove of the whole tail
per frame, O(n^2) in the chunk size. Instead the consumed prefix is dropped ("compaction") only
when it is at least half of the bytearray, so each byte is moved at most once on average and the
work stays O(n) amortized.

Worst case: memory is the live bytes plus a consumed prefix no larger than them, i.e. at most
twice what the caller holds. The caller bounds the live bytes (the framer checks the length
header against its cap before waiting for a body), so the buffer needs no cap of its own.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["ReceiveBuffer"]


class ReceiveBuffer:
    """A growable byte buffer with cheap consumption from the front."""

    __slots__ = ("_data", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def __bool__(self) -> bool:
        return len(self._data) > self._start

    def __bytes__(self) -> bytes:
        return bytes(self._data[self._start :])

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (copied: a caller may reuse a ``recv_into`` buffer)."""
        self._data += data

    def unpack_from(self, st: struct.Struct) -> tuple[Any, ...] | None:
        """``st.unpack`` of the next ``st.size`` bytes without consuming them, or None if fewer."""
        if len(self._data) - self._start < st.size:
            return None
        return st.unpack_from(self._data, self._start)

    def peek(self, n: int) -> bytes | None:
        """The next ``n`` bytes without consuming them, or None if fewer are buffered."""
        start = self._start
        if len(self._data) - start < n:
            return None
        return bytes(self._data[start : start + n])

    def maybe_extract_exact(self, n: int, skip: int = 0) -> bytes | None:
        """Consume ``skip + n`` bytes and return the last ``n``; or None, consuming nothing, if fewer."""
        start = self._start + skip
        end = start + n
        if len(self._data) < end:
            return None
        out = bytes(self._data[start:end])
        # _advance, inlined: this is once per frame.
        if end * 2 >= len(self._data):
            del self._data[:end]
            self._start = 0
        else:
            self._start = end
        return out

    def maybe_extract_at_most(self, n: int) -> bytes | None:
        """Consume and return up to ``n`` bytes, or None if the buffer is empty."""
        start = self._start
        if len(self._data) <= start:
            return None
        end = min(start + n, len(self._data))
        out = bytes(self._data[start:end])
        self._advance(end)
        return out

    def skip(self, n: int) -> None:
        """Drop ``n`` buffered bytes (at most ``len(self)``)."""
        self._advance(min(self._start + n, len(self._data)))

    def _advance(self, new_start: int) -> None:
        data = self._data
        if new_start >= len(data):
            # Everything consumed: the cheapest compaction there is.
            data.clear()
            self._start = 0
        elif new_start * 2 >= len(data):
            del data[:new_start]
            self._start = 0
        else:
            self._start = new_start
