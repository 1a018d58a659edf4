"""The ``logsvc`` command line."""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from logsvc import __version__, bench, config, query, stats
from logsvc.console import command as console_command
from logsvc.errors import ConfigError, LogsvcError

log = logging.getLogger("logsvc")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logsvc",
        description="A log service: Python logging records (and JSON lines, syslog, HTTP) kept "
        "exactly once in a local journal and in PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"logsvc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="receive logging records and store them in PostgreSQL",
        description="Receive records from Python's logging.handlers.SocketHandler (and, with the "
        "--listen-* options, DatagramHandler, JSON lines, syslog and HTTP) on edge-triggered "
        "epoll, append them to a journal under --data-dir, and ship them to PostgreSQL in batches, "
        "each committed with its journal position so nothing is lost or stored twice. Without --dsn "
        "an embedded PostgreSQL is started under DATA_DIR/pg. Figures: /metrics on --metrics.",
    )
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)
    query.add_parsers(sub)
    bench.add_parser(sub)
    stats.add_stats_parser(sub)
    console_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(f"logsvc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LogsvcError as exc:
        print(f"logsvc: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def _setup_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"--log-level {level!r} must be debug, info, warning or error")
    logging.basicConfig(
        stream=sys.stderr,
        level=numeric,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _serve(args: argparse.Namespace) -> int:
    from logsvc.server import Server

    settings = config.resolve(args)
    _setup_logging(settings.log_level)
    if not settings.dsn:
        log.info("No --dsn given: starting the embedded PostgreSQL under %s.", settings.data_dir / "pg")
    dsn = config.conninfo(settings)
    if not settings.dsn:
        log.info("Embedded PostgreSQL is up: psql '%s'", dsn)
    if settings.workers > 1:
        from logsvc import embedded, workers
        from logsvc.metrics import Metrics

        check = None if settings.dsn else embedded.Supervisor(settings.data_dir, Metrics()).check
        try:
            return workers.run(settings, dsn, check)
        except OSError as exc:
            raise ConfigError(f"cannot start: {exc}") from exc
    server = Server(settings, dsn)
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"cannot start: {exc}") from exc
    return server.run()
