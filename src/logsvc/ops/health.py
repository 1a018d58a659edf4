"""``/healthz`` (the process runs) and ``/readyz`` (records can be taken now)."""

# Copyright (c) logsvc developers

from __future__ import annotations

from logsvc.ingest.http import Response
from logsvc.ops.collector import Figures


def health(f: Figures) -> Response:
    """``/healthz``: the process runs and its loop turns."""
    return Response.json(200, {"status": "ok", "uptime_seconds": round(f.uptime_seconds, 3)})


def readiness(f: Figures, *, stopping: bool = False) -> Response:
    """``/readyz``: 200 while records are taken (intake open), 503 with the reason otherwise.

    With PostgreSQL down but room in the journal, records are still taken and will be stored
    once it is back: ready. Journal full (PostgreSQL behind for long), journal failing
    (cannot be written, or read back for shipping) or the service stopping: not ready.
    """
    ready = f.intake_state == "open" and not stopping
    body = {
        "status": "ready" if ready else "not ready",
        "intake": f.intake_state if not stopping else "stopping",
        "reason": "the service is stopping" if stopping else f.intake_reason,
        "postgresql": "connected" if f.pg_connected else f"down: {f.pg_error or 'connecting'}",
        "journal": {
            "bytes": f.journal_bytes,
            "max_bytes": f.journal_max_bytes,
            "unshipped_records": f.unshipped_records,
            "accepting": ready,
        },
    }
    return Response.json(200 if ready else 503, body)
