from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError
from logsvc.record import RecordDict
from logsvc.wire import NEED_DATA, Decoder, LengthPrefixFramer, PickleFormat

from .helpers import decode_all, drain, examples, make_frame, new_decoder, tr


def test_public_api_composes_framer_and_format() -> None:
    dec = Decoder(LengthPrefixFramer(), PickleFormat())
    assert dec.next_record() is NEED_DATA
    assert dec.buffered_bytes == 0
    assert dec.placeholders == 0


def test_one_frame_three_ways() -> None:
    frame = make_frame("hello world", extra={"trace_id": 17})

    def check(records: list[RecordDict]) -> None:
        assert len(records) == 1
        rec = records[0]
        assert rec["msg"] == "hello world"
        assert rec["args"] is None
        assert rec["trace_id"] == 17
        assert rec["levelname"] == "INFO"
        assert rec["name"] == "app.module"

    tr(frame, check)


def test_several_frames_in_one_chunk_three_ways() -> None:
    data = b"".join(make_frame(f"m{i}") for i in range(5))
    tr(data, lambda records: assert_msgs(records, [f"m{i}" for i in range(5)]))


def assert_msgs(records: list[RecordDict], msgs: list[str]) -> None:
    assert [r["msg"] for r in records] == msgs


def test_frame_with_allow_listed_extra_three_ways() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    frame = make_frame(extra={"when": when})
    tr(frame, lambda records: assert_when(records, when))


def assert_when(records: list[RecordDict], when: datetime) -> None:
    assert [r["when"] for r in records] == [when]


def test_feed_stores_bytes_only() -> None:
    dec = new_decoder()
    dec.feed(b"\x00\x00\x00\x00")  # a zero length: only next_record notices
    assert dec.buffered_bytes == 4
    with pytest.raises(ProtocolError):
        dec.next_record()


def test_buffered_bytes_counts_a_partial_frame() -> None:
    frame = make_frame()
    dec = new_decoder()
    dec.feed(frame[:-1])
    assert dec.next_record() is NEED_DATA
    assert dec.buffered_bytes == len(frame) - 1
    dec.feed(frame[-1:])
    assert dec.next_record()["msg"] == "hello"  # type: ignore[index]
    assert dec.buffered_bytes == 0


def test_oversized_header_rejected_before_any_body() -> None:
    dec = new_decoder(max_frame_bytes=1000)
    dec.feed(struct.pack(">L", 1001))
    with pytest.raises(ProtocolError) as info:
        dec.next_record()
    assert info.value.reason == "oversized"


def test_oversized_default_cap() -> None:
    dec = new_decoder()
    dec.feed(struct.pack(">L", (1 << 20) + 1))
    with pytest.raises(ProtocolError) as info:
        dec.next_record()
    assert info.value.reason == "oversized"


def test_zero_length_frame_is_malformed() -> None:
    dec = new_decoder()
    dec.feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError) as info:
        dec.next_record()
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 20])
def test_partial_frame_at_eof_is_truncated(cut: int) -> None:
    frame = make_frame()
    dec = new_decoder()
    dec.feed(frame + frame[:cut])
    dec.feed(b"")
    assert dec.next_record()["msg"] == "hello"  # type: ignore[index]
    with pytest.raises(ProtocolError) as info:
        dec.next_record()
    assert info.value.reason == "truncated"


def test_clean_eof_returns_need_data_forever() -> None:
    dec = new_decoder()
    dec.feed(make_frame())
    dec.feed(b"")
    assert len(drain(dec)) == 1
    for _ in range(3):
        assert dec.next_record() is NEED_DATA


def test_feed_after_eof_is_a_caller_bug() -> None:
    dec = new_decoder()
    dec.feed(b"")
    with pytest.raises(RuntimeError):
        dec.feed(b"x")


def test_error_state_sticks() -> None:
    dec = new_decoder()
    dec.feed(struct.pack(">L", 5) + b"\xff" * 5 + make_frame())
    with pytest.raises(ProtocolError) as first:
        dec.next_record()
    for _ in range(3):
        with pytest.raises(ProtocolError) as again:
            dec.next_record()
        assert again.value.reason == first.value.reason
    dec.feed(make_frame())  # ignored in the error state
    assert dec.buffered_bytes == 0
    with pytest.raises(ProtocolError):
        dec.next_record()


def test_bad_frame_does_not_poison_a_new_decoder_format() -> None:
    # A failed load drops the reused unpickler; the next frame on a fresh decoder is fine.
    fmt = PickleFormat()
    with pytest.raises(ProtocolError):
        fmt.parse(make_frame()[4:-1] + b"\x00.")
    assert fmt.parse(make_frame("again")[4:])["msg"] == "again"


# --- property: any bytes -> records or ProtocolError, nothing else, never hanging ---------------

_REAL = [
    make_frame("a"),
    make_frame("b" * 300, extra={"trace_id": 17}),
    make_frame(extra={"when": datetime(2024, 1, 1, tzinfo=UTC), "n": [1, 2, (3, 4)], "k": {1: b"x"}}),
]


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    frames = draw(st.lists(st.sampled_from(_REAL), min_size=1, max_size=3))
    data = bytearray(b"".join(frames))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "insert"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "splice":
            other = draw(st.sampled_from(_REAL))
            start = draw(st.integers(0, len(other) - 1))
            data[pos:pos] = other[start:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return [c for c in out if c]


def _check_only_records_or_protocol_error(chunks: list[bytes]) -> None:
    results = decode_all(chunks)
    for item in results[:-1]:
        assert isinstance(item, dict)
    for item in results:
        assert isinstance(item, dict | ProtocolError)
        if isinstance(item, dict):
            assert all(type(k) is str for k in item)


# The strategies of the two stream properties below (tests/wire/test_thorough.py runs them again).
MUTATED_CASES = (mutated_streams(), st.lists(st.integers(0, 10_000), max_size=6))
BYTES_CASES = (st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6))


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(*MUTATED_CASES)
def test_mutated_real_frames_yield_records_or_protocol_error(data: bytes, cuts: list[int]) -> None:
    _check_only_records_or_protocol_error(_chunked(data, cuts))


@settings(max_examples=examples(300), deadline=None)
@given(*BYTES_CASES)
def test_arbitrary_bytes_yield_records_or_protocol_error(data: bytes, cuts: list[int]) -> None:
    _check_only_records_or_protocol_error(_chunked(data, cuts))


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_arbitrary_pickle_bodies_yield_records_or_protocol_error(body: bytes) -> None:
    # Skip the framing layer: random bytes behind a valid header reach the unpickler.
    _check_only_records_or_protocol_error([struct.pack(">L", len(body)) + body])
