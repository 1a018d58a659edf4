"""The journal on disk: rotation, reads, release, recovery from torn and corrupt segments."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import JournalCorrupt, JournalSeqMismatch, LogsvcError
from logsvc.journal import (
    HEADER_SIZE,
    HEADER_SIZE_V1,
    RESERVED_FILE,
    ROW_FORMAT_DEFAULT,
    SEQ_RESERVE_STEP,
    Block,
    Journal,
    encode_block,
    encode_block_v1,
    scan,
    segment_name,
)
from tests.journal.helpers import examples


def rows(first: int, count: int) -> bytes:
    return b"".join(b"row\t%d\n" % seq for seq in range(first, first + count))


def seqs_of(blocks: list[Block]) -> list[int]:
    """Every record seq in ``blocks``, checked against the row text each payload carries."""
    out: list[int] = []
    for b in blocks:
        assert b.payload == rows(b.first_seq, b.count)
        out.extend(range(b.first_seq, b.next_seq))
    return out


def read_all(j: Journal, from_seq: int = 1) -> list[Block]:
    return j.read(from_seq, 1 << 40, 1 << 40)


def fill(j: Journal, counts: list[int]) -> list[int]:
    firsts = []
    for count in counts:
        firsts.append(j.append(rows(j.next_seq, count), count, expected_first_seq=j.next_seq))
    return firsts


def block_size(first: int, count: int) -> int:
    return HEADER_SIZE + len(rows(first, count))


@pytest.fixture
def jdir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def journal(jdir: Path) -> Iterator[Journal]:
    j = Journal(jdir, segment_bytes=200, fsync="never")
    j.open()
    yield j
    j.close()


def test_fresh_journal_starts_at_seq_1_with_one_empty_segment(jdir: Path) -> None:
    j = Journal(jdir)
    report = j.open()
    try:
        assert report.next_seq == j.next_seq == 1
        assert report.segments == 1 and report.records == 0 and report.corrupt == ()
        assert [p.name for p in j.segment_paths] == [segment_name(1)]
        assert read_all(j) == []
    finally:
        j.close()


def test_append_and_read_across_rotation(journal: Journal) -> None:
    firsts = fill(journal, [3, 1, 4, 1, 5, 9, 2, 6])
    assert firsts == [1, 4, 5, 9, 10, 15, 24, 26]
    assert journal.next_seq == 32
    assert len(journal.segment_paths) > 2
    assert [p.name for p in journal.segment_paths][:2] == [segment_name(1), segment_name(10)]
    assert seqs_of(read_all(journal)) == list(range(1, 32))
    assert journal.size_bytes == sum(p.stat().st_size for p in journal.segment_paths)


def test_read_limits_stop_at_whole_blocks_but_return_at_least_one(journal: Journal) -> None:
    fill(journal, [3, 3, 3])
    assert [(b.first_seq, b.count) for b in journal.read(1, 5, 1 << 20)] == [(1, 3)]
    assert [(b.first_seq, b.count) for b in journal.read(1, 6, 1 << 20)] == [(1, 3), (4, 3)]
    assert [(b.first_seq, b.count) for b in journal.read(1, 1, 1)] == [(1, 3)]
    two_blocks = len(rows(1, 3)) + len(rows(4, 3))
    assert [b.first_seq for b in journal.read(1, 100, two_blocks)] == [1, 4]
    assert [b.first_seq for b in journal.read(1, 100, two_blocks - 1)] == [1]
    assert journal.read(10, 100, 100) == []


def test_read_from_seq_inside_a_block_trims_rows(journal: Journal) -> None:
    fill(journal, [5, 2])
    blocks = journal.read(3, 100, 1 << 20)
    assert [(b.first_seq, b.count) for b in blocks] == [(3, 3), (6, 2)]
    assert blocks[0].payload == rows(3, 3)
    assert seqs_of(journal.read(5, 100, 1 << 20)) == [5, 6, 7]
    assert seqs_of(journal.read(7, 100, 1 << 20)) == [7]


def test_reopen_after_close_continues_seq_and_journal_id_is_stable(jdir: Path) -> None:
    j = Journal(jdir, segment_bytes=200)
    j.open()
    jid = j.journal_id
    assert len(jid) == 32 and int(jid, 16) >= 0
    fill(j, [2, 3, 4, 5])
    j.close()

    j = Journal(jdir, segment_bytes=200)
    report = j.open()
    try:
        assert j.journal_id == report.journal_id == jid
        assert report.next_seq == j.next_seq == 15 and report.records == 14 and report.blocks == 4
        assert report.torn_tail_bytes_truncated == 0 and report.corrupt == () and report.inconsistencies == ()
        assert j.append(rows(15, 1), 1, expected_first_seq=15) == 15
        assert seqs_of(read_all(j)) == list(range(1, 16))
    finally:
        j.close()


def test_second_open_of_same_directory_is_refused(journal: Journal, jdir: Path) -> None:
    other = Journal(jdir)
    with pytest.raises(LogsvcError) as info:
        other.open()
    assert info.value.reason == "journal_locked"


def test_missing_journal_id_with_segments_is_refused(jdir: Path) -> None:
    with Journal(jdir) as j:
        fill(j, [1])
    (jdir / "journal.id").unlink()
    with pytest.raises(JournalCorrupt) as info:
        Journal(jdir).open()
    assert info.value.reason == "journal_id"


def test_release_deletes_only_fully_shipped_non_active_segments(journal: Journal, jdir: Path) -> None:
    fill(journal, [4] * 12)
    paths = journal.segment_paths
    assert len(paths) >= 4
    size_before = journal.size_bytes
    # seqs in the first segment: 1..(second name - 1)
    second_base = int(paths[1].name.removesuffix(".seg"))
    assert journal.release(second_base - 2) == 0
    assert journal.release(second_base - 1) == 1
    assert not paths[0].exists() and paths[1].exists()
    assert journal.size_bytes < size_before
    assert journal.size_bytes == sum(p.stat().st_size for p in journal.segment_paths)
    assert seqs_of(read_all(journal)) == list(range(second_base, 49))
    assert journal.unshipped_bytes(second_base - 1) == journal.size_bytes

    # Everything shipped: all but the active segment go.
    journal.release(10**9)
    assert journal.segment_paths == [paths[-1]]
    assert journal.unshipped_bytes(48) == 0


def test_next_seq_survives_release_and_reopen(jdir: Path) -> None:
    with Journal(jdir, segment_bytes=100) as j:
        fill(j, [3, 3, 3, 3])
        j.release(12)
        # Rotate into a fresh, empty segment, then release everything before it.
        j.append(rows(13, 20), 20, expected_first_seq=13)
        j.release(32)
        assert len(j.segment_paths) == 1
    with Journal(jdir, segment_bytes=100) as j:
        assert j.next_seq == 33
        assert j.append(rows(33, 1), 1, expected_first_seq=33) == 33
        assert seqs_of(read_all(j)) == list(range(13, 34))


def test_next_seq_survives_when_only_an_empty_segment_is_left(jdir: Path) -> None:
    with Journal(jdir, segment_bytes=100) as j:
        fill(j, [3, 3])
        j.skip_to(50)  # a new empty segment named 50
        j.release(6)
        assert [p.name for p in j.segment_paths] == [segment_name(50)]
    with Journal(jdir) as j:
        assert j.next_seq == 50
        assert read_all(j) == []


def test_skip_to_moves_next_seq_forward_durably(jdir: Path) -> None:
    with Journal(jdir) as j:
        fill(j, [2])
        j.skip_to(2)  # not forward: no-op
        assert j.next_seq == 3
        j.skip_to(100)
        assert j.append(rows(100, 1), 1, expected_first_seq=100) == 100
    with Journal(jdir) as j:
        assert j.next_seq == 101
        assert seqs_of(read_all(j)) == [1, 2, 100]


def test_torn_tail_is_truncated_on_open_and_appends_continue(jdir: Path) -> None:
    with Journal(jdir) as j:
        fill(j, [2, 3, 4])
        path = j.segment_paths[-1]
    full = path.stat().st_size
    cut = full - block_size(6, 4) + 7  # the last block loses most of itself
    os.truncate(path, cut)

    j = Journal(jdir)
    report = j.open()
    try:
        assert report.torn_tail_bytes_truncated == 7
        assert report.corrupt == ()
        assert report.records == 5
        # Seqs 6..9 were handed out before the tail was lost: numbering continues after them.
        assert report.next_seq == 10 and report.seq_jump == 4 and report.seq_reserved == 10
        assert path.stat().st_size == cut - 7 == j.size_bytes
        assert j.append(rows(10, 2), 2, expected_first_seq=10) == 10
        assert seqs_of(read_all(j)) == [1, 2, 3, 4, 5, 10, 11]
    finally:
        j.close()
    with Journal(jdir) as j:
        assert seqs_of(read_all(j)) == [1, 2, 3, 4, 5, 10, 11]


def test_flipped_byte_in_middle_block_is_reported_and_skipped(jdir: Path) -> None:
    with Journal(jdir) as j:
        fill(j, [2, 3, 4])
        path = j.segment_paths[-1]
    second = block_size(1, 2)
    data = bytearray(path.read_bytes())
    data[second + HEADER_SIZE + 2] ^= 0x20
    path.write_bytes(data)

    j = Journal(jdir)
    report = j.open()
    try:
        assert report.corrupt == ((path, second, second + block_size(3, 3), 3),)
        assert report.records_lost == 3 and report.records == 6
        assert report.torn_tail_bytes_truncated == 0
        assert path.stat().st_size == len(data)  # not truncated: good blocks follow
        assert report.next_seq == j.next_seq == 10
        assert seqs_of(read_all(j)) == [1, 2, 6, 7, 8, 9]
        assert seqs_of(j.read(3, 100, 1 << 20)) == [6, 7, 8, 9]  # lost seqs are simply absent
        assert j.append(rows(10, 1), 1, expected_first_seq=10) == 10
    finally:
        j.close()
    with Journal(jdir) as j:
        assert seqs_of(read_all(j)) == [1, 2, 6, 7, 8, 9, 10]


def test_flipped_byte_at_very_end_reports_lost_records_and_never_reuses_their_seqs(jdir: Path) -> None:
    with Journal(jdir) as j:
        fill(j, [2, 3])
        path = j.segment_paths[-1]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(data)

    j = Journal(jdir)
    report = j.open()
    try:
        start = block_size(1, 2)
        assert report.corrupt == ((path, start, len(data), 3),)
        assert report.torn_tail_bytes_truncated == 0
        # Seqs 3..5 may already be in PostgreSQL: they are not handed out again.
        assert report.next_seq == j.next_seq == 6
        assert seqs_of(read_all(j)) == [1, 2]
        assert j.append(rows(6, 2), 2, expected_first_seq=6) == 6
        assert seqs_of(read_all(j)) == [1, 2, 6, 7]
    finally:
        j.close()
    with Journal(jdir) as j:
        assert seqs_of(read_all(j)) == [1, 2, 6, 7]
        assert j.next_seq == 8


def test_corrupt_tail_of_an_old_segment_counts_lost_records_from_next_name(jdir: Path) -> None:
    with Journal(jdir, segment_bytes=100) as j:
        fill(j, [3, 3, 3, 3])
        first_seg, second_seg = j.segment_paths[:2]
    data = bytearray(first_seg.read_bytes())
    data[-1] ^= 0x01
    first_seg.write_bytes(data)
    second_base = int(second_seg.name.removesuffix(".seg"))

    j = Journal(jdir, segment_bytes=100)
    report = j.open()
    try:
        (bad,) = report.corrupt
        assert bad.path == first_seg and bad.end == len(data)
        assert bad.records_lost == 3
        assert seqs_of(read_all(j)) == [s for s in range(1, 13) if not second_base - 3 <= s < second_base]
    finally:
        j.close()


def flip_byte_on_disk(j: Journal, seq: int, at: int = 3) -> tuple[Path, int]:
    """Flip one payload byte of the block holding ``seq``, under the open journal's feet."""
    for path in j.segment_paths:
        for b in scan(path.read_bytes()).blocks:
            if b.first_seq <= seq < b.next_seq:
                fd = os.open(path, os.O_RDWR)
                try:
                    (byte,) = os.pread(fd, 1, b.payload_offset + at)
                    os.pwrite(fd, bytes([byte ^ 0x20]), b.payload_offset + at)
                finally:
                    os.close(fd)
                return path, b.offset
    raise AssertionError(f"no block holds seq {seq}")


