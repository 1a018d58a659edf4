"""logsvc_client: a logging handler that keeps every record until logsvc says it is durable."""

# Copyright (c) logsvc developers

from __future__ import annotations

__version__ = "0.1.0"
