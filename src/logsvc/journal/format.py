"""The journal's block format: encode one block, and scan a run of blocks back out of bytes.

This module is pure. It never imports ``os``, ``socket``, ``select``, ``time`` or ``psycopg``:
input is bytes, output is values or a typed error. Files, rotation and fsync live in
``segment.py`` (the psycopg split between a ``Formatter`` and a ``Writer``).

Theory of operation
===================

A segment file is nothing but blocks laid end to end. One block holds ``count`` records whose
sequence numbers are ``first_seq .. first_seq + count - 1``; its payload is those records
already encoded as PostgreSQL COPY text rows, so the shipper hands the payload to COPY as is and
every record is encoded exactly once (STYLE.md convention 10). Blocks are written in the
current layout, ``LSJ2``::

    offset  size  field        meaning
    ------  ----  -----------  ------------------------------------------------------------
         0     4  magic        b"LSJ2": where a block starts; the anchor we resync on
         4     4  payload_len  u32, bytes of payload that follow the header (<= MAX_BLOCK_PAYLOAD)
         8     8  first_seq    u64, seq of the first record in the block (>= 1)
        16     4  count        u32, records (= rows = b"\\n" bytes) in the payload (>= 1)
        20     2  row_format   u16, the column layout of the rows (>= 1; ROW_FORMAT_*)
        22     2  flags        u16, 0; a block with any flag set is not one we can read
        24     4  crc          u32, zlib.crc32 of bytes 4..24 (the five fields above) + payload
        28     n  payload      ``count`` COPY text rows, each ending in b"\\n"

The previous release wrote ``LSJ1``, which is the same without ``row_format`` and ``flags``
(24 bytes: magic, payload_len, first_seq, count, crc over bytes 4..20 + payload). Those blocks
are still scanned, recovered, read and shipped, and their rows are layout 1, the one that
release wrote: ``row_format`` is what the shipper needs to name the COPY columns, and an
upgrade can find a backlog written in the old layout. In both layouts the CRC is the header's
last four bytes and covers everything between the magic and itself, plus the payload.

All integers are big-endian. The CRC covers the length, the seqs, the row format and the
payload, so a block whose CRC checks out is believed entirely; a block whose CRC fails is
believed in nothing (not even its length: we never trust an unchecked length to skip ahead,
we resync instead).

Why this layout: ``row_format`` goes inside the CRC, so a flipped bit can never ship rows
under the wrong column list; it is explicit in every block, not implied by the segment or a
side file, because one segment holds blocks of both layouts after an upgrade and a block must
be readable alone (resync lands on any block). A new magic rather than a flag in a spare
field: ``LSJ1`` has no spare field, and the magic is what tells a reader which header follows.
``flags`` is reserved so the next change (say, compressed payloads) needs no third magic; a
release that does not know a flag refuses the block rather than misreading it. We considered
a separate header CRC (it would let a reader trust a damaged block's length and count), but
resync already finds the next good block and the seq gap already counts what was lost, so
one CRC per block stays enough.

The layout is vector's ``disk_v2`` record (``lib/vector-buffers/src/variants/disk_v2/mod.rs``
L26-43: length, checksum, monotonic id, payload) with two changes: one header per *batch* of
records rather than per record (our records are small and arrive in batches), and a magic
number, because disk_v2 can fall back on its ledger to find its place and we have only the
bytes.

Scanning
--------

``scan`` walks blocks from the start of a buffer, whichever layout each one has. The walk
meets one of three things:

* a good block: a magic, sane fields, CRC ok, and ``first_seq`` not below the next expected
  seq. It is recorded and the walk moves past it.
* damage, with a good block somewhere after it. We *resync*: look for the next ``b"LSJ1"`` or
  ``b"LSJ2"`` whose whole block is present, whose CRC checks out and whose ``first_seq`` is at
  least the next expected seq (so an old block can never be "found" behind a newer one). The
  bytes in between are a ``BadRange``; the records lost there are the gap in seqs it leaves.
* damage with nothing good after it: the tail. If it looks like a write that never finished
  (a prefix of a header, a header whose declared block runs past the end of the data, or only
  zero bytes, which is what some filesystems leave after a crash extends a file), it is a
  *torn tail*: normal after a crash, and the caller truncates it. Anything else (say a
  complete block whose CRC fails: a flipped bit) is corruption and becomes a trailing
  ``BadRange``. Its ``records_lost`` comes from its own header when that header is plausible
  (a magic, the expected ``first_seq``, declared end exactly at the end of the data), else 0:
  the caller may know better from what follows (the next segment's name).

``scan`` never raises for any input: it is run on whatever a disk gives back.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TypeAlias

from logsvc.errors import JournalCorrupt

MAGIC_V1 = b"LSJ1"
MAGIC_V2 = b"LSJ2"
MAGIC = MAGIC_V2  # what blocks are written with
_MAGIC_PREFIX = b"LSJ"  # what resync looks for; the fourth byte picks the layout

_HEADER_V1 = struct.Struct(">4sIQII")
_HEADER_V2 = struct.Struct(">4sIQIHHI")
_FIELDS_V1 = struct.Struct(">IQI")  # what the CRC covers of each header (after the magic)
_FIELDS_V2 = struct.Struct(">IQIHH")
HEADER_SIZE_V1 = _HEADER_V1.size  # 24
HEADER_SIZE_V2 = _HEADER_V2.size  # 28
HEADER_SIZE = HEADER_SIZE_V2  # the header of blocks written now
MAX_HEADER_SIZE = HEADER_SIZE_V2
_HEADER_SIZES = {MAGIC_V1: HEADER_SIZE_V1, MAGIC_V2: HEADER_SIZE_V2}

# One block is written with one writev and verified in one piece, so it must fit in memory
# twice over comfortably. 64 MiB is the segment size too: a block that big gets a segment to
# itself. (vector disk_v2 caps a record at 8 MiB, its default max_record_size; our blocks are
# batches, hence larger.) It also keeps a corrupt length from making us allocate gigabytes.
MAX_BLOCK_PAYLOAD = 64 << 20

MAX_SEQ = (1 << 64) - 1  # first_seq is a u64; the last record of a block must fit as well

# The column layout of the COPY rows in a payload (``store/copyfmt.py`` ``COLUMNS``). Blocks
# written before the layout had a number (``LSJ1``) are layout 1. The default is the layout
# this release writes; it moves up whenever ``COLUMNS`` changes, and the shipper picks the
# column list by each block's ``row_format``. The journal only carries the number (1..65535).
ROW_FORMAT_V1 = 1
ROW_FORMAT_V2 = 2  # + stream, stream_seq (the acknowledged protocol)
ROW_FORMAT_DEFAULT = ROW_FORMAT_V1  # what append() assumes unless told (callers name theirs)
MAX_ROW_FORMAT = 0xFFFF

_pack_v2 = _HEADER_V2.pack
_pack_v1 = _HEADER_V1.pack
_unpack_v2 = _HEADER_V2.unpack_from
_unpack_v1 = _HEADER_V1.unpack_from
_crc32 = zlib.crc32  # vector uses CRC32C; we use CRC-32 because the stdlib has it at C speed.


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """Where one good block sits and what it holds (its payload is not copied)."""

    offset: int  # absolute offset of the block's magic
    first_seq: int
    count: int
    payload_len: int
    row_format: int  # 1 for every LSJ1 block
    header_size: int  # HEADER_SIZE_V1 or HEADER_SIZE_V2

    @property
    def end(self) -> int:
        """Absolute offset just past the block."""
        return self.offset + self.header_size + self.payload_len

    @property
    def next_seq(self) -> int:
        """Seq of the record after the last one in this block."""
        return self.first_seq + self.count

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size


@dataclass(frozen=True, slots=True)
class BadRange:
    """Damaged bytes ``[start, end)`` (absolute offsets) that the scan skipped.

    ``reason`` describes the first bad block: ``"framing"`` (no magic, or impossible header
    fields), ``"checksum"`` (the CRC failed) or ``"sequence"`` (a good block that goes back in
    seq), the strings ``JournalCorrupt.reason`` uses too.
    """

    start: int
    end: int
    records_lost: int
    reason: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What ``scan`` found; all offsets are absolute (``base_offset`` added)."""

    blocks: list[BlockInfo]
    # Just past the last good block (``base_offset`` if none): a writer continues here once any
    # torn tail is cut off. Damage that nothing good follows always starts here.
    end: int
    # Damaged ranges in order, middle ones and possibly one trailing one (``start == end``).
    bad: list[BadRange]
    # Bytes after ``end`` that look like an unfinished write (0 if none).
    torn_tail_bytes: int
    # Seq after the last good block; ``expected_seq`` if there is none; None if neither is known.
    next_seq: int | None

    @property
    def clean_prefix_end(self) -> int:
        """Where the undamaged prefix ends: the start of the first bad range, else ``end``."""
        return self.bad[0].start if self.bad else self.end

    @property
    def records(self) -> int:
        return sum(b.count for b in self.blocks)

    @property
    def records_lost(self) -> int:
        return sum(r.records_lost for r in self.bad)


