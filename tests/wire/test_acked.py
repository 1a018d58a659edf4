"""``wire.acked``: the acknowledged protocol's framing (docs/protocol.md), sans-IO.

The properties a framer must have whatever the network does: the same events however the
bytes are cut, and for any bytes at all either events or a ``ProtocolError`` with one of the
documented reasons, never another exception and never more buffered than one frame's cap.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError
from logsvc.wire.acked import (
    ACK,
    ERROR,
    PREAMBLE,
    WELCOME,
    AckedDecoder,
    Hello,
    Records,
    encode_ack,
    encode_error,
    encode_welcome,
)

from .helpers import examples

STREAM = "0123456789abcdef" * 2
REASONS = {"bad_preamble", "bad_hello", "unsupported_protocol", "bad_frame", "frame_too_large", "seq_order"}


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def hello(stream: str = STREAM, fmt: str = "pickle") -> bytes:
    return frame(0x01, json.dumps({"protocol": 1, "stream": stream, "format": fmt, "client": "t"}).encode())


def records(first: int, payloads: list[bytes]) -> bytes:
    return frame(
        0x02,
        struct.pack(">QI", first, len(payloads)) + b"".join(struct.pack(">I", len(p)) + p for p in payloads),
    )


def events(dec: AckedDecoder) -> list[Hello | Records]:
    out: list[Hello | Records] = []
    while (ev := dec.next_event()) is not None:
        out.append(ev)
    return out


def decode_in_pieces(data: bytes, cuts: list[int], cap: int = 1 << 20) -> list[Hello | Records]:
    dec = AckedDecoder(cap, cap)
    out: list[Hello | Records] = []
    prev = 0
    for cut in [*sorted(cuts), len(data)]:
        dec.feed(data[prev:cut])
        prev = max(prev, cut)
        out.extend(events(dec))
    return out


payloads = st.lists(st.binary(max_size=40), min_size=1, max_size=5)


@st.composite
def conversations(draw: st.DrawFn) -> bytes:
    data = PREAMBLE + hello()
    seq = 1
    for batch in draw(st.lists(payloads, max_size=6)):
        seq += draw(st.integers(0, 3))  # gaps are allowed
        data += records(seq, batch)
        seq += len(batch)
    return data


@settings(max_examples=examples(200))
@given(conversations(), st.lists(st.integers(0, 2000), max_size=12))
def test_the_same_events_however_the_bytes_are_cut(data: bytes, cuts: list[int]) -> None:
    whole = decode_in_pieces(data, [])
    assert decode_in_pieces(data, [c % (len(data) + 1) for c in cuts]) == whole
    assert isinstance(whole[0], Hello) and whole[0].stream == STREAM.encode()
    firsts = [ev.first_seq for ev in whole[1:] if isinstance(ev, Records)]
    assert firsts == sorted(set(firsts))


@settings(max_examples=examples(300))
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_give_events_or_a_documented_refusal(junk: bytes, after_hello: bool) -> None:
    dec = AckedDecoder(256, 128)
    dec.feed((PREAMBLE + hello()) if after_hello else PREAMBLE)
    dec.feed(junk)
    try:
        events(dec)
    except ProtocolError as exc:
        assert exc.reason in REASONS
        with pytest.raises(ProtocolError):  # and stays refused
            dec.next_event()
    assert dec.buffered_bytes <= len(PREAMBLE) + len(hello()) + len(junk)


def test_a_frame_over_the_cap_is_refused_from_its_header_alone() -> None:
    dec = AckedDecoder(1000, 500)
    dec.feed(PREAMBLE + hello() + struct.pack(">IB", 1001, 0x02))
    with pytest.raises(ProtocolError) as e:
        events(dec)
    assert e.value.reason == "frame_too_large"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89LOGSVC\r", "bad_preamble"),
        (PREAMBLE + records(1, [b"x"]), "bad_hello"),
        (PREAMBLE + hello() + hello(), "bad_hello"),
        (PREAMBLE + frame(0x01, b"[1]"), "bad_hello"),
        (
            PREAMBLE + frame(0x01, b'{"protocol": 1, "stream": "ABCDEF0123456789ABCDEF0123456789"}'),
            "bad_hello",
        ),
        (
            PREAMBLE + frame(0x01, b'{"protocol": 1, "stream": "' + STREAM.encode() + b'", "format": "xml"}'),
            "bad_hello",
        ),
        (PREAMBLE + frame(0x01, b'{"protocol": "1"}'), "unsupported_protocol"),
        (PREAMBLE + frame(0x01, b"x" * 5000), "bad_hello"),
        (PREAMBLE + hello() + frame(0x02, b"\0" * 11), "bad_frame"),
        (PREAMBLE + hello() + frame(0x02, struct.pack(">QI", 1, 0)), "bad_frame"),
        (
            PREAMBLE + hello() + frame(0x02, struct.pack(">QI", 1, 1) + struct.pack(">I", 2) + b"a"),
            "bad_frame",
        ),
        (
            PREAMBLE + hello() + frame(0x02, struct.pack(">QI", 1, 1) + struct.pack(">I", 1) + b"ab"),
            "bad_frame",
        ),
        (PREAMBLE + hello() + records(1 << 63, [b"a"]), "seq_order"),
        (PREAMBLE + hello() + records((1 << 63) - 1, [b"a"]), "seq_order"),  # [seq, seq+1) overflows int8
        (PREAMBLE + hello() + records(3, [b"a", b"b"]) + records(4, [b"c"]), "seq_order"),
        (PREAMBLE + hello() + struct.pack(">IB", 0, 0x02), "bad_frame"),
        (PREAMBLE + hello() + records(1, [b"x" * 600]), "frame_too_large"),
    ],
)
def test_each_violation_has_its_reason(data: bytes, reason: str) -> None:
    dec = AckedDecoder(1 << 20, 500)
    dec.feed(data)
    with pytest.raises(ProtocolError) as e:
        events(dec)
    assert e.value.reason == reason


def test_server_frames_are_what_the_specification_says() -> None:
    assert encode_ack(7) == struct.pack(">IBQ", 9, ACK, 7)
    w = encode_welcome(acked=3, window=10)
    assert w[4] == WELCOME and json.loads(w[5:]) == {"protocol": 1, "acked": 3, "window": 10}
    assert struct.unpack(">I", w[:4])[0] == len(w) - 4
    e = encode_error("stream_busy", "x" * 5000)
    assert e[4] == ERROR and json.loads(e[5:])["error"] == "stream_busy" and len(e) < 1100
