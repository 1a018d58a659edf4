"""The journal's block format: encode one block, and scan a run of blocks back out of bytes.

This module is pure. It never imports ``os``, ``socket``, ``select``, ``time`` or ``psycopg``:
input is bytes, output is values or a typed error. Files, rotation and fsync live in
``segment.py`` (the psycopg split between a ``Formatter`` and a ``Writer``).

Theory of operation
===================

A segment file is nothing but blocks laid end to end. One block holds ``count`` records whose
sequence numbers are ``first_seq .. first_seq + count - 1``; its payload is those records
already encoded as PostgreSQL COPY text rows, so the shipper hands the payload to COPY as is and
every record is encoded exactly once (STYLE.md convention 10)::

    offset  size  field        meaning
    ------  ----  -----------  ------------------------------------------------------------
         0     4  magic        b"LSJ1": where a block starts; the anchor we resync on
         4     4  payload_len  u32, bytes of payload that follow the header (<= MAX_BLOCK_PAYLOAD)
         8     8  first_seq    u64, seq of the first record in the block (>= 1)
        16     4  count        u32, records (= rows = b"\\n" bytes) in the payload (>= 1)
        20     4  crc          u32, zlib.crc32 of bytes 4..20 (the three fields above) + payload
        24     n  payload      ``count`` COPY text rows, each ending in b"\\n"

All integers are big-endian. The CRC covers the length, the seqs and the payload, so a block
whose CRC checks out is believed entirely; a block whose CRC fails is believed in nothing (not
even its length: we never trust an unchecked length to skip ahead, we resync instead).

The layout is vector's ``disk_v2`` record (``lib/vector-buffers/src/variants/disk_v2/mod.rs``
L26-43: length, checksum, monotonic id, payload) with two changes: one header per *batch* of
records rather than per record (our records are small and arrive in batches), and a magic
number, because disk_v2 can fall back on its ledger to find its place and we have only the
bytes.

Scanning
--------

``scan`` walks blocks from the start of a buffer. The walk meets one of three things:

* a good block: magic, sane fields, CRC ok, and ``first_seq`` not below the next expected seq.
  It is recorded and the walk moves past it.
* damage, with a good block somewhere after it. We *resync*: look for the next ``b"LSJ1"``
  whose whole block is present, whose CRC checks out and whose ``first_seq`` is at least the
  next expected seq (so an old block can never be "found" behind a newer one). The bytes in
  between are a ``BadRange``; the records lost there are the gap in seqs it leaves.
* damage with nothing good after it: the tail. If it looks like a write that never finished
  (a prefix of a header, a header whose declared block runs past the end of the data, or only
  zero bytes, which is what some filesystems leave after a crash extends a file), it is a
  *torn tail*: normal after a crash, and the caller truncates it. Anything else (say a
  complete block whose CRC fails: a flipped bit) is corruption and becomes a trailing
  ``BadRange``. Its ``records_lost`` comes from its own header when that header is plausible
  (right magic, the expected ``first_seq``, declared end exactly at the end of the data), else 0:
  the caller may know better from what follows (the next segment's name).

``scan`` never raises for any input: it is run on whatever a disk gives back.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from logsvc.errors import JournalCorrupt

MAGIC = b"LSJ1"

_HEADER = struct.Struct(">4sIQII")
_FIELDS = struct.Struct(">IQI")  # the part of the header after the magic that the CRC covers
HEADER_SIZE = _HEADER.size  # 24
_CRC_OFFSET = 20

# One block is written with one writev and verified in one piece, so it must fit in memory
# twice over comfortably. 64 MiB is the segment size too: a block that big gets a segment to
# itself. (vector disk_v2 caps a record at 8 MiB, its default max_record_size; our blocks are
# batches, hence larger.) It also keeps a corrupt length from making us allocate gigabytes.
MAX_BLOCK_PAYLOAD = 64 << 20

MAX_SEQ = (1 << 64) - 1  # first_seq is a u64; the last record of a block must fit as well

# The column layout of the COPY rows in a payload (``store/copyfmt.py`` ``COLUMNS``). Blocks
# written before the layout had a number are layout 1. The default is the layout this release
# writes; it moves up whenever ``COLUMNS`` changes, and the shipper picks the column list by it.
ROW_FORMAT_V1 = 1
ROW_FORMAT_DEFAULT = ROW_FORMAT_V1

_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_pack_fields = _FIELDS.pack
_crc32 = zlib.crc32  # vector uses CRC32C; we use CRC-32 because the stdlib has it at C speed.


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """Where one good block sits and what it holds (its payload is not copied)."""

    offset: int  # absolute offset of the block's magic
    first_seq: int
    count: int
    payload_len: int

    @property
    def end(self) -> int:
        """Absolute offset just past the block."""
        return self.offset + HEADER_SIZE + self.payload_len

    @property
    def next_seq(self) -> int:
        """Seq of the record after the last one in this block."""
        return self.first_seq + self.count

    @property
    def payload_offset(self) -> int:
        return self.offset + HEADER_SIZE


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


def encode_header(first_seq: int, count: int, payload: bytes) -> bytes:
    """Return the 24-byte header for a block, so the caller can ``writev([header, payload])``.

    Args:
        first_seq: seq of the first record in the payload, >= 1.
        count: number of records; the payload must be exactly ``count`` rows ending in b"\\n".
        payload: the rows.

    Returns:
        The header bytes (the payload is not copied).

    Raises:
        ValueError: a field is out of range or the payload is not ``count`` whole rows.
    """
    n = len(payload)
    if not 0 < n <= MAX_BLOCK_PAYLOAD:
        raise ValueError(f"block payload must be 1..{MAX_BLOCK_PAYLOAD} bytes, got {n}")
    if count < 1 or first_seq < 1 or first_seq + count - 1 > MAX_SEQ:
        raise ValueError(f"bad block seqs: first_seq={first_seq} count={count}")
    # The reader trims blocks by splitting on b"\n", so this must hold; memchr speed, cheap.
    if payload[-1] != 0x0A or payload.count(b"\n") != count:
        raise ValueError(f"payload is not {count} rows each ending in b'\\n'")
    fields = _pack_fields(n, first_seq, count)
    crc = _crc32(payload, _crc32(fields))
    return _pack_header(MAGIC, n, first_seq, count, crc)


def encode_block(first_seq: int, count: int, payload: bytes) -> bytes:
    """Return header + payload as one bytes object. See ``encode_header``."""
    return encode_header(first_seq, count, payload) + payload


def decode_block(data: bytes | bytearray | memoryview) -> tuple[int, int, memoryview]:
    """Check one complete block (header + payload, nothing after) and return its contents.

    Args:
        data: exactly one block.

    Returns:
        ``(first_seq, count, payload)``; the payload is a view into ``data``.

    Raises:
        JournalCorrupt: see ``check_block``.
    """
    mv = memoryview(data)
    first_seq, count = check_block(mv[:HEADER_SIZE], mv[HEADER_SIZE:])
    return first_seq, count, mv[HEADER_SIZE:]


def check_block(
    header: bytes | bytearray | memoryview, payload: bytes | bytearray | memoryview
) -> tuple[int, int]:
    """Check a block read back in two pieces (so the payload is never copied to split it off).

    Args:
        header: the block's ``HEADER_SIZE`` header bytes.
        payload: the bytes that followed it, exactly as many as the header says.

    Returns:
        ``(first_seq, count)``.

    Raises:
        JournalCorrupt: reason ``"torn"`` if either piece is shorter than the header says,
            ``"framing"`` for a bad magic or impossible fields, ``"checksum"`` for a CRC mismatch.
    """
    if len(header) != HEADER_SIZE:
        raise JournalCorrupt(f"block header is {len(header)} bytes, not {HEADER_SIZE}", reason="torn")
    magic, n, first_seq, count, crc = _unpack_header(header, 0)
    if magic != MAGIC or not _sane(n, first_seq, count):
        raise JournalCorrupt("bad block header", reason="framing")
    if len(payload) != n:
        reason = "torn" if len(payload) < n else "framing"
        raise JournalCorrupt(f"block payload is {len(payload)} bytes, header says {n}", reason=reason)
    if _crc32(payload, _crc32(memoryview(header)[4:_CRC_OFFSET])) != crc:
        raise JournalCorrupt(f"checksum mismatch in block at seq {first_seq}", reason="checksum")
    return int(first_seq), int(count)


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
        data: the bytes of a segment (or any run of blocks). A memoryview is copied once.
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


# --- private helpers ---------------------------------------------------------------------------


def _sane(n: int, first_seq: int, count: int) -> bool:
    # count <= n: every row is at least its b"\n".
    return (
        0 < n <= MAX_BLOCK_PAYLOAD and 0 < count <= n and 0 < first_seq and first_seq + count - 1 <= MAX_SEQ
    )


def _shift(info: BlockInfo, base_offset: int) -> BlockInfo:
    if not base_offset:
        return info
    return BlockInfo(info.offset + base_offset, info.first_seq, info.count, info.payload_len)


def _block_at(raw: bytes, pos: int, expected: int | None) -> tuple[BlockInfo | None, str]:
    # Returns (block, "") for a good block at pos (offset NOT shifted), else (None, reason).
    if len(raw) - pos < HEADER_SIZE:
        return None, "framing"
    magic, n, first_seq, count, crc = _unpack_header(raw, pos)
    if magic != MAGIC or not _sane(n, first_seq, count):
        return None, "framing"
    end = pos + HEADER_SIZE + n
    if end > len(raw):
        return None, "framing"
    mv = memoryview(raw)
    if _crc32(mv[pos + HEADER_SIZE : end], _crc32(mv[pos + 4 : pos + _CRC_OFFSET])) != crc:
        return None, "checksum"
    if expected is not None and first_seq < expected:
        return None, "sequence"
    return BlockInfo(pos, first_seq, count, n), ""


def _resync(raw: bytes, start: int, expected: int | None) -> BlockInfo | None:
    # Next magic from `start` that begins a wholly good block. Cheap header checks reject most
    # false magics (a log line may well contain "LSJ1") before any CRC is computed.
    find = raw.find
    pos = find(MAGIC, start)
    while pos >= 0:
        info, _ = _block_at(raw, pos, expected)
        if info is not None:
            return info
        pos = find(MAGIC, pos + 1)
    return None


def _looks_torn(raw: bytes, pos: int) -> bool:
    left = len(raw) - pos
    if raw.count(b"\x00", pos) == left:
        return True  # zero fill after a crash extended the file (seen on XFS and ext4)
    if left < HEADER_SIZE:
        head = raw[pos : pos + 4]
        return MAGIC.startswith(head)
    magic, n, first_seq, count, _ = _unpack_header(raw, pos)
    return magic == MAGIC and _sane(n, first_seq, count) and pos + HEADER_SIZE + n > len(raw)


def _tail_estimate(raw: bytes, pos: int, expected: int | None) -> int:
    # Records lost in a trailing corrupt block, from its own (unverified) header, only when
    # everything else about that header fits.
    if expected is None or len(raw) - pos < HEADER_SIZE:
        return 0
    magic, n, first_seq, count, _ = _unpack_header(raw, pos)
    if (
        magic == MAGIC
        and _sane(n, first_seq, count)
        and first_seq == expected
        and pos + HEADER_SIZE + n == len(raw)
    ):
        return int(count)
    return 0
