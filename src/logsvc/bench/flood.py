"""``logsvc bench flood``: C connections send pre-encoded records as fast as the service takes them.

The clock starts when every sender has encoded its records and connected, and stops when the
last record is committed. ``--format`` sends the same records the way another kind of sender
does (``records`` lists them). UDP senders are paced (``--rate``, records/s per sender; TCP
formats are not, by default) and a UDP run ends when every last record is stored or the rows
stop growing (``counting.wait_settled``); ``lost`` is then what never arrived, and the
service's own drop counter is read from ``--metrics-url``. ``--null`` sends to a built-in
receiver that only counts frames: the senders' own ceiling.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import multiprocessing
import selectors
import socket
import struct
import time
import uuid
from typing import Any

from logsvc.bench.counting import wait_settled, wait_stored
from logsvc.bench.records import DATAGRAM_FORMATS, HTTP_FORMATS
from logsvc.bench.report import Result, progress_bar, report
from logsvc.bench.senders import Load, collect, start_senders
from logsvc.bench.service import attach, read_metric
from logsvc.errors import ConfigError

# Records/s per sender for UDP formats unless --rate says otherwise: the highest round rate
# at which 8 senders lost nothing, run after run, on loopback on the 2-core machine of
# docs/benchmarks.md ("Ingest rate per sender"; 1,500 lost a few hundred now and then). That
# is 8,000 records/s in all, about half of what the service takes there over TCP: the receive
# buffer (8 MiB there) must absorb every stall of the service, and on two shared cores the
# service is not always running.
DEFAULT_DATAGRAM_RATE = 1000
DEFAULT_METRICS_URL = "http://127.0.0.1:5080/metrics"
_DROPPED_METRIC = "logsvc_udp_datagrams_dropped_total"


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_flood(args: argparse.Namespace) -> int:
    fmt: str = args.format
    datagrams = fmt in DATAGRAM_FORMATS
    if args.rate is None:
        rate: float | None = float(DEFAULT_DATAGRAM_RATE) if datagrams else None
    elif args.rate < 0:
        raise ConfigError("--rate must be 0 (unlimited) or a positive number of records/s per sender")
    else:
        rate = args.rate or None
    if args.http_batch < 1:
        raise ConfigError("--http-batch must be at least 1")
    if args.client != "frames" and (fmt != "pickle" or args.null):
        raise ConfigError(
            "--client stock|acked hands LogRecords to a handler: only with --format pickle, without --null"
        )
    run_id = uuid.uuid4().hex[:12]
    counts = [c for c in _split(args.records, args.connections) if c]
    if args.null:
        if fmt != "pickle" or rate is not None:
            raise ConfigError(
                "--null counts SocketHandler frames as fast as they come: only with --format pickle"
            )
        return _flood_null(args, run_id, counts)
    watch, counter = attach(args, run_id, fmt)
    result = Result("flood", run_id, sent=sum(counts), service_pid=watch.pid)
    dropped_before = read_metric(args.metrics_url, _DROPPED_METRIC) if datagrams else None
    load = Load(fmt, args.host, args.port, run_id, rate, args.http_batch, args.client, args.timeout)
    procs, go, results = start_senders(load, counts)
    update, stop = progress_bar(len(counts), "senders finished", args.json)
    watch.start()
    start = time.monotonic()
    go.set()
    try:
        stats = collect(procs, results, args.timeout)
        sent_at = max((s["finished"] for s in stats), default=time.monotonic())
        if datagrams or len(stats) < len(counts):
            # UDP, or a sender died: some last records may never come. Stop when rows stop.
            done, ending = wait_settled(counter, len(counts), args.timeout, watch, update)
        else:
            done = wait_stored(counter, len(counts), args.timeout, watch, update)
            ending = "last_records" if done is not None else "timeout"
    finally:
        stop()
    result.finish(counter, watch, start, done)
    result.extra = {
        "format": fmt,
        "connections": len(counts),
        "rate_per_sender": rate,
        "send_seconds": round(sent_at - start, 3),
        "offered_records_per_s": round(result.sent / max(sent_at - start, 1e-9)),
        "completion": ending,
        "senders_failed": len(counts) - len(stats),
    }
    if args.client != "frames":
        result.extra.update(client_figures(args.client, stats))
    if datagrams:
        dropped_after = read_metric(args.metrics_url, _DROPPED_METRIC)
        result.extra["send_errors"] = sum(s["errors"] for s in stats)
        result.extra["service_udp_dropped"] = (
            None if dropped_before is None or dropped_after is None else round(dropped_after - dropped_before)
        )
    if fmt in HTTP_FORMATS:
        statuses: dict[str, int] = {}
        for s in stats:
            for code, n in s.get("http_status", {}).items():
                statuses[code] = statuses.get(code, 0) + n
        failed = sum(s.get("http_failed", 0) for s in stats)
        result.extra.update(
            http_batch=args.http_batch,
            http_requests=sum(s.get("http_requests", 0) for s in stats),
            http_non_200=failed + sum(n for code, n in statuses.items() if code != "200"),
            http_status=statuses,
            http_failed=failed,
            http_accepted=sum(s.get("http_accepted", 0) for s in stats),
        )
    counter.close()
    status = report(result, args.json)
    return status if not result.extra.get("http_non_200") else 1


def client_figures(client: str, stats: list[dict[str, Any]]) -> dict[str, Any]:
    """What the senders' handlers measured: the time each handle() took, and for the acked
    client the time from emit() to the server's acknowledgement and its own counters."""
    out: dict[str, Any] = {"client": client}
    emit = sorted(t for s in stats for t in s.get("emit_ns", []))
    if emit:
        out["emit_p50_us"] = round(_pct(emit, 0.50) / 1000, 1)
        out["emit_p99_us"] = round(_pct(emit, 0.99) / 1000, 1)
    if client == "acked":
        lat = sorted(t for s in stats for t in s.get("ack_latency_s", []))
        if lat:
            out["ack_latency_p50_ms"] = round(_pct(lat, 0.50) * 1000, 2)
            out["ack_latency_p99_ms"] = round(_pct(lat, 0.99) * 1000, 2)
        for key in ("acked", "resent", "client_dropped", "reconnects"):
            out[key] = sum(s.get(key, 0) for s in stats)
    return out


