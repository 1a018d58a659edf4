"""The journal on disk: rotation, reads, release, recovery from torn and corrupt segments."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from logsvc.errors import JournalCorrupt, JournalSeqMismatch, LogsvcError
from logsvc.journal import HEADER_SIZE, Block, Journal, segment_name


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
        assert report.next_seq == 6 and report.records == 5
        assert path.stat().st_size == cut - 7 == j.size_bytes
        assert j.append(rows(6, 2), 2, expected_first_seq=6) == 6
        assert seqs_of(read_all(j)) == list(range(1, 8))
    finally:
        j.close()
    with Journal(jdir) as j:
        assert seqs_of(read_all(j)) == list(range(1, 8))


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


def test_corruption_after_open_raises_on_read(journal: Journal) -> None:
    fill(journal, [2])
    path = journal.segment_paths[-1]
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(data)
    with pytest.raises(JournalCorrupt) as info:
        read_all(journal)
    assert info.value.reason == "checksum"


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
