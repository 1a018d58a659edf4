"""Flood senders: forked processes that each send one sender's pre-encoded records.

Each sender encodes its records and connects before the clock starts, reports ready, waits
for the go signal, sends, and reports its own figures (send errors, HTTP statuses) and the
time it finished. How it sends depends on the format: a stream connection (``sendall`` in
256 KiB chunks, or paced bursts), one datagram per record, or request bodies (NDJSON for
``/ingest`` and ``/_bulk``, protobuf for ``/v1/logs``) on one kept-alive HTTP connection
with each 200 awaited. Senders never read PostgreSQL; counting is
``counting``'s.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import http.client
import logging
import logging.handlers
import multiprocessing
import queue
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventT
from typing import Any

import orjson

from logsvc.bench.records import (
    DATAGRAM_FORMATS,
    HTTP_FORMATS,
    flood_log_records,
    flood_records,
    otlp_bodies,
)
from logsvc.errors import LogsvcError

SEND_CHUNK_BYTES = 256 * 1024
DEFAULT_HTTP_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Load:
    """What every flood sender does (the sender processes inherit it through fork)."""

    fmt: str
    host: str
    port: int
    run_id: str
    rate: float | None = None  # records/s per sender; None: as fast as the service takes them
    http_batch: int = DEFAULT_HTTP_BATCH
    client: str = "frames"  # frames: pre-encoded; stock or acked: LogRecords through a handler
    timeout: float = 600.0  # acked: how long a sender waits for its last acknowledgement


class _Pacer:
    """Holds a sender to ``rate`` records/s from its creation on (``None``: no limit)."""

    __slots__ = ("rate", "t0")

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.t0 = time.monotonic()

    def wait(self, done: int) -> None:
        """Sleep until the record after the first ``done`` is due."""
        if self.rate is None:
            return
        delay = self.t0 + done / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _burst(rate: float | None) -> int:
    # Records sent back to back between two looks at the clock: 1 ms worth, so a paced
    # sender neither sleeps per record (~60 us each) nor sends in lumps a receiver would feel.
    return 1 if rate is None else max(1, int(rate / 1000))


def _batches(records: list[bytes], size: int) -> list[tuple[bytes, int]]:
    """``records`` joined ``size`` at a time: (bytes, how many records in them)."""
    return [
        (b"".join(records[k : k + size]), len(records[k : k + size])) for k in range(0, len(records), size)
    ]


def _flood_sender(load: Load, sender: int, count: int, ready: Any, go: EventT, results: Any) -> None:
    stats: dict[str, Any] = {"sender": sender, "errors": 0}
    # Encode and connect before the clock starts; only the sending is measured.
    if load.client != "frames":
        send = _handler_sender(load, sender, count, stats)
    elif load.fmt == "otlp":
        send = _http_sender(load, otlp_bodies(load.run_id, sender, count, load.http_batch), stats)
    else:
        records = flood_records(load.fmt, load.run_id, sender, count)
        if load.fmt in HTTP_FORMATS:
            send = _http_sender(load, _batches(records, load.http_batch), stats)
        elif load.fmt in DATAGRAM_FORMATS:
            send = _datagram_sender(load, records, stats)
        else:
            send = _stream_sender(load, records)
    ready.put(sender)
    go.wait(120)
    send()
    stats["finished"] = time.monotonic()  # CLOCK_MONOTONIC is one clock for every process
    results.put(stats)


def _stream_sender(load: Load, records: list[bytes]) -> Callable[[], None]:
    sock = socket.create_connection((load.host, load.port))
    units: list[tuple[bytes | memoryview, int]]
    if load.rate is None:
        data = memoryview(b"".join(records))
        units = [(data[off : off + SEND_CHUNK_BYTES], 0) for off in range(0, len(data), SEND_CHUNK_BYTES)]
    else:
        units = [(data, n) for data, n in _batches(records, _burst(load.rate))]

    def send() -> None:
        pacer = _Pacer(load.rate)
        done = 0  # records sent (counted only when paced)
        for data, n in units:
            pacer.wait(done)
            sock.sendall(data)
            done += n
        sock.close()

    return send


# Emit times kept per sender for the run's percentiles (a uniform sample beyond this).
EMIT_SAMPLES = 20_000


def _handler_sender(load: Load, sender: int, count: int, stats: dict[str, Any]) -> Callable[[], None]:
    """LogRecords handed one by one to a real handler: stock SocketHandler or logsvc_client's.

    Each ``handle()`` is timed (what the application waits per record). The acked sender then
    waits for its last acknowledgement (``flush``) and reports the handler's figures; its
    spool blocks emit() up to ``load.timeout`` when full, so the bench measures backpressure
    rather than counting drops.
    """
    handler: logging.Handler
    if load.client == "acked":
        from logsvc_client import Handler

        acked = Handler(load.host, load.port, block_timeout=load.timeout, close_timeout=load.timeout)
        if not acked.wait_connected(30):
            raise LogsvcError(f"the acked client could not connect to {load.host}:{load.port}")
        handler = acked
    else:
        stock = logging.handlers.SocketHandler(load.host, load.port)
        stock.createSocket()
        if stock.sock is None:
            raise LogsvcError(f"SocketHandler could not connect to {load.host}:{load.port}")
        handler = stock

    def send() -> None:
        clock = time.perf_counter_ns
        times: list[int] = []
        pacer = _Pacer(load.rate)
        burst = _burst(load.rate)
        for k, rec in enumerate(flood_log_records(load.run_id, sender, count)):
            if k % burst == 0:
                pacer.wait(k)
            t0 = clock()
            handler.handle(rec)
            times.append(clock() - t0)
        stats["emitted"] = time.monotonic()
        if len(times) > EMIT_SAMPLES:
            times = random.sample(times, EMIT_SAMPLES)
        stats["emit_ns"] = times
        if isinstance(handler, logging.handlers.SocketHandler):
            handler.close()
            return
        handler.flush()
        st = handler.stats()
        lat = handler.ack_latencies()
        stats["ack_latency_s"] = random.sample(lat, min(len(lat), EMIT_SAMPLES))
        stats["acked"] = st["acked"]
        stats["resent"] = st["resent"]
        stats["client_dropped"] = sum(st["dropped"].values())
        stats["reconnects"] = st["reconnects"]
        handler.close()

    return send


def _datagram_sender(load: Load, records: list[bytes], stats: dict[str, Any]) -> Callable[[], None]:
    family, kind, proto, _, addr = socket.getaddrinfo(load.host, load.port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.connect(addr)  # one sendto per record, as DatagramHandler and SysLogHandler(UDP) do

    def send() -> None:
        pacer = _Pacer(load.rate)
        burst = _burst(load.rate)
        errors = 0
        for k, datagram in enumerate(records):
            if k % burst == 0:
                pacer.wait(k)
            try:
                sock.send(datagram)
            except OSError:
                errors += 1  # ECONNREFUSED (an ICMP port unreachable came back), ENOBUFS
        sock.close()
        stats["errors"] = errors

    return send


def _accepted(fmt: str, answer: bytes, n: int) -> int:
    """How many of a 200's ``n`` records the answer says were taken (0 if it does not parse)."""
    try:
        if fmt == "otlp":
            from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

            resp = ExportLogsServiceResponse.FromString(answer)
            return n - resp.partial_success.rejected_log_records
        doc = orjson.loads(answer)
        if fmt == "bulk":
            return sum(1 for item in doc["items"] for v in item.values() if v["status"] == 201)
        return int(doc["accepted"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0  # orjson.JSONDecodeError and protobuf's DecodeError are ValueErrors


def _http_sender(load: Load, bodies: list[tuple[bytes, int]], stats: dict[str, Any]) -> Callable[[], None]:
    path, content_type = HTTP_FORMATS[load.fmt]
    headers = {"Content-Type": content_type}
    conn = http.client.HTTPConnection(load.host, load.port, timeout=60)
    conn.connect()

    def send() -> None:
        # One request at a time on one kept-alive connection: the service answers 200 only
        # once the body's records are in its journal, and that answer is the backpressure.
        pacer = _Pacer(load.rate)
        done = accepted = failed = 0
        statuses: dict[str, int] = {}
        for body, n in bodies:
            pacer.wait(done)
            done += n
            try:
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                answer = resp.read()
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()  # the next request opens a new connection
                continue
            statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
            if resp.status == 200:
                accepted += _accepted(load.fmt, answer, n)
        conn.close()
        stats.update(
            http_requests=len(bodies), http_status=statuses, http_failed=failed, http_accepted=accepted
        )

    return send


def start_senders(
    load: Load, counts: list[int]
) -> tuple[list[multiprocessing.process.BaseProcess], EventT, Any]:
    """Fork one sender per item of ``counts`` (its record count); return once all are ready.

    Returns:
        (the processes, the event that lets them go, the queue their stats arrive on).

    Raises:
        LogsvcError: a sender died before it was ready (nothing listening, say), or they
            were not all ready within 600 s; every sender is killed first.
    """
    ctx = multiprocessing.get_context("fork")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    go = ctx.Event()
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=_flood_sender, args=(load, i, n, ready, go, results), daemon=True)
        for i, n in enumerate(counts)
    ]
    for p in procs:
        p.start()
    # Every sender encodes its frames and connects before the clock starts; one that dies
    # (nothing listening, say) must not leave us waiting.
    deadline = time.monotonic() + 600
    waiting = len(procs)
    while waiting:
        try:
            ready.get(timeout=1)
            waiting -= 1
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise LogsvcError(f"a sender could not start or connect to {load.host}:{load.port}") from None
    return procs, go, results


def collect(
    procs: list[multiprocessing.process.BaseProcess], results: Any, timeout: float
) -> list[dict[str, Any]]:
    """Each sender's stats, read while they finish (a full queue pipe would hold up their exit)."""
    deadline = time.monotonic() + timeout
    stats: list[dict[str, Any]] = []
    while len(stats) < len(procs):
        try:
            stats.append(results.get(timeout=0.2))
        except queue.Empty:
            if time.monotonic() > deadline or not any(p.is_alive() for p in procs):
                break
    while len(stats) < len(procs):  # what a sender wrote just before we looked
        try:
            stats.append(results.get(timeout=0.05))
        except queue.Empty:
            break
    _join(procs, max(1.0, deadline - time.monotonic()))
    return stats


def _join(procs: list[multiprocessing.process.BaseProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
