"""logsvc_client: a logging handler that keeps every record until logsvc has it durably.

``logsvc_client.Handler`` replaces ``logging.handlers.SocketHandler`` in one line of
``dictConfig``; it speaks logsvc's acknowledged protocol (docs/protocol.md in the logsvc
repository) on the same port, resends whatever a restart of either side left unacknowledged,
and the service stores each record exactly once. Standard library only.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

from logsvc_client._protocol import ProtocolError
from logsvc_client._spool import SpoolError
from logsvc_client.handler import Handler

__all__ = ["Handler", "ProtocolError", "SpoolError", "__version__"]
__version__ = "0.1.0"
