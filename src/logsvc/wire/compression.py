"""Request bodies under a Content-Encoding: inflated within the same cap as a plain body.

Sans-IO: bytes in, bytes or ``ProtocolError`` out. One owner for "a compressed body must not
grow past the body cap": ``POST /v1/logs`` (``wire.otlp``), ``POST /_bulk`` and ``POST /gelf``
all inflate here. Inflating stops after ``max_bytes + 1`` bytes of output
(``decompressobj.decompress(max_length=)``), so a gzip bomb costs at most the cap.

Two ways in:

- ``decompress(body, encoding, max_bytes)``: by the Content-Encoding header (identity, gzip or
  x-gzip), as OTLP/HTTP exporters and Elasticsearch shippers send it.
- ``inflate_sniffed(body, max_bytes)``: by the body's first bytes, the way Graylog's GELF
  inputs read a message (``GELFMessage.getGELFType``: 0x1f 0x8b gzip, 0x78 zlib, else
  plain). GELF senders need it: graypy's ``GELFHTTPHandler`` says ``Content-Encoding:
  gzip,deflate`` over a body that is zlib only, which no reading of the header decodes.

This module must not import socket, select, time or psycopg.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import zlib

from logsvc.errors import ProtocolError

__all__ = ["GELF_ENCODINGS", "decompress", "inflate_sniffed", "is_compressed"]

# zlib's window bits: 16 + MAX_WBITS reads a gzip wrapper only, 32 + MAX_WBITS a gzip or a
# zlib one (by its header).
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ANY_WBITS = 32 + zlib.MAX_WBITS
# The Content-Encoding names a GELF body may be sent under (graypy: "gzip,deflate"); the body
# itself says which it is (``inflate_sniffed``).
GELF_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})


def decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """The body as sent before its Content-Encoding, at most ``max_bytes`` of it.

    Args:
        body: the request body as received (the HTTP layer has capped it already).
        encoding: the Content-Encoding header ("" when absent): identity, gzip or x-gzip.
        max_bytes: the cap on the decompressed body, the same as on a plain one.

    Raises:
        ProtocolError: ``oversized`` past the cap (the route answers 413: a gzip bomb stops
            here after ``max_bytes + 1`` bytes of output); ``malformed`` for a broken
            stream; ``unsupported_encoding`` for any other encoding.
    """
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "x-gzip"):
        raise ProtocolError(
            f"Content-Encoding {enc[:40]!r} is not supported; use gzip.", reason="unsupported_encoding"
        )
    return _inflate(body, _GZIP_WBITS, max_bytes, "gzip")


def is_compressed(body: bytes) -> bool:
    """Whether ``body`` starts like a gzip member or a zlib stream (a GELF sender's choices)."""
    if body[:2] == b"\x1f\x8b":
        return True
    # A zlib header: CM 8 (deflate) with a 32 KiB window is 0x78, and the two header bytes
    # taken as a big-endian number are a multiple of 31 (RFC 1950 2.2). JSON starts with "{"
    # or white space, never 0x78 ("x").
    return len(body) >= 2 and body[0] == 0x78 and (body[0] << 8 | body[1]) % 31 == 0


def inflate_sniffed(body: bytes, max_bytes: int) -> bytes:
    """``body`` inflated if it starts like gzip or zlib (``is_compressed``), else as it is.

    Raises:
        ProtocolError: ``oversized`` past ``max_bytes`` once inflated; ``malformed`` for a
            broken or truncated stream.
    """
    if not is_compressed(body):
        return body
    return _inflate(body, _ANY_WBITS, max_bytes, "compressed")


def _inflate(body: bytes, wbits: int, max_bytes: int, what: str) -> bytes:
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise ProtocolError(f"The {what} body does not decompress: {exc}.", reason="malformed") from None
    if len(out) > max_bytes:
        raise ProtocolError(
            f"The body is over the cap of {max_bytes} bytes once decompressed.", reason="oversized"
        )
    if not d.eof:
        raise ProtocolError(f"The {what} body is truncated.", reason="malformed")
    return out
