"""OTLP (or ``_bulk``) in-process cost: parsing alone, then with ``RowEncoder.encode``, per record.

Usage: python bench/otlp_micro.py [--bulk] [--profile]

20,000 ``flood --format otlp`` records (``records.otlp_bodies``; ``--bulk``: ``flood --format
bulk`` pairs through ``parse_bulk``) in bodies of 1,000. Prints the process time per record,
min of 7 runs of each; ``--profile`` adds a cProfile of parse + encode sorted by own time.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from collections.abc import Callable, Iterator

from logsvc.bench.records import flood_records, otlp_bodies
from logsvc.record import RecordDict
from logsvc.store.copyfmt import RowEncoder
from logsvc.wire.bulk import parse_bulk
from logsvc.wire.json_format import JsonFormat
from logsvc.wire.otlp import PROTOBUF, parse_logs

N = 20_000
BULK = "--bulk" in sys.argv
if BULK:
    _pairs = flood_records("bulk", "abcdef123456", 0, N)
    BODIES = [(b"".join(_pairs[k : k + 1000]), 1000) for k in range(0, N, 1000)]
else:
    BODIES = otlp_bodies("abcdef123456", 0, N, 1000)
ENC = RowEncoder()
FMT = JsonFormat()


def _records(body: bytes) -> Iterator[RecordDict]:
    recs = parse_bulk(body, None, FMT).records() if BULK else parse_logs(body, PROTOBUF)
    for rec in recs:
        if isinstance(rec, dict):
            yield rec


def parse() -> None:
    for body, _ in BODIES:
        for _rec in _records(body):
            pass


def parse_encode() -> None:
    for body, _ in BODIES:
        for rec in _records(body):
            ENC.encode(rec, 1, "127.0.0.1", "2026-11-29 00:00:00+00")


def per_record(fn: Callable[[], None]) -> float:
    times = []
    for _ in range(7):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times) / N * 1e6


def main() -> None:
    what = "bulk" if BULK else "otlp"
    print(f"{what} parse {per_record(parse):.2f} us/record")
    print(f"{what} parse+encode {per_record(parse_encode):.2f} us/record")
    if "--profile" in sys.argv:
        prof = cProfile.Profile()
        prof.runcall(parse_encode)
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
