"""Decode throughput of logsvc.wire: records/s for 200k real SocketHandler frames.

Usage: python bench/decode_bench.py [N]

Frames are built with the stdlib ``SocketHandler.makePickle`` from a typical record
(``extra={"trace_id": 17}``), fed to one ``Decoder`` in 64 KiB chunks as a socket would hand
them over, and drained with ``next_record``. Prints the median of 5 runs and, as a same-run
baseline, plain ``pickle.loads`` over the same bodies (unsafe, not restricted, no framing).
"""

from __future__ import annotations

import logging
import logging.handlers
import pickle
import statistics
import sys
import time

from logsvc.wire import MAX_FRAME_BYTES, NEED_DATA, Decoder, LengthPrefixFramer, PickleFormat

CHUNK = 64 * 1024


def make_stream(n: int) -> bytes:
    handler = logging.handlers.SocketHandler("localhost", 0)
    frames = []
    for i in range(n):
        record = logging.LogRecord(
            "app.module",
            logging.INFO,
            "/srv/app/module.py",
            42,
            "user %s logged in",
            (f"u{i}",),
            None,
            "login",
        )
        record.trace_id = 17
        frames.append(handler.makePickle(record))
    return b"".join(frames)


def run_decoder(stream: bytes) -> tuple[int, float]:
    dec = Decoder(LengthPrefixFramer(max_frame_bytes=MAX_FRAME_BYTES), PickleFormat())
    view = memoryview(stream)
    count = 0
    start = time.perf_counter()
    for off in range(0, len(stream), CHUNK):
        dec.feed(view[off : off + CHUNK])
        while dec.next_record() is not NEED_DATA:
            count += 1
    return count, time.perf_counter() - start


def run_loads(stream: bytes) -> float:
    bodies = []
    off = 0
    while off < len(stream):
        n = int.from_bytes(stream[off : off + 4], "big")
        bodies.append(stream[off + 4 : off + 4 + n])
        off += 4 + n
    loads = pickle.loads
    start = time.perf_counter()
    for body in bodies:
        loads(body)
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    stream = make_stream(n)
    rates = []
    for _ in range(5):
        count, elapsed = run_decoder(stream)
        assert count == n, count
        rates.append(n / elapsed)
    baseline = statistics.median(n / run_loads(stream) for _ in range(5))
    median = statistics.median(rates)
    print(f"frames: {n}, bytes/frame: {len(stream) // n}")
    print(f"Decoder+PickleFormat: {median:,.0f} records/s (median of 5)")
    print(f"pickle.loads baseline: {baseline:,.0f} records/s (ratio {median / baseline:.2f})")


if __name__ == "__main__":
    main()
