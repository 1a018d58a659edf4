"""``Decoder.records`` (every complete frame cut in one pass) against ``next_record``.

``records`` is the hot path of a stream connection (issue 13); ``next_record`` is the
reference. For any bytes cut anywhere both must give the same records, the same final error,
and leave the same bytes buffered; a caller that stops early loses nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire import NEED_DATA, Decoder, LengthPrefixFramer, PickleFormat
from logsvc.wire.buffer import ReceiveBuffer

from .helpers import examples, frame_of, make_frame, new_decoder
from .test_decoder import BYTES_CASES, MUTATED_CASES, _chunked

Outcome = tuple[list[RecordDict], str | None, int]


def _one_by_one(chunks: list[bytes]) -> Outcome:
    dec, out = new_decoder(), list[RecordDict]()
    try:
        for c in chunks:
            dec.feed(c)
            while (rec := dec.next_record()) is not NEED_DATA:
                out.append(rec)
        dec.feed(b"")
        while (rec := dec.next_record()) is not NEED_DATA:
            out.append(rec)
    except ProtocolError as exc:
        return out, exc.reason, dec.buffered_bytes
    return out, None, dec.buffered_bytes


def _batched(chunks: list[bytes]) -> Outcome:
    dec, out = new_decoder(), list[RecordDict]()
    rejected: list[RecordRejected] = []
    try:
        for c in chunks:
            dec.feed(c)
            out.extend(dec.records(rejected.append))
        dec.feed(b"")
        out.extend(dec.records(rejected.append))
    except ProtocolError as exc:
        return out, exc.reason, dec.buffered_bytes
    assert not rejected  # pickle frames are refused whole (ProtocolError), never skipped
    return out, None, dec.buffered_bytes


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(*MUTATED_CASES)
def test_records_equal_next_record_on_mutated_real_frames(data: bytes, cuts: list[int]) -> None:
    chunks = _chunked(data, cuts)
    assert _batched(chunks) == _one_by_one(chunks)


@settings(max_examples=examples(300), deadline=None)
@given(*BYTES_CASES)
def test_records_equal_next_record_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    chunks = _chunked(data, cuts)
    assert _batched(chunks) == _one_by_one(chunks)


def test_a_caller_that_stops_early_loses_no_frame() -> None:
    frames = [make_frame(f"m{i}") for i in range(6)]
    dec = new_decoder()
    dec.feed(b"".join(frames) + frames[0][:7])
    it = dec.records(lambda exc: None)
    assert [next(it)["msg"], next(it)["msg"]] == ["m0", "m1"]
    it.close()  # four frames cut, not parsed: they stay, first in line, and are counted
    assert dec.buffered_bytes == sum(len(f) - 4 for f in frames[2:]) + 7
    assert dec.next_record()["msg"] == "m2"  # type: ignore[index]
    assert [r["msg"] for r in dec.records(lambda exc: None)] == ["m3", "m4", "m5"]
    assert dec.buffered_bytes == 7


def test_records_before_a_bad_frame_come_out_then_the_error() -> None:
    good = [make_frame(f"m{i}") for i in range(3)]
    bad = frame_of(b"\x80\x02cos\nsystem\nq\x00.")  # a global only an attack names
    dec = new_decoder()
    dec.feed(b"".join(good) + bad + make_frame("after"))
    out = []
    with pytest.raises(ProtocolError) as err:
        for rec in dec.records(lambda exc: None):
            out.append(rec["msg"])
    assert out == ["m0", "m1", "m2"] and err.value.reason == "forbidden"
    assert dec.buffered_bytes == 0
    with pytest.raises(ProtocolError):
        dec.next_record()  # the error state sticks


def test_extract_all_stops_before_a_header_it_refuses() -> None:
    framer = LengthPrefixFramer(max_frame_bytes=100)
    buf = ReceiveBuffer()
    buf.feed(frame_of(b"a" * 10) + frame_of(b"b" * 100) + b"\x00\x00\x00\x65" + b"c" * 200)
    assert framer.extract_all(buf) == [b"a" * 10, b"b" * 100]
    assert framer.extract_all(buf) == []  # the oversized header is still there
    with pytest.raises(ProtocolError) as err:
        framer.maybe_extract(buf)
    assert err.value.reason == "oversized"


def test_extract_all_waits_for_the_first_frame_without_copying_it() -> None:
    framer = LengthPrefixFramer()
    buf = ReceiveBuffer()
    body = make_frame("x" * 5000)[4:]
    whole = frame_of(body)
    for i in range(0, len(whole) - 1, 1000):
        buf.feed(whole[i : i + 1000])
        if len(buf) < len(whole):
            assert framer.extract_all(buf) == []
    buf.feed(whole[len(buf) :])
    assert framer.extract_all(buf) == [body] and len(buf) == 0


def test_rejected_records_are_reported_and_skipped() -> None:
    class Picky:
        def parse(self, frame: bytes) -> RecordDict:
            if frame == b"no":
                raise RecordRejected("not this one", reason="picky")
            return {"msg": frame.decode()}

    dec = Decoder(LengthPrefixFramer(), Picky())
    dec.feed(frame_of(b"a") + frame_of(b"no") + frame_of(b"b"))
    seen: list[str] = []
    assert [r["msg"] for r in dec.records(lambda exc: seen.append(exc.reason))] == ["a", "b"]
    assert seen == ["picky"]


def test_allow_listed_values_come_through_records() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    dec = new_decoder()
    dec.feed(make_frame(extra={"when": when, "trace_id": 17}))
    (rec,) = dec.records(lambda exc: None)
    assert rec["when"] == when and rec["trace_id"] == 17
    assert isinstance(PickleFormat().parse(make_frame()[4:]), dict)