def test_corruption_after_open_is_reported_once_dropped_and_read_past(jdir: Path) -> None:
    with Journal(jdir, segment_bytes=200, fsync="never") as j:
        fill(j, [2, 3, 4, 1, 5])  # seqs 1-2, 3-5, 6-9, 10 | 11-15 (a rotation before 11)
        size, paths = j.size_bytes, j.segment_paths
        path, offset = flip_byte_on_disk(j, 3)

        # The good block before it goes out first, and the read stops there.
        assert seqs_of(read_all(j)) == [1, 2]
        with pytest.raises(JournalCorrupt) as info:
            read_all(j, 3)
        e = info.value
        assert (e.reason, e.first_seq, e.records_lost, e.path, e.offset) == ("checksum", 3, 3, path, offset)
        # Never again: the next read of the same range goes on after it, like a gap from open.
        assert seqs_of(read_all(j, 3)) == list(range(6, 16))
        assert seqs_of(read_all(j)) == [1, 2, *range(6, 16)]
        assert seqs_of(j.read(4, 3, 1 << 20)) == [6, 7, 8, 9]
        assert (j.first_seq, j.next_seq) == (1, 16)
        assert j.size_bytes == size == sum(p.stat().st_size for p in paths)  # the bytes stay
        assert j.unshipped_bytes(2) == j.unshipped_bytes(0) == size
        assert len(paths) == 2
        assert j.release(9) == 0
        assert j.release(10) == 1 and j.segment_paths == paths[1:]
        assert j.unshipped_bytes(10) == j.size_bytes
        assert j.append(rows(16, 1), 1, expected_first_seq=16) == 16

    # At the next open the same bytes are damage found at open, reported there.
    j = Journal(jdir, segment_bytes=200)
    report = j.open()
    try:
        assert report.records_lost == 0 and report.corrupt == ()  # its segment was released
        assert seqs_of(read_all(j)) == list(range(11, 17))
    finally:
        j.close()


