from __future__ import annotations

import random
import struct

from logsvc.wire.buffer import ReceiveBuffer


def test_empty_buffer_extracts_nothing() -> None:
    buf = ReceiveBuffer()
    assert len(buf) == 0
    assert not buf
    assert buf.maybe_extract_at_most(10) is None
    assert buf.maybe_extract_exact(1) is None
    assert buf.maybe_extract_exact(0) == b""
    assert buf.peek(1) is None


def test_exact_waits_until_available_and_consumes_nothing_meanwhile() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"abc")
    assert buf.maybe_extract_exact(4) is None
    assert len(buf) == 3
    buf.feed(bytearray(b"d"))
    buf.feed(memoryview(b"ef"))
    assert buf.maybe_extract_exact(4) == b"abcd"
    assert bytes(buf) == b"ef"


def test_skip_and_unpack_from() -> None:
    buf = ReceiveBuffer()
    st = struct.Struct(">L")
    buf.feed(b"\x00\x00")
    assert buf.unpack_from(st) is None
    buf.feed(b"\x01\x02xyz")
    assert buf.unpack_from(st) == (258,)
    assert buf.maybe_extract_exact(2, skip=4) == b"xy"
    buf.skip(100)
    assert len(buf) == 0


def test_random_feeds_and_extracts_match_a_bytes_model() -> None:
    # tornado TestStreamBuffer style: random sizes against a reference model.
    rng = random.Random(42)
    buf = ReceiveBuffer()
    model = b""
    produced = 0
    for _ in range(5000):
        action = rng.random()
        if action < 0.4:
            size = rng.choice([0, 1, 2, 7, 100, 4096])
            data = bytes((produced + i) % 251 for i in range(size))
            produced += size
            buf.feed(data)
            model += data
        elif action < 0.7:
            n = rng.randrange(0, 300)
            got = buf.maybe_extract_exact(n)
            if len(model) < n:
                assert got is None
            else:
                assert got == model[:n]
                model = model[n:]
        elif action < 0.9:
            n = rng.randrange(1, 300)
            got = buf.maybe_extract_at_most(n)
            if not model:
                assert got is None
            else:
                assert got == model[:n]
                model = model[n:]
        else:
            n = rng.randrange(0, 50)
            assert buf.peek(n) == (model[:n] if len(model) >= n else None)
        assert len(buf) == len(model)
        assert bytes(buf) == model


def test_compaction_keeps_memory_bounded() -> None:
    buf = ReceiveBuffer()
    for _ in range(1000):
        buf.feed(b"x" * 1000)
        assert buf.maybe_extract_exact(999) is not None
    # 1000 bytes live at most before each extract; the consumed prefix never exceeds the rest.
    assert len(buf) == 1000
    assert len(buf._data) <= 2 * 1000 + 1000