def _pct(values: list[Any], q: float) -> Any:
    return values[min(len(values) - 1, int(q * len(values)))]


def _null_receiver(port_q: Any, expected: int) -> None:
    """Accept connections and count frames, nothing else: how fast can the senders go?"""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    port_q.put(lsock.getsockname()[1])
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    bufs: dict[socket.socket, bytearray] = {}
    frames = 0
    header = struct.Struct(">L").unpack_from
    deadline = time.monotonic() + 600
    while frames < expected and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            s = key.fileobj
            if s is lsock:
                c, _ = lsock.accept()
                sel.register(c, selectors.EVENT_READ)
                bufs[c] = bytearray()
                continue
            assert isinstance(s, socket.socket)
            chunk = s.recv(1 << 20)
            if not chunk:
                sel.unregister(s)
                s.close()
                continue
            buf = bufs[s]
            buf += chunk
            pos = 0
            while len(buf) - pos >= 4:
                n = header(buf, pos)[0]
                if len(buf) - pos - 4 < n:
                    break
                pos += 4 + n
                frames += 1
            del buf[:pos]
    port_q.put(frames)


def _flood_null(args: argparse.Namespace, run_id: str, counts: list[int]) -> int:
    ctx = multiprocessing.get_context("fork")
    q: Any = ctx.Queue()
    recv = ctx.Process(target=_null_receiver, args=(q, sum(counts)), daemon=True)
    recv.start()
    port = q.get(timeout=30)
    procs, go, results = start_senders(Load("pickle", "127.0.0.1", port, run_id), counts)
    start = time.monotonic()
    go.set()
    frames = q.get(timeout=args.timeout)
    seconds = time.monotonic() - start
    collect(procs, results, 30)
    recv.join(10)
    result = Result(
        "flood-null",
        run_id,
        sent=sum(counts),
        stored=frames,
        lost=sum(counts) - frames,
        seconds=seconds,
        records_per_s=frames / seconds if seconds else 0.0,
    )
    result.extra = {"connections": len(counts), "note": "senders against a receiver that only counts frames"}
    return report(result, args.json)