def test_a_block_dropped_at_read_is_the_same_gap_the_next_open_reports(jdir: Path) -> None:
    with Journal(jdir) as j:
        fill(j, [2, 3, 4])
        path, offset = flip_byte_on_disk(j, 4)
        with pytest.raises(JournalCorrupt) as info:
            read_all(j, 3)
        dropped = (info.value.path, info.value.offset, info.value.records_lost)
        after_drop = seqs_of(read_all(j))
    j = Journal(jdir)
    report = j.open()
    try:
        (bad,) = report.corrupt
        assert (bad.path, bad.start, bad.records_lost) == dropped == (path, offset, 3)
        assert seqs_of(read_all(j)) == after_drop == [1, 2, 6, 7, 8, 9]
    finally:
        j.close()


def test_a_damaged_first_block_moves_first_seq(journal: Journal) -> None:
    fill(journal, [2, 3])
    flip_byte_on_disk(journal, 1)
    with pytest.raises(JournalCorrupt) as info:
        read_all(journal)
    assert (info.value.first_seq, info.value.records_lost) == (1, 2)
    assert journal.first_seq == 3
    assert seqs_of(read_all(journal)) == [3, 4, 5]


def test_a_damaged_block_read_from_its_middle_loses_only_the_seqs_asked_for(journal: Journal) -> None:
    fill(journal, [5, 1])
    flip_byte_on_disk(journal, 1)
    with pytest.raises(JournalCorrupt) as info:
        journal.read(3, 100, 1 << 20)  # seqs 1-2 were shipped already
    assert (info.value.first_seq, info.value.records_lost) == (3, 3)
    assert seqs_of(read_all(journal)) == [6]


