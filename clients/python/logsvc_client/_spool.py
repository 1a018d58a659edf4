"""The spool: every record between ``emit()`` and the server's ACK for it, numbered.

Two kinds. ``Spool`` keeps records in memory (lost with the process, as any in-memory
queue). ``DiskSpool`` also writes each record to a segment file in ``emit()`` itself, with one
``os.write``, so a process killed right after ``emit()`` returned still has it: the next process
using the same directory sends it (same stream id, same seqs) and the server drops what it
already has. Both are bounded by records and bytes; what happens when full is the handler's
policy, not the spool's.

Theory of operation (disk). A spool directory holds::

    LOCK            flock()ed by the one process using the directory
    stream          the stream id: 32 lower-case hex digits and a newline
    seq.reserved    decimal: the highest seq this directory may have used (fsynced)
    acked           decimal: every seq up to this one needs no sending (acked or dropped)
    seg-<first seq, 20 digits>.log   the records, in seq order, each:

        offset  size  field
             0     4  length   u32 big-endian: bytes of payload
             4     4  crc      CRC-32 of the bytes from offset 8 to the end of the record
             8     8  seq      u64
            16     8  created  f64, time.time() of emit()
            24     n  payload  the record as a RECORDS frame carries it

Seqs are never used twice, even after a machine crash: before a seq above ``seq.reserved``
is handed out, ``seq.reserved`` is moved 100,000 ahead and fsynced; a restart starts above
it (the seqs skipped leave a gap, which the protocol allows). At open, a record whose length
or CRC does not check out ends its segment: that is a torn tail (the process died inside
``os.write``, or the machine before an fsync), and the file is cut there. Segments whose
records are all acknowledged are deleted whole. The fsync policy (``always``, ``interval``,
``never``) is applied by the sender thread through ``sync()``, never by ``emit()``.

Locking: every method is called with ``cond`` held (the handler's emit and the sender
thread share it), except ``sync`` and ``close``, which take it themselves when they need it:
an fsync never runs under the lock emit() needs.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import bisect
import fcntl
import os
import re
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

_REC = struct.Struct(">LLQd")
_CRC_FROM = 8  # the CRC covers seq, created and payload
RESERVE_AHEAD = 100_000
SEGMENT_MAX_BYTES = 4 << 20
SEGMENT_MIN_BYTES = 64 << 10
_SEG_RE = re.compile(r"^seg-(\d{20})\.log$")
_STREAM_RE = re.compile(r"^[0-9a-f]{32}$")
# A record larger than this in a segment is corruption, not a record (the handler refuses
# records over the protocol's 1 MiB long before they reach a segment).
_MAX_STORED_RECORD = 16 << 20


class SpoolError(Exception):
    """The spool directory cannot be used (locked by another process, unreadable, foreign)."""


def new_stream_id() -> str:
    return secrets.token_hex(16)


class Spool:
    """Records in memory, oldest first, in increasing seq order (gaps only after a restart)."""

    persistent = False

    def __init__(self, max_records: int, max_bytes: int, stream: str | None = None) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.stream = stream or new_stream_id()
        self.max_records = max_records
        self.max_bytes = max_bytes
        # Three parallel lists from index _head on: the live records.
        self._seqs: list[int] = []
        self._payloads: list[bytes] = []
        self._created: list[float] = []  # time.time() of each emit
        self._head = 0
        self.next_seq = 1
        self.nbytes = 0
        self.write_errors = 0  # disk spool: writes that failed (the records stay in memory)
        # Every seq up to this needs no sending: acknowledged, or dropped by policy.
        self.done_seq = 0

    # -- sizes ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._seqs) - self._head

    def has_room(self, size: int) -> bool:
        return len(self) < self.max_records and self.nbytes + size <= self.max_bytes

    def oldest_created(self) -> float | None:
        return self._created[self._head] if len(self) else None

    def last_seq(self) -> int:
        """The seq of the newest record held, or ``done_seq`` when none is."""
        return self._seqs[-1] if len(self) else self.done_seq

    def has_from(self, seq: int) -> bool:
        """Whether a record at or above ``seq`` is held (something to send from there)."""
        return len(self) > 0 and self._seqs[-1] >= seq

    # -- the emit side ------------------------------------------------------------------------------

    def put(self, payload: bytes, created: float) -> int:
        """Hold ``payload``; return its seq (the caller checked ``has_room``)."""
        seq = self.next_seq
        self._seqs.append(seq)
        self._payloads.append(payload)
        self._created.append(created)
        self.next_seq = seq + 1
        self.nbytes += len(payload)
        return seq

    def skip_to(self, seq: int) -> None:
        """Number new records from ``seq`` on at least (the server knows the stream further)."""
        self.next_seq = max(self.next_seq, seq)

    def drop_oldest(self) -> None:
        """Forget the oldest record unsent or unacknowledged (the ``drop_oldest`` policy)."""
        if len(self):
            self.done_seq = max(self.done_seq, self._seqs[self._head])
            self._advance(self._head + 1)

    # -- the sender side ----------------------------------------------------------------------------

    def take(self, from_seq: int, max_count: int, max_bytes: int) -> tuple[int, list[bytes]]:
        """Records of consecutive seqs from the first held at or above ``from_seq``: at most
        ``max_count`` of them and ``max_bytes`` of payload (but one, whatever its size).

        Returns:
            (the first record's seq, the payloads); no payloads when none is held from there.
        """
        seqs = self._seqs
        start = bisect.bisect_left(seqs, from_seq, self._head)
        if start >= len(seqs):
            return from_seq, []
        first = seqs[start]
        end = min(len(seqs), start + max_count)
        # Stop at a gap: a frame numbers its records consecutively.
        if seqs[end - 1] - first != end - 1 - start:
            end = start + 1
            while end < len(seqs) and end - start < max_count and seqs[end] == seqs[end - 1] + 1:
                end += 1
        out: list[bytes] = []
        size = 0
        for p in self._payloads[start:end]:
            size += len(p)
            if out and size > max_bytes:
                break
            out.append(p)
        return first, out

    def trim(self, seq: int) -> list[float]:
        """Records up to ``seq`` are acknowledged: forget them.

        Returns:
            The ``created`` time of each record forgotten (for the latency figures).
        """
        seq = min(seq, self.next_seq - 1)  # nothing not yet numbered is acknowledged
        if seq <= self.done_seq:
            return []
        self.done_seq = seq
        end = bisect.bisect_right(self._seqs, seq, self._head)
        created = self._created[self._head : end]
        self._advance(end)
        return created

    def _advance(self, end: int) -> None:
        h = self._head
        if end <= h:
            return
        self.nbytes -= sum(map(len, self._payloads[h:end]))
        self._head = end
        # Compact once the dead head is the larger part: amortised O(1) per record.
        if end > 1024 and end * 2 > len(self._seqs):
            del self._seqs[:end]
            del self._payloads[:end]
            del self._created[:end]
            self._head = 0

    def sync(self) -> None:
        """Make what emit() wrote durable (nothing to do in memory)."""

    def save_acked(self) -> None:
        """Note how far records need no sending (nothing to do in memory)."""

    def close(self) -> None:
        """Release the spool's files (nothing to do in memory)."""

    def abandon(self) -> None:
        """In a forked child: let go of the parent's files (nothing to do in memory)."""


class DiskSpool(Spool):
    """A ``Spool`` whose records are also in CRC'd segment files under ``directory``.

    Raises (from the constructor):
        SpoolError: another process holds the directory, or its stream file is not ours.
        OSError: the directory cannot be created or written.
    """

    persistent = True

    def __init__(
        self, directory: str | os.PathLike[str], max_records: int, max_bytes: int, fsync: bool = True
    ) -> None:
        self.dir = Path(directory)
        self.fsync = fsync  # False: the "never" policy, segments are closed without an fsync
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolError(
                f"the spool directory {self.dir} is in use by another process; "
                "each process needs a spool_dir of its own"
            ) from None
        super().__init__(max_records, max_bytes, self._read_stream())
        self.segment_bytes = max(SEGMENT_MIN_BYTES, min(SEGMENT_MAX_BYTES, max_bytes // 8))
        self._segments: list[tuple[int, Path]] = []  # (first seq, path), oldest first
        self._fd = -1  # the active segment
        self._retired: list[int] = []  # segments rotated out, for sync() to fsync and close
        self._fd_size = 0
        self._unsynced = False
        self.torn_bytes = 0  # cut from segment tails at open
        self._acked_written = 0
        self._recover()
        self._reserved = max(self._read_int("seq.reserved"), self.next_seq - 1)
        # A restart never reuses a seq a previous process may have sent.
        self.next_seq = self._reserved + 1
        self._reserve(self.next_seq - 1 + RESERVE_AHEAD)
        self._reload_tail()

    # -- files ----------------------------------------------------------------------------------

    def _read_stream(self) -> str:
        path = self.dir / "stream"
        try:
            sid = path.read_text().strip()
        except FileNotFoundError:
            sid = new_stream_id()
            self._write_atomic("stream", sid + "\n", durable=True)
            return sid
        if not _STREAM_RE.match(sid):
            raise SpoolError(f"{path} does not hold a stream id (32 lower-case hex digits): not a spool?")
        return sid

    def _read_int(self, name: str) -> int:
        try:
            return int((self.dir / name).read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            return 0  # a torn write of a non-durable file: the segments still say what to send

    def _write_atomic(self, name: str, text: str, *, durable: bool) -> None:
        tmp = self.dir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.dir / name)
        if durable:
            dfd = os.open(self.dir, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _reserve(self, upto: int) -> None:
        self._write_atomic("seq.reserved", f"{upto}\n", durable=True)
        self._reserved = upto

    # -- recovery ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Read every segment; cut torn tails; note the highest seq seen."""
        self.done_seq = self._read_int("acked")
        self._recovered: list[tuple[int, float, bytes]] = []
        last = 0
        names = sorted(p.name for p in self.dir.iterdir() if _SEG_RE.match(p.name))
        for name in names:
            path = self.dir / name
            kept = 0
            for seq, created, payload, end in _scan(path.read_bytes()):
                kept = end
                if seq <= last:
                    continue  # not increasing: never written so by this module; skip it
                last = seq
                if seq > self.done_seq:
                    self._recovered.append((seq, created, payload))
            size = path.stat().st_size
            if kept < size:
                self.torn_bytes += size - kept
                os.truncate(path, kept)
            self._segments.append((int(_SEG_RE.match(name).group(1)), path))  # type: ignore[union-attr]
        self.next_seq = last + 1

    def _reload_tail(self) -> None:
        """Put the unacknowledged records found at open in front of the new ones."""
        rec = self._recovered
        del self._recovered
        if len(rec) > self.max_records:
            rec = rec[len(rec) - self.max_records :]
        # They keep their seqs (the server may hold some of them); seqs dropped or never used
        # by the previous process leave gaps, and take() never puts a gap inside a frame.
        self._seqs = [r[0] for r in rec]
        self._created = [r[1] for r in rec]
        self._payloads = [r[2] for r in rec]
        self.nbytes = sum(map(len, self._payloads))
        if rec:
            self.done_seq = max(self.done_seq, rec[0][0] - 1)
        self._drop_acked_segments()

    # -- emit side ------------------------------------------------------------------------------

    def put(self, payload: bytes, created: float) -> int:
        seq = self.next_seq
        if seq > self._reserved:
            try:
                self._reserve(seq - 1 + RESERVE_AHEAD)
            except OSError:
                self.write_errors += 1  # the record is still sent; a restart may reuse seqs
        if self._fd < 0 or self._fd_size >= self.segment_bytes:
            try:
                self._rotate(seq)
            except OSError:  # no new segment (EMFILE, ENOSPC, permissions): memory only
                self.write_errors += 1
                return super().put(payload, created)
        rec = _REC.pack(len(payload), 0, seq, created)
        crc = zlib.crc32(payload, zlib.crc32(rec[_CRC_FROM:]))
        data = rec[:4] + crc.to_bytes(4, "big") + rec[_CRC_FROM:] + payload
        try:
            n = os.write(self._fd, data)
        except OSError:
            n = -1
        if n != len(data):
            self._write_failed()
        else:
            self._fd_size += n
            self._unsynced = True
        return super().put(payload, created)

    def skip_to(self, seq: int) -> None:
        if seq - 1 > self._reserved:
            try:
                self._reserve(seq - 1 + RESERVE_AHEAD)
            except OSError:
                self.write_errors += 1
        super().skip_to(seq)

    def _write_failed(self) -> None:
        # A short or failed write (ENOSPC, EIO): cut what was written of it, so the segment
        # stays readable; the record itself is still held in memory and sent.
        self.write_errors += 1
        try:
            os.ftruncate(self._fd, self._fd_size)
        except OSError:
            self._close_fd()  # the next put starts a new segment

    def _rotate(self, seq: int) -> None:
        # The full segment is fsynced and closed by the sender's next sync(), not here in emit().
        if self._fd >= 0:
            if self._unsynced and self.fsync:
                self._retired.append(self._fd)
            else:
                os.close(self._fd)
            self._fd = -1
            self._unsynced = False
        path = self.dir / f"seg-{seq:020d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._fd_size = os.fstat(self._fd).st_size
        self._segments.append((seq, path))

    def _close_fd(self) -> None:
        if self._fd >= 0:
            if self._unsynced and self.fsync:
                try:
                    os.fsync(self._fd)
                except OSError:
                    self.write_errors += 1
                self._unsynced = False
            os.close(self._fd)
            self._fd = -1

    # -- sender side --------------------------------------------------------------------------------

    def trim(self, seq: int) -> list[float]:
        created = super().trim(seq)
        if created or seq > self._acked_written:
            self._drop_acked_segments()
        return created

    def _drop_acked_segments(self) -> None:
        # A segment is done when the next one starts at or below done_seq + 1.
        segs = self._segments
        while len(segs) > 1 and segs[1][0] <= self.done_seq + 1:
            _unlink(segs.pop(0)[1])
        if len(segs) == 1 and self._fd < 0 and not len(self):
            _unlink(segs.pop(0)[1])  # a previous process's last segment, all of it done

    def save_acked(self) -> None:
        """Note how far records need no sending (so a restart does not resend them).

        Not fsynced: after a machine crash a restart resends a little, which the server drops.
        """
        if self.done_seq > self._acked_written:
            try:
                self._write_atomic("acked", f"{self.done_seq}\n", durable=False)
                self._acked_written = self.done_seq
            except OSError:
                self.write_errors += 1

    def sync(self) -> None:
        with self.cond:
            fds, self._retired = self._retired, []
            if self._unsynced and self._fd >= 0:
                fds.append(os.dup(self._fd))  # rotation may close _fd meanwhile
                self._unsynced = False
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError:
                self.write_errors += 1
            finally:
                os.close(fd)

    def close(self) -> None:
        if self.fsync:
            self.sync()
        with self.cond:
            for fd in self._retired:
                os.close(fd)
            self._retired = []
            self._close_fd()
            self.save_acked()
        os.close(self._lock_fd)  # releases the flock

    def abandon(self) -> None:
        for fd in [*self._retired, self._fd]:
            if fd >= 0:
                os.close(fd)
        self._fd = -1
        self._retired = []
        os.close(self._lock_fd)  # the parent's own descriptor keeps its lock


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _scan(data: bytes) -> Iterator[tuple[int, float, bytes, int]]:
    """(seq, created, payload, end offset) of each whole record of a segment, until a bad one."""
    pos = 0
    n = len(data)
    while n - pos >= _REC.size:
        length, crc, seq, created = _REC.unpack_from(data, pos)
        end = pos + _REC.size + length
        if length > _MAX_STORED_RECORD or end > n:
            return
        if zlib.crc32(memoryview(data)[pos + _CRC_FROM : end]) != crc:
            return
        yield seq, created, data[pos + _REC.size : end], end
        pos = end


def monotonic_age(created: float | None) -> float:
    """Seconds since ``created`` (a time.time()), 0 for None."""
    return 0.0 if created is None else max(0.0, time.time() - created)
