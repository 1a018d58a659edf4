"""The web console: a page, a JSON API and a live tail over the stored records.

Served by ``serve`` on its operator port (``--metrics``, next to ``/metrics``) and by
``logsvc console`` against any database holding a logsvc schema (a read replica). Modules:

* ``query_lang``: the query language, text to parameterised SQL (pure);
* ``db``: the console's own non-blocking connections on the reactor (bounded);
* ``api``: the routes (``/``, ``/static/...``, ``/api/...``) and their statements;
* ``tail``: ``/api/tail``, server-sent events;
* ``command``: ``logsvc console``.

The page itself (``static/``) is plain HTML, CSS and JavaScript shipped in the package.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import ipaddress
import re

from logsvc.console.api import Console
from logsvc.console.brin import BrinSummarizer
from logsvc.console.db import ConsoleDb
from logsvc.console.tail import Tail
from logsvc.errors import ConfigError
from logsvc.loop import Reactor

# A token travels in a header and a cookie: letters, digits and -._~+/= (what
# secrets.token_urlsafe and base64 give), long enough not to be guessed.
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{8,256}$")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the console on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build(
    reactor: Reactor,
    conninfo: str,
    schema: str,
    *,
    host: str,
    token: str | None = None,
    pg_timeout: float = 10.0,
) -> Console:
    """A console with its pool and live tail, for an operator port bound to ``host``.

    Off loopback the console needs ``token``; without one its routes answer 403.

    Raises:
        ConfigError: a token that cannot travel in a cookie, or shorter than 8 characters.
    """
    if token and not _TOKEN.match(token):
        raise ConfigError(
            "--console-token: use 8 to 256 letters, digits or -._~+/= (for example the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    db = ConsoleDb(reactor, conninfo, pg_timeout=pg_timeout)
    console = Console(db, schema, token=token or None, require_token=not is_loopback(host))
    summarizer = BrinSummarizer(db, console.schema)
    console.summarizer = summarizer
    tail = Tail(reactor, db, console.schema, summarizer=summarizer)
    console.tail = tail.subscribe
    console.closers.append(tail.close)
    console.closers.append(db.close)
    return console


__all__ = ["BrinSummarizer", "Console", "ConsoleDb", "Tail", "build", "is_loopback"]
