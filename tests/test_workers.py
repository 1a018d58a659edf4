"""``serve --workers N`` (issue 13): shared ports, one /metrics, restarts, an ordered stop.

Real processes and a real PostgreSQL: the supervisor forks real workers, clients connect to
the shared port and the kernel spreads them (SO_REUSEPORT).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import signal
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Service, wait_for

pytestmark = pytest.mark.slow


def start(tmp_path: Path, dsn: str, schema: str, *args: str) -> tuple[Service, int]:
    """A ``serve --workers`` and its supervisor's operator port, once every worker listens."""
    s = Service(tmp_path / "data", dsn, schema, *args).start()
    wait_for(lambda: "of all workers" in s.log(), 30, "the supervisor's operator port")
    m = re.search(
        r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: /metrics, /healthz, /readyz of all workers", s.log()
    )
    assert m
    return s, int(m.group(1))


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return str(r.read().decode())


def sample(page: str, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(page):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def by_journal(dsn: str, schema: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        # The workers listen before their sinks have made the schema: none yet is no rows yet.
        if c.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
            return {}
        rows = c.execute(f"SELECT journal::text, count(*) FROM {schema}.records GROUP BY 1").fetchall()
    return {str(j): int(n) for j, n in rows}


def send(port: int, connections: int, per: int, tag: str) -> None:
    for i in range(connections):
        h = logging.handlers.SocketHandler("127.0.0.1", port)
        for n in range(per):
            h.handle(logging.makeLogRecord({"msg": f"{tag} {i} {n}", "name": "workers", "tag": tag}))
        h.close()


def test_workers_share_the_port_each_with_its_journal_and_one_metrics_page(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    s, ops = start(tmp_path, dsn, schema, "--workers", "2", "--listen-udp", "127.0.0.1:0")
    try:
        send(s.port, 20, 100, "tcp")
        wait_for(lambda: sum(by_journal(dsn, schema).values()) >= 2000, 60, "2,000 rows")
        journals = by_journal(dsn, schema)
        # 20 connections spread by the kernel: both workers took some (all on one: 2**-19).
        assert sum(journals.values()) == 2000 and len(journals) == 2, journals
        assert (tmp_path / "data" / "journal").is_dir() and (
            tmp_path / "data" / "workers" / "1" / "journal"
        ).is_dir()
        # UDP too: each worker has its own socket on the port.
        udp = int(re.findall(r"udp 127\.0\.0\.1:(\d+)", s.log())[0])
        h = logging.handlers.DatagramHandler("127.0.0.1", udp)
        for n in range(200):
            h.handle(logging.makeLogRecord({"msg": f"udp {n}", "name": "workers", "tag": "udp"}))
        h.close()
        s.wait_rows(200, "message", "extra->>'tag' = 'udp'")
        page = scrape(ops)
        names = [
            (x.name, tuple(sorted(x.labels.items())))
            for m in text_string_to_metric_families(page)
            for x in m.samples
        ]
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
        assert sample(page, "logsvc_records_read_total") == 2200
        assert sample(page, "logsvc_records_stored_total") == 2200
        assert sample(page, "logsvc_workers") == 2
        assert '"ready":true' in scrape(ops, "/readyz")
        # The web console is the supervisor's: one page over what every worker stored.
        assert "<title>" in scrape(ops, "/")
        found = json.loads(
            scrape(ops, "/api/search?" + urlencode({"q": "tag:udp", "since": "1h", "limit": "1000"}))
        )
        assert len(found["records"]) == 200
        hist = json.loads(scrape(ops, "/api/histogram?since=1h"))
        assert sum(b["total"] for b in hist["buckets"]) == 2200
        assert s.stop() == 0
        log = s.log()
        # Stopped one after the other, each drained.
        assert log.index("Worker 0 (pid") < log.index("Worker 1 (pid") < log.index("All workers stopped")
    finally:
        s.kill()


def test_a_worker_that_dies_is_restarted_and_its_journal_shipped(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    s, ops = start(tmp_path, dsn, schema, "--workers", "2")
    try:
        pids = [int(p) for p in re.findall(r"Supervising 2 workers \(pids (\d+), (\d+)\)", s.log())[0]]
        wait_for(lambda: "[worker 1] logsvc.store: Connected" in s.log(), 30, "worker 1 connected")
        os.kill(pids[1], signal.SIGKILL)
        wait_for(lambda: "Worker 1 (pid" in s.log() and "restarting it" in s.log(), 20, "the restart notice")
        wait_for(lambda: s.log().count("[worker 1] logsvc.store: Connected") >= 2, 30, "worker 1 back")
        wait_for(lambda: sample(scrape(ops), "logsvc_workers") == 2, 20, "two workers again")
        assert sample(scrape(ops), "logsvc_worker_restarts_total") == 1
        send(s.port, 10, 100, "after")
        wait_for(lambda: sum(by_journal(dsn, schema).values()) >= 1000, 60, "1,000 rows")
        assert sum(by_journal(dsn, schema).values()) == 1000
        assert s.stop() == 0
    finally:
        s.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_supervisor_killed_with_sigkill_leaves_no_worker_behind(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    s, _ = start(tmp_path, dsn, schema, "--workers", "2")
    pids = [int(p) for p in re.findall(r"Supervising 2 workers \(pids (\d+), (\d+)\)", s.log())[0]]
    try:
        send(s.port, 4, 100, "before")
        wait_for(lambda: sum(by_journal(dsn, schema).values()) >= 400, 60, "400 rows")
        s.kill()  # SIGKILL: the supervisor cannot stop them; each worker is told by the kernel
        wait_for(lambda: not any(_alive(p) for p in pids), 30, "the workers to stop")
        assert sum(by_journal(dsn, schema).values()) == 400
        assert s.log().count("SIGTERM: stopping") == 2  # each stopped as on any SIGTERM
    finally:
        s.kill()  # first: a living supervisor would restart workers killed below
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
