"""``serve --listen-gelf``: graypy's real UDP (chunked, compressed) and TCP handlers, end to end."""

from __future__ import annotations

import logging
import os
import re
import socket
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Service, wait_for

graypy = pytest.importorskip("graypy", reason="pip install -e .[dev] (graypy)")

pytestmark = pytest.mark.slow


def rows(dsn: str, schema: str, where: str = "true") -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
            return []
        cur = conn.execute(f"SELECT * FROM {schema}.records WHERE {where} ORDER BY seq")
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def emit(handler: logging.Handler, name: str) -> list[logging.LogRecord]:
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    keep = Keep()
    logger.addHandler(handler)
    logger.addHandler(keep)
    try:
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
            logger.log(level, "%s at %s ✓", name, logging.getLevelName(level), extra={"user_id": level})
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("it failed")
        # Random text does not compress: several 1420-byte chunks even after zlib.
        logger.info("big", extra={"blob": os.urandom(6000).hex()})
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(keep)
        handler.close()
    return kept


def test_graypy_udp_and_tcp_and_bad_chunks(tmp_path: Path, dsn: str, schema: str) -> None:
    svc = Service(tmp_path / "data", dsn, schema, "--listen-gelf", "127.0.0.1:0").start()
    try:
        log = svc.log()
        tcp = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(GELF over TCP", log)
        udp = re.search(r"Listening on udp 127\.0\.0\.1:(\d+) \(GELF datagrams", log)
        metrics = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: /metrics", log)
        assert tcp and udp and metrics, log
        assert tcp.group(1) == udp.group(1)  # one port, both transports
        port = int(tcp.group(1))
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the database connection")

        sent = emit(graypy.GELFUDPHandler("127.0.0.1", port), "gelf.udp")
        sent += emit(graypy.GELFTCPHandler("127.0.0.1", port), "gelf.tcp")
        # Chunks out of order and with one missing, by hand; and bad datagrams, counted.
        message = zlib.compress(b'{"version":"1.1","host":"h","short_message":"reordered","_k":1}')
        third = -(-len(message) // 3)
        parts = [b"\x1e\x0fREORDER1" + bytes([i, 3]) + message[i * third : (i + 1) * third] for i in range(3)]
        missing = [b"\x1e\x0fMISSING1" + bytes([i, 3]) + message[i * third : (i + 1) * third] for i in (0, 2)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in [parts[2], parts[0], *missing, parts[1], b"\x1e\x0fshort", b"\x78\x9cjunk", b"[1]"]:
                s.sendto(d, ("127.0.0.1", port))

        total = len(sent) + 1
        wait_for(lambda: len(rows(dsn, schema)) >= total, 30, f"{total} rows")
        got = rows(dsn, schema)
        assert len(got) == total
        by_key = {(r["logger"], r["message"], r["levelno"]): r for r in got}
        for rec in sent:
            row = by_key[(rec.name, rec.getMessage(), rec.levelno)]
            assert row["created"].timestamp() == pytest.approx(rec.created, abs=1e-6)
            assert (row["levelname"], row["pathname"], row["lineno"], row["func"]) == (
                rec.levelname,
                rec.pathname,
                rec.lineno,
                rec.funcName,
            )
            assert (row["process"], row["process_name"], row["thread_name"]) == (
                rec.process,
                rec.processName,
                rec.threadName,
            )
            for field in ("user_id", "blob"):
                assert row["extra"].get(field) == getattr(rec, field, None)
            assert row["extra"]["hostname"] == socket.gethostname()
            if rec.exc_info:
                assert row["exc_text"].startswith("Traceback") and "ZeroDivisionError" in row["exc_text"]
            else:
                assert row["exc_text"] is None
        [reordered] = [r for r in got if r["message"] == "reordered"]
        assert reordered["extra"] == {"k": 1, "hostname": "h", "version": "1.1"}

        def rejected(reason: str) -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics.group(1)}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            m = re.search(
                rf'logsvc_records_rejected_total{{listener="gelf_udp",reason="{reason}"}} (\S+)', text
            )
            return float(m.group(1)) if m else 0.0

        assert (rejected("bad_chunk"), rejected("bad_compression"), rejected("not_object")) == (1, 1, 1)
        # The message missing its middle chunk: dropped and counted by the sweep once its 5 s
        # are up, with no other datagram needed to notice.
        wait_for(lambda: rejected("incomplete") == 1, 15, "the incomplete message to be counted")
    finally:
        svc.stop()


def test_chunk_flood_keeps_the_service_small(tmp_path: Path, dsn: str, schema: str) -> None:
    # 60,000 first chunks of messages that never finish (84 MB): reassembly keeps at most its
    # caps (wire.gelf MAX_PENDING_MESSAGES / MAX_PENDING_BYTES), and real records still pass.
    svc = Service(tmp_path / "data", dsn, schema, "--listen-gelf", "127.0.0.1:0").start()
    try:
        m = re.search(r"Listening on udp 127\.0\.0\.1:(\d+) \(GELF datagrams", svc.log())
        assert m, svc.log()
        port = int(m.group(1))
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the database connection")
        before = svc.sample_peak_rss()
        payload = os.urandom(1400)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(60_000):
                s.sendto(b"\x1e\x0f" + i.to_bytes(8, "big") + bytes([0, 128]) + payload, ("127.0.0.1", port))
            # The kernel's receive buffer may still hold the flood and drop what comes now:
            # probe until a record gets through, then send the real ones.
            probe = b'{"version":"1.1","host":"h","short_message":"probe"}'

            def through() -> bool:
                s.sendto(probe, ("127.0.0.1", port))
                return bool(rows(dsn, schema, "message = 'probe'"))

            wait_for(through, 60, "a record to get through after the flood", interval=0.2)
        emit(graypy.GELFUDPHandler("127.0.0.1", port), "after.flood")
        wait_for(
            lambda: len(rows(dsn, schema, "logger = 'after.flood'")) == 7, 30, "the records after the flood"
        )
        grown_mib = (svc.sample_peak_rss() - before) / 1024
        assert grown_mib < 64, f"peak RSS grew {grown_mib:.0f} MiB during the flood"
    finally:
        svc.stop()
