"""HTTP on the loop: keep-alive, request timeouts, 503 while the journal is full, readiness."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from pathlib import Path

import pytest

from tests.helpers import Service, wait_for

pytestmark = pytest.mark.slow


def http_port(svc: Service, what: str = "HTTP: POST /ingest") -> int:
    m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(" + re.escape(what), svc.log())
    assert m, svc.log()
    return int(m.group(1))


def test_keep_alive_serves_many_requests_on_one_connection(tmp_path: Path, dsn: str, schema: str) -> None:
    svc = Service(tmp_path / "data", dsn, schema, "--listen-http", "127.0.0.1:0").start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", http_port(svc), timeout=10)
        socks = set()
        for i in range(20):
            conn.request(
                "POST",
                "/ingest",
                body=f'{{"message": "ka {i}"}}\n',
                headers={"Content-Type": "application/x-ndjson"},
            )
            resp = conn.getresponse()
            assert (resp.status, json.loads(resp.read())) == (200, {"accepted": 1, "rejected": {}})
            socks.add(id(conn.sock))
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        socks.add(id(conn.sock))
        conn.close()
        # http.client opens a new socket whenever the server closed the last one.
        assert len(socks) == 1
    finally:
        svc.kill()


def test_a_request_that_never_finishes_gets_408_after_the_frame_timeout(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    svc = Service(
        tmp_path / "data", dsn, schema, "--listen-http", "127.0.0.1:0", "--frame-timeout", "1s"
    ).start()
    try:
        with socket.create_connection(("127.0.0.1", http_port(svc))) as s:
            s.sendall(b'POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"mess')
            started = time.monotonic()
            s.settimeout(15)
            answer = s.recv(200)
            elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 0.9 <= elapsed <= 10, elapsed
    finally:
        svc.kill()


def test_ingest_answers_503_and_readyz_says_why_while_the_journal_is_full(
    tmp_path: Path, schema: str
) -> None:
    # Nothing listens on port 1: PostgreSQL is unreachable, so the journal only grows.
    unreachable = "host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=1"
    svc = Service(
        tmp_path / "data",
        unreachable,
        schema,
        *(
            "--listen-http",
            "127.0.0.1:0",
            "--journal-segment-bytes",
            "64KiB",
            "--journal-max-bytes",
            "128KiB",
        ),
    ).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", http_port(svc), timeout=10)
        body = "".join(json.dumps({"message": "x" * 200, "n": i}) + "\n" for i in range(200))
        statuses = []
        for _ in range(100):  # bounded: 128 KiB is reached after a few requests
            conn.request("POST", "/ingest", body=body, headers={"Content-Type": "application/x-ndjson"})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            if resp.status == 503:
                assert resp.getheader("Retry-After") == "1"
                break
        assert statuses[-1] == 503 and set(statuses[:-1]) == {200}
        conn.request("GET", "/readyz")
        resp = conn.getresponse()
        ready = json.loads(resp.read())
        assert resp.status == 503
        assert ready["status"] == "not ready" and ready["journal"]["accepting"] is False
        assert ready["postgresql"].startswith("down")
        wait_for(lambda: "Journal is full" in svc.log(), 10, "the backpressure log line")
    finally:
        svc.kill()
