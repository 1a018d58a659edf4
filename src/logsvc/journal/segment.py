"""The journal on disk: segment files, rotation, fsync policy, recovery, reads for shipping.

Every decoded batch of records is appended here before it is shipped to PostgreSQL; this is
the durability point and the replay source. The bytes of a block are defined in ``format.py``;
this module owns files and nothing else. It is single-threaded and starts nothing in the
background: the server calls ``sync()`` from its own timer.

Theory of operation
===================

::

    DIR/
      journal.id                   uuid4 hex, written once (tmp + rename + fsync), never changed
      seq.reserved                 decimal seq: no seq at or above it has been handed out
      00000000000000000001.seg     blocks for seqs 1 ..
      00000000000000004097.seg     blocks for seqs 4097 .. (name = first seq it holds)
      00000000000000009000.seg     the active segment: the only one appended to

* A segment is named after the first seq it holds, zero-padded to 20 digits (a u64 fits), so
  names sort in seq order. A segment is created when it is needed, *empty*, and its name alone
  then records ``next_seq``: after every older segment is released and the process restarts,
  the numbering still continues where it was (vector ``disk_v2`` keeps that in its ledger; we
  keep it in a file name, which a rename-free ``O_CREAT`` + directory fsync makes durable).
* Appends go to the last segment through one ``O_APPEND`` fd, one ``writev(header, payload)``
  per block. Before a block would push the segment past ``segment_bytes`` we rotate: fdatasync
  the old segment if it has unsynced data (or the interval timer, which only syncs the active
  segment, would never get to it), create the next one, fsync the directory.
* fsync policy, like Redis ``appendfsync`` and PostgreSQL's WAL writer: ``"always"``
  fdatasyncs after every append; ``"interval"`` leaves it to ``sync()``, which the server calls
  every second (a machine crash loses at most the last second; a process crash loses nothing:
  the data is in the page cache); ``"never"`` leaves it to the kernel.
* Recovery (``open``): every segment is scanned and every CRC checked. A torn tail of the LAST
  segment (an unfinished write) is truncated away. Damage elsewhere is reported and skipped, not
  truncated, since intact blocks may follow it; the records lost there are the gap in seqs.
  A corrupt (not torn) tail of the last segment is also left in place, and ``next_seq`` moves
  past the records its header claims if that header is plausible, so a seq that may already
  have been shipped is never handed out twice. What was found is returned as a
  ``RecoveryReport``; open only raises when it cannot proceed (directory in use, bad id).
* An in-memory index per segment (``array`` columns: first_seq, count, offset, payload_len,
  row_format, header size; 27 bytes a block) lets ``read`` find the block holding any seq by
  bisection and ``pread`` it; the CRC is checked again on every read, so corruption after the
  fact is never shipped. Such a block is dropped from the index, which makes its seqs a gap
  exactly like damage found at open, and ``read`` raises ``JournalCorrupt`` naming it (seqs,
  records lost, path, offset) once; the caller counts it and reads on past it.
* Blocks are written in the current layout (``LSJ2``, with ``row_format``); blocks of the
  previous release (``LSJ1``, layout 1) in the same or older segments are recovered and read
  as they are. ``read`` never returns blocks of two row formats at once.
* ``release(shipped_seq)`` deletes whole segments, oldest first, whose every record is shipped,
  never the active one. A deletion lost in a crash just brings back records already shipped,
  which the shipper skips, so no directory fsync is needed there.
* Seqs are never handed out twice, even when a crash takes a tail PostgreSQL already holds.
  With ``fsync="interval"`` or ``"never"`` a machine crash can lose the last blocks (or whole
  segments) after the shipper committed them; numbering resumed from what survived would
  give new records seqs PostgreSQL already has, and the shipper would skip them as shipped.
  So the journal logs ahead, as PostgreSQL's sequences do (``SEQ_LOG_VALS``,
  ``src/backend/commands/sequence.c``): ``seq.reserved`` holds a durable high-water mark, and
  no seq at or above it is handed out. An append that would cross it first raises it to
  ``block end + SEQ_RESERVE_STEP`` (tmp + fsync + rename + directory fsync, whatever the fsync
  policy). ``open`` continues from ``max(recovered next_seq, reservation)``; the jump, if
  any, is in the ``RecoveryReport``. The never-used seqs in between are a gap like the one a
  corrupt block leaves, which the shipper commits past. A clean ``close`` lowers the mark to
  ``next_seq`` (every seq handed out is below it, durable or not), so a clean restart leaves
  no gap; a crash of any kind leaves one of at most ``SEQ_RESERVE_STEP`` seqs.
* The directory is ``flock``-ed while open: two processes appending to one journal would
  interleave seqs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import uuid
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from logsvc.errors import JournalCorrupt, JournalSeqMismatch, LogsvcError
from logsvc.journal.format import (
    MAX_SEQ,
    ROW_FORMAT_DEFAULT,
    check_block,
    drop_rows,
    encode_header,
    scan,
    torn_block_count,
)

FSYNC_POLICIES = ("always", "interval", "never")

SEGMENT_SUFFIX = ".seg"
_NAME_DIGITS = 20  # 2**64 - 1 has 20 digits
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
ID_FILE = "journal.id"
RESERVED_FILE = "seq.reserved"

# How far ahead of the append that crosses it the reservation is raised. Each raise costs two
# fsyncs (file and directory), so this sets how often that happens: every 2**20 records,
# which is every 10 s at 100k records/s and still only once a second at ten times that. What
# it costs in turn is the gap a crash leaves, at most this many seqs never used; the seq is a
# u64, so 2**44 crashes would be needed to use it up, and the shipper crosses a gap of any
# size with one empty commit. (PostgreSQL logs 32 sequence values ahead, SEQ_LOG_VALS, but it
# pays one WAL record per 32 nextval() calls, not a file rewrite.)
SEQ_RESERVE_STEP = 1 << 20

DEFAULT_SEGMENT_BYTES = 64 << 20  # a segment is the unit of release; 64 MiB like MAX_BLOCK_PAYLOAD
DEFAULT_MAX_BYTES = 1 << 30  # backpressure threshold the server applies through ``over_limit``

# os.fdatasync is missing on macOS; fsync is the portable superset.
_fdatasync = getattr(os, "fdatasync", os.fsync)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class Block:
    """Records read back for shipping: ``count`` COPY rows for seqs ``first_seq ..``, in the
    column layout ``row_format`` (``ROW_FORMAT_*``; 1 for blocks of the previous release)."""

    first_seq: int
    count: int
    payload: bytes
    row_format: int

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.count


class CorruptRange(NamedTuple):
    """Damaged bytes ``[start, end)`` of one segment file, found and skipped at recovery."""

    path: Path
    start: int
    end: int
    records_lost: int


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What ``Journal.open`` found. The server logs it and counts ``records_lost``."""

    journal_id: str
    segments: int
    blocks: int
    records: int
    torn_tail_bytes_truncated: int
    corrupt: tuple[CorruptRange, ...]
    inconsistencies: tuple[str, ...]  # segment names that disagree with contents, stray files
    next_seq: int
    # Records in the torn block, when its header survived (0 if it did not: then unknown).
    torn_tail_records: int = 0
    # The reservation found in ``seq.reserved`` (0 if there was none: a new journal, or one
    # written by a release that kept none).
    seq_reserved: int = 0
    # How far ``next_seq`` was moved up to the reservation, past the seq recovered from the
    # segments: 0 after a clean close; after a crash, seqs that were or may have been handed
    # out and whose blocks are not on disk (any that PostgreSQL has are never reused).
    seq_jump: int = 0

    @property
    def records_lost(self) -> int:
        return sum(r.records_lost for r in self.corrupt)


