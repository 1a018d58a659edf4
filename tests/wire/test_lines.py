"""LineFramer: fed whole, byte by byte and with trailing data; oversized lines; EOF; a model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire import MAX_LINE_BYTES, NEED_DATA, Decoder, LineFramer
from logsvc.wire.buffer import ReceiveBuffer
from tests.wire.helpers import collect

from .helpers import FEEDERS, examples

Item = bytes | str | ProtocolError  # a line, "!reason" for a RecordRejected, or the error


class RawFormat:
    """The identity format: each frame becomes {"msg": frame}."""

    def parse(self, frame: bytes) -> RecordDict:
        return {"msg": frame}


def new_decoder(max_line_bytes: int = MAX_LINE_BYTES) -> Decoder:
    return Decoder(LineFramer(max_line_bytes), RawFormat())


def run(chunks: list[bytes], max_line_bytes: int = MAX_LINE_BYTES, *, eof: bool = True) -> list[Item]:
    """Feed ``chunks`` (then EOF); collect lines, rejections and a final ProtocolError."""
    out = collect(new_decoder(max_line_bytes), chunks, eof=eof)
    return [x["msg"] if isinstance(x, dict) else x for x in out]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def three_ways(data: bytes, max_line_bytes: int = MAX_LINE_BYTES) -> list[Item]:
    """Decode whole, byte by byte and in 7-byte chunks; all three must agree."""
    whole = run([data], max_line_bytes)
    assert run(bytewise(data), max_line_bytes) == whole
    assert run([data[i : i + 7] for i in range(0, len(data), 7)], max_line_bytes) == whole
    return whole


def test_default_cap_is_one_mib() -> None:
    assert MAX_LINE_BYTES == 1 << 20
    assert LineFramer().max_line_bytes == MAX_LINE_BYTES


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineFramer(0)


def test_lines_with_helpers_feeders() -> None:
    data = b'{"a":1}\n{"b":2}\r\n{"c":3}\n'
    for feeder in FEEDERS:
        # feed_with_trailing leaves b"\x00\x00": a partial line that must wait, not a record.
        assert [r["msg"] for r in feeder(new_decoder(), data)] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_crlf_and_empty_lines() -> None:
    data = b"a\r\n\n\r\n\nb\n\r\r\nc\n"
    assert three_ways(data) == [b"a", b"b", b"\r", b"c"]  # one "\r" is dropped per line


def test_bare_cr_is_not_a_terminator() -> None:
    assert three_ways(b"a\rb\n") == [b"a\rb"]


def test_final_unterminated_line_is_a_record_at_eof() -> None:
    assert three_ways(b"a\nlast") == [b"a", b"last"]
    assert three_ways(b"a\nlast\r") == [b"a", b"last"]
    assert three_ways(b"a\n\r") == [b"a"]
    assert three_ways(b"") == []


def test_partial_line_waits_without_eof() -> None:
    dec = new_decoder()
    dec.feed(b"one\ntw")
    assert dec.next_record() == {"msg": b"one"}
    assert dec.next_record() is NEED_DATA
    assert dec.buffered_bytes == 2
    dec.feed(b"o\n")
    assert dec.next_record() == {"msg": b"two"}
    assert dec.buffered_bytes == 0


def test_line_of_exactly_the_cap_is_accepted() -> None:
    assert three_ways(b"x" * 10 + b"\n", 10) == [b"x" * 10]
    assert three_ways(b"x" * 10 + b"\r\n", 10) == [b"x" * 10]
    assert three_ways(b"x" * 10, 10) == [b"x" * 10]  # at EOF too
    assert three_ways(b"x" * 10 + b"\r", 10) == [b"x" * 10]


def test_line_one_over_the_cap_is_rejected() -> None:
    assert three_ways(b"x" * 11 + b"\n", 10) == ["!oversized"]
    assert three_ways(b"x" * 11 + b"\r\n", 10) == ["!oversized"]
    assert three_ways(b"x" * 11, 10) == ["!oversized"]  # at EOF


def test_oversized_line_is_rejected_once_and_the_stream_stays_in_step() -> None:
    data = b"short\n" + b"x" * 100 + b"\n" + b"after\n" + b"y" * 25 + b"\r\nlast"
    assert three_ways(data, 10) == [b"short", "!oversized", b"after", "!oversized", b"last"]


def test_rejection_consumes_the_frame_before_raising() -> None:
    dec = new_decoder(4)
    dec.feed(b"toolong\nok\n")
    with pytest.raises(RecordRejected) as info:
        dec.next_record()
    assert info.value.reason == "oversized"
    assert dec.next_record() == {"msg": b"ok"}


def test_oversized_line_is_dropped_as_it_arrives() -> None:
    # 10 MiB without a newline, 64 KiB at a time: the framer must not hold on to any of it.
    dec = new_decoder(1024)
    chunk = b"z" * (64 * 1024)
    rejected = 0
    for _ in range(160):
        dec.feed(chunk)
        try:
            assert dec.next_record() is NEED_DATA
        except RecordRejected as exc:
            assert exc.reason == "oversized"
            rejected += 1
        assert dec.buffered_bytes == 0
    assert rejected == 1
    dec.feed(b"zzz\nok\n")
    assert dec.next_record() == {"msg": b"ok"}


def test_oversized_line_is_detected_before_its_end_arrives() -> None:
    dec = new_decoder(10)
    dec.feed(b"x" * 11)  # cap + 1 could still be cap bytes + "\r"
    assert dec.next_record() is NEED_DATA
    dec.feed(b"x")
    with pytest.raises(RecordRejected):
        dec.next_record()
    assert dec.buffered_bytes == 0


def test_eof_in_the_middle_of_a_discarded_line_is_clean() -> None:
    assert run([b"x" * 50], 10) == ["!oversized"]
    assert run([b"x" * 50, b"x" * 50], 10) == ["!oversized"]


def test_framer_alone_on_a_receive_buffer() -> None:
    framer = LineFramer(8)
    buf = ReceiveBuffer()
    buf.feed(b"ab\n\ncd")
    assert framer.maybe_extract(buf) == b"ab"
    assert framer.maybe_extract(buf) is None
    assert bytes(buf) == b"cd"
    buf.feed(b"ef\n")
    assert framer.maybe_extract(buf) == b"cdef"
    assert framer.maybe_extract_at_eof(buf) is None
    assert len(buf) == 0


def test_huge_line_in_one_chunk() -> None:
    data = b"a" * (MAX_LINE_BYTES + 5) + b"\nok\n"
    assert run([data]) == ["!oversized", b"ok"]


def test_nul_and_invalid_utf8_are_just_bytes() -> None:
    assert three_ways(b"\x00\xff\xfe\n\x00\n") == [b"\x00\xff\xfe", b"\x00"]


# --- a model: the framer agrees with split(b"\n") for any bytes and any chunking --------------


def model(data: bytes, cap: int) -> list[Item]:
    out: list[Item] = []
    for line in data.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            out.append("!oversized" if len(line) > cap else line)
    return out


_PIECES = [b"a", b"bc", b"\r", b"\n", b"\r\n", b"x" * 9, b"y" * 30, b"\x00", b"\xff"]


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return [c for c in out if c]


# The strategies of the two properties below (tests/wire/test_thorough.py runs them again, longer).
MODEL_CASES = (
    st.lists(st.sampled_from(_PIECES), max_size=40),
    st.integers(1, 40),
    st.lists(st.integers(0, 2000), max_size=8),
)
BYTES_CASES = (st.binary(max_size=3000), st.integers(1, 100), st.lists(st.integers(0, 3000), max_size=8))


@settings(max_examples=examples(500), deadline=None)
@given(*MODEL_CASES)
def test_framer_matches_the_model(pieces: list[bytes], cap: int, cuts: list[int]) -> None:
    data = b"".join(pieces)
    assert run(_chunked(data, cuts), cap) == model(data, cap)


@settings(max_examples=examples(300), deadline=None)
@given(*BYTES_CASES)
def test_arbitrary_bytes_never_lose_sync(data: bytes, cap: int, cuts: list[int]) -> None:
    result = run(_chunked(data, cuts), cap)
    assert not any(isinstance(item, ProtocolError) for item in result)
    assert result == model(data, cap)
