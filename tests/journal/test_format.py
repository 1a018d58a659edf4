"""The pure block format: encoding, checking, scanning, resync. No files here."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import JournalCorrupt
from logsvc.journal.format import (
    HEADER_SIZE,
    MAGIC,
    MAX_BLOCK_PAYLOAD,
    check_block,
    decode_block,
    drop_rows,
    encode_block,
    encode_header,
    scan,
)


def rows(first: int, count: int) -> bytes:
    return b"".join(b"row\t%d\n" % seq for seq in range(first, first + count))


def blocks(spec: list[tuple[int, int]]) -> bytes:
    return b"".join(encode_block(first, count, rows(first, count)) for first, count in spec)


def test_round_trip() -> None:
    payload = rows(7, 3)
    data = encode_block(7, 3, payload)
    assert data[:4] == MAGIC
    assert len(data) == HEADER_SIZE + len(payload)
    assert data == encode_header(7, 3, payload) + payload
    first, count, got = decode_block(data)
    assert (first, count, bytes(got)) == (7, 3, payload)
    assert check_block(data[:HEADER_SIZE], data[HEADER_SIZE:]) == (7, 3)


@pytest.mark.parametrize(
    ("first", "count", "payload"),
    [
        (0, 1, b"a\n"),  # seq 0 does not exist
        (1, 0, b"a\n"),
        (1, 2, b"a\n"),  # count disagrees with rows
        (1, 1, b"a"),  # last row unterminated
        (1, 1, b""),
        ((1 << 64) - 1, 2, b"a\nb\n"),  # last seq past u64
    ],
)
def test_encode_rejects_bad_fields(first: int, count: int, payload: bytes) -> None:
    with pytest.raises(ValueError):
        encode_header(first, count, payload)


def test_encode_rejects_oversized_payload() -> None:
    with pytest.raises(ValueError):
        encode_header(1, 1, b"x" * MAX_BLOCK_PAYLOAD + b"\n")


def test_decode_flipped_payload_byte_is_checksum_error() -> None:
    data = bytearray(encode_block(1, 2, rows(1, 2)))
    data[-2] ^= 0x01
    with pytest.raises(JournalCorrupt) as info:
        decode_block(data)
    assert info.value.reason == "checksum"


def test_decode_short_block_is_torn_and_bad_magic_is_framing() -> None:
    data = encode_block(1, 2, rows(1, 2))
    with pytest.raises(JournalCorrupt) as info:
        decode_block(data[:-1])
    assert info.value.reason == "torn"
    with pytest.raises(JournalCorrupt) as info:
        decode_block(b"XXXX" + data[4:])
    assert info.value.reason == "framing"


def test_drop_rows() -> None:
    assert drop_rows(b"a\nbb\nccc\n", 0) == b"a\nbb\nccc\n"
    assert drop_rows(b"a\nbb\nccc\n", 2) == b"ccc\n"
    assert drop_rows(b"a\nbb\nccc\n", 3) == b""
    with pytest.raises(JournalCorrupt):
        drop_rows(b"a\n", 2)


def test_scan_of_concatenated_blocks() -> None:
    data = blocks([(1, 3), (4, 1), (5, 10)])
    res = scan(data)
    assert [(b.first_seq, b.count) for b in res.blocks] == [(1, 3), (4, 1), (5, 10)]
    assert res.blocks[0].offset == 0
    assert res.blocks[1].offset == res.blocks[0].end
    assert res.end == len(data) == res.clean_prefix_end
    assert res.bad == [] and res.torn_tail_bytes == 0
    assert res.next_seq == 15 and res.records == 14


def test_scan_base_offset_shifts_every_offset() -> None:
    data = blocks([(1, 1), (2, 1)])
    res = scan(data, base_offset=1000)
    assert [b.offset for b in res.blocks] == [1000, 1000 + len(data) // 2]
    assert res.end == 1000 + len(data)


def test_scan_empty() -> None:
    res = scan(b"", expected_seq=9)
    assert res.blocks == [] and res.bad == [] and res.end == 0 and res.next_seq == 9


@pytest.mark.parametrize("cut", [1, 3, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 2])
def test_scan_torn_tail_is_not_corruption(cut: int) -> None:
    good = blocks([(1, 2)])
    last = blocks([(3, 2)])
    res = scan(good + last[:cut])
    assert [b.first_seq for b in res.blocks] == [1]
    assert res.bad == []
    assert res.torn_tail_bytes == cut
    assert res.end == len(good)


def test_scan_zero_filled_tail_is_torn() -> None:
    good = blocks([(1, 2)])
    res = scan(good + bytes(4096))
    assert res.torn_tail_bytes == 4096 and res.bad == []


def test_scan_flipped_byte_in_middle_block_resyncs_and_counts_lost_records() -> None:
    data = bytearray(blocks([(1, 2), (3, 5), (8, 1)]))
    second = len(blocks([(1, 2)]))
    data[second + HEADER_SIZE + 3] ^= 0xFF
    res = scan(data, expected_seq=1)
    assert [b.first_seq for b in res.blocks] == [1, 8]
    assert len(res.bad) == 1
    bad = res.bad[0]
    assert (bad.start, bad.end, bad.records_lost, bad.reason) == (
        second,
        second + len(blocks([(3, 5)])),
        5,
        "checksum",
    )
    assert res.clean_prefix_end == second
    assert res.next_seq == 9 and res.torn_tail_bytes == 0


def test_scan_garbage_between_blocks_is_a_framing_range() -> None:
    data = blocks([(1, 1)]) + b"garbage" + blocks([(2, 1)])
    res = scan(data)
    assert [b.first_seq for b in res.blocks] == [1, 2]
    assert [(r.records_lost, r.reason) for r in res.bad] == [(0, "framing")]


def test_scan_flipped_byte_at_very_end_is_corruption_with_estimate() -> None:
    data = bytearray(blocks([(1, 2), (3, 4)]))
    data[-1] ^= 0x01
    res = scan(data, expected_seq=1)
    assert [b.first_seq for b in res.blocks] == [1]
    assert res.torn_tail_bytes == 0
    assert [(r.start, r.end, r.records_lost, r.reason) for r in res.bad] == [
        (res.end, len(data), 4, "checksum")
    ]


def test_scan_resync_refuses_an_older_block() -> None:
    # A stale block (seq going back) after the damage must not be taken as the resync point.
    data = blocks([(1, 2)]) + b"\xff" * 10 + blocks([(1, 2)]) + blocks([(3, 1)])
    res = scan(data, expected_seq=1)
    assert [b.first_seq for b in res.blocks] == [1, 3]
    assert res.bad[0].records_lost == 0


def test_scan_block_below_expected_seq_is_rejected() -> None:
    res = scan(blocks([(1, 2), (3, 1)]), expected_seq=3)
    assert [b.first_seq for b in res.blocks] == [3]
    assert res.bad[0].reason == "sequence"


def test_scan_magic_inside_payload_does_not_fool_resync() -> None:
    payload = b"LSJ1 is a fine word\n" + MAGIC + b"\x00\x00\x00\x10" * 4 + b"\n"
    data = bytearray(encode_block(1, 2, payload) + blocks([(3, 1)]))
    data[5] ^= 0x01  # payload_len of the first block
    res = scan(data, expected_seq=1)
    assert [b.first_seq for b in res.blocks] == [3]
    assert res.bad[0].records_lost == 2


row_lists = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ") + b"\n"), min_size=1, max_size=20
)


@given(first=st.integers(1, 1 << 62), row_list=row_lists)
def test_property_random_payloads_round_trip(first: int, row_list: list[bytes]) -> None:
    payload = b"".join(row_list)
    data = encode_block(first, len(row_list), payload)
    got_first, got_count, got = decode_block(data)
    assert (got_first, got_count, bytes(got)) == (first, len(row_list), payload)
    assert [(b.first_seq, b.count) for b in scan(data).blocks] == [(first, len(row_list))]


@given(st.lists(row_lists, min_size=1, max_size=6))
def test_property_scan_finds_every_block(batches: list[list[bytes]]) -> None:
    data = b""
    seq = 1
    for batch in batches:
        data += encode_block(seq, len(batch), b"".join(batch))
        seq += len(batch)
    res = scan(data, expected_seq=1)
    assert res.bad == [] and res.torn_tail_bytes == 0
    assert res.next_seq == seq and res.end == len(data)


@settings(max_examples=300)
@given(data=st.binary(max_size=400), base=st.integers(0, 1 << 40), expected=st.none() | st.integers(1, 50))
def test_property_any_bytes_scan_never_raises(data: bytes, base: int, expected: int | None) -> None:
    res = scan(data, base, expected)
    assert base <= res.end <= base + len(data)
    for r in res.bad:
        assert base <= r.start < r.end <= base + len(data) and r.records_lost >= 0


@settings(max_examples=300)
@given(
    spec=st.lists(st.integers(1, 5), min_size=1, max_size=5),
    where=st.integers(0, 10_000),
    junk=st.binary(min_size=1, max_size=30),
)
def test_property_damaged_journal_scan_never_raises(spec: list[int], where: int, junk: bytes) -> None:
    data = b""
    seq = 1
    real = set()
    for count in spec:
        data += encode_block(seq, count, rows(seq, count))
        real.add((seq, count))
        seq += count
    where %= len(data)
    damaged = data[:where] + junk + data[where + len(junk) :]
    res = scan(damaged, expected_seq=1)
    found = [(b.first_seq, b.count) for b in res.blocks]
    assert found == sorted(found)
    assert set(found) <= real  # a block is believed only if it is one we wrote
