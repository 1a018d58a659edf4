"""Every counter and gauge logsvc keeps, defined in one place (vector ``internal_events``).

The server updates these plain attributes on its hot path (an attribute increment is the
cheapest thing Python can count with); the periodic stats line and, later, the metrics
endpoint read them. Labelled counters are ``collections.Counter`` keyed by the stable
``reason`` strings of ``logsvc.errors``.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Metrics:
    records_received: int = 0  # decoded and handed to the journal
    records_stored: int = 0  # committed in PostgreSQL
    bytes_received: int = 0
    connections_accepted: int = 0
    connections_open: int = 0
    connections_closed: Counter[str] = field(default_factory=Counter)  # by reason
    # Closed at accept, by reason: not_allowed, too_many_connections, accept_error.
    connections_refused: Counter[str] = field(default_factory=Counter)
    frames_rejected: Counter[str] = field(default_factory=Counter)  # by ProtocolError.reason
    # One bad record skipped in a stream that stays in step, by (listener kind, reason).
    records_rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    journal_write_errors: int = 0  # appends that failed (disk full, I/O error) and were retried
    placeholders: int = 0  # objects in `extra` the restricted unpickler refused to build
    batches_committed: int = 0
    batches_failed: Counter[str] = field(default_factory=Counter)  # by StoreError.reason
    batch_seconds_total: float = 0.0
    pg_connected: bool = False
    backpressure_episodes: int = 0
    journal_blocks: int = 0

    def summary(self) -> str:
        """One log line of counts, fields first (vector STYLE.md)."""
        rejected = sum(self.frames_rejected.values())
        return (
            f"received={self.records_received} stored={self.records_stored} "
            f"rejected_frames={rejected} connections_open={self.connections_open} "
            f"batches={self.batches_committed} pg_connected={'yes' if self.pg_connected else 'no'}"
        )
