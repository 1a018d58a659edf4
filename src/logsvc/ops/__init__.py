"""The operator's view of a running ``serve``: ``/metrics``, ``/healthz``, ``/readyz``.

Everything here reads a narrow interface, never the server's attributes: the counters of
``metrics.Metrics`` (bumped on the hot path) and a ``Figures`` snapshot of the gauges, made
by the server on request. A scrape changes no state.
"""

from __future__ import annotations

from logsvc.ops.collector import Figures, make_registry, metrics_response
from logsvc.ops.health import health, readiness

__all__ = ["Figures", "health", "make_registry", "metrics_response", "readiness"]
