"""bench/seed_design.py, the benchmark's baseline, against the real PostgreSQL.

If the baseline lost or duplicated records, or held a partial buffer forever, the comparison
in bench/compare.py would be measuring a broken service; these tests keep it honest.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.helpers import join_clients, start_clients, wait_for

SEED_DESIGN = Path(__file__).resolve().parent.parent / "bench" / "seed_design.py"
pytestmark = pytest.mark.slow


@dataclass
class Baseline:
    proc: subprocess.Popen[bytes]
    port: int
    log_file: Path
    stderr: Path


@pytest.fixture
def baseline(dsn: str, schema: str, tmp_path: Path) -> Iterator[Baseline]:
    stderr = tmp_path / "seed_design.stderr"
    log_file = tmp_path / "seed_design.log"
    cmd = [
        sys.executable, str(SEED_DESIGN),
        "--listen", "127.0.0.1:0", "--dsn", dsn, "--schema", schema, "--log-file", str(log_file),
    ]  # fmt: skip
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, stdin=subprocess.DEVNULL)
    found: list[int] = []

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"seed_design exited with {proc.returncode}:\n{stderr.read_text()}")
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+)", stderr.read_text())
        if m:
            found.append(int(m.group(1)))
        return bool(found)

    try:
        wait_for(listening, 15, "seed_design to listen")
        yield Baseline(proc, found[0], log_file, stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _rows(dsn: str, schema: str, run: str) -> list[tuple[int, str, dict[str, object]]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        if c.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
            return []
        cur = c.execute(
            f"SELECT process, message, extra FROM {schema}.records WHERE extra @> %s::jsonb",
            [json.dumps({"run": run})],
        )
        return [(int(p), str(m), dict(e)) for p, m, e in cur.fetchall()]


def test_partial_buffer_is_flushed_by_the_timer(baseline: Baseline, dsn: str, schema: str) -> None:
    # 600 records, fewer than one 1,000-row block: only the SIGALRM flush can store them while
    # the service keeps running.
    procs, count = 4, 150
    join_clients(start_clients(baseline.port, procs, count, run="timer"), timeout=15)
    wait_for(lambda: len(_rows(dsn, schema, "timer")) >= procs * count, 5, "the timer flush")
    assert baseline.proc.poll() is None

    rows = _rows(dsn, schema, "timer")
    assert len(rows) == procs * count
    # Every record once: the message holds the client's pid and its record number.
    numbers: dict[int, list[int]] = {}
    for pid, msg, _ in rows:
        m = re.fullmatch(r"\[(\d{6})\] log message (\d{8})", msg)
        assert m is not None and int(m.group(1)) == pid, msg
        numbers.setdefault(pid, []).append(int(m.group(2)))
    assert len(numbers) == procs
    assert all(sorted(ns) == list(range(count)) for ns in numbers.values())
    assert {json.dumps(extra, sort_keys=True) for _, _, extra in rows} == {
        json.dumps({"run": "timer", "trace_id": i}, sort_keys=True) for i in range(procs)
    }


def test_blocks_then_sigterm_flushes_and_exits_0(baseline: Baseline, dsn: str, schema: str) -> None:
    # 2,500 records: two full blocks and a partial one, stored exactly once; SIGTERM exits 0.
    procs, count = 5, 500
    join_clients(start_clients(baseline.port, procs, count, run="blocks"), timeout=15)
    wait_for(lambda: len(_rows(dsn, schema, "blocks")) >= procs * count, 5, "every record stored")
    baseline.proc.send_signal(signal.SIGTERM)
    assert baseline.proc.wait(10) == 0

    rows = _rows(dsn, schema, "blocks")
    assert len(rows) == procs * count
    assert len({(pid, msg) for pid, msg, _ in rows}) == procs * count
    per_trace: dict[object, int] = {}
    for _, _, extra in rows:
        per_trace[extra["trace_id"]] = per_trace.get(extra["trace_id"], 0) + 1
    assert per_trace == dict.fromkeys(range(procs), count)
    # The seed's file copy: one formatted line per record.
    lines = baseline.log_file.read_text().splitlines()
    assert len(lines) == procs * count
    assert all(
        re.fullmatch(r"D \d{4}\.\d\d\.\d\d [\d:]{8} bench:\s*\d+ \[\d{6}\] log message \d{8}", x)
        for x in lines
    )
    assert "stored=2500" in baseline.stderr.read_text()