def test_a_damaged_last_block_leaves_nothing_to_read_and_appends_continue(journal: Journal) -> None:
    fill(journal, [2])
    path = journal.segment_paths[-1]
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(data)
    with pytest.raises(JournalCorrupt) as info:
        read_all(journal)
    assert (info.value.reason, info.value.records_lost) == ("checksum", 2)
    assert read_all(journal) == [] and journal.first_seq == journal.next_seq == 3
    journal.append(rows(3, 1), 1, expected_first_seq=3)
    assert seqs_of(read_all(journal)) == [3]


def test_a_block_replaced_by_another_on_disk_is_a_sequence_error(journal: Journal) -> None:
    fill(journal, [2, 2])
    path = journal.segment_paths[-1]
    first_block = block_size(1, 2)
    other = encode_block(7, 2, rows(7, 2))  # well formed, same size, other seqs
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, other, first_block)
    finally:
        os.close(fd)
    assert seqs_of(read_all(journal)) == [1, 2]
    with pytest.raises(JournalCorrupt) as info:
        read_all(journal, 3)
    assert (info.value.reason, info.value.first_seq, info.value.records_lost) == ("sequence", 3, 2)


def test_misnamed_segment_is_reported_not_fatal(jdir: Path) -> None:
    with Journal(jdir) as j:
        fill(j, [2])
    (jdir / "junk.seg").write_bytes(b"")
    os.rename(jdir / segment_name(1), jdir / segment_name(5))
    j = Journal(jdir)
    report = j.open()
    try:
        assert len(report.inconsistencies) == 2  # junk.seg, and a name above its first block
        assert report.records == 0 and report.next_seq == j.next_seq == 5
        assert j.append(rows(5, 1), 1, expected_first_seq=5) == 5
        assert seqs_of(read_all(j)) == [5]
    finally:
        j.close()


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_fsync_policies_accepted(jdir: Path, policy: str) -> None:
    with Journal(jdir, fsync=policy, segment_bytes=100) as j:
        fill(j, [3, 3, 3])
        j.sync()
        j.sync()
        assert seqs_of(read_all(j)) == list(range(1, 10))


