"""OTLP in-process cost: ``parse_logs`` alone, then with ``RowEncoder.encode``, per record.

Usage: python bench/otlp_micro.py [--profile]

20,000 ``flood --format otlp`` records (``records.otlp_bodies``) in bodies of 1,000. Prints
the process time per record, min of 7 runs of each; ``--profile`` adds a cProfile of parse +
encode sorted by own time.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from collections.abc import Callable

from logsvc.bench.records import otlp_bodies
from logsvc.store.copyfmt import RowEncoder
from logsvc.wire.otlp import PROTOBUF, parse_logs

N = 20_000
BODIES = otlp_bodies("abcdef123456", 0, N, 1000)
ENC = RowEncoder()


def parse() -> None:
    for body, _ in BODIES:
        for _rec in parse_logs(body, PROTOBUF):
            pass


def parse_encode() -> None:
    for body, _ in BODIES:
        for rec in parse_logs(body, PROTOBUF):
            ENC.encode(rec, 1, "127.0.0.1", "2026-11-29 00:00:00+00")  # type: ignore[arg-type]


def per_record(fn: Callable[[], None]) -> float:
    times = []
    for _ in range(7):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times) / N * 1e6


def main() -> None:
    print(f"otlp parse {per_record(parse):.2f} us/record")
    print(f"otlp parse+encode {per_record(parse_encode):.2f} us/record")
    if "--profile" in sys.argv:
        prof = cProfile.Profile()
        prof.runcall(parse_encode)
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
