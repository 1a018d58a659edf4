"""Every counter and gauge logsvc keeps, defined in one place (vector ``internal_events``).

The server updates these plain attributes on its hot path (an attribute increment is the
cheapest thing Python can count with); the periodic stats line and, later, the metrics
endpoint read them. Labelled counters are ``collections.Counter`` keyed by the stable
``reason`` strings of ``logsvc.errors``.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

# Upper bounds of the batch latency buckets, in seconds (Prometheus' defaults, which span a
# local commit of a small batch to a struggling server).
BATCH_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class Metrics:
    # Decoded from clients and handed to the journal writer, by listener kind ("pickle",
    # "json", "syslog", "udp", "syslog_udp", "http").
    records_read: Counter[str] = field(default_factory=Counter)
    # Written to the journal (durable by the --fsync policy), by listener kind.
    records_journaled: Counter[str] = field(default_factory=Counter)
    records_stored: int = 0  # committed in PostgreSQL
    bytes_received: int = 0
    connections_accepted: int = 0
    connections_open: int = 0
    connections_closed: Counter[str] = field(default_factory=Counter)  # by reason
    # Closed at accept, by reason: not_allowed, too_many_connections, accept_error.
    connections_refused: Counter[str] = field(default_factory=Counter)
    # A frame that broke its stream (the connection is closed), by (listener kind, reason).
    frames_rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    # One bad record skipped in a stream that stays in step, by (listener kind, reason).
    records_rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    journal_write_errors: int = 0  # appends that failed (disk full, I/O error) and were retried
    # Times the service entered FAILING, by source ("journal_write", "journal_read").
    intake_failures: Counter[str] = field(default_factory=Counter)
    # Journal blocks found corrupt after start-up (CRC), and the records they held.
    journal_corrupt_blocks: int = 0
    journal_records_lost: int = 0
    placeholders: int = 0  # objects in `extra` the restricted unpickler refused to build
    batches_committed: int = 0
    # by reason: StoreError.reason ("connection", ...), or for a batch PostgreSQL refused, the
    # sink's classification of its SQLSTATE ("pg_rejected_rows", "pg_disk_full", ...)
    batches_failed: Counter[str] = field(default_factory=Counter)
    batch_seconds_total: float = 0.0
    # Histogram of batch commit latency: counts per bucket of BATCH_BUCKETS_S (+Inf last).
    batch_seconds_buckets: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS_S) + 1))
    udp_datagrams_dropped: int = 0  # by the kernel, receive buffer full (SO_RXQ_OVFL)
    http_requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # by (path, status)
    pg_connected: bool = False
    # Times serve restarted its embedded PostgreSQL after finding its postmaster gone
    # (logsvc.embedded.Supervisor); always 0 with --dsn.
    embedded_pg_restarts: int = 0
    backpressure_episodes: int = 0
    journal_blocks: int = 0
    # A batch refused for its rows' content is re-shipped in pieces (store.sink): these count
    # that rare path. records_dead_lettered counts rows written to the dead-letter file
    # (store.deadletter), by SQLSTATE in dead_lettered_by_sqlstate.
    batches_isolated: int = 0
    isolation_transactions: int = 0  # pieces shipped while isolating, committed or not
    isolation_seconds_total: float = 0.0
    records_dead_lettered: int = 0
    dead_lettered_by_sqlstate: Counter[str] = field(default_factory=Counter)
    # The acknowledged protocol (docs/protocol.md). Records of a stream that were had already,
    # left out by where: "server" (at or below the stream's written seq, never journaled
    # again) or "postgresql" (already in streams.seqs when their batch committed).
    acked_duplicates: Counter[str] = field(default_factory=Counter)
    acked_sessions: int = 0  # acknowledged-protocol connections that said HELLO
    acked_sent: int = 0  # ACK frames sent
    # Records sent after a gap in their stream's seqs (the client dropped records under its
    # spool policy): counted as gaps, by the number of seqs missing.
    acked_seq_gaps: int = 0
    journal_syncs_for_acks: int = 0  # fdatasyncs made because an acknowledgement waited

    def observe_batch(self, seconds: float) -> None:
        """Count one committed batch's latency in the histogram."""
        self.batch_seconds_total += seconds
        self.batch_seconds_buckets[bisect.bisect_left(BATCH_BUCKETS_S, seconds)] += 1

    def summary(self) -> str:
        """One log line of counts, fields first (vector STYLE.md)."""
        rejected = sum(self.frames_rejected.values())
        return (
            f"read={sum(self.records_read.values())} "
            f"journaled={sum(self.records_journaled.values())} stored={self.records_stored} "
            f"rejected_frames={rejected} rejected_records={sum(self.records_rejected.values())} "
            f"dead_lettered={self.records_dead_lettered} connections_open={self.connections_open} "
            f"batches={self.batches_committed} pg_connected={'yes' if self.pg_connected else 'no'}"
        )