def encode_header(first_seq: int, count: int, payload: bytes, row_format: int = ROW_FORMAT_DEFAULT) -> bytes:
    """Return the 28-byte ``LSJ2`` header for a block, so the caller can ``writev([header, payload])``.

    Args:
        first_seq: seq of the first record in the payload, >= 1.
        count: number of records; the payload must be exactly ``count`` rows ending in b"\\n".
        payload: the rows.
        row_format: the column layout of the rows, 1..65535.

    Returns:
        The header bytes (the payload is not copied).

    Raises:
        ValueError: a field is out of range or the payload is not ``count`` whole rows.
    """
    n = _check_fields(first_seq, count, payload)
    if not 1 <= row_format <= MAX_ROW_FORMAT:
        raise ValueError(f"row format must be 1..{MAX_ROW_FORMAT}, got {row_format}")
    crc = _crc32(payload, _crc32(_FIELDS_V2.pack(n, first_seq, count, row_format, 0)))
    return _pack_v2(MAGIC_V2, n, first_seq, count, row_format, 0, crc)


def encode_block(first_seq: int, count: int, payload: bytes, row_format: int = ROW_FORMAT_DEFAULT) -> bytes:
    """Return header + payload as one bytes object. See ``encode_header``."""
    return encode_header(first_seq, count, payload, row_format) + payload


