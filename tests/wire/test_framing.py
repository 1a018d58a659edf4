from __future__ import annotations

import struct

import pytest

from logsvc.errors import ProtocolError
from logsvc.wire.buffer import ReceiveBuffer
from logsvc.wire.framing import MAX_FRAME_BYTES, LengthPrefixFramer

from .helpers import make_frame


def _frames(data: bytes, framer: LengthPrefixFramer, *, bytewise: bool) -> list[bytes]:
    buf = ReceiveBuffer()
    out: list[bytes] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        buf.feed(chunk)
        while (frame := framer.maybe_extract(buf)) is not None:
            out.append(frame)
    return out


def test_max_frame_bytes_is_one_mib() -> None:
    assert MAX_FRAME_BYTES == 1 << 20
    assert LengthPrefixFramer().max_frame_bytes == MAX_FRAME_BYTES


@pytest.mark.parametrize("bytewise", [False, True])
def test_real_frames_whole_and_bytewise(bytewise: bool) -> None:
    frames = [make_frame("a"), make_frame("b" * 5000), make_frame("c")]
    got = _frames(b"".join(frames), LengthPrefixFramer(), bytewise=bytewise)
    assert got == [f[4:] for f in frames]


def test_trailing_partial_frame_waits() -> None:
    frame = make_frame()
    buf = ReceiveBuffer()
    buf.feed(frame + frame[:7])
    framer = LengthPrefixFramer()
    assert framer.maybe_extract(buf) == frame[4:]
    assert framer.maybe_extract(buf) is None
    assert len(buf) == 7
    buf.feed(frame[7:])
    assert framer.maybe_extract(buf) == frame[4:]
    assert len(buf) == 0


def test_oversized_header_rejected_with_only_the_header_fed() -> None:
    framer = LengthPrefixFramer(max_frame_bytes=100)
    buf = ReceiveBuffer()
    buf.feed(struct.pack(">L", 101)[:3])
    assert framer.maybe_extract(buf) is None
    buf.feed(struct.pack(">L", 101)[3:])
    with pytest.raises(ProtocolError) as info:
        framer.maybe_extract(buf)
    assert info.value.reason == "oversized"


def test_frame_of_exactly_the_cap_is_accepted() -> None:
    framer = LengthPrefixFramer(max_frame_bytes=100)
    buf = ReceiveBuffer()
    buf.feed(struct.pack(">L", 100) + b"x" * 100)
    assert framer.maybe_extract(buf) == b"x" * 100


def test_zero_length_is_malformed() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError) as info:
        LengthPrefixFramer().maybe_extract(buf)
    assert info.value.reason == "malformed"


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LengthPrefixFramer(max_frame_bytes=0)
