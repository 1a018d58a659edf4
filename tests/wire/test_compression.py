"""wire.compression: bodies inflated by their Content-Encoding or by their first bytes, capped."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError
from logsvc.wire import otlp
from logsvc.wire.compression import decompress, inflate_sniffed, is_compressed

from .helpers import examples

GELF = b'{"version":"1.1","host":"h","short_message":"hi"}'


def test_otlp_keeps_its_name_for_the_one_helper() -> None:
    assert otlp.decompress is decompress


@pytest.mark.parametrize(
    "body",
    [
        gzip.compress(GELF),  # Docker's gelf driver, graypy's HTTP handler never
        zlib.compress(GELF),  # graypy's default (its HTTP handler says "gzip,deflate")
        zlib.compress(GELF, 1),  # another zlib level: another second header byte
        zlib.compress(GELF, 9),
    ],
)
def test_sniffed_gzip_and_zlib_inflate(body: bytes) -> None:
    assert is_compressed(body)
    assert inflate_sniffed(body, 1 << 20) == GELF


@pytest.mark.parametrize("body", [GELF, b"", b"x", b"xx", b" {}", b"\x78", b"\x1f"])
def test_plain_bodies_are_left_as_they_are(body: bytes) -> None:
    # "x" is 0x78, but "xx" is not a zlib header (0x7878 % 31 != 0): JSON never starts so anyway.
    assert not is_compressed(body)
    assert inflate_sniffed(body, 1 << 20) is body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (gzip.compress(b"\x00" * 1001), "oversized"),
        (zlib.compress(b"\x00" * 1001), "oversized"),
        (gzip.compress(GELF)[:-5], "malformed"),
        (zlib.compress(GELF)[:-3], "malformed"),
        (b"\x1f\x8bjunk", "malformed"),
        (b"\x78\x9cjunk", "malformed"),
    ],
)
def test_sniffed_refusals(body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        inflate_sniffed(body, 1000)
    assert info.value.reason == reason


def test_exactly_at_the_cap_is_kept() -> None:
    assert len(inflate_sniffed(zlib.compress(b"\x00" * 1000), 1000)) == 1000
    assert len(decompress(gzip.compress(b"\x00" * 1000), "gzip", 1000)) == 1000


@settings(max_examples=examples(300))
@given(st.binary(max_size=200), st.sampled_from(["", "identity", "gzip", "x-gzip", "deflate", "br"]))
def test_any_bytes_give_bytes_within_the_cap_or_a_protocol_error(body: bytes, encoding: str) -> None:
    calls: list[Callable[[bytes], bytes]] = [
        lambda b: inflate_sniffed(b, 100),
        lambda b: decompress(b, encoding, 100),
    ]
    for prefix in (b"", b"\x1f\x8b", b"\x78\x9c"):
        for call in calls:
            try:
                out = call(prefix + body)
            except ProtocolError as exc:
                assert exc.reason in ("oversized", "malformed", "unsupported_encoding")
            else:
                assert len(out) <= max(100, len(prefix + body))
