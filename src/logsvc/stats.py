"""``logsvc stats``: fetch ``/metrics`` of a running service and print it as a table.

A client of the operator port, parsed with prometheus-client's own parser; nothing here
runs inside ``serve``.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import math
import urllib.error
import urllib.request


def add_stats_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stats",
        help="print the figures of a running service (from its /metrics)",
        description="Fetch /metrics from a running logsvc serve and print it as a table: records "
        "received, stored and rejected, connections, batches, journal and shipping lag, the loop.",
    )
    p.add_argument(
        "--url",
        default="http://127.0.0.1:5080/metrics",
        help="the service's metrics address (serve --metrics / --listen-http; default: %(default)s)",
    )
    p.add_argument("--raw", action="store_true", help="print the Prometheus text as it came")
    p.set_defaults(func=stats_main)


def stats_main(args: argparse.Namespace) -> int:
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    url = args.url if "://" in args.url else f"http://{args.url}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"logsvc stats: cannot read {url}: {reason} (is logsvc serve running with --metrics?)",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.raw:
        sys.stdout.write(text)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"logsvc at {url}", show_lines=False)
    table.add_column("figure")
    table.add_column("labels")
    table.add_column("value", justify="right")
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("logsvc_") and family.name not in (
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds",
        ):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created") or (
                family.type == "histogram" and sample.name.endswith("_bucket")
            ):
                continue
            labels = ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            table.add_row(sample.name.removeprefix("logsvc_"), labels, _fmt(sample.value))
    Console().print(table)
    return 0


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.3f}"
