"""logsvc_client._spool: numbering, caps, trimming, and the disk spool across restarts and kills."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from logsvc_client._spool import RESERVE_AHEAD, DiskSpool, Spool, SpoolError


def fill(spool: Spool, n: int, prefix: str = "r") -> list[int]:
    with spool.cond:
        return [spool.put(f"{prefix}{i}".encode(), 1000.0 + i) for i in range(n)]


def test_memory_spool_numbers_takes_and_trims() -> None:
    s = Spool(max_records=100, max_bytes=10_000)
    assert fill(s, 5) == [1, 2, 3, 4, 5]
    assert s.take(1, 3, 1000) == (1, [b"r0", b"r1", b"r2"])
    assert s.take(4, 10, 1000) == (4, [b"r3", b"r4"])
    assert s.take(2, 10, 3) == (2, [b"r1"])  # a byte budget, but always one record
    assert s.take(6, 10, 1000) == (6, [])
    assert s.trim(3) == [1000.0, 1001.0, 1002.0]
    assert (len(s), s.nbytes, s.done_seq) == (2, 4, 3)
    assert s.take(1, 10, 1000) == (4, [b"r3", b"r4"])  # acknowledged records are gone
    assert s.trim(2) == [] and s.done_seq == 3  # ACKs never go backwards
    assert s.trim(99) == [1003.0, 1004.0] and len(s) == 0 and s.last_seq() == 5  # never past the last
    assert not s.has_from(1)


def test_memory_spool_caps_and_drop_oldest() -> None:
    s = Spool(max_records=3, max_bytes=100)
    fill(s, 3)
    assert not s.has_room(1)
    s.drop_oldest()
    assert s.has_room(1) and s.done_seq == 1 and s.take(1, 10, 100) == (2, [b"r1", b"r2"])
    s.drop_oldest()
    s.drop_oldest()
    # Dropped records leave nothing to send, though done_seq is past the sender's position.
    assert s.done_seq == 3 and not s.has_from(2) and s.take(2, 10, 100) == (2, [])
    assert not Spool(10, 5).has_room(6)


def test_memory_spool_compacts_without_losing_order() -> None:
    s = Spool(max_records=10**6, max_bytes=10**9)
    fill(s, 5000)
    s.trim(4000)
    assert s.take(1, 2, 100) == (4001, [b"r4000", b"r4001"])
    assert len(s) == 1000 and s.nbytes == sum(len(f"r{i}") for i in range(4000, 5000))


def test_disk_spool_survives_a_restart_with_the_same_stream_and_seqs(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, 1000, 1 << 20)
    stream = s.stream
    fill(s, 10)
    with s.cond:
        s.trim(4)
    s.close()
    s2 = DiskSpool(tmp_path, 1000, 1 << 20)
    assert s2.stream == stream
    assert s2.take(1, 100, 1 << 20) == (5, [f"r{i}".encode() for i in range(4, 10)])
    # New records never reuse a seq the last process may have sent (nor reserved).
    (seq,) = fill(s2, 1, "new")
    assert seq == RESERVE_AHEAD + 1  # the first process reserved 1..RESERVE_AHEAD
    # A frame never spans the gap between the old records and the new.
    assert s2.take(5, 100, 1 << 20) == (5, [f"r{i}".encode() for i in range(4, 10)])
    assert s2.take(11, 100, 1 << 20) == (seq, [b"new0"])
    s2.close()


def test_a_second_process_cannot_share_a_spool_dir(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, 10, 1000)
    with pytest.raises(SpoolError, match="in use by another process"):
        DiskSpool(tmp_path, 10, 1000)
    s.close()
    DiskSpool(tmp_path, 10, 1000).close()


def test_a_foreign_stream_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stream").write_text("not a stream id\n")
    with pytest.raises(SpoolError, match="stream id"):
        DiskSpool(tmp_path, 10, 1000)


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.log"))


def test_a_torn_tail_is_cut_at_open(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, 1000, 1 << 20)
    fill(s, 3)
    s.close()
    (seg,) = segments(tmp_path)
    with open(seg, "ab") as f:
        f.write(b"\0\0\0\x10\xde\xad")  # a record cut inside its header
    size = seg.stat().st_size
    s2 = DiskSpool(tmp_path, 1000, 1 << 20)
    assert s2.torn_bytes == 6 and seg.stat().st_size == size - 6
    assert s2.take(1, 10, 1000)[1] == [b"r0", b"r1", b"r2"]
    s2.close()


def test_a_corrupt_record_ends_its_segment(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, 1000, 1 << 20)
    fill(s, 3)
    s.close()
    (seg,) = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # the last payload's last byte: its CRC no longer matches
    seg.write_bytes(bytes(data))
    s2 = DiskSpool(tmp_path, 1000, 1 << 20)
    assert s2.take(1, 10, 1000)[1] == [b"r0", b"r1"]
    s2.close()


def test_acknowledged_segments_are_deleted_whole(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, 100_000, 1 << 20)  # segments of 64 KiB
    with s.cond:
        for _ in range(5000):
            s.put(b"x" * 100, 0.0)
    before = len(segments(tmp_path))
    assert before >= 4
    with s.cond:
        s.trim(2500)
    left = segments(tmp_path)
    assert 2 <= len(left) < before
    assert int(left[0].name[4:24]) <= 2501 < int(left[1].name[4:24])  # the one holding 2501 stays
    with s.cond:
        s.trim(5000)
    assert len(segments(tmp_path)) == 1  # the active one
    s.close()
    DiskSpool(tmp_path, 100_000, 1 << 20).close()  # nothing unacknowledged: all deleted at open
    assert segments(tmp_path) == []


def test_sync_fsyncs_rotated_segments_outside_emit(tmp_path: Path) -> None:
    s = DiskSpool(tmp_path, 100_000, 1 << 20)
    with s.cond:
        for _ in range(1500):
            s.put(b"y" * 100, 0.0)
    assert s._retired  # rotated out, not yet fsynced: emit() does not fsync
    s.sync()
    assert not s._retired and not s._unsynced
    s.close()


def _emit_then_wait(d: str, n: int, ready: multiprocessing.synchronize.Event) -> None:
    s = DiskSpool(d, 100_000, 64 << 20, fsync=False)
    fill(s, n)
    ready.set()
    signal.pause()


def test_records_written_before_sigkill_are_all_there(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_emit_then_wait, args=(str(tmp_path), 5000, ready))
    p.start()
    try:
        assert ready.wait(30)
    finally:
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
    s = DiskSpool(tmp_path, 100_000, 64 << 20)  # the lock went with the process
    first, got = s.take(1, 10_000, 64 << 20)
    assert first == 1 and got == [f"r{i}".encode() for i in range(5000)]
    s.close()
