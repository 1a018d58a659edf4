"""Prometheus ``/metrics``: every counter of ``Metrics`` and every gauge of ``Figures``.

The hot path only bumps plain attributes of ``Metrics`` (see ``metrics.py``); nothing here
runs per record. At scrape time ``LogsvcCollector`` reads those counters and one
``Figures`` snapshot and hands them to ``prometheus_client`` as metric families, so the text
format is the library's (``generate_latest``), never written by hand. The library's process
collector adds RSS, CPU and open descriptors.

Each family has one meaning and each label set appears once: rejections that close a
connection (``frames_rejected``) and rejections that skip one record in a stream that stays
in step (``records_rejected``) are separate families, because a reason such as
``not_json`` exists in both.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from logsvc.ingest.http import Response
from logsvc.metrics import BATCH_BUCKETS_S, Metrics


@dataclass(frozen=True, slots=True)
class Figures:
    """The gauges of a running service at one moment (the server makes one per request)."""

    uptime_seconds: float
    intake_state: str  # "open", "full", "failing"
    intake_reason: str  # why it is not open ("" when it is)
    pg_connected: bool
    pg_error: str  # the last error while not connected ("" if none)
    journal_bytes: int
    journal_max_bytes: int
    unshipped_records: int
    lag_seconds: float
    pending_records: int  # read, not yet in the journal
    connections_open: int
    udp_datagrams_dropped: int
    loop_iterations: int
    loop_busy_seconds: float
    loop_max_turn_seconds: float
    loop_handler_errors: int
    encode_replaced_chars: int
    encode_coerced_fields: int
    encode_truncated_fields: int
    acked_streams: int = 0  # streams of the acknowledged protocol with a position held


def _labelled(
    name: str, doc: str, labels: list[str], values: Iterable[tuple[tuple[str, ...] | str, float]]
) -> CounterMetricFamily:
    fam = CounterMetricFamily(f"logsvc_{name}", doc, labels=labels)
    for key, n in sorted(values):
        fam.add_metric([key] if isinstance(key, str) else [str(k) for k in key], n)
    return fam


class LogsvcCollector(Collector):
    """Reads ``metrics`` and calls ``figures()`` at each scrape; changes nothing."""

    def __init__(self, metrics: Metrics, figures: Callable[[], Figures]) -> None:
        self._metrics = metrics
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        f = self._figures()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"logsvc_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"logsvc_{name}", doc, value=value)

        # -- records, in the order they travel
        yield _labelled(
            "records_read",
            "Records decoded from clients and handed to the journal writer, by listener.",
            ["listener"],
            m.records_read.items(),
        )
        yield _labelled(
            "records_journaled",
            "Records written to the journal (durable by the --fsync policy), by listener.",
            ["listener"],
            m.records_journaled.items(),
        )
        yield counter("records_stored", "Records committed in PostgreSQL.", m.records_stored)
        yield _labelled(
            "records_rejected",
            "Bad records skipped in a stream that stays in step (the connection goes on), by "
            "listener and reason.",
            ["listener", "reason"],
            m.records_rejected.items(),
        )
        yield _labelled(
            "frames_rejected",
            "Bad frames that closed their connection (the stream cannot be resynchronised), by "
            "listener and reason.",
            ["listener", "reason"],
            m.frames_rejected.items(),
        )
        yield counter(
            "records_dead_lettered",
            "Records PostgreSQL refused for their content, written to the dead-letter file.",
            m.records_dead_lettered,
        )
        yield _labelled(
            "records_dead_lettered_by_sqlstate",
            "Dead-lettered records by the SQLSTATE PostgreSQL refused them with.",
            ["sqlstate"],
            m.dead_lettered_by_sqlstate.items(),
        )
        yield gauge("records_pending", "Records read and not yet written to the journal.", f.pending_records)

        # -- the acknowledged protocol (docs/protocol.md)
        yield counter(
            "acked_sessions", "Acknowledged-protocol connections that said HELLO.", m.acked_sessions
        )
        yield gauge("acked_streams", "Streams this service holds a position for.", f.acked_streams)
        yield counter("acked_acks_sent", "ACK frames sent.", m.acked_sent)
        yield _labelled(
            "acked_duplicates",
            "Records of a stream sent again that were had already, left out where: server (at or "
            "below the stream's written seq) or postgresql (already stored, by another journal or "
            "an earlier copy).",
            ["where"],
            m.acked_duplicates.items(),
        )
        yield counter(
            "acked_seq_gaps",
            "Stream seqs a client skipped (records it dropped under its spool policy).",
            m.acked_seq_gaps,
        )
        yield counter(
            "journal_syncs_for_acks",
            "fdatasyncs of the journal made because acknowledgements waited (one per flush at most).",
            m.journal_syncs_for_acks,
        )
        yield counter(
            "placeholders",
            "Objects in a pickled record's extra replaced by a placeholder string.",
            m.placeholders,
        )
        yield counter(
            "encode_replaced_chars",
            "NUL characters and lone surrogates replaced by U+FFFD (PostgreSQL text cannot hold them).",
            f.encode_replaced_chars,
        )
        yield counter(
            "encode_coerced_fields",
            "Standard record fields of the wrong type, coerced.",
            f.encode_coerced_fields,
        )
        yield counter(
            "encode_truncated_fields",
            "Values cut at their size cap (the record is kept, the cut is marked).",
            f.encode_truncated_fields,
        )
        yield counter("received_bytes", "Bytes read from clients.", m.bytes_received)

        # -- connections
        yield gauge("connections_open", "Client connections open now.", f.connections_open)
        yield counter("connections_accepted", "Client connections accepted.", m.connections_accepted)
        yield _labelled(
            "connections_closed",
            "Client connections closed, by reason.",
            ["reason"],
            m.connections_closed.items(),
        )
        yield _labelled(
            "connections_refused",
            "Connections closed at accept or handshake (not allowed, too many, TLS), by reason.",
            ["reason"],
            m.connections_refused.items(),
        )
        yield counter(
            "udp_datagrams_dropped",
            "Datagrams the kernel dropped because the receive buffer was full.",
            f.udp_datagrams_dropped,
        )
        yield _labelled(
            "http_requests",
            "HTTP requests answered, by path and status.",
            ["path", "status"],
            [((path, str(status)), n) for (path, status), n in m.http_requests.items()],
        )

        # -- the journal and the intake state
        state = GaugeMetricFamily(
            "logsvc_intake_state",
            "1 for the state intake is in: open (taking records), full (journal at its cap, "
            "PostgreSQL behind) or failing (the journal cannot be written or read back).",
            labels=["state"],
        )
        for name in ("open", "full", "failing"):
            state.add_metric([name], 1 if f.intake_state == name else 0)
        yield state
        yield gauge(
            "backpressure", "1 while reads from clients are paused.", 0 if f.intake_state == "open" else 1
        )
        yield counter(
            "backpressure_episodes", "Times reads were paused for a full journal.", m.backpressure_episodes
        )
        yield _labelled(
            "intake_failures",
            "Times intake entered the failing state, by source (journal_write, journal_read).",
            ["source"],
            m.intake_failures.items(),
        )
        yield counter(
            "journal_write_errors",
            "Journal writes (or fsyncs) that failed: disk full, I/O error. Retried.",
            m.journal_write_errors,
        )
        yield counter("journal_blocks", "Blocks appended to the journal.", m.journal_blocks)
        yield counter(
            "journal_corrupt_blocks",
            "Journal blocks that failed their checksum when read back for shipping (skipped).",
            m.journal_corrupt_blocks,
        )
        yield counter(
            "journal_records_lost",
            "Records in journal blocks found corrupt after start-up (reported, skipped).",
            m.journal_records_lost,
        )
        yield gauge("journal_bytes", "Bytes of journal segments on disk.", f.journal_bytes)
        yield gauge("journal_max_bytes", "Journal size past which clients are paused.", f.journal_max_bytes)
        yield gauge("shipping_lag_records", "Journaled records not yet in PostgreSQL.", f.unshipped_records)
        yield gauge(
            "shipping_lag_seconds", "Age of the oldest journaled record not yet in PostgreSQL.", f.lag_seconds
        )

        # -- PostgreSQL
        yield gauge("postgresql_up", "1 while connected to PostgreSQL.", 1 if f.pg_connected else 0)
        yield counter("batches_committed", "Batches committed in PostgreSQL.", m.batches_committed)
        yield _labelled(
            "batches_failed",
            "Batches that failed and were retried, by reason.",
            ["reason"],
            m.batches_failed.items(),
        )
        hist = HistogramMetricFamily("logsvc_batch_seconds", "Time to commit one batch in PostgreSQL.")
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*BATCH_BUCKETS_S, float("inf")), m.batch_seconds_buckets, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        hist.add_metric([], buckets, m.batch_seconds_total)
        yield hist
        yield counter(
            "batches_isolated",
            "Batches PostgreSQL refused for their rows' content, re-shipped in pieces.",
            m.batches_isolated,
        )
        yield counter(
            "isolation_transactions",
            "Transactions run while isolating refused rows, committed or not.",
            m.isolation_transactions,
        )
        yield counter("isolation_seconds", "Time spent isolating refused rows.", m.isolation_seconds_total)
        yield counter(
            "embedded_postgresql_restarts",
            "Times the embedded PostgreSQL was found dead and started again.",
            m.embedded_pg_restarts,
        )

        # -- the loop and the process
        yield counter("loop_iterations", "Turns of the event loop.", f.loop_iterations)
        yield counter(
            "loop_busy_seconds", "Time the loop spent working, not waiting in epoll.", f.loop_busy_seconds
        )
        yield gauge(
            "loop_max_turn_seconds",
            "The longest loop turn in the last 10 to 20 seconds.",
            f.loop_max_turn_seconds,
        )
        yield counter(
            "loop_handler_errors",
            "Unexpected exceptions a handler or callback let escape (logged with a traceback).",
            f.loop_handler_errors,
        )
        yield gauge("uptime_seconds", "Seconds since the service started.", f.uptime_seconds)


def make_registry(metrics: Metrics, figures: Callable[[], Figures]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LogsvcCollector(metrics, figures))
    ProcessCollector(registry=registry)
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)
