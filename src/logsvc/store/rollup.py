"""Counts of records per ``BUCKET_S`` seconds of ``created`` and per level, stored with the rows.

Theory of operation
-------------------
The console's histogram shows how many records each level has over a range. Counted from
``records``, a refresh of "the last 15 minutes" of a service taking 50,000 records a second
reads 45 million rows, every time, on the machine that is ingesting them. So every batch
adds, in its own transaction, how many of its rows fall in each bucket of ``created``
(``BUCKET_S`` seconds, on a grid from the epoch) and each level class to the table
``counts (bucket, journal, level, n)``, and a histogram reads a few hundred rows of it.

* **Exactly once, like the rows.** The upsert is a statement of the batch's one implicit
  transaction, before its COPY (``schema.batch_sql``): a batch that rolls back takes its
  counts with it, and a batch shipped again after a crash was never counted. The counts are
  of what the COPY carries: a piece of an isolated batch counts its own rows, and a batch of
  stream rows counts the rows the deduplication kept (``store.streams``).
* **No waiting between writers.** The key holds the journal, so the sinks writing into one
  schema (``serve --workers``, several instances) never touch each other's rows.
* **Cheap to know.** The encoder notes each row's second and level as it encodes it, and
  the journal writer takes their tally when it seals a block (``RowEncoder.take_tally``:
  ~0.25 µs a record in all, 2 % of the service's CPU per record, measured) and keeps it here
  until the block is stored (``BlockTallies``); a batch
  of whole blocks sums them. A block without a tally (read back after a restart, trimmed
  to a position inside it) is counted from its rows by ``count_rows`` (~1 µs a row).
* **Bounded.** At most ``LEVELS`` rows a bucket and journal, whatever the levels sent; at
  most ``BlockTallies.MAX_BLOCKS`` tallies kept (the rest are counted from their rows).

The level classes are the histogram's columns: 0 DEBUG (``levelno`` <= 10, or none), 1 INFO
(<= 20), 2 WARNING (<= 30), 3 ERROR (<= 40), 4 CRITICAL (above).

Rows stored before the table existed are not counted in it: ``meta.counts_since`` is the
time from which it holds every stored row (the console counts older buckets from
``records``). Retention deletes a day's counts with the day's partition.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from typing import Protocol

from logsvc.store.schema import check_identifier

BUCKET_S = 5
LEVELS = 5
# The encoder's tally: (the created second as "YYYY-MM-DD HH:MM:SS", levelno as the row has
# it: an int, None, or the COPY text of the slow path) -> rows.
Tally = dict[tuple[str, object], int]
# (bucket start in seconds since the epoch, level class) -> rows.
Counts = dict[tuple[int, int], int]
_NULL = b"\\N"
_EPOCH = _dt.datetime(1970, 1, 1)


def level_class(levelno: int | None) -> int:
    """The histogram column of a ``levelno``: 0 DEBUG (and none) .. 4 CRITICAL."""
    if levelno is None or levelno <= 10:
        return 0
    return min(LEVELS - 1, (levelno - 1) // 10)


def _bucket(second: str | bytes) -> int:
    """The bucket start of a ``YYYY-MM-DD HH:MM:SS`` prefix, in seconds since the epoch."""
    text = second.decode("ascii") if isinstance(second, bytes) else second
    t = _dt.datetime(
        int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), int(text[17:19])
    )
    sec = (t - _EPOCH) // _dt.timedelta(seconds=1)
    return sec - sec % BUCKET_S


def _level(v: object) -> int:
    if v is None or v == "\\N" or v == _NULL:
        return 0
    if isinstance(v, int):
        return level_class(v)
    if isinstance(v, str | bytes):
        return level_class(int(v))
    raise TypeError(f"not a levelno: {v!r}")


def from_tally(tally: Tally, into: Counts | None = None) -> Counts:
    """Add the encoder's ``tally`` to ``into`` (a new ``Counts`` if None) and return it."""
    out: Counts = {} if into is None else into
    buckets: dict[str, int] = {}
    for (second, levelno), n in tally.items():
        b = buckets.get(second)
        if b is None:
            b = buckets[second] = _bucket(second)
        key = (b, _level(levelno))
        out[key] = out.get(key, 0) + n
    return out


def count_rows(chunks: Iterable[bytes], into: Counts | None = None) -> Counts:
    """Count COPY text rows (any layout: each starts ``seq, created, received, levelno``)."""
    tally: dict[tuple[bytes, bytes], int] = {}
    get = tally.get
    for chunk in chunks:
        for row in chunk.split(b"\n"):
            if row:
                f = row.split(b"\t", 4)
                key = (f[1][:19], f[3])
                tally[key] = get(key, 0) + 1
    out: Counts = {} if into is None else into
    for (second, levelno), n in tally.items():
        key2 = (_bucket(second), _level(levelno))
        out[key2] = out.get(key2, 0) + n
    return out


def upsert_sql(schema: str, journal_id: str, counts: Counts) -> str:
    """The statement adding ``counts`` to ``counts`` for ``journal_id`` ("" when there are none)."""
    if not counts:
        return ""
    s = check_identifier(schema)
    jid = journal_id.replace("-", "")
    if len(jid) != 32 or any(c not in "0123456789abcdef" for c in jid):
        raise ValueError(f"not a journal id: {journal_id!r}")
    values = ", ".join(f"(to_timestamp({b}), '{jid}', {lvl}, {n})" for (b, lvl), n in sorted(counts.items()))
    return (
        f"INSERT INTO {s}.counts AS c (bucket, journal, level, n) VALUES {values} "
        "ON CONFLICT (bucket, journal, level) DO UPDATE SET n = c.n + excluded.n; "
    )


class _Shipped(Protocol):
    @property
    def first_seq(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def payload(self) -> bytes: ...


class BlockTallies:
    """The tallies of blocks appended by this process and not yet stored, by first seq."""

    MAX_BLOCKS = 100_000

    def __init__(self) -> None:
        # first seq -> (rows, tally, holds stream rows), in seq order
        self._by_seq: dict[int, tuple[int, Tally, bool]] = {}
        self.counted_from_rows = 0  # rows counted by parsing, for tests and figures

    def __len__(self) -> int:
        return len(self._by_seq)

    def put(self, first_seq: int, count: int, tally: Tally, *, streams: bool = False) -> None:
        if len(self._by_seq) < self.MAX_BLOCKS:
            self._by_seq[first_seq] = (count, tally, streams)

    def without_streams(self, blocks: Sequence[_Shipped]) -> bool:
        """True if every block is known to hold no stream rows (appended by this process).

        The sink need not search such a batch for rows of the acknowledged protocol's
        streams (a pass over every byte of it); a block read back after a restart is unknown.
        """
        by = self._by_seq
        for b in blocks:
            kept = by.get(b.first_seq)
            if kept is None or kept[0] != b.count or kept[2]:
                return False
        return True

    def counts(self, blocks: Sequence[_Shipped]) -> Counts:
        """The counts of ``blocks``: from their tallies, or from their rows when there is none."""
        out: Counts = {}
        for b in blocks:
            kept = self._by_seq.get(b.first_seq)
            if kept is not None and kept[0] == b.count:
                from_tally(kept[1], out)
            else:
                self.counted_from_rows += b.count
                count_rows((b.payload,), out)
        return out

    def forget(self, to_seq: int) -> None:
        """Drop the tallies of blocks wholly at or below ``to_seq`` (stored, or skipped)."""
        by = self._by_seq
        while by:
            first = next(iter(by))
            if first + by[first][0] - 1 > to_seq:
                return
            del by[first]
