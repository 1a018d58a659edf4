"""Every sender of the README's "Sending logs" section, against a live ``logsvc serve``.

Real senders where they can run here: the stdlib handlers (SocketHandler, DatagramHandler,
SysLogHandler over UDP and TCP, HTTPHandler with GET and POST), util-linux ``logger`` in its
RFC 5424 and RFC 3164 modes over UDP and TCP (octet-counted and newline framed), ``curl``
posting NDJSON. Vector's and Fluent Bit's outputs are replayed byte for byte from their
documented formats (neither is packaged for this machine). Every record must arrive once,
in the same table, with its fields mapped.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Service, wait_for

pytestmark = pytest.mark.slow

LISTENERS = {
    "json": "JSON lines",
    "syslog": "syslog over TCP",
    "http": "HTTP: POST /ingest",
    "metrics": "HTTP: /metrics, /healthz, /readyz)",
    "udp": "DatagramHandler pickle datagrams",
    "syslog_udp": "syslog datagrams",
}


class Senders:
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        log = svc.log()
        self.port: dict[str, int] = {"pickle": svc.port}
        for kind, text in LISTENERS.items():
            m = re.search(r"Listening on (?:udp )?127\.0\.0\.1:(\d+) \(" + re.escape(text), log)
            assert m, f"no {kind} listener in:\n{log}"
            self.port[kind] = int(m.group(1))

    # The columns these tests read; the query itself is Service.rows.
    COLUMNS = "seq, created, levelno, levelname, logger, message, process, peer, extra"

    def rows(self, where: str = "true", params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.svc.rows(self.COLUMNS, where, params)

    def wait_rows(self, n: int, where: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.svc.wait_rows(n, self.COLUMNS, where, params)


@pytest.fixture(scope="module")
def senders(tmp_path_factory: pytest.TempPathFactory, dsn: str) -> Iterator[Senders]:
    import uuid

    schema = "t_" + uuid.uuid4().hex[:16]
    svc = Service(
        tmp_path_factory.mktemp("senders"),
        dsn,
        schema,
        *("--listen-json", "127.0.0.1:0", "--listen-syslog", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"),
        *("--listen-udp", "127.0.0.1:0", "--listen-syslog-udp", "127.0.0.1:0"),
    )
    # Service passes --metrics 127.0.0.1:0; it must come after the others in the log too.
    svc.start()
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the database connection")
        yield Senders(svc)
    finally:
        svc.kill()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def emit(handler: logging.Handler, name: str, n: int, level: int = logging.WARNING) -> None:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        for i in range(n):
            logger.log(level, "%s record %d", name, i, extra={"tag": name})
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_stock_datagram_handler(senders: Senders) -> None:
    emit(logging.handlers.DatagramHandler("127.0.0.1", senders.port["udp"]), "dgram", 200)
    rows = senders.wait_rows(200, "logger = 'dgram'")
    assert [r["message"] for r in rows] == [f"dgram record {i}" for i in range(200)]
    assert all(r["extra"] == {"tag": "dgram"} and r["levelname"] == "WARNING" for r in rows)


def test_stock_syslog_handler_udp_and_tcp(senders: Senders) -> None:
    udp = logging.handlers.SysLogHandler(("127.0.0.1", senders.port["syslog_udp"]))
    udp.ident = "sysudp: "
    emit(udp, "sysudp", 100, logging.ERROR)
    tcp = logging.handlers.SysLogHandler(("127.0.0.1", senders.port["syslog"]), socktype=socket.SOCK_STREAM)
    tcp.ident = "systcp: "
    emit(tcp, "systcp", 100, logging.INFO)
    udp_rows = senders.wait_rows(100, "logger = 'sysudp'")
    tcp_rows = senders.wait_rows(100, "logger = 'systcp'")
    assert {(r["levelname"], r["levelno"]) for r in udp_rows} == {("ERROR", 40)}
    assert {(r["levelname"], r["levelno"]) for r in tcp_rows} == {("INFO", 20)}
    assert udp_rows[7]["message"] == "sysudp record 7"
    assert tcp_rows[99]["message"] == "systcp record 99"


def test_stock_syslog_handler_tcp_keeps_a_traceback_whole(senders: Senders) -> None:
    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", senders.port["syslog"]), socktype=socket.SOCK_STREAM
    )
    handler.ident = "systb: "
    logger = logging.getLogger("systb")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.error("before")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
        logger.error("after")
    finally:
        logger.removeHandler(handler)
        handler.close()
    rows = senders.wait_rows(3, "logger = 'systb'")
    assert rows[0]["message"] == "before" and rows[2]["message"] == "after"
    assert rows[1]["message"].startswith("it failed\nTraceback (most recent call last):")
    assert rows[1]["message"].endswith("ValueError: boom")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_stock_http_handler(senders: Senders, method: str) -> None:
    name = f"http{method.lower()}"
    emit(
        logging.handlers.HTTPHandler(f"127.0.0.1:{senders.port['http']}", "/ingest", method=method), name, 20
    )
    rows = senders.wait_rows(20, "logger = %s", [name])
    assert [r["message"] for r in rows] == [f"{name} record {i}" for i in range(20)]
    assert rows[0]["levelno"] == 30 and rows[0]["process"] is not None


@pytest.mark.parametrize(
    ("flags", "tag"),
    [
        (["--rfc5424", "-d"], "l5424udp"),
        (["--rfc3164", "-d"], "l3164udp"),
        (["--rfc5424", "-T", "--octet-count"], "l5424tcpoc"),
        (["--rfc5424", "-T"], "l5424tcpnl"),
        (["--rfc3164", "-T"], "l3164tcp"),
    ],
)
def test_util_linux_logger(senders: Senders, flags: list[str], tag: str) -> None:
    exe = shutil.which("logger")
    if exe is None:
        pytest.skip("util-linux logger is not installed (apt-get install bsdutils)")
    port = senders.port["syslog_udp" if "-d" in flags else "syslog"]
    for i in range(5):
        subprocess.run(
            [
                exe,
                *flags,
                "-n",
                "127.0.0.1",
                "-P",
                str(port),
                "-t",
                tag,
                "-p",
                "local3.err",
                "-i",
                f"logger says {i}",
            ],
            check=True,
            timeout=30,
        )
    rows = senders.wait_rows(5, "logger = %s", [tag])
    assert [r["message"] for r in rows] == [f"logger says {i}" for i in range(5)]
    assert all(r["levelno"] == 40 and r["extra"]["syslog_facility"] == "local3" for r in rows)
    assert all(r["process"] and r["extra"].get("hostname") for r in rows)


def test_rsyslog_omfwd_octet_counted(senders: Senders, tmp_path: Path) -> None:
    exe = shutil.which("rsyslogd")
    if exe is None:
        pytest.skip("rsyslogd is not installed (apt-get install rsyslog; .ci/run does)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        in_port = probe.getsockname()[1]
    conf = tmp_path / "rsyslog.conf"
    # The README's line: forward everything rsyslog receives to logsvc, RFC 5424, octet-counted.
    conf.write_text(
        f'global(workDirectory="{tmp_path}")\n'
        'module(load="imudp")\n'
        f'input(type="imudp" address="127.0.0.1" port="{in_port}")\n'
        f'action(type="omfwd" target="127.0.0.1" port="{senders.port["syslog"]}" protocol="tcp" '
        'TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")\n'
    )
    proc = subprocess.Popen(
        [exe, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        logger = shutil.which("logger")
        assert logger is not None
        send = [
            logger,
            "-d",
            "-n",
            "127.0.0.1",
            "-P",
            str(in_port),
            "-t",
            "viarsyslog",
            "-p",
            "local1.warning",
        ]

        def forwarded() -> bool:
            # rsyslog may still be starting: send until one arrives (bounded by wait_for).
            subprocess.run([*send, "probe"], check=True, timeout=10)
            return bool(senders.rows("logger = 'viarsyslog' AND message = 'probe'"))

        wait_for(forwarded, 30, "rsyslog to forward a message", interval=0.5)
        for i in range(20):
            subprocess.run([*send, f"forwarded {i}"], check=True, timeout=10)
        rows = senders.wait_rows(20, "logger = 'viarsyslog' AND message LIKE 'forwarded %%'")
    finally:
        proc.terminate()  # only the rsyslogd this test started
        proc.wait(10)
    assert sorted(r["message"] for r in rows) == sorted(f"forwarded {i}" for i in range(20))
    assert all(r["levelno"] == 30 and r["extra"]["syslog_facility"] == "local1" for r in rows)


def test_curl_ndjson(senders: Senders, tmp_path: Path) -> None:
    exe = shutil.which("curl")
    if exe is None:
        pytest.skip("curl is not installed")
    body = tmp_path / "body.ndjson"
    lines = [
        {
            "time": "2026-11-28T06:00:00.250Z",
            "level": "error",
            "logger": "curl",
            "message": f"c {i}",
            "user": 7,
        }
        for i in range(50)
    ]
    body.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    out = subprocess.run(
        [
            exe,
            "-sS",
            "--fail-with-body",
            "-H",
            "Content-Type: application/x-ndjson",
            "--data-binary",
            f"@{body}",
            f"http://127.0.0.1:{senders.port['http']}/ingest",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    # The answer comes once the records are in the journal: they are already counted.
    assert json.loads(out.stdout) == {"accepted": 50, "rejected": {"not_json": 1}}
    rows = senders.wait_rows(50, "logger = 'curl'")
    assert rows[3]["message"] == "c 3" and rows[3]["levelno"] == 40 and rows[3]["extra"] == {"user": 7}
    assert rows[0]["created"].isoformat() == "2026-11-28T06:00:00.250000+00:00"


def test_vector_http_sink_json_array_and_fluent_bit_json_lines(senders: Senders) -> None:
    # Vector's http sink with `encoding.codec = "json"` and `framing.method = "newline_delimited"`
    # sends NDJSON of its log events (message, timestamp, host, source_type, ...); with the
    # default framing it sends a JSON array. Fluent Bit's tcp output with `format json_lines`
    # sends one object per line with `date` (epoch seconds) and `log`.
    vector_events = [
        {"message": f"vector {i}", "timestamp": "2026-11-28T06:01:02.123456789Z", "host": "web-1",
         "source_type": "file", "file": "/var/log/app.log", "level": "warn"}
        for i in range(10)
    ]  # fmt: skip
    req = urllib.request.Request(
        f"http://127.0.0.1:{senders.port['http']}/ingest",
        data=json.dumps(vector_events).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read()) == {"accepted": 10, "rejected": {}}
    with socket.create_connection(("127.0.0.1", senders.port["json"])) as s:
        for i in range(10):
            s.sendall(
                json.dumps({"date": 1764309600.5 + i, "log": f"fluent {i}", "tag": "app.fb"}).encode() + b"\n"
            )
    v = senders.wait_rows(10, "message LIKE 'vector %%'")
    assert v[0]["levelname"] == "WARNING" and v[0]["extra"]["hostname"] == "web-1"
    assert v[0]["created"].isoformat() == "2026-11-28T06:01:02.123456+00:00"
    f = senders.wait_rows(10, "message LIKE 'fluent %%'")
    assert f[2]["created"].timestamp() == 1764309602.5 and f[2]["extra"] == {"tag": "app.fb"}


def test_metrics_health_and_readiness(senders: Senders) -> None:
    base = f"http://127.0.0.1:{senders.port['metrics']}"
    with urllib.request.urlopen(base + "/healthz", timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"
    with urllib.request.urlopen(base + "/readyz", timeout=10) as resp:
        ready = json.loads(resp.read())
    assert ready["status"] == "ready" and ready["postgresql"] == "connected"
    emit(logging.handlers.SocketHandler("127.0.0.1", senders.port["pickle"]), "metered", 30)
    senders.wait_rows(30, "logger = 'metered'")

    def received() -> float:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for fam in text_string_to_metric_families(text):
            if fam.name == "logsvc_records_journaled":
                return sum(s.value for s in fam.samples if s.labels.get("listener") == "pickle")
        return 0.0

    wait_for(lambda: received() >= 30, 10, "the pickle counter to count the records")
    out = subprocess.run(
        [sys.executable, "-m", "logsvc", "stats", "--url", f"127.0.0.1:{senders.port['metrics']}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "records_journaled_total" in out.stdout and "listener=pickle" in out.stdout


def test_http_refuses_what_it_cannot_take(senders: Senders) -> None:
    base = f"http://127.0.0.1:{senders.port['http']}"

    def status(path: str, data: bytes | None = None, method: str | None = None) -> int:
        req = urllib.request.Request(base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert status("/nowhere") == 404
    assert status("/ingest", method="DELETE") == 405
    assert status("/ingest", b"[1, 2", method="POST") in (200, 400)
    # Over the body cap (16 MiB by default): refused from the Content-Length, before the body.
    with socket.create_connection(("127.0.0.1", senders.port["http"])) as s:
        s.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        s.settimeout(10)
        assert s.recv(100).startswith(b"HTTP/1.1 413")
