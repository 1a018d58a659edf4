"""What a record is while it crosses the layers.

A decoded record is a plain ``dict`` shaped like ``logging.LogRecord.__dict__``: exactly what
the stdlib ``SocketHandler.makePickle`` sends (``msg`` already formatted, ``args`` None). Future
decoders (JSON lines, syslog) produce the same shape, so the store has one encoder.

We deliberately do not wrap each record in an object: at the rates logsvc is built for, one
more Python object per record is measurable, and the dict is already there.

``STANDARD_ATTRS`` are the attributes the stdlib sets on every record; anything else a record
carries came from ``extra=`` (or a custom ``LogRecord`` factory) and is stored in the ``extra``
jsonb column.
"""

from __future__ import annotations

from typing import Any, TypeAlias

RecordDict: TypeAlias = dict[str, Any]

STANDARD_ATTRS: frozenset[str] = frozenset(
    {
        "name",
        "msg",
        "args",
        "levelname",
        "levelno",
        "pathname",
        "filename",
        "module",
        "exc_info",
        "exc_text",
        "stack_info",
        "lineno",
        "funcName",
        "created",
        "msecs",
        "relativeCreated",
        "thread",
        "threadName",
        "processName",
        "process",
        "taskName",
        "message",
        "asctime",
    }
)