class _Segment:
    __slots__ = (
        "base_seq",
        "counts",
        "fd",
        "formats",
        "hsizes",
        "lens",
        "offsets",
        "path",
        "records",
        "seqs",
        "size",
    )

    def __init__(self, path: Path, base_seq: int, size: int) -> None:
        self.path = path
        self.base_seq = base_seq  # from the name
        self.size = size
        self.fd: int | None = None
        # The block index, one column per field (a list of tuples costs ~5x the memory).
        self.seqs: array[int] = array("Q")
        self.counts: array[int] = array("I")
        self.offsets: array[int] = array("Q")
        self.lens: array[int] = array("I")
        self.formats: array[int] = array("H")  # row_format
        self.hsizes: array[int] = array("B")  # header size: which layout (LSJ1 or LSJ2)
        self.records = 0  # sum(counts), kept as blocks come and go

    @property
    def next_seq(self) -> int:
        """Seq after the last block here, or the name's seq if there is no block."""
        if self.seqs:
            return int(self.seqs[-1] + self.counts[-1])
        return self.base_seq

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first seq is ``first_seq``."""
    return f"{first_seq:0{_NAME_DIGITS}d}{SEGMENT_SUFFIX}"


class Journal:
    """An append-only, segmented, checksummed journal of record batches. See the module docstring.

    Args:
        directory: where the segments live; created if missing.
        segment_bytes: rotate before a segment would grow past this (one bigger block gets a
            segment of its own).
        fsync: ``"always"``, ``"interval"`` or ``"never"``.
        max_bytes: ``over_limit`` is true once the segments with unshipped records reach this.
        seq_reserve_step: how far past an append the seq reservation is raised when the
            append crosses it (``SEQ_RESERVE_STEP``; tests make it small).

    Raises:
        ValueError: an argument is out of range or ``fsync`` is not a known policy.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: str = "interval",
        max_bytes: int = DEFAULT_MAX_BYTES,
        seq_reserve_step: int = SEQ_RESERVE_STEP,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        if segment_bytes < 1 or max_bytes < 1 or seq_reserve_step < 0:
            raise ValueError("segment_bytes and max_bytes must be positive, seq_reserve_step not negative")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.seq_reserve_step = seq_reserve_step
        self.journal_id = ""
        self.next_seq = 0  # set by open()
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._dir_fd: int | None = None
        self._size = 0
        self._dirty = False
        # Durable: no seq >= this has been handed out (seq.reserved); 0 until one is written.
        self._reserved = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Create the directory if needed, lock it, recover every segment.

        Returns:
            A ``RecoveryReport``; damage found is reported there, not raised.

        Raises:
            LogsvcError: reason ``"journal_locked"`` if another process has the journal open.
            JournalCorrupt: reason ``"journal_id"`` if ``journal.id`` is unreadable, or missing
                while segments exist (a fresh id would make PostgreSQL re-ship everything).
            OSError: the directory or a file could not be read or written.
        """
        if self._dir_fd is not None:
            raise RuntimeError("journal is already open")
        self.directory.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(self.directory, os.O_RDONLY | _O_CLOEXEC)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(dir_fd)
            raise LogsvcError(
                f"journal {self.directory} is in use by another process", reason="journal_locked"
            ) from None
        self._dir_fd = dir_fd
        try:
            return self._recover()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Sync (unless ``fsync="never"``), lower the seq reservation to ``next_seq``, close every
        fd and unlock. Safe to call twice.
        """
        try:
            if self._active is not None and self._active.fd is not None and self.fsync != "never":
                self.sync()
            if self._active is not None and self._reserved > self.next_seq:
                # Every seq handed out is below next_seq, written to disk or not, so the mark
                # may come down to it: the next start then continues without a gap.
                try:
                    self._reserve(self.next_seq)
                except OSError:
                    pass  # the higher mark stands: a gap at the next start, nothing worse
        finally:
            for seg in self._segments:
                seg.close()
            self._segments = []
            self._active = None
            self._size = 0
            self._dirty = False
            if self._dir_fd is not None:
                os.close(self._dir_fd)  # also drops the flock
                self._dir_fd = None

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------------

    def append(
        self, payload: bytes, count: int, *, expected_first_seq: int, row_format: int = ROW_FORMAT_DEFAULT
    ) -> int:
        """Append one block of ``count`` records; they get seqs ``next_seq ..``.

        Args:
            payload: ``count`` COPY text rows, each ending in b"\\n".
            count: number of rows.
            expected_first_seq: the seq the caller stamped on the first row; it must equal
                ``next_seq`` (STYLE.md convention 18: checked where the two numbers meet).
            row_format: the column layout of the rows (``ROW_FORMAT_*``).

        Returns:
            The first seq of the block (``expected_first_seq``).

        Raises:
            JournalSeqMismatch: ``expected_first_seq != next_seq``; nothing was written.
            ValueError: the payload is empty, too big, or not ``count`` rows, or the row
                format is out of range (1..65535); nothing was written.
            OSError: the write, or the seq reservation it needed first, failed; the segment
                is cut back so no partial block remains and ``next_seq`` is unchanged. (With
                ``fsync="always"`` the fdatasync after a complete write can fail too: then the
                block is in the index and ``next_seq`` has moved past it.)
        """
        seg = self._active
        if seg is None:
            raise RuntimeError("journal is not open")
        first = self.next_seq
        if expected_first_seq != first:
            raise JournalSeqMismatch(
                f"append of {count} records stamped from seq {expected_first_seq}, "
                f"but the journal's next seq is {first}; nothing written",
                expected_first_seq=expected_first_seq,
                next_seq=first,
            )
        header = encode_header(first, count, payload, row_format)
        if first + count > self._reserved:
            # Before the block exists anywhere, so that no seq in it is above the durable mark.
            self._reserve(min(first + count + self.seq_reserve_step, MAX_SEQ + 1))
        total = len(header) + len(payload)
        if seg.size and seg.size + total > self.segment_bytes:
            seg = self._rotate(first)
        fd = seg.fd
        assert fd is not None
        offset = seg.size
        try:
            written = os.writev(fd, (header, payload))
            if written < total:
                # Short write (a signal, a quota): finish it, or the next block would land
                # after half of this one.
                rest = memoryview(header + payload)[written:]
                while rest:
                    n = os.write(fd, rest)
                    if n <= 0:
                        raise OSError(errno.ENOSPC, "short write to journal segment", str(seg.path))
                    rest = rest[n:]
        except BaseException:
            try:
                os.ftruncate(fd, offset)
            except OSError:
                pass  # the original error is the one to report; recovery handles the tail
            raise
        seg.seqs.append(first)
        seg.counts.append(count)
        seg.offsets.append(offset)
        seg.lens.append(len(payload))
        seg.formats.append(row_format)
        seg.hsizes.append(len(header))
        seg.records += count
        seg.size += total
        self._size += total
        self.next_seq = first + count
        if self.fsync == "always":
            _fdatasync(fd)
        else:
            self._dirty = True
        return first

    def sync(self) -> None:
        """fdatasync the active segment if anything was written since the last sync.

        A no-op with ``fsync="never"`` (and, in effect, with ``"always"``).
        """
        if self._dirty and self.fsync != "never" and self._active is not None and self._active.fd is not None:
            _fdatasync(self._active.fd)
        self._dirty = False

    def skip_to(self, seq: int) -> None:
        """Make ``next_seq`` at least ``seq``, durably, by starting a new segment named ``seq``.

        For the server: if PostgreSQL's shipped position for this ``journal_id`` is past
        ``next_seq`` (the tail was lost in a machine crash after it had been shipped), call
        ``skip_to(shipped_seq + 1)`` so no seq already shipped is handed out again. A no-op if
        ``seq <= next_seq``.

        Raises:
            OSError: the seq reservation could not be written, and ``next_seq`` is unchanged;
                or, after it was, the new segment could not be created: ``next_seq`` is
                ``seq`` then all the same (the reservation holds it), and appends go on in the
                old segment.
        """
        if self._active is None:
            raise RuntimeError("journal is not open")
        if seq <= self.next_seq:
            return
        if seq > self._reserved:
            # The name of the new segment is durable only with a directory fsync, which
            # fsync="never" skips; the reservation always is.
            self._reserve(seq)
        # Moved before anything else can fail: whatever happens next, close() lowers the mark
        # to next_seq, and it must never come down below a seq PostgreSQL may hold.
        self.next_seq = seq
        old = self._active
        # A new segment, so the old one (every seq in it shipped) can be released.
        self._rotate(seq)
        if not old.seqs:  # nothing in it: only its name mattered, and the new name supersedes it
            self._remove(old)

    # --- reading and releasing ---------------------------------------------------------------

    def read(self, from_seq: int, max_records: int, max_bytes: int) -> list[Block]:
        """Return consecutive blocks starting with the one holding ``from_seq``.

        If ``from_seq`` is inside a block, that block is trimmed to start at ``from_seq``. Seqs
        lost to corruption are simply absent (the next block after them is returned). Reading
        stops before ``max_records`` records or ``max_bytes`` payload bytes would be exceeded,
        but always returns at least one block if there is any at or after ``from_seq``. Every
        block returned has the same ``row_format``: reading stops before a block of another
        one, so one COPY statement never mixes column layouts.

        A block that no longer matches its checksum (or the index) is handled as if it had
        been found damaged at open: it is dropped from the index, so its seqs become a gap,
        and ``JournalCorrupt`` says so, once. Blocks already read in the same call are returned
        first, and the read stops before the bad block; the next read, starting there, raises.
        After the raise, reading again returns the blocks that follow it.

        Raises:
            JournalCorrupt: the first block to return is damaged and has been dropped. Reason
                from ``check_block`` (``"checksum"``, ``"framing"``, ``"torn"``),
                ``"sequence"`` (not the block the index says) or ``"rows"`` (fewer rows than
                its count, found when trimming it to ``from_seq``); ``first_seq`` and
                ``records_lost`` give the seqs lost (those at or after ``from_seq``),
                ``path`` and ``offset`` where the block is.
            OSError: a segment could not be read (nothing is dropped: the next read retries).
        """
        if self._active is None:
            raise RuntimeError("journal is not open")
        out: list[Block] = []
        records = 0
        nbytes = 0
        for seg in self._segments:
            if not seg.seqs or seg.next_seq <= from_seq:
                continue
            seqs = seg.seqs
            k = bisect_right(seqs, from_seq) - 1
            if k < 0:
                k = 0
            elif seqs[k] + seg.counts[k] <= from_seq:
                k += 1
            for i in range(k, len(seqs)):
                first = int(seqs[i])
                count = int(seg.counts[i])
                plen = int(seg.lens[i])
                row_format = int(seg.formats[i])
                if out and (
                    records + count > max_records
                    or nbytes + plen > max_bytes
                    or row_format != out[0].row_format
                ):
                    return out
                try:
                    payload = self._read_payload(seg, i)
                    if first < from_seq:
                        skip = from_seq - first
                        payload = drop_rows(payload, skip)
                        first, count = from_seq, count - skip
                except JournalCorrupt as e:
                    if out:
                        return out  # ship what is good first; the next read reports this one
                    offset = int(seg.offsets[i])
                    self._drop_block(seg, i)
                    lost_from = max(first, from_seq)
                    raise JournalCorrupt(
                        f"{e}; dropped it: seqs {lost_from}..{first + count - 1} are lost",
                        reason=e.reason,
                        first_seq=lost_from,
                        records_lost=first + count - lost_from,
                        path=seg.path,
                        offset=offset,
                    ) from e
                out.append(Block(first, count, payload, row_format))
                records += count
                nbytes += len(payload)
        return out

    def release(self, shipped_seq: int) -> int:
        """Delete segments, oldest first, whose every record has seq <= ``shipped_seq``.

        The active segment is never deleted.

        Returns:
            The number of segment files deleted.
        """
        removed = 0
        while len(self._segments) > 1:
            seg = self._segments[0]
            if seg.seqs and seg.next_seq - 1 > shipped_seq:
                break
            self._remove(seg)
            removed += 1
        return removed

    @property
    def first_seq(self) -> int:
        """The oldest seq the journal still holds (``next_seq`` when it holds none)."""
        for seg in self._segments:
            if seg.seqs:
                return int(seg.seqs[0])
        return self.next_seq

    def records_after(self, seq: int) -> int:
        """How many records the journal holds with a seq above ``seq``.

        Counted from the index, so the seqs no record has (the gap a crash leaves by the
        reservation, a corrupt range, a block dropped at read) are not counted: ``next_seq``
        minus a position overstates what is left to ship by as much as those gaps.
        """
        total = 0
        for seg in reversed(self._segments):
            if not seg.seqs:
                continue
            if seg.seqs[0] > seq:
                total += seg.records
                continue
            if seg.next_seq - 1 > seq:
                k = bisect_right(seg.seqs, seq) - 1  # the block holding seq, or the last before it
                total += max(0, int(seg.seqs[k] + seg.counts[k]) - 1 - seq) + sum(seg.counts[k + 1 :])
            break  # this segment reaches seq: every older one is at or below it
        return total

    @property
    def size_bytes(self) -> int:
        """Total bytes of all segment files."""
        return self._size

    def over_limit(self, shipped_seq: int) -> bool:
        """True once the segments holding unshipped records reach ``max_bytes``.

        The server stops reading clients while this holds. It counts only segments with a
        record past ``shipped_seq``: the active segment is never deleted, and counting its
        shipped bytes could keep the journal "full" forever with nothing left to ship.
        """
        return self.unshipped_bytes(shipped_seq) >= self.max_bytes

    def unshipped_bytes(self, shipped_seq: int) -> int:
        """Bytes of the segments holding any record with seq > ``shipped_seq``."""
        return sum(seg.size for seg in self._segments if seg.seqs and seg.next_seq - 1 > shipped_seq)

    @property
    def segment_paths(self) -> list[Path]:
        """The segment files, oldest first; the last one is active."""
        return [seg.path for seg in self._segments]

    # --- private -----------------------------------------------------------------------------

    def _recover(self) -> RecoveryReport:
        inconsistencies: list[str] = []
        named: list[tuple[int, Path]] = []
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(SEGMENT_SUFFIX):
                continue
            m = _SEGMENT_NAME.match(entry.name)
            base = int(m.group(1)) if m else 0
            if base < 1:
                inconsistencies.append(f"{entry.name}: not a segment name, ignored")
                continue
            named.append((base, self.directory / entry.name))
        named.sort()
        self.journal_id = self._load_id(have_segments=bool(named))

        corrupt: list[CorruptRange] = []
        torn_truncated = 0
        torn_records = 0
        blocks = 0
        records = 0
        prev_end = 1
        next_seq = 1
        for i, (base, path) in enumerate(named):
            last = i == len(named) - 1
            data = path.read_bytes()
            if base < prev_end:
                inconsistencies.append(
                    f"{path.name}: named for seq {base} but the previous segment ends at seq {prev_end}"
                )
            expected = max(prev_end, base)
            res = scan(data, 0, expected)
            if res.blocks and res.blocks[0].offset == 0 and res.blocks[0].first_seq != base:
                inconsistencies.append(
                    f"{path.name}: named for seq {base} but its first block is seq {res.blocks[0].first_seq}"
                )
            if res.bad and res.bad[0].start == 0 and res.bad[0].reason == "sequence":
                inconsistencies.append(
                    f"{path.name}: its first block is below seq {expected} (its name or the previous "
                    "segment's end); skipped"
                )
            after = res.next_seq if res.next_seq is not None else expected
            next_base = named[i + 1][0] if not last else None
            for r in res.bad:
                lost = r.records_lost
                if r.start >= res.end and next_base is not None:
                    lost = max(0, next_base - after)  # a trailing range: the next name knows
                elif r.start >= res.end:
                    after += lost  # never hand out again a seq that may have been shipped
                corrupt.append(CorruptRange(path, r.start, r.end, lost))
            size = len(data)
            if res.torn_tail_bytes:
                cut = size - res.torn_tail_bytes
                if last:
                    torn_records += torn_block_count(data, cut, after)
                    os.truncate(path, cut)
                    torn_truncated += res.torn_tail_bytes
                    size = cut
                else:  # an old segment is never appended to again: leave it, report it
                    lost = max(0, next_base - after) if next_base is not None else 0
                    corrupt.append(CorruptRange(path, cut, size, lost))
            seg = _Segment(path, base, size)
            for b in res.blocks:
                seg.seqs.append(b.first_seq)
                seg.counts.append(b.count)
                seg.offsets.append(b.offset)
                seg.lens.append(b.payload_len)
                seg.formats.append(b.row_format)
                seg.hsizes.append(b.header_size)
            seg.records = res.records
            blocks += len(res.blocks)
            records += res.records
            self._segments.append(seg)
            self._size += size
            prev_end = after
            next_seq = after

        if self._segments:
            active = self._segments[-1]
            active.fd = os.open(active.path, os.O_RDWR | os.O_APPEND | _O_CLOEXEC)
            if torn_truncated and self.fsync != "never":
                _fdatasync(active.fd)
            self._active = active
            self.next_seq = max(next_seq, active.base_seq)
        else:
            self.next_seq = 1
            self._rotate(1)
        # Read only now: a reservation without its journal.id would be refused with the id.
        reserved = self._load_reserved()
        self._reserved = reserved
        jump = max(0, reserved - self.next_seq)
        if jump:
            # A new segment named for it, so a clean restart does not report the jump again.
            self.skip_to(reserved)
        return RecoveryReport(
            journal_id=self.journal_id,
            segments=len(self._segments),
            blocks=blocks,
            records=records,
            torn_tail_bytes_truncated=torn_truncated,
            corrupt=tuple(corrupt),
            inconsistencies=tuple(inconsistencies),
            next_seq=self.next_seq,
            torn_tail_records=torn_records,
            seq_reserved=reserved,
            seq_jump=jump,
        )

    def _load_id(self, *, have_segments: bool) -> str:
        path = self.directory / ID_FILE
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            if have_segments:
                raise JournalCorrupt(
                    f"{path} is missing but segments exist; restore it, or move the segments away "
                    "to start a new journal (a new id makes PostgreSQL treat every record as new)",
                    reason="journal_id",
                ) from None
            new = uuid.uuid4().hex
            self._replace_file(ID_FILE, (new + "\n").encode("ascii"))
            return new
        except (UnicodeDecodeError, OSError) as e:
            raise JournalCorrupt(f"cannot read {path}: {e}", reason="journal_id") from e
        if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
            raise JournalCorrupt(f"{path} does not hold a uuid4 hex: {text[:40]!r}", reason="journal_id")
        return text

    def _load_reserved(self) -> int:
        path = self.directory / RESERVED_FILE
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise JournalCorrupt(f"cannot read {path}: {e}", reason="seq_reserved") from e
        # Written whole by rename, so anything but "<digits>\n" is damage, not a torn write.
        value = int(text[:-1]) if text[:-1].isdigit() and text.endswith(b"\n") and len(text) <= 22 else 0
        if not 1 <= value <= MAX_SEQ + 1:
            raise JournalCorrupt(
                f"{path} does not hold a seq: {text[:40]!r}. It is the mark no seq handed out "
                "reaches; removing it continues numbering from the segments, and records "
                "received before PostgreSQL is reached may then get seqs a lost tail had",
                reason="seq_reserved",
            )
        return value

    def _reserve(self, value: int) -> None:
        # Durable whatever the fsync policy: a mark lost in a crash is exactly the bug it fixes.
        self._replace_file(RESERVED_FILE, b"%d\n" % value)
        self._reserved = value

    def _replace_file(self, name: str, data: bytes) -> None:
        # tmp + write + fsync + rename + directory fsync: after a crash the file holds either
        # the old contents or the new, whole. Raises OSError; the old contents then stand.
        tmp = self.directory / (name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o644)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write", str(tmp))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / name)
        assert self._dir_fd is not None
        os.fsync(self._dir_fd)

    def _rotate(self, base_seq: int) -> _Segment:
        # Start a new, empty active segment named base_seq; the old one stays open for reads.
        old = self._active
        if old is not None and old.fd is not None and self._dirty and self.fsync != "never":
            _fdatasync(old.fd)
        self._dirty = False
        path = self.directory / segment_name(base_seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_CLOEXEC, 0o644)
        seg = _Segment(path, base_seq, 0)
        seg.fd = fd
        self._segments.append(seg)
        self._active = seg
        if self.fsync != "never":
            self._sync_dir()  # the name is what carries next_seq across a restart
        return seg

    def _remove(self, seg: _Segment) -> None:
        seg.close()
        os.unlink(seg.path)
        self._segments.remove(seg)
        self._size -= seg.size

    def _sync_dir(self) -> None:
        if self._dir_fd is not None:
            os.fsync(self._dir_fd)

    def _drop_block(self, seg: _Segment, i: int) -> None:
        # Out of the index only: the bytes stay in the file (size_bytes counts files), and the
        # next open finds them damaged again and reports them there.
        seg.records -= seg.counts[i]
        for column in (seg.seqs, seg.counts, seg.offsets, seg.lens, seg.formats, seg.hsizes):
            del column[i]

    def _read_payload(self, seg: _Segment, i: int) -> bytes:
        if seg.fd is None:
            seg.fd = os.open(seg.path, os.O_RDONLY | _O_CLOEXEC)
        offset = int(seg.offsets[i])
        plen = int(seg.lens[i])
        hsize = int(seg.hsizes[i])
        # Two preads so the payload comes back as its own bytes object, never sliced off a copy.
        header = os.pread(seg.fd, hsize, offset)
        payload = os.pread(seg.fd, plen, offset + hsize)
        try:
            first, count, row_format = check_block(header, payload)
        except JournalCorrupt as e:
            raise JournalCorrupt(f"{seg.path} at offset {offset}: {e}", reason=e.reason) from e
        if first != seg.seqs[i] or count != seg.counts[i] or row_format != seg.formats[i]:
            raise JournalCorrupt(
                f"{seg.path} at offset {offset}: block is seqs {first}+{count} format {row_format}, "
                f"index says {seg.seqs[i]}+{seg.counts[i]} format {seg.formats[i]}",
                reason="sequence",
            )
        return payload