def test_bad_fsync_policy_raises_value_error(jdir: Path) -> None:
    with pytest.raises(ValueError):
        Journal(jdir, fsync="sometimes")


def test_bad_append_is_refused_without_writing(journal: Journal) -> None:
    with pytest.raises(ValueError):
        journal.append(b"a\nb\n", 1, expected_first_seq=1)
    assert journal.next_seq == 1 and journal.size_bytes == 0


@pytest.mark.parametrize("stated", [0, 5, 7, 10**6])
def test_append_with_a_stated_first_seq_other_than_next_seq_raises_and_writes_nothing(
    journal: Journal, stated: int
) -> None:
    fill(journal, [2, 3])
    size, paths = journal.size_bytes, journal.segment_paths
    with pytest.raises(JournalSeqMismatch) as info:
        journal.append(rows(stated, 2), 2, expected_first_seq=stated)
    assert info.value.reason == "seq_mismatch"
    assert (info.value.expected_first_seq, info.value.next_seq) == (stated, 6)
    assert journal.next_seq == 6 and journal.size_bytes == size and journal.segment_paths == paths
    assert journal.append(rows(6, 1), 1, expected_first_seq=6) == 6
    assert seqs_of(read_all(journal)) == list(range(1, 7))


def test_append_with_an_unknown_row_format_is_refused_without_writing(journal: Journal) -> None:
    with pytest.raises(ValueError):
        journal.append(rows(1, 1), 1, expected_first_seq=1, row_format=0)
    assert journal.next_seq == 1 and journal.size_bytes == 0


def test_over_limit_counts_only_segments_with_unshipped_records(jdir: Path) -> None:
    one = block_size(1, 1)
    with Journal(jdir, max_bytes=3 * one) as j:
        fill(j, [1, 1])
        assert not j.over_limit(0)
        fill(j, [1])
        assert j.size_bytes == 3 * one and j.over_limit(0)
        assert j.over_limit(2)  # the segment still holds seq 3
        j.release(3)  # the only segment is active: nothing is deleted ...
        assert j.size_bytes == 3 * one
        assert not j.over_limit(3)  # ... but nothing in it waits: no backpressure


# --- seq reservation: a seq is never handed out twice, whatever a crash takes ---------------


def crash(j: Journal) -> None:
    """The process dies: its fds (and the flock) go; nothing is synced and nothing is lowered."""
    for seg in j._segments:
        seg.close()
    assert j._dir_fd is not None
    os.close(j._dir_fd)
    j._dir_fd = None


def power_loss(jdir: Path, keep: int) -> None:
    """Keep only the first ``keep`` bytes of the segments taken in order, as a machine crash
    with ``fsync="never"`` may (whole newer segments gone, the last one kept cut short).
    ``seq.reserved`` is always fsynced, so it survives."""
    for path in sorted(jdir.glob("*.seg")):
        size = path.stat().st_size
        if keep <= 0:
            path.unlink()
        elif keep < size:
            os.truncate(path, keep)
        keep -= size


def reserved_on_disk(jdir: Path) -> int:
    return int((jdir / RESERVED_FILE).read_text())


