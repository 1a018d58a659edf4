"""PickleDatagramFormat: real DatagramHandler datagrams, bad headers, hostile pickles, any bytes."""

from __future__ import annotations

import logging
import logging.handlers
import pickle
import socket
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import RecordRejected
from logsvc.wire import MAX_FRAME_BYTES, PickleDatagramFormat

from .helpers import examples, make_frame, make_record


def reason(datagram: bytes, fmt: PickleDatagramFormat | None = None) -> str:
    with pytest.raises(RecordRejected) as info:
        (fmt or PickleDatagramFormat()).parse(datagram)
    return info.value.reason


def test_real_datagram_handler(udp_socket: socket.socket) -> None:
    handler = logging.handlers.DatagramHandler("127.0.0.1", udp_socket.getsockname()[1])
    when = datetime(2024, 5, 1, tzinfo=UTC)
    try:
        handler.emit(make_record("first"))
        handler.emit(make_record("second", extra={"trace_id": 17, "when": when}, level=logging.ERROR))
        handler.emit(make_record("x" * 60_000))  # near the largest datagram IPv4 carries
    finally:
        handler.close()
    fmt = PickleDatagramFormat()
    recs = [fmt.parse(udp_socket.recv(65535)) for _ in range(3)]
    assert recs[0]["msg"] == "first" and recs[0]["args"] is None
    assert (recs[1]["msg"], recs[1]["levelname"], recs[1]["trace_id"]) == ("second", "ERROR", 17)
    assert recs[1]["when"] == when
    assert recs[2]["msg"] == "x" * 60_000
    assert fmt.placeholders == 0


def test_datagram_is_exactly_a_socket_handler_frame() -> None:
    frame = make_frame("hello", extra={"k": [1, 2]})
    rec = PickleDatagramFormat().parse(frame)
    assert rec["msg"] == "hello" and rec["k"] == [1, 2]


def test_short_datagrams_are_truncated() -> None:
    frame = make_frame()
    for cut in (0, 1, 3, 4, 5, len(frame) - 1):
        assert reason(frame[:cut]) == "truncated"


def test_longer_datagram_or_zero_length_is_malformed() -> None:
    assert reason(make_frame() + b"\x00") == "malformed"
    assert reason(make_frame() + make_frame()) == "malformed"
    assert reason(b"\x00\x00\x00\x00") == "malformed"
    assert reason(b"\x00\x00\x00\x00N.") == "malformed"


def test_length_over_the_cap_is_oversized() -> None:
    frame = make_frame("x" * 500)
    assert reason(frame, PickleDatagramFormat(max_frame_bytes=100)) == "oversized"
    assert reason(struct.pack(">L", 0xFFFFFFFF) + b"x") == "oversized"
    assert PickleDatagramFormat().max_frame_bytes == MAX_FRAME_BYTES
    with pytest.raises(ValueError):
        PickleDatagramFormat(0)


def G(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def S(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff\xff", "malformed"),  # PickleFormat's ProtocolError reasons, kept as they are
        (b"N.", "not_a_dict"),
        (b"}(" + S("msg") + b"Pfoo\nu.", "forbidden"),
        (
            pickle.dumps({"msg": "m", "flood": {5 + i * ((1 << 61) - 1): None for i in range(1, 1100)}}, 1),
            "complexity",
        ),
    ],
)
def test_pickle_format_errors_become_record_rejected(body: bytes, expected: str) -> None:
    assert reason(struct.pack(">L", len(body)) + body) == expected


def test_hostile_globals_are_refused_and_unknown_ones_become_placeholders() -> None:
    fmt = PickleDatagramFormat()
    body = b"}(" + S("msg") + S("m") + S("evil") + G("os", "system") + b"(" + S("true") + b"tRu."
    with pytest.raises(RecordRejected) as info:
        fmt.parse(struct.pack(">L", len(body)) + body)
    assert info.value.reason == "forbidden"
    body = b"}(" + S("msg") + S("m") + S("obj") + G("myapp.models", "User") + b"(" + S("x") + b"tRu."
    rec = fmt.parse(struct.pack(">L", len(body)) + body)
    assert rec["obj"] == "<unpicklable myapp.models.User>"
    assert fmt.placeholders == 1


def test_a_bad_datagram_does_not_disturb_the_next() -> None:
    fmt = PickleDatagramFormat()
    body = make_frame()[4:-1] + b"\x00."
    with pytest.raises(RecordRejected):
        fmt.parse(struct.pack(">L", len(body)) + body)
    assert fmt.parse(make_frame("again"))["msg"] == "again"


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_datagrams_give_a_dict_or_record_rejected(datagram: bytes) -> None:
    for candidate in (datagram, struct.pack(">L", len(datagram)) + datagram):
        try:
            rec = PickleDatagramFormat().parse(candidate)
        except RecordRejected:
            continue
        assert all(type(k) is str for k in rec)


@settings(max_examples=examples(100), deadline=None)
@given(st.text(max_size=200), st.integers(0, 60))
def test_real_records_round_trip(msg: str, level: int) -> None:
    record = make_record(msg, level=level)
    rec = PickleDatagramFormat().parse(make_frame(msg, level=level))
    assert rec["msg"] == record.getMessage()
    assert rec["levelno"] == level and rec["levelname"] == logging.getLevelName(level)
