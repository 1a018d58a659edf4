"""Exactly once per stream in PostgreSQL: a batch leaves out the stream rows already stored.

Records of the acknowledged protocol (docs/protocol.md) carry their client's stream id and
the client's seq for them (``records.stream``, ``records.stream_seq``). A client resends what
was not acknowledged, possibly to another logsvc instance, so the same ``(stream, seq)`` can
reach PostgreSQL in two journals, or twice in one. The table ``streams (id, seqs)`` holds,
per stream, the set of seqs stored so far as an ``int8multirange``; a batch holding stream
rows runs as one explicit transaction::

    BEGIN;
    INSERT INTO streams (id) VALUES (...) ON CONFLICT DO NOTHING;   -- in id order
    SELECT id, seqs FROM streams WHERE id IN (...) ORDER BY id FOR UPDATE;
        -- here: leave out every row whose seq is in seqs (or twice in this batch)
    UPDATE streams SET seqs = <seqs + the rows kept> ...;
    SELECT advance_shipped(...); SET LOCAL ...; NOTIFY ...; COPY records FROM STDIN;
    COMMIT;

Two instances shipping the same stream serialise on the row lock, and the second sees what
the first committed (READ COMMITTED re-reads a locked row after the wait). A set and not a
high-water mark: instance A may hold a stream's seqs 1..50 and B 51..100, and B may commit
first. Consecutive seqs merge into one range, so a stream's set is one range in the normal
case; it is capped at ``MAX_RANGES`` by filling the oldest gaps (docs/protocol.md says what
that means). Plain rows (no stream) pass through untouched, and a batch without stream rows
never comes here: ``has_stream_rows`` tells, at memmem speed.

The pure part (parsing rows and ranges, SQL text) is separate from ``copy_dedup``, the
generator the sink drives on its non-blocking connection (``store.pgproto``).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from psycopg import pq

from logsvc.errors import StoreError
from logsvc.store import pgproto
from logsvc.store.copyfmt import PLAIN_ROW_END, stream_of
from logsvc.store.schema import check_identifier

# A stream's stored seqs are at most this many ranges; past it the oldest gaps are filled.
MAX_RANGES = 64

Range = tuple[int, int]  # [lo, hi): hi exclusive, as int8multirange prints them
_HEX = re.compile(rb"[0-9a-f]{32}")
_RANGE = re.compile(r"\[(\d+),(\d+)\)")


def has_stream_rows(chunk: bytes) -> bool:
    """True if any row of ``chunk`` (whole layout-2 rows) belongs to a stream."""
    return chunk.count(PLAIN_ROW_END) != chunk.count(b"\n")


def parse_ranges(text: str) -> list[Range]:
    """``'{[1,51),[60,101)}'`` (an int8multirange as text) -> ``[(1, 51), (60, 101)]``."""
    return [(int(lo), int(hi)) for lo, hi in _RANGE.findall(text)]


def format_ranges(ranges: Sequence[Range]) -> str:
    return "{" + ",".join(f"[{lo},{hi})" for lo, hi in ranges) + "}"


def contains(ranges: Sequence[Range], seq: int) -> bool:
    i = bisect_right(ranges, (seq, 1 << 64)) - 1
    return i >= 0 and ranges[i][0] <= seq < ranges[i][1]


def add_seqs(ranges: Sequence[Range], seqs: Iterable[int], max_ranges: int = MAX_RANGES) -> list[Range]:
    """``ranges`` with ``seqs`` added, merged, and at most ``max_ranges`` long."""
    merged: list[Range] = []
    for lo, hi in sorted([*ranges, *((s, s + 1) for s in seqs)]):
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    if len(merged) > max_ranges:
        # Fill the oldest gaps: one range from the first start to the end of the range that
        # leaves max_ranges in all.
        cut = len(merged) - max_ranges
        merged[: cut + 1] = [(merged[0][0], merged[cut][1])]
    return merged


@dataclass(slots=True)
class Dedup:
    """What one batch keeps: its rows without the duplicates, and each stream's new set."""

    kept: list[bytes] = field(default_factory=list)
    duplicates: int = 0
    ranges: dict[bytes, list[Range]] = field(default_factory=dict)


def split_rows(chunks: Iterable[bytes]) -> list[bytes]:
    """Every row of ``chunks`` (each whole rows), with its b"\\n"."""
    rows: list[bytes] = []
    for chunk in chunks:
        parts = chunk.split(b"\n")
        rows.extend(r + b"\n" for r in parts[:-1])
    return rows


