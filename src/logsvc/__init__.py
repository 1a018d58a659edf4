"""logsvc: Python logging records over TCP, kept exactly once in a local journal and in PostgreSQL."""

__version__ = "0.1.0"