def test_power_loss_taking_a_tail_never_reuses_its_seqs(jdir: Path) -> None:
    j = Journal(jdir, segment_bytes=200, fsync="interval", seq_reserve_step=10)
    j.open()
    firsts = fill(j, [3, 3, 3, 3, 3, 3])
    assert firsts == [1, 4, 7, 10, 13, 16]
    # Raised at seq 1 (to 1 + 3 + 10) and again when the block 13..15 crossed 14.
    assert reserved_on_disk(jdir) == 26 and j.next_seq == 19
    # Say 1..18 were shipped; then the machine loses its last two blocks.
    crash(j)
    power_loss(jdir, sum(block_size(f, 3) for f in firsts[:4]))

    j = Journal(jdir, segment_bytes=200, fsync="interval", seq_reserve_step=10)
    report = j.open()
    try:
        assert report.records == 12 and report.seq_reserved == 26
        assert report.next_seq == j.next_seq == 26 and report.seq_jump == 26 - 13
        assert j.append(rows(26, 2), 2, expected_first_seq=26) == 26
        assert seqs_of(read_all(j)) == [*range(1, 13), 26, 27]
    finally:
        j.close()


def test_a_crash_that_loses_nothing_still_continues_above_the_reservation(jdir: Path) -> None:
    j = Journal(jdir, fsync="never", seq_reserve_step=100)
    j.open()
    fill(j, [5])
    crash(j)
    with Journal(jdir) as j:
        assert j.next_seq == 106  # 6..105 are a gap: the journal cannot know they were never used
        assert seqs_of(read_all(j)) == [1, 2, 3, 4, 5]


def test_clean_close_lowers_the_reservation_so_a_restart_leaves_no_gap(jdir: Path) -> None:
    with Journal(jdir, fsync="never") as j:
        fill(j, [4, 4])
        assert reserved_on_disk(jdir) == 5 + SEQ_RESERVE_STEP
    assert reserved_on_disk(jdir) == 9
    with Journal(jdir) as j:
        assert j.next_seq == 9
        assert j.append(rows(9, 1), 1, expected_first_seq=9) == 9
    j = Journal(jdir)
    report = j.open()
    try:
        assert report.seq_jump == 0 and report.next_seq == 10 and report.seq_reserved == 10
    finally:
        j.close()


