"""The operator's view: Prometheus ``/metrics``, ``/healthz``, ``/readyz`` and ``logsvc stats``.

The hot path only bumps plain attributes of ``Metrics`` (see ``metrics.py``); nothing here
runs per record. At scrape time ``LogsvcCollector`` reads those attributes, the journal and
the loop, and hands them to ``prometheus_client`` as metric families, so the text format is
the library's (``generate_latest``), never written by hand. The process collector of the
same library adds RSS, CPU and open descriptors.

``logsvc stats`` fetches ``/metrics`` of a running service and prints it as a table a
person can read, parsed with the library's own parser.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from logsvc.http import Response
from logsvc.metrics import BATCH_BUCKETS_S

if TYPE_CHECKING:
    from logsvc.server import Server


class LogsvcCollector(Collector):
    """Every figure of a running ``Server``, read at scrape time."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        srv = self.server
        m = srv.metrics

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"logsvc_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"logsvc_{name}", doc, value=value)

        received = CounterMetricFamily(
            "logsvc_records_received", "Records decoded and written to the journal.", labels=["listener"]
        )
        for kind, n in sorted(m.records_received_by.items()):
            received.add_metric([kind], n)
        yield received
        yield counter("records_stored", "Records committed in PostgreSQL.", m.records_stored)
        rejected = CounterMetricFamily(
            "logsvc_records_rejected",
            "Records refused: a bad record skipped (the stream goes on) or a bad frame (its "
            "connection closed), by listener and reason.",
            labels=["listener", "reason"],
        )
        for (kind, reason), n in sorted(m.records_rejected.items()):
            rejected.add_metric([kind, reason], n)
        for (kind, reason), n in sorted(m.frames_rejected.items()):
            rejected.add_metric([kind, reason], n)
        yield rejected
        yield counter(
            "records_dead_lettered",
            "Records PostgreSQL refused for their content, written to the dead-letter file.",
            m.records_dead_lettered,
        )
        yield counter(
            "placeholders",
            "Objects in a pickled record's extra replaced by a placeholder string.",
            m.placeholders,
        )
        yield counter("received_bytes", "Bytes read from clients.", m.bytes_received)

        yield gauge("connections_open", "Client connections open now.", m.connections_open)
        yield counter("connections_accepted", "Client connections accepted.", m.connections_accepted)
        closed = CounterMetricFamily(
            "logsvc_connections_closed", "Client connections closed, by reason.", labels=["reason"]
        )
        for reason, n in sorted(m.connections_closed.items()):
            closed.add_metric([reason], n)
        yield closed
        refused = CounterMetricFamily(
            "logsvc_connections_refused",
            "Connections closed at accept or handshake (not allowed, too many, TLS), by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(m.connections_refused.items()):
            refused.add_metric([reason], n)
        yield refused
        yield counter(
            "udp_datagrams_dropped",
            "Datagrams the kernel dropped because the receive buffer was full.",
            srv.udp_drops(),
        )
        http = CounterMetricFamily(
            "logsvc_http_requests", "HTTP requests answered, by path and status.", labels=["path", "status"]
        )
        for (path, status), n in sorted(m.http_requests.items()):
            http.add_metric([path, str(status)], n)
        yield http

        yield counter("batches_committed", "Batches committed in PostgreSQL.", m.batches_committed)
        failed = CounterMetricFamily(
            "logsvc_batches_failed", "Batches that failed and were retried, by reason.", labels=["reason"]
        )
        for reason, n in sorted(m.batches_failed.items()):
            failed.add_metric([reason], n)
        yield failed
        hist = HistogramMetricFamily("logsvc_batch_seconds", "Time to commit one batch in PostgreSQL.")
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*BATCH_BUCKETS_S, float("inf")), m.batch_seconds_buckets, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        hist.add_metric([], buckets, m.batch_seconds_total)
        yield hist
        yield gauge("postgresql_up", "1 while connected to PostgreSQL.", 1 if m.pg_connected else 0)

        journal = srv.journal
        yield gauge("journal_bytes", "Bytes of journal segments on disk.", journal.size_bytes)
        yield gauge("journal_max_bytes", "Journal size past which clients are paused.", journal.max_bytes)
        yield gauge("shipping_lag_records", "Journaled records not yet in PostgreSQL.", srv.sink.unshipped)
        yield gauge(
            "shipping_lag_seconds",
            "Age of the oldest journaled record not yet in PostgreSQL.",
            srv.sink.lag_seconds(),
        )
        yield gauge("backpressure", "1 while reads from clients are paused.", 1 if srv.holding else 0)
        yield counter(
            "backpressure_episodes", "Times reads were paused for a full journal.", m.backpressure_episodes
        )
        yield counter(
            "journal_write_errors", "Journal writes that failed (disk full, I/O) and were retried.",
            m.journal_write_errors,
        )  # fmt: skip

        r = srv.reactor
        yield counter("loop_iterations", "Turns of the event loop.", r.iterations)
        yield counter(
            "loop_busy_seconds", "Time the loop spent working, not waiting in epoll.", r.busy_seconds
        )
        yield gauge(
            "loop_max_turn_seconds", "The longest loop turn since the previous scrape.", r.take_max_busy()
        )
        yield gauge("uptime_seconds", "Seconds since the service started.", time.monotonic() - srv.started)


def make_registry(server: Server) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LogsvcCollector(server))
    ProcessCollector(registry=registry)
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)


def health(server: Server) -> Response:
    """``/healthz``: the process runs and its loop turns."""
    return Response.json(200, {"status": "ok", "uptime_seconds": round(time.monotonic() - server.started, 3)})


def readiness(server: Server) -> Response:
    """``/readyz``: ready while records can be taken: PostgreSQL is up or the journal has room."""
    m = server.metrics
    # Reads pause exactly when the journal is over its cap (PostgreSQL behind for long) or
    # cannot be written; with PostgreSQL down but room left, records are still taken.
    room = ready = not server.holding
    body = {
        "status": "ready" if ready else "not ready",
        "postgresql": "connected" if m.pg_connected else f"down: {server.sink.last_error or 'connecting'}",
        "journal": {
            "bytes": server.journal.size_bytes,
            "max_bytes": server.journal.max_bytes,
            "unshipped_records": server.sink.unshipped,
            "accepting": room,
        },
    }
    return Response.json(200 if ready else 503, body)


# -- logsvc stats ------------------------------------------------------------------------------


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