def encode_header_v1(first_seq: int, count: int, payload: bytes) -> bytes:
    """Return the 24-byte ``LSJ1`` header the previous release wrote (its rows are layout 1).

    The service never writes it; it is here for tests and tools that need a journal as that
    release left it. Arguments and errors as ``encode_header``.
    """
    n = _check_fields(first_seq, count, payload)
    crc = _crc32(payload, _crc32(_FIELDS_V1.pack(n, first_seq, count)))
    return _pack_v1(MAGIC_V1, n, first_seq, count, crc)


def encode_block_v1(first_seq: int, count: int, payload: bytes) -> bytes:
    """Return an ``LSJ1`` header + payload as one bytes object. See ``encode_header_v1``."""
    return encode_header_v1(first_seq, count, payload) + payload


def decode_block(data: bytes | bytearray | memoryview) -> tuple[int, int, int, memoryview]:
    """Check one complete block of either layout (header + payload, nothing after).

    Args:
        data: exactly one block.

    Returns:
        ``(first_seq, count, row_format, payload)``; the payload is a view into ``data``.

    Raises:
        JournalCorrupt: see ``check_block``.
    """
    mv = memoryview(data)
    size = _HEADER_SIZES.get(bytes(mv[:4]))
    if size is None:
        raise JournalCorrupt("bad block magic", reason="framing")
    first_seq, count, row_format = check_block(mv[:size], mv[size:])
    return first_seq, count, row_format, mv[size:]


def check_block(
    header: bytes | bytearray | memoryview, payload: bytes | bytearray | memoryview
) -> tuple[int, int, int]:
    """Check a block read back in two pieces (so the payload is never copied to split it off).

    Args:
        header: the block's header bytes (``HEADER_SIZE_V1`` or ``HEADER_SIZE_V2`` of them,
            as its magic says).
        payload: the bytes that followed it, exactly as many as the header says.

    Returns:
        ``(first_seq, count, row_format)``; ``row_format`` is 1 for an ``LSJ1`` block.

    Raises:
        JournalCorrupt: reason ``"torn"`` if either piece is shorter than the header says,
            ``"framing"`` for a bad magic or impossible fields, ``"checksum"`` for a CRC mismatch.
    """
    head = bytes(header)
    size = _HEADER_SIZES.get(head[:4])
    if size is None:
        raise JournalCorrupt("bad block magic", reason="framing")
    if len(head) != size:
        reason = "torn" if len(head) < size else "framing"
        raise JournalCorrupt(f"block header is {len(head)} bytes, not {size}", reason=reason)
    parsed = _parse(head, 0)
    assert parsed is not None
    _size, n, first_seq, count, row_format, flags, crc = parsed
    if not _sane(n, first_seq, count, row_format, flags):
        raise JournalCorrupt("bad block header", reason="framing")
    if len(payload) != n:
        reason = "torn" if len(payload) < n else "framing"
        raise JournalCorrupt(f"block payload is {len(payload)} bytes, header says {n}", reason=reason)
    if _crc32(payload, _crc32(head[4 : size - 4])) != crc:
        raise JournalCorrupt(f"checksum mismatch in block at seq {first_seq}", reason="checksum")
    return first_seq, count, row_format


