"""The operator port (metrics, health, the web console) over TLS: ``--metrics-tls yes``.

A real ``serve`` and a real ``logsvc console`` with a certificate made by openssl for
127.0.0.1; the client verifies it against the test CA. Plain HTTP to the TLS port gets no
answer, and the service goes on serving everyone else.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.faults.test_hostile_live import pki  # noqa: F401 (a fixture)
from tests.helpers import Service, wait_for

pytestmark = pytest.mark.slow


def _get(url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return int(r.status), str(r.read().decode())


def _plain_gets_nothing(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return True
    return not data.startswith(b"HTTP/")


def _tls_args(certs: Path) -> list[str]:
    return [
        "--metrics-tls",
        "yes",
        "--tls-cert",
        str(certs / "server.pem"),
        "--tls-key",
        str(certs / "server.key"),
    ]


def _serves_over_tls(s: Service, certs: Path, banner: str) -> None:
    """A record sent to ``s`` is found over HTTPS on the operator port named by ``banner``."""
    wait_for(lambda: re.search(banner, s.log()) is not None, 30, "the operator port over TLS")
    m = re.search(banner, s.log())
    assert m, s.log()
    port = int(m.group(1))
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    h = logging.handlers.SocketHandler("127.0.0.1", s.port)
    h.handle(logging.makeLogRecord({"msg": "over tls", "name": "tls.console"}))
    h.close()
    s.wait_rows(1, "message", "logger = 'tls.console'")
    base = f"https://127.0.0.1:{port}"
    assert _get(base + "/healthz", ctx)[0] == 200
    status, page = _get(base + "/metrics", ctx)
    assert status == 200 and "logsvc_records_stored_total 1.0" in page
    status, html = _get(base + "/", ctx)
    assert status == 200 and "<html" in html
    status, body = _get(base + "/api/search?q=tls&since=1h", ctx)
    assert status == 200 and [r["message"] for r in json.loads(body)["records"]] == ["over tls"]
    assert _plain_gets_nothing(port)
    # An unverified client is refused by its own check, not served in the clear.
    with pytest.raises(urllib.error.URLError):
        _get(base + "/healthz", ssl.create_default_context())
    assert _get(base + "/healthz", ctx)[0] == 200  # and the port still serves


def test_serve_answers_metrics_health_and_the_console_over_tls(
    tmp_path: Path,
    dsn: str,
    schema: str,
    pki: Path,  # noqa: F811
) -> None:
    s = Service(tmp_path / "a", dsn, schema, *_tls_args(pki)).start()
    try:
        _serves_over_tls(s, pki, r"Listening on 127\.0\.0\.1:(\d+) \(TLS, HTTP: /metrics")
    finally:
        s.kill()


def test_logsvc_console_over_tls(tmp_path: Path, dsn: str, schema: str, pki: Path) -> None:  # noqa: F811
    s = Service(tmp_path / "a", dsn, schema).start()
    s.kill()  # its schema exists now; the console needs no ingest
    cmd = [sys.executable, "-m", "logsvc", "console", "--dsn", dsn, "--schema", schema,
           "--listen", "127.0.0.1:0", "--metrics-tls", "yes", "--tls-cert", str(pki / "server.pem"),
           "--tls-key", str(pki / "server.key")]  # fmt: skip
    log = tmp_path / "console.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "Console listening on https://" in log.read_text(), 30, "the console to listen")
        port = int(re.findall(r"https://127\.0\.0\.1:(\d+)/", log.read_text())[0])
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        status, html = _get(f"https://127.0.0.1:{port}/", ctx)
        assert status == 200 and "<html" in html
        assert _plain_gets_nothing(port)
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_workers_answers_over_tls_too(tmp_path: Path, dsn: str, schema: str, pki: Path) -> None:  # noqa: F811
    # With --workers the operator port is the supervisor's: the same TLS, the same console.
    s = Service(tmp_path / "a", dsn, schema, "--workers", "2", *_tls_args(pki)).start()
    try:
        _serves_over_tls(
            s, pki, r"Listening on 127\.0\.0\.1:(\d+) \(TLS, HTTP: /metrics, /healthz, /readyz of all"
        )
    finally:
        s.kill()
