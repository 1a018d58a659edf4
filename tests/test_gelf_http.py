"""``POST /gelf`` on ``--listen-http``: graypy's real GELFHTTPHandler, compressed and garbage bodies."""

from __future__ import annotations

import gzip
import http.client
import re
import socket
import urllib.request
import zlib
from pathlib import Path

import pytest

from tests.helpers import Service, wait_for
from tests.test_gelf_listener import emit, rows

graypy = pytest.importorskip("graypy", reason="pip install -e .[dev] (graypy)")

pytestmark = pytest.mark.slow


def post(
    port: int, body: bytes, headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, "/gelf", body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_graypy_http_handler_and_compressed_and_garbage_bodies(tmp_path: Path, dsn: str, schema: str) -> None:
    svc = Service(
        tmp_path / "data",
        dsn,
        schema,
        *("--listen-http", "127.0.0.1:0", "--http-max-body-bytes", "64KiB", "--json-format", "pino"),
    ).start()
    try:
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: POST", svc.log())
        metrics = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: /metrics", svc.log())
        assert m and metrics, svc.log()
        port = int(m.group(1))
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the database connection")

        # graypy as its users set it up: zlib under "Content-Encoding: gzip,deflate" (its default)
        # and uncompressed. Its emit does not read the answer; the records must still land.
        sent = emit(graypy.GELFHTTPHandler("127.0.0.1", port), "gelf.http.zlib")
        sent += emit(graypy.GELFHTTPHandler("127.0.0.1", port, compress=False), "gelf.http.plain")

        msg = b'{"version":"1.1","host":"h","short_message":"%s","level":3,"_k":1}'
        # Graylog's answer: 202 Accepted, no body, once the record is durable.
        assert post(port, gzip.compress(msg % b"gzip"), {"Content-Encoding": "gzip"}) == (202, b"")
        assert post(port, zlib.compress(msg % b"deflate"), {"Content-Encoding": "deflate"}) == (202, b"")
        assert post(port, msg % b"plain", {"Content-Type": "application/json"}) == (202, b"")
        # Garbage, each answered and counted, never stored.
        bomb = gzip.compress(b" " * 70_000)  # 70 kB of white space: under the cap sent, over it inflated
        for body, headers, status in [
            (b"not json", {}, 400),
            (b"[1, 2]", {}, 400),
            (b"", {}, 400),
            (b"\x1f\x8bjunk", {"Content-Encoding": "gzip"}, 400),
            (zlib.compress(msg % b"cut")[:-4], {"Content-Encoding": "deflate"}, 400),
            (bomb, {"Content-Encoding": "gzip"}, 413),
            (msg % b"br", {"Content-Encoding": "br"}, 415),
        ]:
            got, answer = post(port, body, headers)
            assert got == status, (body[:20], got, answer)
        assert post(port, b"", method="GET")[0] == 405

        total = len(sent) + 3
        wait_for(lambda: len(rows(dsn, schema)) >= total, 30, f"{total} rows")
        got_rows = rows(dsn, schema)
        assert len(got_rows) == total
        by_key = {(r["logger"], r["message"], r["levelno"]): r for r in got_rows}
        for rec in sent:
            row = by_key[(rec.name, rec.getMessage(), rec.levelno)]
            assert row["created"].timestamp() == pytest.approx(rec.created, abs=1e-6)
            assert (row["levelname"], row["pathname"], row["lineno"], row["func"]) == (
                rec.levelname,
                rec.pathname,
                rec.lineno,
                rec.funcName,
            )
            for field in ("user_id", "blob"):
                assert row["extra"].get(field) == getattr(rec, field, None)
            assert row["extra"]["hostname"] == socket.gethostname()
            if rec.exc_info:
                assert row["exc_text"].startswith("Traceback") and "ZeroDivisionError" in row["exc_text"]
        # Read as GELF whatever --json-format says: syslog 3 is ERROR, "_k" is "k".
        for name in ("gzip", "deflate", "plain"):
            [row] = [r for r in got_rows if r["message"] == name]
            assert (row["levelno"], row["levelname"]) == (40, "ERROR")
            assert row["extra"] == {"k": 1, "hostname": "h", "version": "1.1"}

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.group(1)}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for status, n in ((202, len(sent) + 3), (400, 5), (405, 1), (413, 1), (415, 1)):
            assert f'logsvc_http_requests_total{{path="/gelf",status="{status}"}} {n}.0' in text, text
    finally:
        svc.stop()
