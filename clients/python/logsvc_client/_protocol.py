"""The client's half of the acknowledged protocol (docs/protocol.md), sans-IO.

Theory of operation. A connection starts with the 8-byte preamble, then frames both ways::

    offset  size  field
         0     4  length   u32 big-endian: bytes that follow (type + body)
         4     1  type     u8
         5     n  body

    client -> server   HELLO   0x01  UTF-8 JSON {protocol, stream, format, client}
                       RECORDS 0x02  u64 first_seq, u32 count, count x (u32 len, len bytes)
    server -> client   WELCOME 0x81  UTF-8 JSON {acked, max_frame_bytes, max_record_bytes, window, ...}
                       ACK     0x82  u64 seq (cumulative)
                       ERROR   0x83  UTF-8 JSON {error, message}; the server closes after it

This module builds the client's frames and reads the server's; it opens no socket and reads
no clock. ``encode_record`` turns a ``logging.LogRecord`` into the bytes one record carries,
the way ``SocketHandler.makePickle`` does, but with every value a pickle would name as a
global (an object, an enum, a ``str`` subclass) replaced by text first: the server's
restricted unpickler imports nothing and refuses a stream that names something no log record
holds, and one odd ``extra=`` value must never cost the records around it.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import json
import logging
import pickle
import struct
from dataclasses import dataclass
from typing import Any

PREAMBLE = b"\x89LOGSVC\n"
PROTOCOL_VERSION = 1

HELLO = 0x01
RECORDS = 0x02
WELCOME = 0x81
ACK = 0x82
ERROR = 0x83

# The most the client reads of one server frame. A server frame is a small JSON object or an
# 8-byte ACK; anything near this cap is not logsvc talking.
MAX_SERVER_FRAME_BYTES = 64 * 1024
# What a client assumes before WELCOME says otherwise, and the largest record emit() takes:
# the server's default record cap (docs/protocol.md, WELCOME.max_record_bytes).
DEFAULT_MAX_RECORD_BYTES = 1 << 20
DEFAULT_MAX_FRAME_BYTES = 4 << 20
# RECORDS overhead: type (1) + first_seq (8) + count (4); each record adds its u32 length.
RECORDS_OVERHEAD = 1 + 8 + 4
RECORD_OVERHEAD = 4
MAX_SEQ = (1 << 63) - 2  # the server's highest seq (docs/protocol.md, RECORDS)
# A value of extra= that is not plain data is sent as its repr(), cut to this many characters.
MAX_REPR_CHARS = 2000
# Containers in extra= are walked this deep; deeper ones are sent as their repr().
MAX_NESTING = 16

_U32 = struct.Struct(">L")
_HEADER = struct.Struct(">LB")
_RECORDS_HEAD = struct.Struct(">LBQL")
_U64 = struct.Struct(">Q")
_pack_u32 = _U32.pack
_dumps = pickle.dumps


class ProtocolError(Exception):
    """The server sent something this client cannot read (or a newer protocol)."""


@dataclass(frozen=True, slots=True)
class Welcome:
    acked: int
    max_frame_bytes: int
    max_record_bytes: int
    window: int
    server: str


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Error:
    error: str
    message: str


ServerFrame = Welcome | Ack | Error


def hello(stream: str, fmt: str, client: str) -> bytes:
    """The preamble and the HELLO frame that open a connection."""
    body = json.dumps(
        {"protocol": PROTOCOL_VERSION, "stream": stream, "format": fmt, "client": client[:200]},
        separators=(",", ":"),
    ).encode()
    return PREAMBLE + _HEADER.pack(1 + len(body), HELLO) + body


def records_frame(first_seq: int, payloads: list[bytes]) -> bytes:
    """One RECORDS frame: ``payloads`` numbered ``first_seq, first_seq + 1, ...``."""
    size = RECORDS_OVERHEAD + sum(RECORD_OVERHEAD + len(p) for p in payloads)
    parts = [_RECORDS_HEAD.pack(size, RECORDS, first_seq, len(payloads))]
    for p in payloads:
        parts.append(_pack_u32(len(p)))
        parts.append(p)
    return b"".join(parts)


def records_frame_size(payload_sizes: int, count: int) -> int:
    """The frame length field (type + body) of ``count`` records of ``payload_sizes`` bytes in all."""
    return RECORDS_OVERHEAD + payload_sizes + RECORD_OVERHEAD * count


class FrameReader:
    """Feeds on bytes from the server; yields WELCOME, ACK and ERROR frames.

    ``feed(data)`` stores bytes; ``next_frame()`` returns a frame or None until one is whole.

    Raises (from ``next_frame``):
        ProtocolError: a length of 0 or over ``MAX_SERVER_FRAME_BYTES``, an unknown frame
            type (a newer server: the client closes and reconnects later), or a body that
            does not match its type.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_frame(self) -> ServerFrame | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        (length,) = _U32.unpack_from(buf, pos)
        if length == 0 or length > MAX_SERVER_FRAME_BYTES:
            raise ProtocolError(f"the server sent a frame of {length} bytes (this client reads 1..65536)")
        if len(buf) - pos - 4 < length:
            return None
        kind = buf[pos + 4]
        body = bytes(buf[pos + 5 : pos + 4 + length])
        self._pos = pos + 4 + length
        if self._pos > 1 << 16:
            del self._buf[: self._pos]
            self._pos = 0
        return _parse(kind, body)


