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
    pattern = re.compile(r"Listening on 127\.0\.0\.1:(\d+) \(" + re.escape(what))
    # Service.start returns once the first listener is logged; the others follow it.
    wait_for(lambda: pattern.search(svc.log()) is not None, 10, f"the {what} listener")
    m = pattern.search(svc.log())
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


def test_a_huge_body_and_a_format_width_form_leave_everyone_else_served(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    # Issue 10: a 16 MiB body of tiny NDJSON lines, or a 71-byte HTTPHandler form whose msg
    # has a format width, built one journal block over the format's limit; every append failed
    # from then on, nothing from any client reached the journal, /readyz said ready, and
    # SIGTERM did not stop the process.
    import psycopg

    from tests.helpers import join_clients, start_clients

    svc = Service(
        tmp_path / "data", dsn, schema, "--listen-http", "127.0.0.1:0", "--shutdown-timeout", "5s"
    ).start()
    try:
        port = http_port(svc)
        steady = start_clients(svc.port, procs=2, count=3000, pause=0.002, run="steady")
        big = socket.create_connection(("127.0.0.1", port), timeout=300)
        body = b'{"n":1}\n' * (16 * 1024 * 1024 // 8)
        big.sendall(
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        form = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        form.request(
            "POST",
            "/ingest",
            body="name=widths&msg=%25200000000d&args=%281%2C%29",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        resp = form.getresponse()
        assert (resp.status, json.loads(resp.read())["accepted"]) == (200, 1)
        for _ in range(5):  # the loop keeps turning while the big body is worked through
            started = time.monotonic()
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            probe.request("GET", "/readyz")
            ready = probe.getresponse()
            assert ready.status == 200, ready.read()
            ready.read()
            probe.close()
            assert time.monotonic() - started < 2.0
        join_clients(steady, timeout=120)

        def stored(where: str) -> int:
            with psycopg.connect(dsn) as c:
                row = c.execute(f"SELECT count(*) FROM {schema}.records WHERE {where}").fetchone()
            return int(row[0]) if row else 0

        wait_for(lambda: stored("extra->>'run' = 'steady'") == 6000, 60, "every steady client's record")
        big.settimeout(300)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = big.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"accepted": len(body) // 8, "rejected": {}}
        big.close()
        started = time.monotonic()
        assert svc.stop(timeout=30) == 0
        assert time.monotonic() - started < 5 + 5, "SIGTERM exits within --shutdown-timeout"
        with psycopg.connect(dsn) as c:
            row = c.execute(
                f"SELECT length(message) FROM {schema}.records WHERE logger = 'widths'"
            ).fetchone()
        assert row is not None and row[0] < 1 << 20, "the form's message is bounded"
    finally:
        svc.kill()
