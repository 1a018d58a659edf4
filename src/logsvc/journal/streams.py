"""The server's positions of the acknowledged protocol's streams (docs/protocol.md).

One ``StreamPositions`` per service: for each stream a client named in HELLO, the highest
seq this service has *written* (handed to the journal writer) and the highest it knows
*durable* (appended and fdatasync'd), and which connection is using it. Every acknowledged
connection goes through it:

* WELCOME answers ``acked = durable(stream)``;
* a record at or below ``written(stream)`` was sent again after a reconnect: it is not
  written twice (counted as a duplicate, acknowledged);
* a second connection naming a stream in use is refused (``stream_busy``).

It is an optimisation, not the guarantee: PostgreSQL's ``streams`` table is
(``store/streams.py``). So it may forget: it holds at most ``max_streams`` streams (the least
recently used without a connection go first), and after a restart it knows what the journal
still holds (``load``). A stream it forgot gets ``acked = 0``; the client then resends what it
has not had acknowledged, and PostgreSQL leaves out what it already has.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from logsvc.errors import JournalCorrupt
from logsvc.journal.segment import Journal
from logsvc.store.copyfmt import stream_of
from logsvc.store.streams import has_stream_rows

log = logging.getLogger("logsvc.journal")

MAX_STREAMS = 100_000
_LOAD_BATCH_RECORDS = 100_000


class StreamPositions:
    """Per stream: written and durable seqs, and the connection using it. See the module doc."""

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self._written: OrderedDict[bytes, int] = OrderedDict()
        self._durable: dict[bytes, int] = {}
        self._owner: dict[bytes, object] = {}

    def __len__(self) -> int:
        return len(self._written)

    def claim(self, stream: bytes, owner: object) -> object | None:
        """Make ``owner`` the stream's connection; return the current one instead if busy."""
        current = self._owner.get(stream)
        if current is not None and current is not owner:
            return current
        self._owner[stream] = owner
        if stream not in self._written:
            self._written[stream] = self._durable.get(stream, 0)
            self._evict()
        self._written.move_to_end(stream)
        return None

    def release(self, stream: bytes, owner: object) -> None:
        if self._owner.get(stream) is owner:
            del self._owner[stream]

    def written(self, stream: bytes) -> int:
        return self._written.get(stream, 0)

    def durable(self, stream: bytes) -> int:
        return self._durable.get(stream, 0)

    def note_written(self, stream: bytes, seq: int) -> None:
        current = self._written.get(stream)
        if current is None:
            self._written[stream] = seq
            self._evict()
        elif seq > current:
            self._written[stream] = seq

    def note_durable(self, stream: bytes, seq: int) -> None:
        if seq > self._durable.get(stream, 0):
            self._durable[stream] = seq
        self.note_written(stream, seq)

    def _evict(self) -> None:
        # Oldest first, skipping streams in use; bounded by the number over the cap.
        over = len(self._written) - self.max_streams
        if over <= 0:
            return
        for stream in list(self._written)[: over + len(self._owner)]:
            if over <= 0:
                break
            if stream in self._owner:
                continue
            del self._written[stream]
            self._durable.pop(stream, None)
            over -= 1

    def load(self, journal: Journal) -> int:
        """Learn the streams the journal holds (at start: those blocks are on disk).

        Returns the number of stream rows seen. A damaged block is skipped here: the journal
        has reported it when it opened, and the sink reports it again when it ships.
        """
        started = time.monotonic()
        seq = journal.first_seq
        rows = 0
        for _ in range(1_000_000):  # bounded: each turn moves past at least one block or ends
            if seq >= journal.next_seq:
                break
            try:
                blocks = journal.read(seq, _LOAD_BATCH_RECORDS, 64 << 20)
            except JournalCorrupt as exc:
                seq = max(seq + 1, int(getattr(exc, "first_seq", seq)) + int(getattr(exc, "records_lost", 1)))
                continue
            if not blocks:
                break
            for b in blocks:
                if b.row_format >= 2 and has_stream_rows(b.payload):
                    for row in b.payload.split(b"\n")[:-1]:
                        sp = stream_of(row + b"\n")
                        if sp is not None:
                            rows += 1
                            self.note_durable(*sp)
            seq = blocks[-1].next_seq
        if rows:
            log.info(
                "The journal holds %d records of %d acknowledged streams (read in %.2f s).",
                rows,
                len(self._durable),
                time.monotonic() - started,
            )
        return rows
