"""The pure block format: encoding, checking, scanning, resync. No files here."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import JournalCorrupt
from logsvc.journal.format import (
    HEADER_SIZE,
    HEADER_SIZE_V1,
    HEADER_SIZE_V2,
    MAGIC,
    MAGIC_V1,
    MAGIC_V2,
    MAX_BLOCK_PAYLOAD,
    ROW_FORMAT_DEFAULT,
    check_block,
    decode_block,
    drop_rows,
    encode_block,
    encode_block_v1,
    encode_header,
    encode_header_v1,
    scan,
    torn_block_count,
)
from tests.journal.helpers import examples


def rows(first: int, count: int) -> bytes:
    return b"".join(b"row\t%d\n" % seq for seq in range(first, first + count))


def blocks(spec: list[tuple[int, int]]) -> bytes:
    return b"".join(encode_block(first, count, rows(first, count)) for first, count in spec)


def v1_blocks(spec: list[tuple[int, int]]) -> bytes:
    """Blocks as the previous release wrote them (``LSJ1``, rows of layout 1)."""
    return b"".join(encode_block_v1(first, count, rows(first, count)) for first, count in spec)


def v2_header(n: int, first: int, count: int, row_format: int, flags: int, payload: bytes) -> bytes:
    """An ``LSJ2`` header with any fields at all and a CRC that matches them."""
    crc = zlib.crc32(payload, zlib.crc32(struct.pack(">IQIHH", n, first, count, row_format, flags)))
    return struct.pack(">4sIQIHHI", MAGIC_V2, n, first, count, row_format, flags, crc)


def test_the_two_layouts() -> None:
    assert (MAGIC, HEADER_SIZE) == (MAGIC_V2, HEADER_SIZE_V2) == (b"LSJ2", 28)
    assert (MAGIC_V1, HEADER_SIZE_V1) == (b"LSJ1", 24)
    payload = rows(5, 2)
    # The byte layout in the module docstring, field by field.
    assert encode_header(5, 2, payload, 513) == v2_header(len(payload), 5, 2, 513, 0, payload)
    crc = zlib.crc32(payload, zlib.crc32(struct.pack(">IQI", len(payload), 5, 2)))
    assert encode_header_v1(5, 2, payload) == struct.pack(">4sIQII", b"LSJ1", len(payload), 5, 2, crc)


def test_round_trip_of_a_row_format() -> None:
    data = encode_block(7, 3, rows(7, 3), row_format=65535)
    first, count, row_format, payload = decode_block(data)
    assert (first, count, row_format, bytes(payload)) == (7, 3, 65535, rows(7, 3))
    assert [(b.first_seq, b.row_format, b.header_size) for b in scan(data).blocks] == [(7, 65535, 28)]


def test_round_trip_of_a_previous_release_block_reports_row_format_1() -> None:
    payload = rows(7, 3)
    data = encode_block_v1(7, 3, payload)
    assert data[:4] == MAGIC_V1 and len(data) == HEADER_SIZE_V1 + len(payload)
    first, count, row_format, got = decode_block(data)
    assert (first, count, row_format, bytes(got)) == (7, 3, 1, payload)
    assert check_block(data[:HEADER_SIZE_V1], data[HEADER_SIZE_V1:]) == (7, 3, 1)
    (info,) = scan(data).blocks
    assert (info.row_format, info.header_size, info.payload_offset, info.end) == (1, 24, 24, len(data))


@pytest.mark.parametrize("row_format", [0, 65536, -1])
def test_encode_rejects_a_row_format_out_of_u16(row_format: int) -> None:
    with pytest.raises(ValueError):
        encode_header(1, 1, b"a\n", row_format)


def test_a_block_with_a_flag_set_is_not_read_even_with_a_good_crc() -> None:
    payload = rows(1, 1)
    data = v2_header(len(payload), 1, 1, 1, 0x8000, payload) + payload
    with pytest.raises(JournalCorrupt) as info:
        decode_block(data)
    assert info.value.reason == "framing"
    res = scan(data + blocks([(2, 1)]), expected_seq=1)
    assert [b.first_seq for b in res.blocks] == [2]
    assert [(r.records_lost, r.reason) for r in res.bad] == [(1, "framing")]


def test_check_block_with_a_header_of_the_other_layout_size_is_torn_or_framing() -> None:
    data = encode_block(1, 1, rows(1, 1))
    with pytest.raises(JournalCorrupt) as info:
        check_block(data[:HEADER_SIZE_V1], data[HEADER_SIZE_V1:])
    assert info.value.reason == "torn"
    old = encode_block_v1(1, 1, rows(1, 1))
    with pytest.raises(JournalCorrupt) as info:
        check_block(old[:HEADER_SIZE_V2], old[HEADER_SIZE_V2:])
    assert info.value.reason == "framing"


def test_round_trip() -> None:
    payload = rows(7, 3)
    data = encode_block(7, 3, payload)
    assert data[:4] == MAGIC
    assert len(data) == HEADER_SIZE + len(payload)
    assert data == encode_header(7, 3, payload) + payload
    first, count, row_format, got = decode_block(data)
    assert (first, count, row_format, bytes(got)) == (7, 3, ROW_FORMAT_DEFAULT, payload)
    assert check_block(data[:HEADER_SIZE], data[HEADER_SIZE:]) == (7, 3, ROW_FORMAT_DEFAULT)


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
    got_first, got_count, got_format, got = decode_block(data)
    assert (got_first, got_count, got_format, bytes(got)) == (first, len(row_list), 1, payload)
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


@settings(max_examples=examples(300))
@given(data=st.binary(max_size=400), base=st.integers(0, 1 << 40), expected=st.none() | st.integers(1, 50))
def test_property_any_bytes_scan_never_raises(data: bytes, base: int, expected: int | None) -> None:
    res = scan(data, base, expected)
    assert base <= res.end <= base + len(data)
    for r in res.bad:
        assert base <= r.start < r.end <= base + len(data) and r.records_lost >= 0


@settings(max_examples=examples(300))
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


# --- both layouts in one run of blocks: an upgrade with a backlog ----------------------------


def test_scan_of_previous_release_blocks_followed_by_new_ones() -> None:
    old = v1_blocks([(1, 3), (4, 2)])
    new = blocks([(6, 1), (7, 4)])
    res = scan(old + new, expected_seq=1)
    assert [(b.first_seq, b.count, b.row_format, b.header_size) for b in res.blocks] == [
        (1, 3, 1, 24),
        (4, 2, 1, 24),
        (6, 1, ROW_FORMAT_DEFAULT, 28),
        (7, 4, ROW_FORMAT_DEFAULT, 28),
    ]
    assert res.blocks[2].offset == len(old) == res.blocks[1].end
    assert res.bad == [] and res.torn_tail_bytes == 0 and res.end == len(old + new) and res.next_seq == 11


def test_scan_corrupt_old_block_resyncs_on_the_next_old_block() -> None:
    data = bytearray(v1_blocks([(1, 2), (3, 5), (8, 1)]) + blocks([(9, 1)]))
    second = len(v1_blocks([(1, 2)]))
    data[second + HEADER_SIZE_V1 + 3] ^= 0xFF
    res = scan(data, expected_seq=1)
    assert [(b.first_seq, b.row_format) for b in res.blocks] == [(1, 1), (8, 1), (9, 1)]
    assert [(r.start, r.end, r.records_lost, r.reason) for r in res.bad] == [
        (second, second + len(v1_blocks([(3, 5)])), 5, "checksum")
    ]


def test_scan_corrupt_last_old_block_resyncs_on_the_first_new_block() -> None:
    old = v1_blocks([(1, 2), (3, 5)])
    data = bytearray(old + blocks([(8, 2)]))
    data[len(old) - 2] ^= 0x01
    res = scan(data, expected_seq=1)
    assert [(b.first_seq, b.header_size) for b in res.blocks] == [(1, 24), (8, 28)]
    assert [(r.records_lost, r.reason) for r in res.bad] == [(5, "checksum")]


def test_scan_corrupt_new_block_resyncs_on_the_next_new_block() -> None:
    data = bytearray(v1_blocks([(1, 2)]) + blocks([(3, 5), (8, 1)]))
    hit = len(v1_blocks([(1, 2)])) + 20  # the new block's row_format field
    data[hit] ^= 0x01
    res = scan(data, expected_seq=1)
    assert [b.first_seq for b in res.blocks] == [1, 8]
    assert [(r.start, r.records_lost, r.reason) for r in res.bad] == [(hit - 20, 5, "checksum")]


@pytest.mark.parametrize("layout", ["old", "new"])
def test_scan_flipped_byte_at_very_end_estimates_lost_records_in_either_layout(layout: str) -> None:
    data = bytearray((v1_blocks if layout == "old" else blocks)([(1, 2), (3, 4)]))
    data[-1] ^= 0x01
    res = scan(data, expected_seq=1)
    assert [(r.records_lost, r.reason) for r in res.bad] == [(4, "checksum")]
    assert res.torn_tail_bytes == 0


@pytest.mark.parametrize("layout", ["old", "new"])
@pytest.mark.parametrize(
    "cut", [1, 3, 4, HEADER_SIZE_V1 - 1, HEADER_SIZE_V1, HEADER_SIZE_V2 - 1, HEADER_SIZE_V2 + 2]
)
def test_scan_torn_tail_in_either_layout(layout: str, cut: int) -> None:
    encode = v1_blocks if layout == "old" else blocks
    good = v1_blocks([(1, 2)])
    last = encode([(3, 2)])
    res = scan(good + last[:cut], expected_seq=1)
    assert [b.first_seq for b in res.blocks] == [1]
    assert res.bad == [] and res.torn_tail_bytes == cut
    expect = 2 if cut >= (HEADER_SIZE_V1 if layout == "old" else HEADER_SIZE_V2) else 0
    assert torn_block_count(good + last[:cut], len(good), 3) == expect
    assert torn_block_count(good + last[:cut], len(good), 4) == 0


magic_soup = st.lists(
    st.sampled_from([MAGIC_V1, MAGIC_V2, b"LSJ", b"\x00" * 4, b"\xff", b"\n"]) | st.binary(max_size=30),
    max_size=20,
).map(b"".join)


@settings(max_examples=examples(300))
@given(data=magic_soup, expected=st.none() | st.integers(1, 50))
def test_property_bytes_full_of_magics_scan_never_raises(data: bytes, expected: int | None) -> None:
    res = scan(data, 0, expected)
    assert 0 <= res.end <= len(data)
    for r in res.bad:
        assert 0 <= r.start < r.end <= len(data) and r.records_lost >= 0


@settings(max_examples=examples(300))
@given(
    spec=st.lists(st.tuples(st.integers(1, 5), st.booleans(), st.integers(1, 3)), min_size=1, max_size=6),
    where=st.integers(0, 10_000),
    junk=st.binary(min_size=1, max_size=30),
)
def test_property_damaged_mixed_journal_scan_never_raises_and_believes_only_real_blocks(
    spec: list[tuple[int, bool, int]], where: int, junk: bytes
) -> None:
    data = b""
    seq = 1
    real = set()
    for count, old, row_format in spec:
        if old:
            data += encode_block_v1(seq, count, rows(seq, count))
            real.add((seq, count, 1))
        else:
            data += encode_block(seq, count, rows(seq, count), row_format)
            real.add((seq, count, row_format))
        seq += count
    whole = scan(data, expected_seq=1)
    assert {(b.first_seq, b.count, b.row_format) for b in whole.blocks} == real and whole.bad == []
    where %= len(data)
    damaged = data[:where] + junk + data[where + len(junk) :]
    res = scan(damaged, expected_seq=1)
    found = [(b.first_seq, b.count, b.row_format) for b in res.blocks]
    assert found == sorted(found)
    assert set(found) <= real
