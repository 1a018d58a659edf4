"""The acknowledged protocol's framing, sans-IO (docs/protocol.md is the specification).

``AckedDecoder`` turns the bytes a client sends after the preamble into events: one
``Hello``, then ``Records`` frames. It parses nothing else and does no I/O: the caller
(``ingest/acked.py``) feeds bytes and writes what ``encode_*`` return. Every violation is a
``ProtocolError`` whose ``reason`` is the ERROR code the server sends before it closes
(``bad_hello``, ``bad_frame``, ``frame_too_large``, ``seq_order``, ``unsupported_protocol``).

Frames: ``u32 length | u8 type | body``, big-endian; ``length`` counts type + body. The
length is checked as soon as its four bytes are in, so a peer cannot make us buffer more than
one frame's cap.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from logsvc.errors import ProtocolError
from logsvc.wire.buffer import ReceiveBuffer

PREAMBLE = b"\x89LOGSVC\n"
PREAMBLE_HEAD = PREAMBLE[:4]  # what tells it from a stock pickle frame's length
PROTOCOL_VERSION = 1

HELLO, RECORDS = 0x01, 0x02
WELCOME, ACK, ERROR = 0x81, 0x82, 0x83

MAX_HELLO_BYTES = 4096
# The highest stream seq: PostgreSQL's streams.seqs (an int8multirange) holds a seq as
# [seq, seq + 1), so seq + 1 must fit in an int8. A record at 2**63 - 1 was acknowledged and
# then refused by PostgreSQL (dead-lettered, never stored).
MAX_SEQ = (1 << 63) - 2
FORMATS = ("pickle", "json")

_HEAD = struct.Struct(">IB")
_RECORDS_HEAD = struct.Struct(">QI")
_U32 = struct.Struct(">I")
_ACK = struct.Struct(">IBQ")
_STREAM = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Hello:
    stream: bytes  # 32 lower-case hex digits
    format: str  # "pickle" or "json"
    client: str


@dataclass(frozen=True, slots=True)
class Records:
    first_seq: int
    payloads: list[bytes]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.payloads) - 1


class AckedDecoder:
    """Bytes after the preamble -> ``Hello`` then ``Records``; see the module doc.

    Args:
        max_frame_bytes: the largest frame read (type + body), announced in WELCOME.
        max_record_bytes: the largest record inside a RECORDS frame.
    """

    __slots__ = (
        "_buf",
        "_error",
        "_last_seq",
        "_preamble_ok",
        "hello",
        "max_frame_bytes",
        "max_record_bytes",
    )

    def __init__(self, max_frame_bytes: int, max_record_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_record_bytes = max_record_bytes
        self._buf = ReceiveBuffer()
        self._preamble_ok = False
        self._last_seq = 0
        self._error: ProtocolError | None = None
        self.hello: Hello | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    @property
    def placeholders(self) -> int:
        return 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is None and data:
            self._buf.feed(data)

    def next_event(self) -> Hello | Records | None:
        """The next complete event, or None if more bytes are needed.

        Raises:
            ProtocolError: see the module doc; the decoder then raises it again on every call.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except ProtocolError as exc:
            self._error = exc
            raise

    def _next(self) -> Hello | Records | None:
        buf = self._buf
        if not self._preamble_ok:
            head = buf.maybe_extract_exact(len(PREAMBLE))
            if head is None:
                return None
            if head != PREAMBLE:
                raise ProtocolError(f"bad preamble {head!r}, expected {PREAMBLE!r}", reason="bad_preamble")
            self._preamble_ok = True
        hdr = buf.unpack_from(_HEAD)
        if hdr is None:
            return None
        length, kind = hdr
        if length < 1:
            raise ProtocolError("a frame of length 0", reason="bad_frame")
        if length > self.max_frame_bytes:
            raise ProtocolError(
                f"a frame of {length} bytes, over the cap of {self.max_frame_bytes}", reason="frame_too_large"
            )
        if kind == HELLO and length - 1 > MAX_HELLO_BYTES:
            raise ProtocolError(f"HELLO of {length - 1} bytes, over {MAX_HELLO_BYTES}", reason="bad_hello")
        body = buf.maybe_extract_exact(length - 1, skip=_HEAD.size)
        if body is None:
            return None
        if kind == HELLO:
            if self.hello is not None:
                raise ProtocolError("a second HELLO", reason="bad_hello")
            self.hello = _parse_hello(body)
            return self.hello
        if self.hello is None:
            raise ProtocolError(f"frame type {kind:#04x} before HELLO", reason="bad_hello")
        if kind == RECORDS:
            return self._records(body)
        raise ProtocolError(f"unknown frame type {kind:#04x}", reason="bad_frame")

    def _records(self, body: bytes) -> Records:
        if len(body) < _RECORDS_HEAD.size:
            raise ProtocolError("RECORDS frame shorter than its header", reason="bad_frame")
        first_seq, count = _RECORDS_HEAD.unpack_from(body)
        if count < 1:
            raise ProtocolError("RECORDS frame with no records", reason="bad_frame")
        if first_seq < 1 or first_seq + count - 1 > MAX_SEQ:
            raise ProtocolError(f"RECORDS seqs {first_seq}+{count} out of range", reason="seq_order")
        if first_seq <= self._last_seq:
            raise ProtocolError(
                f"RECORDS from seq {first_seq}, not above the previous frame's last seq {self._last_seq}",
                reason="seq_order",
            )
        # Each record needs at least its 4-byte length: bounds count before the loop.
        if count > (len(body) - _RECORDS_HEAD.size) // 4:
            raise ProtocolError(
                f"RECORDS frame claims {count} records in {len(body)} bytes", reason="bad_frame"
            )
        payloads: list[bytes] = []
        pos = _RECORDS_HEAD.size
        unpack = _U32.unpack_from
        cap = self.max_record_bytes
        for _ in range(count):
            if pos + 4 > len(body):
                raise ProtocolError("RECORDS frame ends inside a record", reason="bad_frame")
            (n,) = unpack(body, pos)
            pos += 4
            if n > cap:
                raise ProtocolError(f"a record of {n} bytes, over the cap of {cap}", reason="frame_too_large")
            if pos + n > len(body):
                raise ProtocolError("RECORDS frame ends inside a record", reason="bad_frame")
            payloads.append(body[pos : pos + n])
            pos += n
        if pos != len(body):
            raise ProtocolError(f"{len(body) - pos} bytes after the last record", reason="bad_frame")
        self._last_seq = first_seq + count - 1
        return Records(first_seq, payloads)