def _parse(kind: int, body: bytes) -> ServerFrame:
    if kind == ACK:
        if len(body) != 8:
            raise ProtocolError(f"an ACK of {len(body)} bytes (8 expected)")
        return Ack(_U64.unpack(body)[0])
    if kind not in (WELCOME, ERROR):
        raise ProtocolError(f"unknown frame type 0x{kind:02x} from the server (a newer protocol?)")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("a WELCOME or ERROR frame that is not JSON") from None
    if not isinstance(doc, dict):
        raise ProtocolError("a WELCOME or ERROR frame that is not a JSON object")
    if kind == ERROR:
        return Error(str(doc.get("error", "unknown")), str(doc.get("message", ""))[:1000])
    try:
        w = Welcome(
            acked=_int(doc, "acked", 0),
            max_frame_bytes=_int(doc, "max_frame_bytes", DEFAULT_MAX_FRAME_BYTES),
            max_record_bytes=_int(doc, "max_record_bytes", DEFAULT_MAX_RECORD_BYTES),
            window=_int(doc, "window", 10_000),
            server=str(doc.get("server", ""))[:200],
        )
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"a WELCOME with {e}") from None
    if w.acked > MAX_SEQ or w.max_frame_bytes < RECORDS_OVERHEAD + RECORD_OVERHEAD + 1 or w.window < 1:
        raise ProtocolError(f"a WELCOME out of range: {w}")
    return w


def _int(doc: dict[str, Any], key: str, default: int) -> int:
    v = doc.get(key, default)
    if type(v) is not int or v < 0:
        raise ValueError(f"{key}={v!r}")
    return v


# ---- records ---------------------------------------------------------------------------------

_PLAIN = frozenset({str, int, float, bool, type(None)})
_all_plain = _PLAIN.issuperset
_DATES = (_dt.datetime, _dt.date, _dt.time)


def _plain(v: object, depth: int = 0) -> object:
    """``v`` if pickle writes it without naming a global, else a text stand-in."""
    t = type(v)
    if t in _PLAIN:
        return v
    if depth < MAX_NESTING:
        if t is list or t is tuple:
            items = [_plain(x, depth + 1) for x in v]  # type: ignore[attr-defined]
            return items if t is list else tuple(items)
        if t is dict:
            return {
                (k if type(k) in _PLAIN else _text(k)): _plain(x, depth + 1)
                for k, x in v.items()  # type: ignore[attr-defined]
            }
    if isinstance(v, _DATES):
        return v.isoformat()
    return _text(v)


def _text(v: object) -> str:
    try:
        s = repr(v)
    except Exception:  # a broken __repr__ must not lose the record
        s = f"<unrepresentable {type(v).__qualname__}>"
    return s if len(s) <= MAX_REPR_CHARS else s[:MAX_REPR_CHARS] + "..."


def record_dict(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The record as ``SocketHandler.makePickle`` sends it, every value plain data.

    As the stock handler: the message is formatted (``msg = getMessage()``, ``args = None``),
    a traceback becomes ``exc_text`` and ``exc_info`` is dropped.
    """
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    d = dict(record.__dict__)
    d["msg"] = record.getMessage()
    d["args"] = None
    d["exc_info"] = None
    d.pop("message", None)
    if not _all_plain(map(type, d.values())):  # one C-level pass for the usual, all-plain record
        for k, v in d.items():
            if type(v) not in _PLAIN:
                d[k] = _plain(v)
    return d


def encode_record(record: logging.LogRecord, formatter: logging.Formatter, fmt: str) -> bytes:
    """The bytes one record carries in a RECORDS frame, in the stream's ``fmt``."""
    d = record_dict(record, formatter)
    if fmt == "pickle":
        return _dumps(d, 1)
    d["message"] = d.pop("msg")
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"), default=_text).encode(
        "utf-8", "surrogatepass"
    )