def test_the_reservation_is_written_once_per_step_not_per_append(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100k records/s must not mean a file rewrite and two fsyncs every few appends.
    assert SEQ_RESERVE_STEP >= 1 << 20
    writes: list[int] = []
    reserve = Journal._reserve

    def counting(self: Journal, value: int) -> None:
        writes.append(value)
        reserve(self, value)

    monkeypatch.setattr(Journal, "_reserve", counting)
    with Journal(jdir, fsync="never", segment_bytes=1 << 20) as j:
        for _ in range(1000):
            fill(j, [100])
        assert writes == [101 + SEQ_RESERVE_STEP]
        big = SEQ_RESERVE_STEP  # one block crossing the mark raises it past its own end
        j.append(b"\n" * big, big, expected_first_seq=100_001)
        assert writes[-1] == 100_001 + big + SEQ_RESERVE_STEP
    assert writes[-1] == j.next_seq  # lowered by close


def test_a_failed_reservation_fails_the_append_and_writes_nothing(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Journal(jdir, fsync="never", seq_reserve_step=4) as j:
        fill(j, [3])
        size, reserved = j.size_bytes, reserved_on_disk(jdir)

        def broken(self: Journal, name: str, data: bytes) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(Journal, "_replace_file", broken)
        with pytest.raises(OSError):
            j.append(rows(4, 5), 5, expected_first_seq=4)
        assert j.next_seq == 4 and j.size_bytes == size and reserved_on_disk(jdir) == reserved
        monkeypatch.undo()
        assert j.append(rows(4, 5), 5, expected_first_seq=4) == 4
        assert reserved_on_disk(jdir) == 13
        assert seqs_of(read_all(j)) == list(range(1, 9))


def test_a_journal_from_a_release_without_reservation_opens_and_starts_one(jdir: Path) -> None:
    with Journal(jdir) as j:
        fill(j, [2, 2])
    (jdir / RESERVED_FILE).unlink()
    j = Journal(jdir)
    report = j.open()
    try:
        assert report.seq_reserved == 0 and report.seq_jump == 0 and report.next_seq == 5
        assert not (jdir / RESERVED_FILE).exists()
        j.append(rows(5, 1), 1, expected_first_seq=5)
        assert reserved_on_disk(jdir) == 6 + SEQ_RESERVE_STEP
    finally:
        j.close()


@pytest.mark.parametrize("text", [b"", b"12", b"abc\n", b"0\n", b"-3\n", b"%d\n" % (1 << 64 + 1), b"1\n2\n"])
def test_a_damaged_reservation_refuses_to_open(jdir: Path, text: bytes) -> None:
    with Journal(jdir) as j:
        fill(j, [1])
    (jdir / RESERVED_FILE).write_bytes(text)
    with pytest.raises(JournalCorrupt) as info:
        Journal(jdir).open()
    assert info.value.reason == "seq_reserved"


def test_skip_to_is_reserved_before_the_segment_that_names_it(jdir: Path) -> None:
    # With fsync="never" the new segment's name may not survive a crash; the mark does.
    j = Journal(jdir, fsync="never", seq_reserve_step=0)
    j.open()
    fill(j, [2])
    j.skip_to(1000)
    crash(j)
    power_loss(jdir, block_size(1, 2))
    with Journal(jdir) as j:
        assert j.next_seq == 1000


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 7)),
        st.tuples(st.just("skip"), st.integers(0, 30)),
        st.tuples(st.just("crash"), st.floats(0, 1)),
        st.tuples(st.just("close"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=examples(60), deadline=None)
@given(ops=ops, step=st.integers(0, 12))
def test_property_no_seq_is_handed_out_twice_across_crashes_and_lost_tails(
    ops: list[tuple[str, float]], step: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        jdir = Path(tmp) / "journal"
        j = Journal(jdir, segment_bytes=120, fsync="never", seq_reserve_step=step)
        j.open()
        floor = 1  # every seq below this was handed out (or is PostgreSQL's, after skip_to)
        try:
            for op, arg in ops:
                if op == "append":
                    n = int(arg)
                    assert j.next_seq >= floor
                    first = j.append(rows(j.next_seq, n), n, expected_first_seq=j.next_seq)
                    floor = first + n
                elif op == "skip":
                    j.skip_to(j.next_seq + int(arg))
                    floor = max(floor, j.next_seq)
                else:
                    if op == "close":
                        j.close()
                    else:
                        crash(j)
                        total = sum(p.stat().st_size for p in jdir.glob("*.seg"))
                        power_loss(jdir, int(total * arg))
                    j = Journal(jdir, segment_bytes=120, fsync="never", seq_reserve_step=step)
                    report = j.open()
                    assert j.next_seq == report.next_seq >= floor
                    if op == "close":
                        assert report.seq_jump == 0
        finally:
            j.close()


# --- blocks carry their row format; the previous release's blocks are still read ------------


def previous_release_journal(jdir: Path, spec: list[tuple[int, int]]) -> Path:
    """A journal as the previous release left it: ``LSJ1`` blocks, no ``seq.reserved``."""
    jdir.mkdir()
    (jdir / "journal.id").write_text(uuid.uuid4().hex + "\n")
    path = jdir / segment_name(spec[0][0])
    path.write_bytes(b"".join(encode_block_v1(f, c, rows(f, c)) for f, c in spec))
    return path


def formats_of(blocks: list[Block]) -> list[tuple[int, int, int]]:
    return [(b.first_seq, b.count, b.row_format) for b in blocks]


def test_an_old_format_backlog_is_read_with_row_format_1_and_new_blocks_follow_it(jdir: Path) -> None:
    path = previous_release_journal(jdir, [(1, 3), (4, 2), (6, 4)])
    old_size = path.stat().st_size
    j = Journal(jdir)
    report = j.open()
    try:
        assert (report.records, report.blocks, report.next_seq, report.corrupt) == (9, 3, 10, ())
        assert j.append(rows(10, 2), 2, expected_first_seq=10) == 10  # the default layout
        assert j.append(rows(12, 1), 1, expected_first_seq=12, row_format=2) == 12
        assert path.read_bytes()[old_size : old_size + 4] == b"LSJ2"  # same segment, new layout
    finally:
        j.close()
    with Journal(jdir) as j:
        first = read_all(j)
        assert formats_of(first) == [(1, 3, 1), (4, 2, 1), (6, 4, 1), (10, 2, ROW_FORMAT_DEFAULT)]
        second = read_all(j, 12)
        assert formats_of(second) == [(12, 1, 2)]
        assert seqs_of(first + second) == list(range(1, 13))
        assert formats_of(j.read(5, 100, 1 << 20)) == [(5, 1, 1), (6, 4, 1), (10, 2, 1)]  # trimmed


def test_read_never_returns_two_row_formats_at_once(journal: Journal) -> None:
    for count, row_format in [(2, 1), (1, 1), (2, 3), (1, 3), (2, 1)]:
        journal.append(
            rows(journal.next_seq, count), count, expected_first_seq=journal.next_seq, row_format=row_format
        )
    got = []
    seq = 1
    while batch := read_all(journal, seq):
        assert len({b.row_format for b in batch}) == 1
        got.append(formats_of(batch))
        seq = batch[-1].next_seq
    assert got == [[(1, 2, 1), (3, 1, 1)], [(4, 2, 3), (6, 1, 3)], [(7, 2, 1)]]


def test_a_torn_old_format_tail_is_cut_and_new_blocks_written_after_it(jdir: Path) -> None:
    path = previous_release_journal(jdir, [(1, 2), (3, 3)])
    size = path.stat().st_size
    os.truncate(path, size - 5)
    j = Journal(jdir)
    report = j.open()
    try:
        assert report.torn_tail_bytes_truncated == HEADER_SIZE_V1 + len(rows(3, 3)) - 5
        assert report.torn_tail_records == 3 and report.next_seq == 3
        j.append(rows(3, 1), 1, expected_first_seq=3)
    finally:
        j.close()
    with Journal(jdir) as j:
        assert formats_of(read_all(j)) == [(1, 2, 1), (3, 1, ROW_FORMAT_DEFAULT)]


def test_a_corrupt_old_format_block_is_skipped_at_open(jdir: Path) -> None:
    path = previous_release_journal(jdir, [(1, 2), (3, 3), (6, 1)])
    data = bytearray(path.read_bytes())
    second = HEADER_SIZE_V1 + len(rows(1, 2))
    data[second + HEADER_SIZE_V1 + 1] ^= 0x10
    path.write_bytes(data)
    j = Journal(jdir)
    report = j.open()
    try:
        assert report.corrupt == ((path, second, second + HEADER_SIZE_V1 + len(rows(3, 3)), 3),)
        assert formats_of(read_all(j)) == [(1, 2, 1), (6, 1, 1)]
    finally:
        j.close()


def test_skip_to_whose_new_segment_fails_still_never_lowers_the_mark_below_it(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Journal, base_seq: int) -> None:
        raise OSError(28, "No space left on device")

    with Journal(jdir, seq_reserve_step=0) as j:
        fill(j, [2])
        monkeypatch.setattr(Journal, "_rotate", broken)
        with pytest.raises(OSError):
            j.skip_to(500)
        assert j.next_seq == 500 and reserved_on_disk(jdir) == 500
        with pytest.raises(JournalSeqMismatch):  # rows stamped before the skip are refused
            j.append(rows(3, 1), 1, expected_first_seq=3)
        assert j.append(rows(500, 1), 1, expected_first_seq=500) == 500  # in the old segment
        monkeypatch.undo()
    assert reserved_on_disk(jdir) == 501
    with Journal(jdir) as j:
        assert j.next_seq == 501 and seqs_of(read_all(j)) == [1, 2, 500]


def test_an_open_whose_jump_cannot_make_its_segment_leaves_the_mark_where_it_was(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = Journal(jdir, seq_reserve_step=100)
    j.open()
    fill(j, [2])
    crash(j)

    def broken(self: Journal, base_seq: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Journal, "_rotate", broken)
    with pytest.raises(OSError):
        Journal(jdir).open()
    assert reserved_on_disk(jdir) == 103  # not lowered to the 3 the segments say
    monkeypatch.undo()
    with Journal(jdir) as j:
        assert j.next_seq == 103


def test_records_after_counts_records_not_the_seqs_of_gaps(journal: Journal) -> None:
    fill(journal, [3, 4, 5])  # seqs 1..12, across segments (segment_bytes=200)
    assert journal.records_after(0) == 12
    assert journal.records_after(2) == 10  # inside the first block
    assert journal.records_after(7) == 5  # at a block's end
    journal.skip_to(1000)  # a gap: 13..999 hold no records
    fill(journal, [2])
    assert journal.records_after(0) == 14
    assert journal.records_after(12) == 2
    assert journal.records_after(500) == 2
    assert journal.records_after(1001) == 0
    journal.release(7)
    assert journal.records_after(7) == 7
