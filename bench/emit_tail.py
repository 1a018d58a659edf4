"""handle() percentiles of one paced sender in one process, per handler variant, alternating.

Usage: python bench/emit_tail.py PORT ROUNDS RECORDS RATE VARIANT...

PORT is a running ``logsvc serve --listen 127.0.0.1:PORT`` (loopback). Each round runs every
variant in turn: RECORDS records at RATE a second through a fresh handler, each ``handle()``
timed; prints p50 / p99 / p99.9 per run and the medians over rounds. Variants: stock
(``logging.handlers.SocketHandler``), acked (``logsvc_client.Handler`` as shipped),
acked-poll5 / acked-poll20 (the sender thread's lingering poll at 5 or 20 ms instead of 1),
acked-nolinger (the sender woken through its socketpair on every record), acked-nogc and
stock-nogc (the application's garbage collector off while it logs: a diagnostic).
docs/benchmarks.md, "emit() at a steady load", has the figures.
"""

# Copyright (c) logsvc developers
import gc
import logging
import logging.handlers
import sys
import time

import logsvc_client
from logsvc_client import _sender

port, rounds, n, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
variants = sys.argv[5:]
res: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}


def make(v: str) -> logging.Handler:
    _sender.POLL_SECONDS, _sender.LINGER_SECONDS = 0.001, 1.0
    if v.startswith("stock"):
        h = logging.handlers.SocketHandler("127.0.0.1", port)
        h.createSocket()
        return h
    if v == "acked-poll5":
        _sender.POLL_SECONDS = 0.005
    if v == "acked-poll20":
        _sender.POLL_SECONDS = 0.020
    if v == "acked-nolinger":
        _sender.LINGER_SECONDS = 0.0
    h = logsvc_client.Handler("127.0.0.1", port)
    assert h.wait_connected(10)
    return h


for r in range(rounds):
    for v in variants:
        h = make(v)
        if v.endswith("nogc"):
            gc.disable()
        times = []
        clock = time.perf_counter_ns
        t0 = time.monotonic()
        for k in range(n):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            rec = logging.makeLogRecord(
                {"msg": "paced %d", "args": (k,), "name": "tail.test", "levelno": 20, "levelname": "INFO"}
            )
            a = clock()
            h.handle(rec)
            times.append(clock() - a)
        gc.enable()
        h.flush()
        h.close()
        times.sort()
        p50, p99, p999 = (times[int(q * (len(times) - 1))] / 1000 for q in (0.5, 0.99, 0.999))
        res[v].append((p50, p99, p999))
        print(f"round {r} {v:16s} p50 {p50:6.1f} p99 {p99:6.1f} p99.9 {p999:7.1f} us", flush=True)
print("medians over rounds (p50 / p99 / p99.9 us):")
for v, rows in res.items():
    m50, m99, m999 = (sorted(x[i] for x in rows)[len(rows) // 2] for i in range(3))
    print(f"  {v:16s} {m50:6.1f} {m99:6.1f} {m999:7.1f}")
