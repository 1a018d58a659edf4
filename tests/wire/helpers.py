"""Helpers for the wire tests: real SocketHandler frames and h11-style feeding.

Frames are built with the stdlib ``SocketHandler.makePickle`` from a real ``LogRecord``, so the
tests check interop with what Python clients actually send (h11's ``test_against_stdlib_http``).
``feed_whole`` / ``feed_bytewise`` / ``feed_with_trailing`` feed a decoder the three ways h11's
``tests/test_io.py`` ``tr()`` does.
"""

from __future__ import annotations

import logging
import logging.handlers
import struct
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import settings

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire import MAX_FRAME_BYTES, NEED_DATA, Decoder, LengthPrefixFramer, PickleFormat

_HANDLER = logging.handlers.SocketHandler("localhost", 0)  # never connects: makePickle only


def make_record(
    msg: str = "hello", extra: Mapping[str, Any] | None = None, level: int = logging.INFO
) -> logging.LogRecord:
    record = logging.LogRecord("app.module", level, "/srv/app/module.py", 42, msg, None, None, "handler")
    if extra:
        record.__dict__.update(extra)
    return record


def make_frame(
    msg: str = "hello", extra: Mapping[str, Any] | None = None, level: int = logging.INFO
) -> bytes:
    """One frame exactly as ``SocketHandler`` sends it: ``>L`` length + protocol-1 pickle."""
    return _HANDLER.makePickle(make_record(msg, extra, level))


def frame_of(body: bytes) -> bytes:
    """Wrap a hand-built pickle body in a length header."""
    return struct.pack(">L", len(body)) + body


def new_decoder(max_frame_bytes: int = MAX_FRAME_BYTES) -> Decoder:
    return Decoder(LengthPrefixFramer(max_frame_bytes=max_frame_bytes), PickleFormat())


def drain(dec: Decoder) -> list[RecordDict]:
    out: list[RecordDict] = []
    while (rec := dec.next_record()) is not NEED_DATA:
        out.append(rec)
    return out


def feed_whole(dec: Decoder, data: bytes) -> list[RecordDict]:
    dec.feed(data)
    return drain(dec)


def feed_bytewise(dec: Decoder, data: bytes) -> list[RecordDict]:
    out: list[RecordDict] = []
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        out.extend(drain(dec))
    return out


def feed_with_trailing(dec: Decoder, data: bytes, trailing: bytes = b"\x00\x00") -> list[RecordDict]:
    """Feed ``data`` then a partial next frame: the records must come out, the rest wait."""
    dec.feed(data + trailing)
    out = drain(dec)
    assert dec.buffered_bytes == len(trailing)
    return out


FEEDERS: list[Callable[[Decoder, bytes], list[RecordDict]]] = [feed_whole, feed_bytewise, feed_with_trailing]


def tr(data: bytes, check: Callable[[list[RecordDict]], None]) -> None:
    """Decode ``data`` whole, byte by byte and followed by trailing bytes; ``check`` each result."""
    for feeder in FEEDERS:
        check(feeder(new_decoder(), data))


def decode_all(chunks: list[bytes]) -> list[RecordDict | ProtocolError]:
    """Feed ``chunks`` then EOF; return the records and, if one was raised, the ProtocolError."""
    dec = new_decoder()
    out: list[RecordDict | ProtocolError] = []
    try:
        for chunk in [*chunks, b""]:
            dec.feed(chunk)
            out.extend(drain(dec))
    except ProtocolError as exc:
        out.append(exc)
    return out


def collect(dec: Decoder, chunks: list[bytes], *, eof: bool = True) -> list[Any]:
    """Feed ``chunks`` (then EOF) to ``dec``; return records, ``"!reason"`` for each rejected
    record, and the ProtocolError that ended the stream, if one did."""
    out: list[Any] = []
    for chunk in [*(c for c in chunks if c), b""] if eof else [c for c in chunks if c]:
        dec.feed(chunk)
        while True:
            try:
                rec = dec.next_record()
            except RecordRejected as exc:
                out.append("!" + exc.reason)
                continue
            except ProtocolError as exc:
                out.append(exc)
                return out
            if rec is NEED_DATA:
                break
            out.append(rec)
    return out


# Hypothesis runs 100 examples by default; a profile that asks for more (tests/conftest.py:
# "thorough", 2 000) multiplies every wire property's own count by the same factor, so each
# keeps its weight relative to the others. The factor is read when a test module is imported,
# after pytest has loaded the profile (--hypothesis-profile, HYPOTHESIS_PROFILE).
_HYPOTHESIS_DEFAULT_EXAMPLES = 100


def profile_factor(profile: str | None = None) -> int:
    """How many times hypothesis's default example count ``profile`` (default: the active one) asks for."""
    chosen = settings() if profile is None else settings.get_profile(profile)
    return max(1, chosen.max_examples // _HYPOTHESIS_DEFAULT_EXAMPLES)


def examples(n: int) -> int:
    """``n`` examples in the default run, ``n`` times the active profile's factor otherwise."""
    return n * profile_factor()
