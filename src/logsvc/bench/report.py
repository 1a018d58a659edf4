"""A bench run's result and how it is shown: a rich table, or one JSON object with ``--json``.

``Result`` holds what every mode measures (sent, stored, lost, duplicated, time, the
service's CPU and peak memory) plus the mode's own figures in ``extra``. Output goes to
stdout, progress bars to stderr; with ``--json`` nothing but the JSON object is printed.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from logsvc.bench.counting import Counter
from logsvc.bench.service import ProcessWatch


@dataclass(slots=True)
class Result:
    mode: str
    run_id: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    records_per_s: float = 0.0
    service_pid: int | None = None
    service_cpu_s: float = float("nan")
    cpu_us_per_record: float = float("nan")
    service_peak_rss_mb: float = 0.0
    complete: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def finish(self, counter: Counter, watch: ProcessWatch, start: float, done: float | None) -> None:
        """Count the run and fill in the figures, for a clock started at ``start``.

        Args:
            counter: the run's counter; its totals give stored, lost and duplicated.
            watch: the service's process, for CPU seconds and peak memory.
            start: when the senders were let go (``time.monotonic()``).
            done: when the run was seen complete, or None if it timed out (then: now).
        """
        self.complete = done is not None
        self.seconds = (done if done is not None else time.monotonic()) - start
        rows, distinct = counter.totals()
        self.stored = distinct
        self.duplicated = rows - distinct
        self.lost = self.sent - distinct
        self.records_per_s = self.stored / self.seconds if self.seconds else 0.0
        self.service_cpu_s = watch.cpu_seconds() - watch.cpu_start
        if rows:
            self.cpu_us_per_record = self.service_cpu_s / rows * 1e6
        self.service_peak_rss_mb = round(watch.peak_rss_kb / 1024, 1)


def report(result: Result, as_json: bool) -> int:
    """Print the result; return the exit status: 0 only if complete, nothing lost or duplicated."""
    if as_json:
        # JSON has no NaN: figures that could not be read (no service pid) are null.
        fields = {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(result).items()}
        print(json.dumps(fields, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"logsvc bench {result.mode} (run {result.run_id})", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        rows: list[tuple[str, str]] = [
            ("sent", f"{result.sent:,}"),
            ("stored", f"{result.stored:,}"),
            ("lost", f"{result.lost:,}"),
            ("duplicated", f"{result.duplicated:,}"),
            ("seconds", f"{result.seconds:.2f}"),
            ("records/s (stored)", f"{result.records_per_s:,.0f}"),
            ("service CPU s", f"{result.service_cpu_s:.2f}"),
            ("service CPU µs/record", f"{result.cpu_us_per_record:.2f}"),
            ("service peak RSS MB", f"{result.service_peak_rss_mb:.1f}"),
        ]
        rows += [(k, _cell(v)) for k, v in result.extra.items()]
        for k, v in rows:
            table.add_row(k, v)
        Console().print(table)
        if not result.complete:
            Console(stderr=True).print("[red]Timed out before every sender's last record was stored.[/red]")
    return 0 if result.complete and result.lost == 0 and result.duplicated == 0 else 1


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def progress_bar(total: int, label: str, quiet: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A rich progress bar on stderr (nothing with --json): (update(n), stop())."""
    if quiet:
        return (lambda n: None), (lambda: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = prog.add_task(label, total=total)
    prog.start()
    return (lambda n: prog.update(task, completed=n)), prog.stop