def stream_ids(rows: Iterable[bytes]) -> list[bytes]:
    """The distinct stream ids of ``rows``, sorted (the lock order).

    Raises:
        StoreError: reason ``"rows"`` for a stream id that is not 32 hex digits (a journal row
            this release did not write): never quoted into SQL.
    """
    ids: set[bytes] = set()
    for row in rows:
        sp = stream_of(row)
        if sp is not None:
            ids.add(sp[0])
    for sid in ids:
        if not _HEX.fullmatch(sid):
            raise StoreError(f"a journal row names stream {sid[:40]!r}, which is no stream id", reason="rows")
    return sorted(ids)


def lock_sql(schema: str, ids: Sequence[bytes]) -> str:
    """Open the transaction, create missing stream rows, lock and read them in id order."""
    s = check_identifier(schema)
    values = ", ".join(f"('{sid.decode()}')" for sid in ids)
    inlist = ", ".join(f"'{sid.decode()}'" for sid in ids)
    return (
        f"BEGIN; INSERT INTO {s}.streams (id) VALUES {values} ON CONFLICT (id) DO NOTHING; "
        f"SELECT replace(id::text, '-', ''), seqs::text FROM {s}.streams "
        f"WHERE id IN ({inlist}) ORDER BY id FOR UPDATE"
    )


def dedup(rows: Sequence[bytes], stored: dict[bytes, list[Range]]) -> Dedup:
    """Leave out the rows whose ``(stream, seq)`` is stored or came earlier in ``rows``."""
    out = Dedup()
    new: dict[bytes, list[int]] = {}
    seen: dict[bytes, set[int]] = {}
    for row in rows:
        sp = stream_of(row)
        if sp is None:
            out.kept.append(row)
            continue
        sid, seq = sp
        have = seen.setdefault(sid, set())
        if seq in have or contains(stored.get(sid, ()), seq):
            out.duplicates += 1
            continue
        have.add(seq)
        new.setdefault(sid, []).append(seq)
        out.kept.append(row)
    for sid, seqs in new.items():
        out.ranges[sid] = add_seqs(stored.get(sid, []), seqs)
    return out


def update_sql(schema: str, ranges: dict[bytes, list[Range]]) -> str:
    """The statement storing each stream's new set (ids already checked by ``stream_ids``)."""
    if not ranges:
        return ""
    s = check_identifier(schema)
    values = ", ".join(
        f"('{sid.decode()}'::uuid, '{format_ranges(r)}'::int8multirange)" for sid, r in ranges.items()
    )
    return (
        f"UPDATE {s}.streams AS t SET seqs = v.seqs, updated = now() "
        f"FROM (VALUES {values}) AS v(id, seqs) WHERE t.id = v.id; "
    )


def copy_dedup(
    pgconn: pq.abc.PGconn,
    schema: str,
    batch_sql: Callable[[Sequence[bytes] | None], str],
    chunks: Sequence[bytes],
) -> pgproto.PgGen[tuple[int, int]]:
    """Ship ``chunks`` (rows with stream rows among them) once per ``(stream, seq)``.

    ``batch_sql(kept)`` gives ``schema.batch_sql(...)`` for the rows kept (``kept`` is None
    when every row is kept): it moves the journal position, counts the rows and ends in the
    COPY. Everything is one transaction, committed here. Returns ``(rows stored, duplicates
    left out)``. On any error the transaction is rolled back (when the connection still
    stands) and the error propagates, so the sink can classify it as for a plain batch.
    """
    rows = split_rows(chunks)
    ids = stream_ids(rows)
    results = yield from pgproto.execute(pgconn, lock_sql(schema, ids))
    try:
        res = results[-1]
        stored: dict[bytes, list[Range]] = {}
        for i in range(res.ntuples):
            sid, text = res.get_value(i, 0), res.get_value(i, 1)
            if sid is not None and text is not None:
                stored[bytes(sid)] = parse_ranges(bytes(text).decode())
        d = dedup(rows, stored)
        sql = batch_sql(d.kept if d.duplicates else None)
        yield from pgproto.copy_in(pgconn, update_sql(schema, d.ranges) + sql, [b"".join(d.kept)])
        yield from pgproto.execute(pgconn, "COMMIT")
    except GeneratorExit:
        raise
    except BaseException:
        if pgconn.status == pq.ConnStatus.OK and pgconn.transaction_status != pq.TransactionStatus.IDLE:
            try:
                yield from pgproto.execute(pgconn, "ROLLBACK")
            except Exception:
                pass  # the first error is the one to report; the sink reconnects if need be
        raise
    return len(d.kept), d.duplicates
