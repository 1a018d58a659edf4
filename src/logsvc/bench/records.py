"""The records a load generator sends: tagged, pre-encoded, in each wire format logsvc reads.

Pure: this module builds bytes and opens no socket. Every record carries the tags ``run``,
``i`` (unique in the run), ``trace_id`` (the sender) and, on each sender's last record,
``last``; ``TAG_PATH`` says where each format's tags land in ``extra``, which is where
``counting.Counter.for_format`` looks for them.

``flood --format`` (the listener ``--port`` points at must speak it)::

    format      one record is                                   tags (run, i, last) are
    pickle      a SocketHandler frame (>L length + pickle)      LogRecord attributes -> extra
    json        a JSON line: time, level, logger, message       top-level keys -> extra
    syslog      an RFC 5424 message, octet-counted (RFC 6587)   SD params: extra.sd."bench@32473"
    http        a line of an NDJSON POST /ingest body, --http-batch lines a request, one
                keep-alive connection per sender, each 200 awaited (the protocol's backpressure)
    otlp        a LogRecord of a POST /v1/logs protobuf ExportLogsServiceRequest, --http-batch
                records a request under one resource and scope, as the OpenTelemetry Python
                SDK's LoggingHandler and OTLP exporter send them       attributes -> extra
    bulk        an action + document pair of a POST /_bulk NDJSON body, as Filebeat sends
                them (ECS document), --http-batch pairs a request   top-level keys -> extra
    udp         a DatagramHandler datagram (>L length + pickle)  as pickle
    syslog-udp  an RFC 5424 message, one per datagram            as syslog
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import logging
import logging.handlers
import os
import socket
from collections.abc import Iterator
from time import time_ns
from typing import Any

import orjson

FORMATS = ("pickle", "json", "syslog", "http", "otlp", "bulk", "udp", "syslog-udp")
DATAGRAM_FORMATS = frozenset({"udp", "syslog-udp"})
# Formats sent as HTTP requests of --http-batch records each: (path, Content-Type).
HTTP_FORMATS: dict[str, tuple[str, str]] = {
    "http": ("/ingest", "application/x-ndjson"),
    "otlp": ("/v1/logs", "application/x-protobuf"),
    "bulk": ("/_bulk", "application/x-ndjson"),
}
# RFC 5424 structured data needs an SD-ID of the form name@<private enterprise number>;
# 32473 is the number RFC 5612 reserves for documentation (RFC 5424's own examples use it).
SD_ID = "bench@32473"
# Where each format's tags land in ``extra`` (syslog: extra["sd"][SD-ID][param], all strings).
TAG_PATH: dict[str, tuple[str, ...]] = {"syslog": ("sd", SD_ID), "syslog-udp": ("sd", SD_ID)}
MESSAGE = "[%06d] log message %08d"  # the seed's message, in every format


def flood_records(fmt: str, run_id: str, sender: int, count: int) -> list[bytes]:
    """``count`` records of one sender, each as ``fmt`` puts it on the wire; the last is marked.

    Returns:
        One item per record: a SocketHandler frame (pickle, and udp, whose datagram is exactly
        that frame), a JSON line with its LF (json, http), an octet-counted RFC 5424 message
        (syslog), the bare message (syslog-udp) or an action and a document line (bulk).
        ``otlp`` records are not bytes one by one: use ``otlp_bodies``.

    Raises:
        ValueError: ``fmt`` is not one of ``FORMATS``, or is ``otlp``.
    """
    if fmt in ("pickle", "udp"):
        return _pickle_records(run_id, sender, count)
    if fmt in ("json", "http"):
        return _json_records(run_id, sender, count)
    if fmt == "bulk":
        return _bulk_records(run_id, sender, count)
    if fmt in ("syslog", "syslog-udp"):
        messages = _syslog_records(run_id, sender, count)
        return [b"%d %s" % (len(m), m) for m in messages] if fmt == "syslog" else messages
    raise ValueError(f"unknown format {fmt!r}")


def flood_frames(run_id: str, sender: int, count: int) -> bytes:
    """``count`` real SocketHandler frames, pre-encoded; the last is marked."""
    return b"".join(_pickle_records(run_id, sender, count))


def _pickle_records(run_id: str, sender: int, count: int) -> list[bytes]:
    handler = logging.handlers.SocketHandler("localhost", 0)
    return [handler.makePickle(rec) for rec in flood_log_records(run_id, sender, count)]


def flood_log_records(run_id: str, sender: int, count: int) -> Iterator[logging.LogRecord]:
    """``count`` LogRecords of one sender, made one at a time as ``logger.info`` would; the last
    is marked. The pickle formats are these records as SocketHandler frames; ``flood --client``
    hands them to a real handler instead."""
    pid = os.getpid()
    for n in range(count):
        rec = logging.LogRecord(
            "bench.flood", logging.INFO, "/srv/app/bench.py", 42, MESSAGE, (pid, n), None, "flood"
        )
        rec.trace_id = sender
        rec.run = run_id
        rec.i = f"{sender}:{n}"
        if n == count - 1:
            rec.last = True
        yield rec


def _utc_now_iso() -> str:
    # RFC 3339 with microseconds and "Z", as Vector, Fluent Bit and RFC 5424 senders write it.
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_records(run_id: str, sender: int, count: int) -> list[bytes]:
    # The keys a structured logger writes (time, level, logger, message), the tags beside them.
    pid = os.getpid()
    lines = []
    for n in range(count):
        rec: dict[str, Any] = {
            "time": _utc_now_iso(),
            "level": "INFO",
            "logger": "bench.flood",
            "message": MESSAGE % (pid, n),
            "trace_id": sender,
            "run": run_id,
            "i": f"{sender}:{n}",
        }
        if n == count - 1:
            rec["last"] = True
        lines.append(orjson.dumps(rec) + b"\n")
    return lines


def _syslog_records(run_id: str, sender: int, count: int) -> list[bytes]:
    # <134> is local0.info (16 * 8 + 6). HOSTNAME is PRINTUSASCII without spaces (RFC 5424 6.2.4).
    host = socket.gethostname()
    if not host or not host.isascii() or not host.isprintable() or " " in host:
        host = "-"
    pid = os.getpid()
    messages = []
    for n in range(count):
        last = ' last="true"' if n == count - 1 else ""
        messages.append(
            f'<134>1 {_utc_now_iso()} {host} bench.flood {pid} - [{SD_ID} run="{run_id}" i="{sender}:{n}" '
            f'trace_id="{sender}"{last}] {MESSAGE % (pid, n)}'.encode()
        )
    return messages


def _bulk_records(run_id: str, sender: int, count: int) -> list[bytes]:
    # Filebeat 8's shape: a create action into its data stream, then an ECS document (agent,
    # ecs, host, log, the message), the tags at the top level as an app's fields would be.
    action = orjson.dumps({"create": {"_index": "filebeat-8.15.0"}}) + b"\n"
    host = socket.gethostname()
    pid = os.getpid()
    pairs = []
    for n in range(count):
        doc: dict[str, Any] = {
            "@timestamp": _utc_now_iso(),
            "message": MESSAGE % (pid, n),
            "log": {"level": "info", "logger": "bench.flood", "file": {"path": "/var/log/app/bench.log"}},
            "ecs": {"version": "8.0.0"},
            "host": {"name": host},
            "agent": {"type": "filebeat", "version": "8.15.0", "name": host},
            "trace_id": sender,
            "run": run_id,
            "i": f"{sender}:{n}",
        }
        if n == count - 1:
            doc["last"] = True
        pairs.append(action + orjson.dumps(doc) + b"\n")
    return pairs


def otlp_bodies(run_id: str, sender: int, count: int, batch: int) -> list[tuple[bytes, int]]:
    """``count`` records of one sender as OTLP/HTTP protobuf bodies of ``batch`` records each.

    Each body is one ExportLogsServiceRequest with one resource (the attributes the Python
    SDK's default resource carries, plus service.name and process.pid) and one scope named
    after the logger, as the SDK's ``LoggingHandler`` and ``OTLPLogExporter`` send a batch;
    each record has the handler's code.* and thread attributes, a trace and span id, and the
    tags (run, i, last) as attributes. The last record is marked.

    Returns:
        (body, records in it) per request.
    """
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO

    def kv(key: str, value: str | int | bool) -> KeyValue:
        if isinstance(value, bool):
            return KeyValue(key=key, value=AnyValue(bool_value=value))
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    pid = os.getpid()
    resource = [
        kv("telemetry.sdk.language", "python"),
        kv("telemetry.sdk.name", "opentelemetry"),
        kv("telemetry.sdk.version", "1.45.2"),
        kv("service.name", "bench-flood"),
        kv("host.name", socket.gethostname()),
        kv("process.pid", pid),
    ]
    bodies = []
    for start in range(0, count, batch):
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        rl.resource.attributes.extend(resource)
        sl = rl.scope_logs.add()
        sl.scope.name = "bench.flood"
        now = time_ns()
        for n in range(start, min(start + batch, count)):
            lr = sl.log_records.add()
            lr.time_unix_nano = lr.observed_time_unix_nano = now + n
            lr.severity_number = SEVERITY_NUMBER_INFO
            lr.severity_text = "INFO"
            lr.body.string_value = MESSAGE % (pid, n)
            lr.trace_id = (sender + 1).to_bytes(8, "big") + n.to_bytes(8, "big")
            lr.span_id = (n + 1).to_bytes(8, "big")
            lr.flags = 1
            attrs = [
                kv("code.file.path", "/srv/app/bench.py"),
                kv("code.function.name", "flood"),
                kv("code.line.number", 42),
                kv("thread.id", 140245318469440),
                kv("thread.name", "MainThread"),
                kv("run", run_id),
                kv("i", f"{sender}:{n}"),
            ]
            if n == count - 1:
                attrs.append(kv("last", True))
            lr.attributes.extend(attrs)
        bodies.append((req.SerializeToString(), min(start + batch, count) - start))
    return bodies