def drop_rows(payload: bytes, rows: int) -> bytes:
    """Return ``payload`` without its first ``rows`` rows (each row ends in b"\\n").

    Raises:
        JournalCorrupt: reason ``"rows"`` if the payload has fewer rows than that.
    """
    pos = 0
    find = payload.find
    for _ in range(rows):
        nl = find(b"\n", pos)
        if nl < 0:
            raise JournalCorrupt(f"payload has fewer than {rows} rows", reason="rows")
        pos = nl + 1
    return payload[pos:]


def scan(
    data: bytes | bytearray | memoryview, base_offset: int = 0, expected_seq: int | None = None
) -> ScanResult:
    """Walk the blocks in ``data`` from its start; never raises. See the module docstring.

    Args:
        data: the bytes of a segment (or any run of blocks, of either layout). A memoryview
            is copied once.
        base_offset: added to every offset reported, if ``data`` does not start at 0.
        expected_seq: the seq the first block should carry (e.g. from the segment's name and
            the previous segment's end), or None if unknown. Blocks below it are rejected.

    Returns:
        A ``ScanResult``.
    """
    raw = data if isinstance(data, bytes) else bytes(data)
    size = len(raw)
    blocks: list[BlockInfo] = []
    bad: list[BadRange] = []
    torn = 0
    expected = expected_seq
    pos = 0
    while pos < size:
        info, reason = _block_at(raw, pos, expected)
        if info is not None:
            blocks.append(_shift(info, base_offset))
            expected = info.next_seq
            pos = info.end
            continue
        found = _resync(raw, pos + 1, expected)
        if found is not None:
            lost = found.first_seq - expected if expected is not None else 0
            bad.append(BadRange(base_offset + pos, base_offset + found.offset, lost, reason))
            blocks.append(_shift(found, base_offset))
            expected = found.next_seq
            pos = found.end
            continue
        # Nothing good after pos: this is the tail.
        if _looks_torn(raw, pos):
            torn = size - pos
        else:
            bad.append(
                BadRange(base_offset + pos, base_offset + size, _tail_estimate(raw, pos, expected), reason)
            )
        break
    end = blocks[-1].end if blocks else base_offset
    return ScanResult(blocks, end, bad, torn, expected)


def torn_block_count(data: bytes, offset: int, expected_seq: int) -> int:
    """Records the torn block at ``offset`` claimed, if its header is whole and plausible, else 0.

    For reporting what a torn tail took: the header is not checked (its CRC covers a payload
    that is not all there), only that its fields make sense and it starts at ``expected_seq``.
    """
    parsed = _parse(data, offset)
    if parsed is None:
        return 0
    _size, n, first_seq, count, row_format, flags, _crc = parsed
    if not _sane(n, first_seq, count, row_format, flags) or first_seq != expected_seq:
        return 0
    return count


# --- private helpers ---------------------------------------------------------------------------

# (header_size, payload_len, first_seq, count, row_format, flags, crc)
_Header: TypeAlias = tuple[int, int, int, int, int, int, int]


def _parse(raw: bytes, pos: int) -> _Header | None:
    # The header at pos in either layout, unchecked; None for no magic or too few bytes.
    magic = raw[pos : pos + 4]
    if magic == MAGIC_V2:
        if len(raw) - pos < HEADER_SIZE_V2:
            return None
        _, n, first_seq, count, row_format, flags, crc = _unpack_v2(raw, pos)
        return HEADER_SIZE_V2, n, first_seq, count, row_format, flags, crc
    if magic == MAGIC_V1:
        if len(raw) - pos < HEADER_SIZE_V1:
            return None
        _, n, first_seq, count, crc = _unpack_v1(raw, pos)
        return HEADER_SIZE_V1, n, first_seq, count, ROW_FORMAT_V1, 0, crc
    return None


