"""``logsvc console``: the web console against a database, with no ingest (a read replica will do).

The same page and API as ``serve``'s operator port, on the same kind of loop: one reactor,
one thread, HTTP connections from ``ingest.http``, the console's own non-blocking pool. Only
the console's routes and ``/healthz`` are served. Off loopback it refuses to start without
``--console-token``.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import ssl
import sys
import time

from logsvc import config
from logsvc.console import build, is_loopback
from logsvc.console.api import Console
from logsvc.errors import ConfigError
from logsvc.ingest.http import HttpConnection, Request, Response
from logsvc.ingest.intake import make_tls_context
from logsvc.loop import EPOLLET, EPOLLIN, Reactor

log = logging.getLogger("logsvc.console")

DEFAULT_LISTEN = "127.0.0.1:5080"
MAX_CONNECTIONS = 256
IDLE_TIMEOUT_S = 60.0
MAX_BODY_BYTES = 64 << 10


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "console",
        help="serve the web console (search, histogram, live tail, context) over a database, without ingest",
        description="Serve the web console that serve shows on its --metrics address, against any "
        "database holding a logsvc schema (a read replica will do), without receiving logs. Finds "
        "the database the way serve does. Loopback only unless --console-token is given.",
    )
    p.add_argument(
        "--listen",
        dest="console_listen",  # not serve's --listen (config.resolve reads that one)
        metavar="HOST:PORT",
        default=DEFAULT_LISTEN,
        help=f"address of the console (default: {DEFAULT_LISTEN}); off loopback it needs --console-token",
    )
    config.add_arguments(
        p,
        only=(
            *config.DATABASE_OPTIONS,
            "console_token",
            "pg_timeout",
            "log_level",
            "metrics_tls",
            "tls_cert",
            "tls_key",
        ),
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = config.resolve(args)
    host, port = config.parse_hostport(args.console_listen)
    if not is_loopback(host) and not settings.console_token:
        raise ConfigError(
            f"--listen {args.console_listen}: other machines could read every log there; give "
            "--console-token TOKEN (or LOGSVC_CONSOLE_TOKEN) so only its holders can, or listen on 127.0.0.1"
        )
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.getLevelName(settings.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    server = ConsoleServer(config.conninfo(settings), settings.schema, host, port, settings)
    server.start()
    return server.run()


class ConsoleServer:
    """A listening socket, its HTTP connections and the console, on one reactor."""

    def __init__(self, conninfo: str, schema: str, host: str, port: int, settings: config.Settings) -> None:
        self.reactor = Reactor()
        self.console: Console = build(
            self.reactor,
            conninfo,
            schema,
            host=host,
            token=settings.console_token,
            pg_timeout=settings.pg_timeout,
        )
        self._host, self._port = host, port
        # --metrics-tls yes with --tls-cert/--tls-key: the page over HTTPS, shaken hands on the loop.
        self._tls = make_tls_context(settings) if settings.metrics_tls else None
        self._sock: socket.socket | None = None
        self._conns: dict[int, HttpConnection] = {}

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {self._host}:{self._port}: {exc.strerror}") from None
        sock.setblocking(False)
        self._sock = sock
        self.reactor.register(sock.fileno(), EPOLLIN | EPOLLET, self._accept)
        self.reactor.add_signal_handler(signal.SIGTERM, lambda signum: self.reactor.stop())
        self.reactor.add_signal_handler(signal.SIGINT, lambda signum: self.reactor.stop())
        self.reactor.call_later(IDLE_TIMEOUT_S / 4, self._sweep)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        scheme = "https" if self._tls is not None else "http"
        log.info("Console listening on %s://%s/ (schema %s).", scheme, shown, self.console.schema)

    def run(self) -> int:
        try:
            self.reactor.run()
        finally:
            for conn in list(self._conns.values()):
                conn.close("shutdown")
            self.console.close()
            if self._sock is not None:
                self._sock.close()
            self.reactor.close()
        return 0

    def _accept(self, events: int) -> None:
        assert self._sock is not None
        while True:
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                log.warning("Console: accept failed: %s", exc)
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            peer = f"{addr[0]}:{addr[1]}"
            if self._tls is not None:
                try:
                    sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError) as exc:
                    log.warning("Console: TLS set-up failed for %s: %s", peer, exc)
                    sock.close()
                    continue
            conn = HttpConnection(
                sock, peer, self.reactor, self._route, max_body_bytes=MAX_BODY_BYTES, on_close=self._closed
            )
            self._conns[conn.fd] = conn
            conn.start()

    def _route(self, conn: HttpConnection, req: Request) -> Response | None:
        if req.path == "/healthz":
            return Response.json(200, {"status": "ok"})
        if Console.claims(req.path):
            return self.console.handle(conn, req)
        return Response.json(404, {"error": f"no such path: {req.path[:200]}"})

    def _closed(self, conn: HttpConnection, reason: str) -> None:
        self._conns.pop(conn.fd, None)

    def _sweep(self) -> None:
        idle_before = time.monotonic() - IDLE_TIMEOUT_S
        for conn in list(self._conns.values()):
            if not conn.answering and conn.last_active < idle_before:
                conn.timeout(0, "idle")
        self.reactor.call_later(IDLE_TIMEOUT_S / 4, self._sweep)
