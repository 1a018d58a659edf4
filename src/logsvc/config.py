"""Settings of ``logsvc serve``: one table, read from flags, the environment and a TOML file.

``Settings`` holds the typed defaults; ``OPTIONS`` says how each is parsed and explained.

Precedence, highest first: command-line flag, environment variable ``LOGSVC_<NAME>``, the
``[serve]`` table (or top level) of the TOML file given by ``--config`` / ``LOGSVC_CONFIG``,
then the default. Every option is declared once in ``OPTIONS``; argparse, the environment and
the file are all derived from it, so they cannot drift apart.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logsvc.errors import ConfigError

FSYNC_POLICIES = ("always", "interval", "never")


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"1G"``, ``"4096"`` -> bytes."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    s = str(text).strip().lower().removesuffix("b").removesuffix("i")
    num, unit = (s[:-1], s[-1]) if s and s[-1] in units else (s, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise ConfigError(f"{text!r} is not a size (examples: 4096, 64MiB, 1GiB)") from None
    if value <= 0:
        raise ConfigError(f"size {text!r} must be positive")
    return value


def parse_duration(text: str) -> float:
    """``"200ms"``, ``"1s"``, ``"0.5"`` (seconds), ``"2m"`` -> seconds."""
    s = str(text).strip().lower()
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if s.endswith(suffix):
            s, factor = s[: -len(suffix)], mult
            break
    else:
        factor = 1.0
    try:
        value = float(s) * factor
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration (examples: 200ms, 1s, 2m)") from None
    if value < 0:
        raise ConfigError(f"duration {text!r} must not be negative")
    return value


def parse_listen(text: str) -> tuple[str, int] | str:
    """``parse_hostport``, or ``"unix:/run/logsvc.sock"`` -> the path of a Unix-domain socket."""
    s = str(text).strip()
    if s.startswith("unix:"):
        path = s.removeprefix("unix:")
        if not path:
            raise ConfigError(f"listen address {text!r}: give the socket's path, as in unix:/run/logsvc.sock")
        return path
    return parse_hostport(s)


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5000"``, ``"[::1]:5000"``, ``":5000"`` (all interfaces) -> (host, port)."""
    s = str(text).strip()
    host, sep, port = s.rpartition(":")
    if not sep:
        raise ConfigError(f"listen address {text!r} must be HOST:PORT, for example 127.0.0.1:5000")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"listen address {text!r}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"listen address {text!r}: port must be 0-65535")
    return host or "0.0.0.0", p


def parse_fsync(text: str) -> str:
    if text not in FSYNC_POLICIES:
        raise ConfigError(f"fsync policy {text!r} must be one of: {', '.join(FSYNC_POLICIES)}")
    return text


def parse_timezone(text: str) -> datetime.tzinfo:
    """``"UTC"``, ``"Europe/Berlin"``, ``"America/New_York"`` (an IANA zone name) -> a tzinfo.

    ``UTC`` is ``datetime.UTC`` itself, so the default needs no time zone database (a minimal
    container may have none) and takes the formats' fastest path.
    """
    name = str(text).strip()
    if name == "UTC":
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a valid key ("../x", ""); OSError: a directory ("America").
        raise ConfigError(
            f"{text!r} is not a time zone this system knows (an IANA name such as UTC, "
            "Europe/Berlin or America/New_York)"
        ) from None


def parse_json_format(text: str) -> str:
    """``"auto"``, ``"plain"`` or a library's name -> the shape ``JsonFormat`` reads."""
    from logsvc.wire.json_format import SHAPES

    name = str(text).strip().lower()
    if name not in SHAPES:
        raise ConfigError(f"JSON format {text!r} must be one of: {', '.join(SHAPES)}")
    return name


@dataclass(frozen=True, slots=True)
class JsonListen:
    """The address of a listener that reads JSON records, and the JSON format it names.

    ``json_format`` None means the listener reads as ``--json-format`` says.
    """

    host: str
    port: int
    json_format: str | None = None


