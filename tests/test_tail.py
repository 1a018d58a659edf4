"""``logsvc tail -f`` against a running service: woken by NOTIFY, kept going by its poll."""

from __future__ import annotations

import datetime as _dt
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from logsvc import query as q
from logsvc.store import schema as sch
from tests.helpers import Service, join_clients, start_clients, wait_for

pytestmark = pytest.mark.slow


class Tail:
    """``python -m logsvc tail -f`` with its output in a file we poll; stopped by SIGINT."""

    def __init__(self, out: Path, dsn: str, schema: str, *args: str) -> None:
        self.out = out
        cmd = [sys.executable, "-m", "logsvc", "tail", "-f", "--dsn", dsn, "--schema", schema, *args]
        with open(out, "wb") as f, open(out.with_suffix(".err"), "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=err, stdin=subprocess.DEVNULL)

    def following(self) -> bool:
        """True once tail has listened, printed its first look and started following."""
        return "following new records" in self.out.with_suffix(".err").read_text()

    def records(self) -> list[dict[str, Any]]:
        text = self.out.read_text()
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("tail did not exit on SIGINT") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def service(tmp_path: Path, dsn: str, schema: str) -> Iterator[Service]:
    svc = Service(tmp_path / "data", dsn, schema).start()

    def schema_ready() -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            today = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d")
            row = conn.execute("SELECT to_regclass(%s)", [f"{schema}.records_{today}"]).fetchone()
        return row is not None and row[0] is not None

    wait_for(schema_ready, 30, "the service to create its schema and partitions")
    yield svc
    svc.kill()


def _insert(dsn: str, schema: str, seqs: range, logger: str = "seed") -> None:
    now = _dt.datetime.now(_dt.UTC)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {schema}.records (seq, created, received, levelno, logger, message) "
            "VALUES (%s, %s, %s, 20, %s, 'direct')",
            [(n, now, now, logger) for n in seqs],
        )


def test_tail_f_prints_records_committed_after_it_started_within_a_second(
    service: Service, tmp_path: Path, dsn: str, schema: str
) -> None:
    _insert(dsn, schema, range(1, 4))
    # A poll interval far longer than the wait below: only NOTIFY can deliver in time.
    tail = Tail(tmp_path / "tail.out", dsn, schema, "-n", "2", "--format", "json", "--poll-interval", "30")
    try:
        wait_for(lambda: len(tail.records()) == 2, 30, "the last 2 records")
        assert [r["seq"] for r in tail.records()] == [2, 3]
        wait_for(tail.following, 30, "tail to start following")
        clients = start_clients(service.port, procs=2, count=25, run="live")
        join_clients(clients, 30)

        def live() -> list[dict[str, Any]]:
            return [r for r in tail.records() if r["extra"] and r["extra"].get("run") == "live"]

        wait_for(lambda: len(live()) == 50, 10, "50 live records in tail's output")
        time.sleep(0.5)  # any duplicate would show up by now
        got = live()
        assert len(got) == 50
        assert len({r["message"] for r in got}) == 50  # each printed once
        assert sorted(r["extra"]["trace_id"] for r in got) == [0] * 25 + [1] * 25
        assert [r["stored"] for r in got] == sorted(r["stored"] for r in got)
        assert set(got[0]) == set(q.FIELDS)
        assert tail.stop() == 0
    finally:
        tail.kill()


def test_tail_f_latency_from_commit_to_output(
    service: Service, tmp_path: Path, dsn: str, schema: str
) -> None:
    tail = Tail(tmp_path / "tail.out", dsn, schema, "-n", "0", "--format", "json", "--poll-interval", "30")
    try:
        wait_for(tail.following, 30, "tail to start following")
        delays = []
        for i in range(3):
            clients = start_clients(service.port, procs=1, count=1, run=f"r{i}")
            join_clients(clients, 30)
            seen = lambda i=i: any(r["extra"].get("run") == f"r{i}" for r in tail.records() if r["extra"])  # noqa: E731
            wait_for(seen, 10, f"record r{i}")
            printed = time.time()
            rec = next(r for r in tail.records() if r["extra"] and r["extra"].get("run") == f"r{i}")
            delays.append(printed - _dt.datetime.fromisoformat(rec["stored"]).timestamp())
        # Stored is stamped just before commit; poll of the file adds up to 50 ms.
        assert max(delays) < 1.5, delays
        assert tail.stop() == 0
    finally:
        tail.kill()


def test_tail_f_falls_back_to_polling_without_notifications(tmp_path: Path, dsn: str, schema: str) -> None:
    # No service: rows inserted directly send no NOTIFY, as with an older logsvc.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sch.create_sql(schema))
        conn.execute(sch.partitions_sql(schema, _dt.datetime.now(_dt.UTC).date()))
    tail = Tail(tmp_path / "tail.out", dsn, schema, "--format", "json", "--poll-interval", "0.3")
    try:
        wait_for(tail.following, 30, "tail to start following")
        _insert(dsn, schema, range(1, 6), logger="polled")
        wait_for(lambda: len(tail.records()) == 5, 10, "5 polled records")
        time.sleep(1.0)  # more looks must not print them again
        assert [r["seq"] for r in tail.records()] == [1, 2, 3, 4, 5]
        assert tail.stop() == 0
    finally:
        tail.kill()
