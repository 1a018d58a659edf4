"""The journal's disk fills up under load: reads pause, nothing accepted is lost, writing resumes.

The journal lives on a small tmpfs the test mounts (root only; skipped otherwise). While stock
clients send, another "process" (the test) fills the file system to the last byte. The
service must say so, stop reading from clients (TCP pushes back on them), keep what it has
read in memory, and go on by itself once the test frees the space. No segment may be left
corrupt: a fresh ``Journal.open`` over the directory finds no damaged range.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logsvc.journal import Journal
from tests.faults.conftest import ReliabilityRow
from tests.faults.helpers import ClientPlan, TaggedClients, tally
from tests.helpers import Service, counts, wait_for

TMPFS_BYTES = 8 << 20
PROCS = 2
PER_CLIENT = 15_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "data" / "journal"
    mnt.mkdir(parents=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    chunk = b"\0" * (64 << 10)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(TMPFS_BYTES // len(chunk) + 16):  # bounded: more than the disk holds
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                # Byte-sized writes for the last partial chunk, so nothing at all is left.
                for _ in range(len(chunk)):
                    try:
                        os.write(fd, b"\0")
                    except OSError:
                        break
                return filler
    finally:
        os.close(fd)
    raise AssertionError("the tmpfs never filled up")


def test_a_full_journal_disk_pauses_reads_loses_nothing_and_resumes(
    small_disk: Path, tmp_path: Path, dsn: str, schema: str, reliability_row: ReliabilityRow
) -> None:
    svc = Service(
        tmp_path / "data",
        dsn,
        schema,
        "--journal-segment-bytes",
        "1MiB",
        "--journal-max-bytes",
        "4MiB",
    )
    svc.start()
    try:
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the database connection")
        plan = ClientPlan(run="disk", max_count=PER_CLIENT, pause=0.0002)
        clients = TaggedClients(svc.port, PROCS, plan).start()
        try:
            wait_for(lambda: counts(dsn, schema)[0] >= 2000, 60, "records before the disk fills")
            filler = fill(small_disk)
            full_at = time.monotonic()
            wait_for(
                lambda: "Cannot write the journal (the disk is full)" in svc.log(), 60, "the disk-full report"
            )
            # Keep the disk full a while under load, so the pause is real (clients blocked).
            wait_for(lambda: time.monotonic() - full_at > 2.0, 5, "two seconds of a full disk")
            filler.unlink()
            wait_for(lambda: "Journal writes work again" in svc.log(), 30, "writes to resume")
            clients.join(timeout=180)
        finally:
            clients.kill()
        sent = clients.total_sent()
        wait_for(lambda: counts(dsn, schema)[0] >= sent - sum(clients.dropped), 120, "every record")
        assert svc.stop() == 0
    finally:
        svc.kill()
    t = tally(dsn, schema, "disk", clients.sent)
    m = re.search(r"Journal writes work again after ([0-9.]+) s", svc.log())
    row = reliability_row(
        fault="journal disk full",
        done=f"the journal's {TMPFS_BYTES >> 20} MiB tmpfs filled to the last byte under load "
        f"({PROCS} stock clients), freed 2 s later",
        tally=t,
        peak_rss_mb=svc.peak_rss_mb,
        figures={
            "writes_blocked_s": float(m.group(1)) if m else -1,
            "dropped_by_stock_clients": sum(clients.dropped),
        },
        not_accepted=sum(clients.dropped),
    )
    # What the stock clients dropped themselves (a send blocked past their 1 s socket
    # timeout) is theirs; everything the service read is stored, once.
    assert t.duplicated == 0 and t.unexpected == 0 and t.seq_duplicates == 0
    assert t.lost == sum(clients.dropped), t
    assert row["lost_by_logsvc"] == 0 and row["read_exact"]
    assert "Pausing reads from all clients" in svc.log()
    journal = Journal(small_disk)
    try:
        report = journal.open()
    finally:
        journal.close()
    assert not report.corrupt
    assert report.torn_tail_bytes_truncated == 0
