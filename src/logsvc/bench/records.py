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
from typing import Any

import orjson

FORMATS = ("pickle", "json", "syslog", "http", "udp", "syslog-udp")
DATAGRAM_FORMATS = frozenset({"udp", "syslog-udp"})
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
        (syslog) or the bare message (syslog-udp).

    Raises:
        ValueError: ``fmt`` is not one of ``FORMATS``.
    """
    if fmt in ("pickle", "udp"):
        return _pickle_records(run_id, sender, count)
    if fmt in ("json", "http"):
        return _json_records(run_id, sender, count)
    if fmt in ("syslog", "syslog-udp"):
        messages = _syslog_records(run_id, sender, count)
        return [b"%d %s" % (len(m), m) for m in messages] if fmt == "syslog" else messages
    raise ValueError(f"unknown format {fmt!r}")


def flood_frames(run_id: str, sender: int, count: int) -> bytes:
    """``count`` real SocketHandler frames, pre-encoded; the last is marked."""
    return b"".join(_pickle_records(run_id, sender, count))


def _pickle_records(run_id: str, sender: int, count: int) -> list[bytes]:
    handler = logging.handlers.SocketHandler("localhost", 0)
    pid = os.getpid()
    frames = []
    for n in range(count):
        rec = logging.LogRecord(
            "bench.flood", logging.INFO, "/srv/app/bench.py", 42, MESSAGE, (pid, n), None, "flood"
        )
        rec.trace_id = sender
        rec.run = run_id
        rec.i = f"{sender}:{n}"
        if n == count - 1:
            rec.last = True
        frames.append(handler.makePickle(rec))
    return frames


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