def _parse_hello(body: bytes) -> Hello:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"HELLO is not JSON: {exc}", reason="bad_hello") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("HELLO is not a JSON object", reason="bad_hello")
    version = obj.get("protocol")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol {str(version)[:20]!r} is not spoken here (this server speaks {PROTOCOL_VERSION})",
            reason="unsupported_protocol",
        )
    stream = obj.get("stream")
    if not isinstance(stream, str) or not _STREAM.fullmatch(stream):
        raise ProtocolError("HELLO stream must be 32 lower-case hex digits", reason="bad_hello")
    fmt = obj.get("format", "pickle")
    if fmt not in FORMATS:
        raise ProtocolError(f"HELLO format must be one of {', '.join(FORMATS)}", reason="bad_hello")
    client = obj.get("client", "")
    if not isinstance(client, str):
        raise ProtocolError("HELLO client must be a string", reason="bad_hello")
    return Hello(stream.encode(), fmt, client[:200])


def _frame(kind: int, body: bytes) -> bytes:
    return _HEAD.pack(len(body) + 1, kind) + body


def encode_welcome(**fields: Any) -> bytes:
    return _frame(WELCOME, json.dumps({"protocol": PROTOCOL_VERSION, **fields}).encode())


def encode_ack(seq: int) -> bytes:
    return _ACK.pack(9, ACK, seq)


def encode_error(code: str, message: str) -> bytes:
    return _frame(ERROR, json.dumps({"error": code, "message": message[:1000]}).encode())
