"""The console's API against a real ``serve`` and a real PostgreSQL, records sent by stock handlers.

One service for the module (its own schema), records sent once through ``SocketHandler``;
each test reads them through the operator port the way the page does.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import logging
import logging.handlers
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest

from tests.helpers import Service, wait_for

HOSTILE = [
    "<script>alert(1)</script>",
    "javascript:alert(document.cookie)",
    "\x1b[31mred\x1b[0m and \u2028 line separator",
]


@pytest.fixture(scope="module")
def svc(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, int]]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    service = Service(tmp_path_factory.mktemp("console"), dsn, schema).start()
    m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: /metrics", service.log())
    assert m is not None
    try:
        send_records(service.port)
        service.wait_rows(11 + len(HOSTILE), "seq", "true")
        yield service, int(m.group(1))
    finally:
        service.stop()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def send_records(port: int) -> None:
    handler = logging.handlers.SocketHandler("127.0.0.1", port)
    db = logging.getLogger("capp.db")
    web = logging.getLogger("capp.web")
    other = logging.getLogger("cappother")
    for lg in (db, web, other):
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
    try:
        db.info("connected to primary", extra={"trace_id": 17, "run_id": "abc"})
        db.warning("slow query took 1200 ms", extra={"trace_id": 17, "duration_ms": 1200})
        web.error("request failed: timeout", extra={"trace_id": "t-9", "status": 504})
        web.info("request ok", extra={"trace_id": 17, "status": 200})
        other.debug("100% done_ok")
        other.critical("disk full")
        db.info("reconnect", extra={"trace_id": 18})
        web.info("bye")
        for text in HOSTILE:
            other.info(text, extra={"hostile": text})
        other.info("bigline " + "<b>x</b>" * 25_000)  # 200 kB
        for hours, text in ((5, "old one"), (30, "older one")):
            rec = other.makeRecord("capp.old", logging.INFO, "x.py", 1, text, (), None)
            rec.created -= hours * 3600
            handler.handle(rec)
    finally:
        for lg in (db, web, other):
            lg.removeHandler(handler)
        handler.close()


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def api(port: int, route: str, **params: Any) -> tuple[int, Any]:
    status, _, body = get(port, f"/api/{route}?{urlencode(params)}")
    return status, json.loads(body)


# -- search --------------------------------------------------------------------------------


def test_search_newest_first_with_cli_field_names_and_ids(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, body = api(port, "search", q="logger:capp.db")
    assert status == 200, body
    msgs = [r["message"] for r in body["records"]]
    assert msgs == ["reconnect", "slow query took 1200 ms", "connected to primary"]
    rec = body["records"][-1]
    assert rec["extra"] == {"trace_id": 17, "run_id": "abc"}
    assert rec["levelname"] == "INFO" and rec["logger"] == "capp.db"
    assert re.fullmatch(r"[0-9a-f]{32}:\d+", rec["id"])
    assert re.search(r"[+-]\d\d:\d\d$", rec["created"])
    assert {"seq", "created", "received", "stored", "func", "process", "peer", "exc_text"} <= rec.keys()
    assert body["next"] is None and isinstance(body["took_ms"], float | int)


def test_search_filters(svc: tuple[Service, int]) -> None:
    _, port = svc

    def messages(q: str) -> list[str]:
        status, body = api(port, "search", q=q)
        assert status == 200, (q, body)
        return sorted(r["message"] for r in body["records"])

    assert messages("level>=error -hostile:*") == ["disk full", "request failed: timeout"]
    assert messages("trace_id:17 status:200") == ["request ok"]
    assert messages('trace_id:"t-9"') == ["request failed: timeout"]
    assert messages('"100% done"') == ["100% done_ok"]
    assert messages("TIMEOUT OR disk") == ["disk full", "request failed: timeout"]
    assert messages('message~"^slow .* [0-9]+ ms$"') == ["slow query took 1200 ms"]
    assert messages("duration_ms>1000") == ["slow query took 1200 ms"]
    assert messages("logger:capp -logger:capp.web") == [
        "connected to primary",
        "reconnect",
        "slow query took 1200 ms",
    ]


def test_search_pages_by_cursor_without_gaps_or_repeats(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, whole = api(port, "search", limit=100)
    assert status == 200
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        status, page = api(port, "search", **params)
        assert status == 200, page
        seen += [r["id"] for r in page["records"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in whole["records"]]
    assert len(seen) == 9 + len(HOSTILE)


def test_search_reaches_back_through_growing_windows_in_order(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, body = api(port, "search", since="3d", q="logger:capp.old")
    assert status == 200, body
    assert [r["message"] for r in body["records"]] == ["old one", "older one"]
    ids: list[str] = []
    params: dict[str, Any] = {"since": "3d", "limit": 4}
    for _ in range(10):
        status, page = api(port, "search", **params)
        assert status == 200, page
        ids += [r["id"] for r in page["records"]]
        if page["next"] is None:
            break
        params["cursor"] = page["next"]
    times = [api(port, "record", id=i)[1]["created"] for i in ids]
    assert len(ids) == 11 + len(HOSTILE) == len(set(ids))
    assert times == sorted(times, reverse=True)


def test_a_search_back_to_the_year_1_does_not_overflow(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, body = api(port, "search", since="0002-01-01T00:00:00+00:00", q="logger:capp.old")
    assert status == 200, body
    assert [r["message"] for r in body["records"]] == ["old one", "older one"]


def test_spans_cover_the_range_nearest_first() -> None:
    from logsvc.console.api import spans

    t0 = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
    h = _dt.timedelta(hours=1)
    assert spans(t0, t0 - 30 * h, h, 4) == [
        (t0 - h, t0),
        (t0 - 5 * h, t0 - h),
        (t0 - 21 * h, t0 - 5 * h),
        (t0 - 30 * h, t0 - 21 * h),
    ]
    assert spans(t0, t0 + 2 * h, h, 6) == [(t0, t0 + h), (t0 + h, t0 + 2 * h)]
    assert spans(t0, t0, h, 4) == []


def test_hostile_text_comes_back_as_json_strings_unchanged(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, headers, raw = get(port, "/api/search?" + urlencode({"q": "hostile:*"}))
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    body = json.loads(raw)
    assert sorted(r["message"] for r in body["records"]) == sorted(HOSTILE)
    assert sorted(r["extra"]["hostile"] for r in body["records"]) == sorted(HOSTILE)
    assert b"\x1b" not in raw and b"\n" not in raw.rstrip(b"\n")  # escaped inside the strings


def test_long_fields_are_cut_in_lists_and_whole_in_the_record(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, body = api(port, "search", q="bigline")
    assert status == 200, body
    [rec] = body["records"]
    assert rec["truncated"] is True and len(rec["message"]) == 16384
    status, whole = api(port, "record", id=rec["id"])
    assert status == 200 and whole["message"] == "bigline " + "<b>x</b>" * 25_000
    status, body = api(port, "search", q="disk")
    assert body["records"][0]["truncated"] is False


def test_bad_queries_are_400_with_the_position(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, body = api(port, "search", q='error "unclosed')
    assert status == 400 and body["position"] == 6 and "never closed" in body["error"]
    status, body = api(port, "search", q='x message~"(unclosed"')
    assert status == 400 and body["position"] == 10 and "regular expression" in body["error"]
    status, body = api(port, "histogram", q="level>=loud")
    assert status == 400 and body["position"] == 7
    bad: list[dict[str, str]] = [{"since": "yesterday"}, {"limit": "x"}, {"cursor": "nope"}]
    bad += [{"since": "0001-01-01"}, {"since": "99999999999w"}, {"cursor": "9999999999999999999_1"}]
    for params in [*bad, {"since": "1h", "until": "2h"}]:
        status, body = api(port, "search", **params)
        assert status == 400 and body["error"], params
    assert api(port, "nothing")[0] == 404


# -- histogram, record, context, facets ----------------------------------------------------


def test_histogram_counts_by_level_over_the_whole_range(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, body = api(port, "histogram", since="1h", buckets=12)
    assert status == 200, body
    assert body["step_s"] == 300 and len(body["buckets"]) in (12, 13)  # on the 5-min grid
    assert body["levels"] == ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    totals: dict[str, int] = {}
    for b in body["buckets"]:
        for level, n in b["counts"].items():
            totals[level] = totals.get(level, 0) + n
    assert totals == {"DEBUG": 1, "INFO": 5 + len(HOSTILE), "WARNING": 1, "ERROR": 1, "CRITICAL": 1}
    assert all(re.search(r"[+-]\d\d:\d\d$", b["t"]) for b in body["buckets"])


def _id_of(port: int, q: str) -> str:
    status, body = api(port, "search", q=q)
    assert status == 200 and len(body["records"]) == 1, body
    return str(body["records"][0]["id"])


def test_record_by_id(svc: tuple[Service, int]) -> None:
    _, port = svc
    rid = _id_of(port, "disk")
    status, rec = api(port, "record", id=rid)
    assert status == 200 and rec["message"] == "disk full" and rec["id"] == rid
    assert api(port, "record", id="0" * 32 + ":1")[0] == 404
    assert api(port, "record", id="nope")[0] == 400
    # The record's own time as a hint (what a list gives): the same answer.
    assert api(port, "record", id=rid, created=rec["created"]) == (200, rec)
    status, body = api(port, "record", id=rid, created="2020-01-01T00:00:00+00:00")
    assert (status, body) == (200, rec)  # a wrong hint costs the usual search, nothing else
    assert api(port, "record", id=rid, created="noon")[0] == 400


def test_context_by_trace_and_by_process_with_load_more(svc: tuple[Service, int]) -> None:
    _, port = svc
    rid = _id_of(port, "slow")
    status, body = api(port, "context", id=rid, by="trace", n=20)
    assert status == 200, body
    assert body["anchor"]["message"] == "slow query took 1200 ms"
    assert [r["message"] for r in body["before"]] == ["connected to primary"]
    assert [r["message"] for r in body["after"]] == ["request ok"]
    assert body["before_next"] is None and body["after_next"] is None

    status, body = api(port, "context", id=rid, by="process", n=2)
    assert status == 200, body
    # 5 h before is within the day context looks at; 30 h before is not.
    assert [r["message"] for r in body["before"]] == ["old one", "connected to primary"]
    assert body["before_next"] is None
    assert [r["message"] for r in body["after"]] == ["request failed: timeout", "request ok"]
    assert body["after_next"] is not None
    status, more = api(port, "context", id=rid, by="process", n=2, after=body["after_next"])
    assert status == 200, more
    assert [r["message"] for r in more["after"]] == ["100% done_ok", "disk full"]
    assert more["before"] == []

    status, body = api(port, "context", id=_id_of(port, "disk"), by="trace")
    assert status == 400 and "trace_id" in body["error"]


def test_facets_top_values_and_extra_keys(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, body = api(port, "facets", q="-hostile:* -bigline")
    assert status == 200, body
    fields = {f["name"]: f for f in body["fields"]}
    assert [f["name"] for f in body["fields"]][:3] == ["level", "logger", "host"]
    assert {v["value"]: v["count"] for v in fields["logger"]["values"]} == {
        "capp.db": 3,
        "capp.web": 3,
        "cappother": 2,
    }
    assert fields["host"]["values"] == [{"value": "127.0.0.1", "count": 8}]
    traces = {v["value"]: v["count"] for v in fields["extra.trace_id"]["values"]}
    assert traces == {"17": 3, "t-9": 1, "18": 1}
    assert fields["extra.trace_id"]["distinct"] == 3 and not fields["extra.trace_id"]["high_cardinality"]


# -- tail ----------------------------------------------------------------------------------


def test_tail_streams_a_record_sent_after_subscribing(svc: tuple[Service, int]) -> None:
    service, port = svc
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"GET /api/tail?q=" + b"tailme" + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        deadline = time.monotonic() + 10
        while b"live tail started" not in buf and time.monotonic() < deadline:
            buf += sock.recv(65536)
        assert buf.startswith(b"HTTP/1.1 200") and b"text/event-stream" in buf
        sent = time.monotonic()
        lg = logging.getLogger("capp.tail")
        handler = logging.handlers.SocketHandler("127.0.0.1", service.port)
        lg.addHandler(handler)
        lg.propagate = False
        try:
            lg.warning("tailme <b>now</b>")
        finally:
            lg.removeHandler(handler)
            handler.close()
        sock.settimeout(0.2)

        def arrived() -> bool:
            nonlocal buf
            try:
                buf += sock.recv(65536)
            except TimeoutError:
                pass
            return b"event: records" in buf

        wait_for(arrived, 5, "the record in the tail")
        assert time.monotonic() - sent < 2.0
        data = buf.split(b"event: records\n", 1)[1]  # one chunk: the whole event
        line = data.split(b"data: ", 1)[1].split(b"\n", 1)[0]
        records = json.loads(line.strip())
        assert [r["message"] for r in records] == ["tailme <b>now</b>"]
    finally:
        sock.close()


def test_static_page_and_no_traversal(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, headers, body = get(port, "/")
    index = Path(__file__).parents[2] / "src/logsvc/console/static/index.html"
    if not index.exists():
        assert status == 404
        return
    assert status == 200 and body == index.read_bytes()
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    status, _, _ = get(port, "/", {"If-None-Match": headers["etag"]})
    assert status == 304
    for bad in ("/static/../__init__.py", "/static/%2e%2e/api.py", "/static//etc/passwd", "/static/.hidden"):
        assert get(port, bad)[0] == 404, bad
    # /metrics is still there
    assert get(port, "/metrics")[0] == 200


# -- logsvc console, and authentication ----------------------------------------------------


def test_console_command_serves_the_api_and_wants_its_token(
    svc: tuple[Service, int], dsn: str, tmp_path: Path
) -> None:
    service, _ = svc
    log_path = tmp_path / "console.log"
    cmd = [
        sys.executable, "-m", "logsvc", "console", "--dsn", dsn, "--schema", service.schema,
        "--listen", "127.0.0.1:0", "--console-token", "s3cret-t0ken",
    ]  # fmt: skip
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        found: list[int] = []

        def listening() -> bool:
            assert proc.poll() is None, log_path.read_text()
            m = re.search(r"Console listening on http://127\.0\.0\.1:(\d+)/", log_path.read_text())
            if m:
                found.append(int(m.group(1)))
            return bool(found)

        wait_for(listening, 30, "logsvc console to listen")
        port = found[0]
        status, headers, _ = get(port, "/api/search?q=disk")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert get(port, "/api/search?q=disk", {"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = get(port, "/api/search?q=disk", {"Authorization": "Bearer s3cret-t0ken"})
        assert status == 200 and [r["message"] for r in json.loads(body)["records"]] == ["disk full"]
        # The page's link: the token once in the URL, a cookie from then on.
        status, headers, _ = get(port, "/?token=s3cret-t0ken&q=disk")
        assert status == 303 and headers["location"] == "/?q=disk"
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        assert get(port, "/api/search?q=disk", {"Cookie": cookie})[0] == 200
        assert get(port, "/?token=nope")[0] == 401
        assert get(port, "/healthz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_console_command_refuses_a_public_address_without_a_token(dsn: str) -> None:
    cmd = [sys.executable, "-m", "logsvc", "console", "--dsn", dsn, "--listen", "0.0.0.0:0"]
    env = {**os.environ, "LOGSVC_CONSOLE_TOKEN": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2
    assert "--console-token" in done.stderr


def test_operator_port_off_loopback_without_token_refuses_console_routes() -> None:
    from logsvc.console import build, is_loopback
    from logsvc.ingest.http import Request
    from logsvc.loop import Reactor

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("::")
    reactor = Reactor()
    try:
        # No statement runs: the pool never connects to this address.
        console = build(reactor, "host=127.0.0.1 port=1", "logsvc", host="0.0.0.0")
        req = Request("GET", "/api/search", "", {}, b"", "10.0.0.9:5555")
        resp = console.handle(None, req)  # type: ignore[arg-type]
        assert resp is not None and resp.status == 403 and b"--console-token" in resp.body
        resp = console.handle(None, Request("GET", "/", "", {}, b"", "10.0.0.9:5555"))  # type: ignore[arg-type]
        assert resp is not None and resp.status == 403
        with_token = build(
            reactor, "host=127.0.0.1 port=1", "logsvc", host="0.0.0.0", token="long-enough-token"
        )
        resp = with_token.handle(None, Request("GET", "/api/search", "", {}, b"", "p"))  # type: ignore[arg-type]
        assert resp is not None and resp.status == 401
    finally:
        reactor.close()


def _subscribe(port: int, q: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /api/tail?{urlencode({'q': q})} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
        buf += sock.recv(65536)
    return sock, buf


def test_tail_samples_a_burst_and_says_how_many_it_skipped(svc: tuple[Service, int]) -> None:
    service, port = svc
    sock, buf = _subscribe(port, "burstme")
    try:
        while b"live tail started" not in buf:
            buf += sock.recv(65536)
        lg = logging.getLogger("capp.burst")
        lg.propagate = False

        def burst(first: int) -> None:
            handler = logging.handlers.SocketHandler("127.0.0.1", service.port)
            lg.addHandler(handler)
            try:
                for i in range(first, first + 400):
                    lg.warning("burstme %d", i)
            finally:
                lg.removeHandler(handler)
                handler.close()

        burst(0)
        sock.settimeout(0.2)
        got: list[dict[str, Any]] = []
        skipped = 0
        want = 400

        def all_accounted() -> bool:
            nonlocal buf, skipped
            try:
                buf += sock.recv(1 << 20)
            except TimeoutError:
                pass
            got.clear()
            skipped = 0
            for event in re.split(rb"\r?\n\r?\n", buf):
                m = re.search(rb"event: (\w+)\r?\ndata: (.*)", event)
                if m and m.group(1) == b"records":
                    got.extend(json.loads(m.group(2)))
                elif m and m.group(1) == b"skipped":
                    skipped += json.loads(m.group(2))["count"]
            return len(got) + skipped >= want

        wait_for(all_accounted, 10, "400 records sent or counted as skipped")
        assert skipped > 0 and len(got) + skipped == 400
        nums = [int(r["message"].split()[1]) for r in got]
        assert nums == sorted(nums)  # oldest first, within and across events
        # A second burst while the tail samples (its looks count new rows with one aggregate
        # and show the newest of the partition's last pages): still each record sent or
        # counted once.
        want = 800
        burst(400)
        wait_for(all_accounted, 10, "800 records sent or counted as skipped")
        nums = [int(r["message"].split()[1]) for r in got]
        assert len(got) + skipped == 800 and len(set(nums)) == len(nums)
        assert nums == sorted(nums) and nums[-1] == 799
    finally:
        sock.close()


def test_tail_bounds_its_subscribers_and_checks_the_query(svc: tuple[Service, int]) -> None:
    _, port = svc
    status, body = api(port, "tail", q="(oops")
    assert status == 400 and body["position"] == 0
    status, body = api(port, "tail", q='x message~"(oops"')
    assert status == 400 and body["position"] == 10 and "regular expression" in body["error"]
    socks = []
    try:
        for _ in range(8):
            sock, head = _subscribe(port, "nothing-matches-this")
            socks.append(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
        status, body = api(port, "tail", q="x")
        assert status == 503 and "live tails" in body["error"]
    finally:
        for sock in socks:
            sock.close()

    def room_again() -> bool:
        sock, head = _subscribe(port, "x")
        sock.close()
        return head.startswith(b"HTTP/1.1 200")

    wait_for(room_again, 5, "closed tails to free their places")


def test_an_unreachable_database_is_503_not_a_traceback(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "logsvc", "console", "--dsn", "host=127.0.0.1 port=1 user=x dbname=x",
        "--listen", "127.0.0.1:0", "--pg-timeout", "2s",
    ]  # fmt: skip
    log_path = tmp_path / "console.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "Console listening" in log_path.read_text(), 30, "logsvc console to listen")
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", log_path.read_text())
        assert m is not None
        port = int(m.group(1))
        for route in ("search", "histogram", "facets"):
            status, body = api(port, route, q="x")
            assert status == 503 and "unreachable" in body["error"], body
        assert "Traceback" not in log_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.parametrize("token", ["short", "has space in it", "semi;colon;token", "x" * 300])
def test_tokens_that_cannot_travel_in_a_cookie_are_refused(token: str) -> None:
    from logsvc.console import build
    from logsvc.errors import ConfigError
    from logsvc.loop import Reactor

    reactor = Reactor()
    try:
        with pytest.raises(ConfigError):
            build(reactor, "host=127.0.0.1 port=1", "logsvc", host="127.0.0.1", token=token)
    finally:
        reactor.close()


@pytest.mark.parametrize(
    ("sqlstate", "reason", "status", "words"),
    [
        ("57014", "rejected", 503, "took too long"),  # statement_timeout
        ("42P01", "rejected", 503, "no logsvc records"),
        ("22008", "rejected", 400, "boom"),
        ("XX000", "rejected", 500, "boom"),
        (None, "connection", 503, "unreachable"),
        (None, "timeout", 503, "unreachable"),
    ],
)
def test_database_errors_become_clear_answers(
    sqlstate: str | None, reason: str, status: int, words: str
) -> None:
    from logsvc.console.api import db_error_response
    from logsvc.errors import StoreError
    from logsvc.store.pgproto import PgError

    exc = (
        PgError("boom", reason=reason, sqlstate=sqlstate, primary="boom")
        if sqlstate
        else StoreError("x", reason=reason)
    )
    resp = db_error_response(exc)
    assert resp.status == status
    assert words in json.loads(resp.body)["error"]


def test_the_pool_reconnects_after_postgresql_drops_its_connections(
    svc: tuple[Service, int], dsn: str
) -> None:
    service, port = svc
    assert api(port, "search", q="disk")[0] == 200
    with psycopg.connect(dsn, autocommit=True) as c:
        killed = c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'logsvc-console' AND datname = current_database() "
            "AND pid IN (SELECT pid FROM pg_stat_activity WHERE query LIKE %s)",
            [f"%{service.schema}%"],
        ).fetchone()
    assert killed is not None and killed[0] >= 1

    def answers() -> bool:
        status, body = api(port, "search", q="disk")
        return status == 200 and [r["message"] for r in body["records"]] == ["disk full"]

    wait_for(answers, 10, "the console to answer again")


# -- the histogram's cache, in-process against the same table ------------------------------


class _Conn:
    """What Console.handle needs of a connection: respond()."""

    closed = False

    def __init__(self) -> None:
        self.responses: list[Any] = []

    def respond(self, resp: Any) -> None:
        self.responses.append(resp)


def _histogram_in_process(console: Any, reactor: Any, **params: str) -> dict[str, Any]:
    return _api_in_process(console, reactor, "/api/histogram", **params)


def _api_in_process(console: Any, reactor: Any, path: str, **params: str) -> dict[str, Any]:
    from logsvc.ingest.http import Request
    from tests.helpers import run_until

    conn = _Conn()
    req = Request("GET", path, urlencode(params), {}, b"", "127.0.0.1:1")
    resp = console.handle(conn, req)
    if resp is None:
        run_until(reactor, lambda: bool(conn.responses), 15)
        resp = conn.responses[0]
    assert resp.status == 200, resp.body
    return dict(json.loads(resp.body))


def test_settled_buckets_are_cached_when_costly_and_the_answer_is_the_same(
    svc: tuple[Service, int], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logsvc.console import histogram as hg
    from logsvc.console.api import Console
    from logsvc.console.db import ConsoleDb
    from logsvc.loop import Reactor

    service, _ = svc
    monkeypatch.setattr(hg, "CACHE_AFTER_S", 0.0)  # cache even this small table
    reactor = Reactor()
    q = "-zzz_in_no_message"  # a filter matching every row: counted from records, not from counts
    try:
        cached = Console(ConsoleDb(reactor, dsn), service.schema)
        first = _histogram_in_process(cached, reactor, since="3d", buckets="72", q=q)
        assert first["source"] == "records"
        assert cached.histograms.hits == 0
        second = _histogram_in_process(cached, reactor, since="3d", buckets="72", q=q)
        assert cached.histograms.hits >= 60  # all but the newest hour or two
        fresh = _histogram_in_process(
            Console(ConsoleDb(reactor, dsn), service.schema), reactor, since="3d", q=q
        )
        assert second["buckets"] == first["buckets"]
        assert second["step_s"] == 3600
        assert {b["t"][14:] for b in second["buckets"]} == {"00:00+00:00"}  # on the hour grid
        total = sum(b["total"] for b in second["buckets"])
        assert total == sum(b["total"] for b in fresh["buckets"]) >= 11 + len(HOSTILE)
        old = [b for b in second["buckets"] if b["total"] and b["t"] < second["buckets"][-3]["t"]]
        assert sum(b["total"] for b in old) == 2  # "old one" and "older one", in settled buckets
    finally:
        reactor.close()


def test_an_unfiltered_histogram_reads_the_counts_and_agrees_with_the_rows(
    svc: tuple[Service, int], dsn: str
) -> None:
    # The counts table (store.rollup) is written by the sink with each batch; the same ranges
    # counted from records (a filter that matches every row) must give the same buckets,
    # including ranges whose edges fall inside a counts bucket.
    from logsvc.console.api import Console
    from logsvc.console.db import ConsoleDb
    from logsvc.loop import Reactor

    service, _ = svc
    reactor = Reactor()
    try:
        console = Console(ConsoleDb(reactor, dsn), service.schema)
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute(f"SELECT min(created), max(created) FROM {service.schema}.records").fetchone()
        assert row is not None and row[0] is not None
        lo, hi = row[0], row[1]
        ranges = [
            {"since": "3d", "buckets": "72"},
            {"since": "15m", "buckets": "60"},
            # Edges inside a 5-second bucket, around the oldest and the newest rows.
            {
                "since": (lo - _dt.timedelta(seconds=2.5)).isoformat(),
                "until": (hi + _dt.timedelta(seconds=1.5)).isoformat(),
            },
            {
                "since": (lo + _dt.timedelta(microseconds=1)).isoformat(),
                "until": hi.isoformat(),
                "buckets": "7",
            },
        ]
        for params in ranges:
            fast = _histogram_in_process(console, reactor, **params)
            slow = _histogram_in_process(console, reactor, q="-zzz_in_no_message", **params)
            assert fast["source"] == "counts" and slow["source"] == "records"

            # The counts' grid is whole 5-second buckets: compare the totals per level.
            def per_level(h: dict[str, Any]) -> dict[str, int]:
                out: dict[str, int] = {}
                for b in h["buckets"]:
                    for name, n in b["counts"].items():
                        out[name] = out.get(name, 0) + n
                return out

            assert per_level(fast) == per_level(slow), params
            assert fast["step_s"] % 5 == 0
            if fast["step_s"] == slow["step_s"]:
                assert fast["buckets"] == slow["buckets"], params
        assert sum(per_level(fast).values()) > 0
    finally:
        reactor.close()


def test_rows_stored_before_the_counts_existed_are_counted_from_records(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A schema upgraded to version 4 holds rows stored before its counts table: meta.counts_since
    # says from when the counts are whole, and older rows are counted from records.
    from logsvc.console import api as api_module
    from logsvc.console.api import Console
    from logsvc.console.db import ConsoleDb
    from logsvc.loop import Reactor
    from logsvc.store import schema

    name = f"t_counts_{uuid.uuid4().hex[:8]}"
    reactor = Reactor()
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(schema.create_sql(name))
            c.execute(schema.maintenance_sql(name, _dt.datetime.now(_dt.UTC).date()))
            c.execute(
                f"INSERT INTO {name}.records (seq, created, received, levelno, message) "
                "SELECT g, now() - g * interval '1 second', now(), (g % 5 + 1) * 10, 'm' "
                "FROM generate_series(1, 500) g"
            )
            c.execute(
                f"UPDATE {name}.meta SET value = (now() + interval '1 second')::text "
                "WHERE key = 'counts_since'"
            )
        console = Console(ConsoleDb(reactor, dsn), name)
        # Facets sample the newest rows, found in windows growing back from the end of the range.
        monkeypatch.setattr(api_module, "FACET_SAMPLE", 50)
        facets = _api_in_process(console, reactor, "/api/facets", since="15m")
        assert facets["sample"] == 50 and facets["sampled"]
        levels = {
            v["value"]: v["count"] for f in facets["fields"] if f["name"] == "level" for v in f["values"]
        }
        assert levels == {str((g % 5 + 1) * 10): 10 for g in range(1, 6)}  # seqs 1..50, the newest
        whole = _api_in_process(console, reactor, "/api/facets", since="15m", q="level>=50")
        assert whole["sample"] == 50  # 100 match; the newest 50 of them
        fast = _histogram_in_process(console, reactor, since="15m")
        slow = _histogram_in_process(console, reactor, since="15m", q="-zzz_in_no_message")
        assert fast["source"] == "counts" and slow["source"] == "records"
        totals = [sum(b["total"] for b in h["buckets"]) for h in (fast, slow)]
        assert totals == [500, 500]
        if fast["step_s"] == slow["step_s"]:
            assert fast["buckets"] == slow["buckets"]
    finally:
        reactor.close()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