def parse_json_listen(text: str) -> JsonListen:
    """``"127.0.0.1:5170"`` or ``"127.0.0.1:5170=pino"`` (this listener's JSON format) -> JsonListen.

    The ``=FORMAT`` suffix is a name of ``parse_json_format``; an address never holds an
    ``=`` (IPv6 in brackets included), so the last one splits them.
    """
    where, sep, fmt = str(text).strip().rpartition("=")
    if not sep:
        return JsonListen(*parse_hostport(fmt))
    if not fmt.strip():
        raise ConfigError(f"listen address {text!r}: give a JSON format after '=', as in 127.0.0.1:5170=pino")
    try:
        name = parse_json_format(fmt)
    except ConfigError as exc:
        raise ConfigError(f"listen address {text!r}: {exc}") from None
    return JsonListen(*parse_hostport(where), name)


def _parse_optional_hostport(text: str) -> tuple[str, int] | None:
    return parse_hostport(text) if str(text).strip() else None


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``"10.0.0.0/8"``, ``"127.0.0.1"`` (one address), ``"::1/128"`` -> a network."""
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{text!r} is not an address or CIDR network (examples: 10.0.0.0/8, ::1)") from None


def parse_mode(text: str) -> int:
    """``"660"`` / ``"0o660"`` (octal file permissions) -> int."""
    try:
        value = int(str(text).strip().removeprefix("0o"), 8)
    except ValueError:
        raise ConfigError(f"{text!r} is not an octal file mode (example: 660)") from None
    if not 0 <= value <= 0o777:
        raise ConfigError(f"file mode {text!r} must be between 000 and 777")
    return value


def parse_file(text: str) -> Path:
    path = Path(str(text)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{text!r} is not a readable file")
    return path


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("yes", "true", "on", "1"):
        return True
    if t in ("no", "false", "off", "0"):
        return False
    raise ConfigError(f"{text!r} is not yes or no")


def parse_positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise ConfigError(f"{text!r} must be positive")
    return value


def _parse_extra_key(text: str) -> str:
    from logsvc.store.schema import check_extra_key

    # An empty value (--index-extra= or LOGSVC_INDEX_EXTRA=) means "no extra index".
    return check_extra_key(text) if text else ""


@dataclass(frozen=True, slots=True)
class Option:
    name: str  # attribute and TOML key; flag is --name-with-dashes, env LOGSVC_NAME
    parse: Callable[[str], Any]
    help: str
    metavar: str = ""
    repeatable: bool = False


OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        parse_listen,
        "address to accept SocketHandler connections on, or unix:PATH for a Unix-domain socket "
        "(SocketHandler(PATH, None)); repeatable; all interfaces must be asked for explicitly (0.0.0.0:5000)",
        "HOST:PORT",
        True,
    ),
    Option(
        "listen_tls",
        parse_hostport,
        "like --listen, but TLS-encrypted (needs --tls-cert and --tls-key); repeatable",
        "HOST:PORT",
        True,
    ),
    Option(
        "listen_udp",
        parse_hostport,
        "UDP address for logging.handlers.DatagramHandler (one pickle frame per datagram); repeatable",
        "HOST:PORT",
        True,
    ),
    Option(
        "listen_json",
        parse_json_listen,
        "TCP address for JSON lines (one object per line: Vector, Fluent Bit, any language); "
        "HOST:PORT=FORMAT reads this listener's records in one --json-format FORMAT; repeatable",
        "HOST:PORT[=FORMAT]",
        True,
    ),
    Option(
        "listen_gelf",
        parse_hostport,
        "address for GELF (graypy, Docker's gelf log driver, Graylog senders): UDP (whole, chunked, "
        "zlib or gzip datagrams) and TCP (NUL-terminated JSON) on the same port; repeatable",
        "HOST:PORT",
        True,
    ),
    Option(
        "json_format",
        parse_json_format,
        "how JSON records (--listen-json, POST /ingest) are read: auto (detect pino, bunyan, ECS, "
        "loguru, structlog and GELF by their signatures, else the plain key table), plain, or one "
        "of pino, bunyan, ecs, loguru, structlog, gelf for every record; a listener given as "
        "HOST:PORT=FORMAT reads as its own FORMAT instead",
        "FORMAT",
    ),
    Option(
        "listen_syslog",
        parse_hostport,
        "TCP address for syslog (RFC 5424 or 3164; octet-counted or newline framing, RFC 6587); repeatable",
        "HOST:PORT",
        True,
    ),
    Option(
        "listen_syslog_udp",
        parse_hostport,
        "UDP address for syslog (RFC 5424 or 3164, one message per datagram); repeatable",
        "HOST:PORT",
        True,
    ),
    Option(
        "listen_http",
        parse_json_listen,
        "HTTP address: POST /ingest (NDJSON, a JSON array, or logging.handlers.HTTPHandler's form), "
        "POST /gelf (one GELF message, graypy's GELFHTTPHandler), /v1/logs and /_bulk, plus "
        "/metrics, /healthz and /readyz; HOST:PORT=FORMAT reads /ingest and /_bulk in one "
        "--json-format FORMAT; repeatable",
        "HOST:PORT[=FORMAT]",
        True,
    ),
    Option(
        "listen_otlp",
        parse_hostport,
        "HTTP address for OpenTelemetry logs: POST /v1/logs (OTLP/HTTP, protobuf or JSON, gzip), "
        "plus /metrics, /healthz and /readyz; conventionally port 4318; repeatable",
        "HOST:PORT",
        True,
    ),
    Option(
        "metrics",
        _parse_optional_hostport,
        "HTTP address for /metrics, /healthz and /readyz only (logsvc stats reads it); --metrics= for none",
        "HOST:PORT",
    ),
    Option(
        "console_token",
        str,
        "token the web console on the --metrics address asks for (Authorization: Bearer TOKEN, or open "
        "/?token=TOKEN once); without it the console answers only on a loopback address",
        "TOKEN",
    ),
    Option(
        "metrics_tls",
        parse_bool,
        "serve the --metrics address (metrics, health, the web console; for logsvc console, its "
        "--listen) over TLS with --tls-cert and --tls-key: yes or no",
        "YES|NO",
    ),
    Option("http_max_body_bytes", parse_size, "largest HTTP request body accepted (413 past it)", "SIZE"),
    Option("tls_cert", parse_file, "PEM certificate chain of the TLS listeners", "FILE"),
    Option("tls_key", parse_file, "PEM private key of --tls-cert", "FILE"),
    Option(
        "tls_client_ca",
        parse_file,
        "PEM CA bundle: TLS clients must present a certificate it signed (mutual TLS)",
        "FILE",
    ),
    Option(
        "unix_mode",
        parse_mode,
        "file permissions of --listen unix:PATH sockets, the access control for them",
        "MODE",
    ),
    Option(
        "allow",
        parse_cidr,
        "accept TCP clients only from this address or network; repeatable; default: anyone who can "
        "reach the listener",
        "CIDR",
        True,
    ),
    Option(
        "max_connections",
        parse_positive_int,
        "client connections open at once; more are closed at accept (and counted)",
        "N",
    ),
    Option(
        "idle_timeout",
        parse_duration,
        "close a client connection that sent nothing for this long (0: never). Stock "
        "SocketHandler clients reconnect by themselves but lose the record they send into the "
        "closed connection, so keep it longer than your quietest client's pause",
        "DURATION",
    ),
    Option(
        "frame_timeout",
        parse_duration,
        "close a client that holds a started but unfinished record frame this long (slowloris; 0: never)",
        "DURATION",
    ),
    Option(
        "dsn",
        str,
        "PostgreSQL connection string; default: an embedded PostgreSQL under DATA_DIR/pg, started if needed",
        "DSN",
    ),
    Option(
        "pg_timeout",
        parse_duration,
        "give up on a PostgreSQL connection that stays silent this long during a step (connecting, "
        "a batch): it is dropped, /readyz says so, and the service reconnects; also libpq's "
        "connect_timeout and tcp_user_timeout unless --dsn sets them (0: never)",
        "DURATION",
    ),
    Option("data_dir", Path, "where the journal (and the embedded PostgreSQL) live", "PATH"),
    Option("schema", str, "PostgreSQL schema holding the tables", "NAME"),
    Option("batch_max_records", parse_positive_int, "ship a batch once this many records wait", "N"),
    Option("batch_max_bytes", parse_size, "... or once this many bytes wait", "SIZE"),
    Option("batch_max_age", parse_duration, "... or once the oldest has waited this long", "DURATION"),
    Option("journal_segment_bytes", parse_size, "size of one journal segment file", "SIZE"),
    Option(
        "journal_max_bytes",
        parse_size,
        "journal size past which the service stops "
        "reading from clients (TCP backpressure) until PostgreSQL catches up",
        "SIZE",
    ),
    Option(
        "fsync",
        parse_fsync,
        "journal fsync policy: always (every block), interval "
        "(every FSYNC_INTERVAL), never (leave it to the OS)",
        "POLICY",
    ),
    Option(
        "fsync_interval", parse_duration, "how often the journal is synced with fsync=interval", "DURATION"
    ),
    Option(
        "max_frame_bytes",
        parse_size,
        "largest accepted record frame; a larger length header closes that connection",
        "SIZE",
    ),
    Option(
        "assume_timezone",
        parse_timezone,
        "read times written without a zone in this IANA zone: RFC 3164 syslog timestamps, and ISO "
        "8601 times with no offset in JSON lines and HTTP bodies (a time a DST change skips or "
        "repeats is read as PostgreSQL reads it: the later instant); times with an offset are "
        "unaffected",
        "ZONE",
    ),
    Option(
        "shutdown_timeout",
        parse_duration,
        "on SIGTERM/SIGINT, how long to keep shipping to "
        "PostgreSQL before exiting (what is left stays in the journal)",
        "DURATION",
    ),
    Option(
        "retention",
        parse_positive_int,
        "drop the daily partitions of records older than this many days, checked hourly "
        "(whole days, never row by row; rows in the default partition are kept)",
        "DAYS",
    ),
    Option(
        "index_extra",
        _parse_extra_key,
        "index this key of extra (a btree on extra -> KEY) so --extra KEY=V is fast without --since; "
        "repeatable; --index-extra= for none; each costs ingest speed, trace_id ~17%% end to end "
        "(docs/benchmarks.md)",
        "KEY",
        True,
    ),
    Option("stats_interval", parse_duration, "how often a line of counts is logged (0: never)", "DURATION"),
    Option("log_level", str, "debug, info, warning or error", "LEVEL"),
    Option(
        "workers",
        parse_positive_int,
        "worker processes sharing the listeners (SO_REUSEPORT), each with its own journal under "
        "DATA_DIR (worker 0: DATA_DIR itself, worker N: DATA_DIR/workers/N) and its own PostgreSQL "
        "connection, under one supervisor that restarts them and answers /metrics, /healthz and "
        "/readyz for all; about one per core",
        "N",
    ),
)


@dataclass(slots=True)
class Settings:
    listen: list[tuple[str, int] | str] = field(default_factory=lambda: [("127.0.0.1", 5000)])
    listen_tls: list[tuple[str, int]] = field(default_factory=list)
    listen_udp: list[tuple[str, int]] = field(default_factory=list)
    listen_json: list[JsonListen] = field(default_factory=list)
    listen_gelf: list[tuple[str, int]] = field(default_factory=list)
    json_format: str = "auto"
    listen_syslog: list[tuple[str, int]] = field(default_factory=list)
    listen_syslog_udp: list[tuple[str, int]] = field(default_factory=list)
    listen_http: list[JsonListen] = field(default_factory=list)
    listen_otlp: list[tuple[str, int]] = field(default_factory=list)
    # Loopback only by default: the figures are for the operator on this machine (and
    # Prometheus is told to scrape another address on purpose).
    metrics: tuple[str, int] | None = ("127.0.0.1", 5080)
    console_token: str | None = None
    metrics_tls: bool = False
    http_max_body_bytes: int = 16 << 20
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    unix_mode: int = 0o660
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    # Within the default open-file limit of most systems once raised to the hard limit.
    max_connections: int = 10_000
    # Long: a stock SocketHandler loses the record it sends into a connection we closed.
    idle_timeout: float = 3600.0
    frame_timeout: float = 60.0
    dsn: str | None = None
    # A 20,000-record batch commits in well under a second here and a connect takes
    # milliseconds: ten seconds of silence is a hung or unreachable server (pgwait.py).
    pg_timeout: float = 10.0
    data_dir: Path = Path("logsvc-data")
    schema: str = "logsvc"
    batch_max_records: int = 20_000
    batch_max_bytes: int = 16 << 20
    batch_max_age: float = 0.2
    journal_segment_bytes: int = 64 << 20
    journal_max_bytes: int = 1 << 30
    fsync: str = "interval"
    fsync_interval: float = 1.0
    max_frame_bytes: int = 1 << 20
    # What RFC 3164 senders mostly run in, and what the JSON keys of Vector and Fluent Bit
    # write anyway (with a "Z"); a host's local zone would make the same input mean
    # different times on different machines.
    assume_timezone: datetime.tzinfo = datetime.UTC
    shutdown_timeout: float = 10.0
    stats_interval: float = 60.0
    retention: int | None = None  # days; None keeps everything
    # trace_id: the key the seed's clients log, and the one "for trace 17" queries ask for.
    index_extra: list[str] = field(default_factory=lambda: ["trace_id"])
    log_level: str = "info"
    workers: int = 1
    # Set by the --workers supervisor for its workers, not an option: listeners are bound
    # with SO_REUSEPORT so each worker has its own socket on the shared port.
    reuse_port: bool = False


# The options every command that reads the database shares with ``serve``, so ``query``,
# ``tail`` and ``bench`` find the database exactly the way ``serve`` does.
DATABASE_OPTIONS = ("dsn", "data_dir", "schema")


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Add options (all, or those named in ``only``) as flags defaulting to None.

    A None default lets an unset flag fall through to the environment, the file, the default.
    """
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with these settings (env LOGSVC_CONFIG); flags and LOGSVC_* variables override it",
    )
    defaults = Settings()
    for opt in OPTIONS:
        if only is not None and opt.name not in only:
            continue
        flag = "--" + opt.name.replace("_", "-")
        env = "LOGSVC_" + opt.name.upper()
        default = f"{defaults.unix_mode:o}" if opt.name == "unix_mode" else _show(getattr(defaults, opt.name))
        default = default or "none"
        parser.add_argument(
            flag,
            dest=opt.name,
            action="append" if opt.repeatable else "store",
            default=None,
            metavar=opt.metavar or None,
            help=f"{opt.help} (env {env}; default: {default})",
        )


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    if isinstance(value, JsonListen):
        where = _show((value.host, value.port))
        return f"{where}={value.json_format}" if value.json_format else where
    if isinstance(value, tuple):
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(value)


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Merge flags, environment, config file and defaults into Settings (raises ConfigError)."""
    env = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or env.get("LOGSVC_CONFIG")
    if config_path:
        file_values = _read_toml(Path(config_path))
        unknown = file_values.keys() - {opt.name for opt in OPTIONS}
        if unknown:
            raise ConfigError(f"{config_path}: unknown setting(s): {', '.join(sorted(unknown))}")
    settings = Settings()
    for opt in OPTIONS:
        raw: Any = getattr(args, opt.name, None)
        source = "flag"
        if raw is None and "LOGSVC_" + opt.name.upper() in env:
            raw = env["LOGSVC_" + opt.name.upper()]
            source = "env"
            if opt.repeatable:
                raw = [x for x in raw.split(",") if x.strip()]
        if raw is None and opt.name in file_values:
            raw = file_values[opt.name]
            source = "config"
            if opt.repeatable and not isinstance(raw, list):
                raw = [raw]
        if raw is None:
            continue
        try:
            value = [opt.parse(str(x)) for x in raw] if opt.repeatable else opt.parse(str(raw))
        except ConfigError as exc:
            where = {
                "flag": "--" + opt.name.replace("_", "-"),
                "env": "LOGSVC_" + opt.name.upper(),
                "config": f"{config_path}: {opt.name}",
            }[source]
            raise ConfigError(f"{where}: {exc}") from None
        setattr(settings, opt.name, value)
    if (settings.listen_tls or settings.metrics_tls) and (
        settings.tls_cert is None or settings.tls_key is None
    ):
        raise ConfigError("--listen-tls and --metrics-tls need --tls-cert and --tls-key")
    if (settings.tls_cert or settings.tls_key or settings.tls_client_ca) and not (
        settings.listen_tls or settings.metrics_tls
    ):
        raise ConfigError(
            "--tls-cert/--tls-key/--tls-client-ca are given but no --listen-tls address nor --metrics-tls yes"
        )
    if settings.journal_max_bytes < 2 * settings.journal_segment_bytes:
        # The active segment is never deleted, so a cap below two segments could keep the
        # journal "full" forever even with everything shipped.
        raise ConfigError(
            f"journal_max_bytes ({settings.journal_max_bytes}) must be at least twice "
            f"journal_segment_bytes ({settings.journal_segment_bytes})"
        )
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    table = data.get("serve", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [serve] must be a table")
    return {k.replace("-", "_"): v for k, v in table.items()}


def conninfo(settings: Settings) -> str:
    """The PostgreSQL to use: ``settings.dsn``, else the embedded server under the data dir.

    Starts the embedded server if it is not running (it stops again when the last logsvc
    process using it exits).
    """
    if settings.dsn:
        return settings.dsn
    from logsvc import embedded

    return embedded.start(Path(settings.data_dir))
