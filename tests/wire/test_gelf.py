"""GelfDatagramFormat: whole, chunked and compressed datagrams; reassembly bounds; TCP framing."""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire import NEED_DATA, Decoder, GelfDatagramFormat, JsonFormat, LineFramer
from logsvc.wire.gelf import MAX_CHUNKS

from .helpers import examples

graypy = pytest.importorskip("graypy", reason="pip install -e .[dev] (graypy)")

from graypy.handler import GELFWarningChunker  # noqa: E402  (after the skip)

MESSAGE: dict[str, Any] = {
    "version": "1.1",
    "host": "web-1",
    "short_message": "disk full",
    "timestamp": 1714564800.5,
    "level": 3,
    "_user_id": 7,
}
EXPECTED = {
    "version": "1.1",
    "hostname": "web-1",
    "msg": "disk full",
    "created": 1714564800.5,
    "levelno": 40,
    "levelname": "ERROR",
    "user_id": 7,
}


def gelf(**fields: Any) -> bytes:
    return json.dumps({**MESSAGE, **fields}).encode()


def chunks(message: bytes, size: int = 1420, mid: bytes = b"12345678") -> list[bytes]:
    n = -(-len(message) // size)
    return [b"\x1e\x0f" + mid + bytes([i, n]) + message[i * size : (i + 1) * size] for i in range(n)]


def feed(fmt: GelfDatagramFormat, datagrams: list[bytes]) -> list[RecordDict | str]:
    out: list[RecordDict | str] = []
    for d in datagrams:
        try:
            rec = fmt.parse(d)
        except RecordRejected as exc:
            out.append("!" + exc.reason)
        else:
            if rec is not None:
                out.append(rec)
    return out


# --- whole datagrams ---------------------------------------------------------------------------


@pytest.mark.parametrize("pack", [bytes, zlib.compress, gzip.compress], ids=["plain", "zlib", "gzip"])
def test_whole_datagram(pack: Any) -> None:
    assert GelfDatagramFormat().parse(pack(gelf())) == EXPECTED


def test_whole_message_in_one_chunk() -> None:
    assert feed(GelfDatagramFormat(), chunks(zlib.compress(gelf()), size=10_000)) == [EXPECTED]


# --- chunks --------------------------------------------------------------------------------------


def big_message() -> bytes:
    # Random text does not compress: ~6 chunks of 1420 bytes even after zlib.
    return zlib.compress(gelf(_blob=os.urandom(4000).hex()))


def test_graypy_chunker_in_order_out_of_order_and_duplicated() -> None:
    message = big_message()
    parts = list(GELFWarningChunker(1420).chunk_message(message))
    assert len(parts) > 3
    want = json.loads(zlib.decompress(message))
    for order in (parts, parts[::-1], random.Random(7).sample(parts, len(parts)), parts[:2] + parts):
        fmt = GelfDatagramFormat()
        got = feed(fmt, order)
        assert len(got) == 1 and isinstance(got[0], dict)
        assert got[0]["blob"] == want["_blob"] and got[0]["msg"] == "disk full"
        assert fmt.pending_messages == 0 and fmt.pending_bytes == 0


def test_interleaved_messages() -> None:
    a, b = chunks(big_message(), mid=b"AAAAAAAA"), chunks(big_message(), mid=b"BBBBBBBB")
    mixed = [c for pair in zip(a, b, strict=False) for c in pair] + a[len(b) :] + b[len(a) :]
    got = feed(GelfDatagramFormat(), mixed)
    assert len(got) == 2 and all(isinstance(r, dict) for r in got)


def test_missing_chunk_times_out_and_is_counted() -> None:
    fmt = GelfDatagramFormat(timeout=5.0)
    parts = chunks(big_message())
    fmt.now = 100.0
    assert feed(fmt, parts[:-1]) == []
    assert fmt.pending_messages == 1 and fmt.evicted == 0
    fmt.now = 104.9
    assert feed(fmt, [gelf()]) == [EXPECTED]
    assert fmt.pending_messages == 1
    fmt.now = 105.1
    assert feed(fmt, [gelf()]) == [EXPECTED]
    assert (fmt.pending_messages, fmt.pending_bytes, fmt.evicted) == (0, 0, 1)
    # Its last chunk, late: a new incomplete message, never a wrong record.
    assert feed(fmt, parts[-1:]) == [] and fmt.pending_messages == 1
    # A timer's expire() drops it without another datagram.
    fmt.now = 111.0
    fmt.expire()
    assert (fmt.pending_messages, fmt.pending_bytes, fmt.evicted) == (0, 0, 2)


@pytest.mark.parametrize(
    ("chunk", "reason"),
    [
        (b"\x1e\x0f1234567", "bad_chunk"),  # no whole header
        (b"\x1e\x0f12345678\x00\x00{}", "bad_chunk"),  # count 0
        (b"\x1e\x0f12345678\x05\x05{}", "bad_chunk"),  # seq past count
        (b"\x1e\x0f12345678\x00\x81{}", "bad_chunk"),  # 129 chunks
        (zlib.compress(gelf())[:-6], "bad_compression"),
        (b"\x78\x9c" + b"not deflate", "bad_compression"),
        (b"not json", "not_json"),
        (b"[1]", "not_object"),
    ],
)
def test_bad_datagrams_are_rejected_with_a_reason(chunk: bytes, reason: str) -> None:
    assert feed(GelfDatagramFormat(), [chunk]) == ["!" + reason]


def test_a_chunk_count_that_changes_drops_the_message() -> None:
    fmt = GelfDatagramFormat()
    first = chunks(big_message())
    other = b"\x1e\x0f12345678" + bytes([1, 3]) + b"x"
    assert feed(fmt, [first[0], other]) == ["!bad_chunk"]
    assert fmt.pending_messages == 0 and fmt.evicted == 1


def test_zip_bomb_stops_at_the_cap() -> None:
    bomb = zlib.compress(b'{"short_message": "' + b"a" * (64 << 20) + b'"}')
    assert len(bomb) < 100_000
    assert feed(GelfDatagramFormat(max_message_bytes=1 << 20), [bomb]) == ["!oversized"]


def test_message_over_the_cap_in_chunks() -> None:
    fmt = GelfDatagramFormat(max_message_bytes=3000)
    got = feed(fmt, chunks(os.urandom(5000), size=1000))
    # Rejected at its fourth chunk; the fifth starts over and waits for its timeout.
    assert got == ["!oversized"] and fmt.pending_bytes == 1000


def test_chunk_flood_keeps_memory_bounded() -> None:
    # First chunks of messages that never finish: each pushes out the oldest past a cap.
    fmt = GelfDatagramFormat(max_pending_bytes=1 << 20, max_pending_messages=100)
    rng = random.Random(1)
    for i in range(20_000):
        payload = rng.randbytes(rng.randrange(1, 1400))
        header = b"\x1e\x0f" + struct.pack(">Q", i) + bytes([0, MAX_CHUNKS])
        assert fmt.parse(header + payload) is None
        assert fmt.pending_bytes <= 1 << 20 and fmt.pending_messages <= 100
    assert fmt.evicted == 20_000 - fmt.pending_messages
    # and a real message still goes through
    assert feed(fmt, chunks(big_message())) != []


@settings(max_examples=examples(500), deadline=None)
@given(
    st.lists(
        st.binary(max_size=200) | st.builds(lambda b: b"\x1e\x0f" + b, st.binary(max_size=60)), max_size=20
    )
)
def test_arbitrary_datagrams_give_records_none_or_record_rejected(datagrams: list[bytes]) -> None:
    fmt = GelfDatagramFormat(max_pending_messages=4, max_pending_bytes=300)
    for i, d in enumerate(datagrams):
        fmt.now = float(i)
        try:
            rec = fmt.parse(d)
        except RecordRejected:
            continue
        assert rec is None or type(rec) is dict
        assert fmt.pending_messages <= 4 and fmt.pending_bytes <= 300


# --- TCP: NUL-terminated JSON through LineFramer(delimiter=b"\0") --------------------------------


def tcp_decode(chunks_in: list[bytes]) -> list[RecordDict | str]:
    dec = Decoder(LineFramer(1 << 20, b"\0"), JsonFormat(shape="gelf"))
    out: list[RecordDict | str] = []
    for data in [*chunks_in, b""]:
        dec.feed(data)
        while True:
            try:
                item = dec.next_record()
            except RecordRejected as exc:
                out.append("!" + exc.reason)
                continue
            except ProtocolError as exc:  # pragma: no cover - the framer never loses step
                out.append("!!" + exc.reason)
                break
            if item is NEED_DATA:
                break
            assert isinstance(item, dict)
            out.append(item)
    return out


def graypy_tcp_frames() -> bytes:
    handler = graypy.GELFTCPHandler("127.0.0.1", 9)
    rec = logging.LogRecord("app.tcp", logging.WARNING, "/a.py", 7, "über %s", ("tcp",), None, "f")
    return bytes(handler.makePickle(rec)) * 2 + gelf().replace(b"disk", b"x\\n") + b"\0"


def test_tcp_frames_whole_bytewise_and_with_trailing_data() -> None:
    data = graypy_tcp_frames()
    whole = tcp_decode([data])
    assert len(whole) == 3 and all(isinstance(r, dict) for r in whole)
    first = whole[0]
    assert isinstance(first, dict)
    assert (first["msg"], first["name"], first["levelno"], first["lineno"]) == ("über tcp", "app.tcp", 30, 7)
    assert tcp_decode([data[i : i + 1] for i in range(len(data))]) == whole
    # An unterminated last frame is still a record at EOF; garbage after it is one rejection.
    assert tcp_decode([data + gelf()]) == [*whole, EXPECTED]
    assert tcp_decode([data + b"garbage\0"]) == [*whole, "!not_json"]


def test_docker_style_gzip_chunks() -> None:
    # Docker's gelf log driver: gzip (its default compression), chunks of 1420 bytes.
    message = gzip.compress(gelf(_blob=os.urandom(3000).hex()))
    got = feed(GelfDatagramFormat(), chunks(message)[::-1])
    assert len(got) == 1 and isinstance(got[0], dict) and got[0]["msg"] == "disk full"


# (tests/wire/test_thorough.py style: any stream of bytes on a GELF TCP connection)
@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6))
def test_arbitrary_tcp_streams_give_records_or_record_rejected(data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]
    for item in tcp_decode(pieces):
        assert isinstance(item, dict) or (isinstance(item, str) and not item.startswith("!!"))