def _check_fields(first_seq: int, count: int, payload: bytes) -> int:
    # Validate what both encoders write; returns the payload length.
    n = len(payload)
    if not 0 < n <= MAX_BLOCK_PAYLOAD:
        raise ValueError(f"block payload must be 1..{MAX_BLOCK_PAYLOAD} bytes, got {n}")
    if count < 1 or first_seq < 1 or first_seq + count - 1 > MAX_SEQ:
        raise ValueError(f"bad block seqs: first_seq={first_seq} count={count}")
    # The reader trims blocks by splitting on b"\n", so this must hold; memchr speed, cheap.
    if payload[-1] != 0x0A or payload.count(b"\n") != count:
        raise ValueError(f"payload is not {count} rows each ending in b'\\n'")
    return n


def _sane(n: int, first_seq: int, count: int, row_format: int, flags: int) -> bool:
    # count <= n: every row is at least its b"\n". A flag we do not know means a layout we
    # cannot read: refused like any impossible field.
    return (
        0 < n <= MAX_BLOCK_PAYLOAD
        and 0 < count <= n
        and 0 < first_seq
        and first_seq + count - 1 <= MAX_SEQ
        and row_format >= 1
        and flags == 0
    )


def _shift(info: BlockInfo, base_offset: int) -> BlockInfo:
    if not base_offset:
        return info
    return BlockInfo(
        info.offset + base_offset,
        info.first_seq,
        info.count,
        info.payload_len,
        info.row_format,
        info.header_size,
    )


def _block_at(raw: bytes, pos: int, expected: int | None) -> tuple[BlockInfo | None, str]:
    # Returns (block, "") for a good block at pos (offset NOT shifted), else (None, reason).
    parsed = _parse(raw, pos)
    if parsed is None:
        return None, "framing"
    size, n, first_seq, count, row_format, flags, crc = parsed
    if not _sane(n, first_seq, count, row_format, flags):
        return None, "framing"
    end = pos + size + n
    if end > len(raw):
        return None, "framing"
    mv = memoryview(raw)
    if _crc32(mv[pos + size : end], _crc32(mv[pos + 4 : pos + size - 4])) != crc:
        return None, "checksum"
    if expected is not None and first_seq < expected:
        return None, "sequence"
    return BlockInfo(pos, first_seq, count, n, row_format, size), ""


def _resync(raw: bytes, start: int, expected: int | None) -> BlockInfo | None:
    # Next magic (either layout) from `start` that begins a wholly good block. Cheap header
    # checks reject most false magics (a log line may well contain "LSJ1") before any CRC.
    find = raw.find
    pos = find(_MAGIC_PREFIX, start)
    while pos >= 0:
        info, _ = _block_at(raw, pos, expected)
        if info is not None:
            return info
        pos = find(_MAGIC_PREFIX, pos + 1)
    return None


def _looks_torn(raw: bytes, pos: int) -> bool:
    left = len(raw) - pos
    if raw.count(b"\x00", pos) == left:
        return True  # zero fill after a crash extended the file (seen on XFS and ext4)
    head = raw[pos : pos + 4]
    if left < 4:
        return MAGIC_V1.startswith(head) or MAGIC_V2.startswith(head)
    if head not in _HEADER_SIZES:
        return False
    parsed = _parse(raw, pos)
    if parsed is None:
        return True  # a magic and part of its header
    size, n, first_seq, count, row_format, flags, _ = parsed
    return _sane(n, first_seq, count, row_format, flags) and pos + size + n > len(raw)


def _tail_estimate(raw: bytes, pos: int, expected: int | None) -> int:
    # Records lost in a trailing corrupt block, from its own (unverified) header, only when
    # everything else about that header fits.
    if expected is None:
        return 0
    parsed = _parse(raw, pos)
    if parsed is None:
        return 0
    size, n, first_seq, count, row_format, flags, _ = parsed
    if _sane(n, first_seq, count, row_format, flags) and first_seq == expected and pos + size + n == len(raw):
        return count
    return 0
