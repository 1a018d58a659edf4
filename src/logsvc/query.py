"""``logsvc query`` and ``logsvc tail``: read the stored records without writing SQL.

Theory of operation
-------------------
The command line becomes a ``Filters`` value (pure parsing: times, levels, ``--extra``
values), ``Filters`` becomes one parameterized SQL statement (``build_select``,
``build_count``, ``build_stats``; user values only ever travel as parameters, identifiers
only through ``schema.check_identifier``), and the rows are printed by a ``Printer`` in one
of three formats. Everything up to the SQL string is pure and tested without a database.

Each filter maps to a predicate an index of ``store.schema.INDEXES`` can serve::

    --since/--until T    created >= T / created < T     partition pruning, btree on created
    --level L            levelno >= L
    --logger NAME        logger = NAME OR logger LIKE 'NAME.%'   (NAME's LIKE metacharacters escaped)
    --grep TEXT          message ILIKE '%TEXT%'
    --regex RE           message ~* RE                  (case-insensitive, PostgreSQL ARE syntax)
    --host IP            peer LIKE 'IP:%'  (IPv6: '[IP]:%'); peer is the sender's "ip:port"
    --pid N              process = N
    --extra K=V          extra -> 'K' = V AND extra @> '{"K": V}'   btree on (extra -> 'trace_id')

``tail -f`` follows by ``stored`` (the insert time PostgreSQL stamps on every row): it
LISTENs on ``schema.notify_channel``, which every committed batch notifies in its own
transaction, and after each wake-up (or every ``--poll-interval`` seconds at the latest, so
a lost notification or an older logsvc that does not notify cannot stall it) it selects
the rows stored since ``FOLLOW_OVERLAP_S`` before the newest it has seen, printing those it
has not printed yet. The overlap catches rows of a batch that was stamped before, but
committed after, the previous look (several services shipping into one schema).

This module must not be imported by ``serve``: it blocks on its connection.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import functools
import ipaddress
import json
import math
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import IO, Any, TypeAlias

import orjson
import psycopg

from logsvc import config
from logsvc.errors import ConfigError, LogsvcError
from logsvc.store import pgproto
from logsvc.store import schema as _schema
from logsvc.store.copyfmt import COLUMN_NAMES

# Every stored field, in table order: what json and csv print.
FIELDS: tuple[str, ...] = (*COLUMN_NAMES, "stored")
_TIME_FIELDS = frozenset({"created", "received", "stored"})

DEFAULT_LIMIT = 100
DEFAULT_TAIL_LINES = 10
# tail -f looks again at least this often even without a notification.
DEFAULT_POLL_S = 2.0
MAX_POLL_S = 60.0
# How far before the newest stored time seen a follow query starts: covers a batch stamped
# before, and committed after, the previous query (batches of several services overlapping).
FOLLOW_OVERLAP_S = 2.0
# Newest-first queries with --since look at the newest hour first and widen by this factor
# until the limit is met (see plan_windows).
FIRST_WINDOW = _dt.timedelta(hours=1)
WINDOW_GROWTH = 4

# Times come back in UTC: json and csv print them with +00:00, text converts to local.
# No JIT: these queries run for milliseconds, and an estimate above jit_above_cost (easy
# on a big partitioned table) would spend ~200 ms compiling (measured: 1 ms query, 196 ms JIT).
SESSION_OPTIONS = "-c TimeZone=UTC -c jit=off"

LEVELS: dict[str, int] = {
    "NOTSET": 0,
    "DEBUG": 10,
    "INFO": 20,
    "WARN": 30,
    "WARNING": 30,
    "ERROR": 40,
    "FATAL": 50,
    "CRITICAL": 50,
}
_LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}

JSONValue: TypeAlias = bool | int | float | str | None
Params: TypeAlias = list[Any]

# -- parsing (pure) ----------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: _dt.datetime) -> _dt.datetime:
    """A point in time from ``--since``/``--until``: relative (``15m``) or ISO 8601.

    Relative times count back from ``now``: ``30s``, ``15m``, ``2h``, ``7d``, ``1w``
    (fractions allowed: ``1.5h``). ISO times (``2026-01-20``, ``2026-01-20T10:00``,
    ``2026-01-20 10:00:00+02:00``, ``...Z``) without an offset are local time, the way a
    person reads a clock; set ``TZ=UTC`` to mean UTC.

    Args:
        text: what the user typed.
        now: an aware datetime, the moment relative times count back from.

    Returns:
        An aware datetime.

    Raises:
        ConfigError: the text is neither form.
    """
    m = _RELATIVE.match(text)
    if m:
        seconds = float(m.group(1)) * _UNIT_S[m.group(2).lower()]
        try:
            return now - _dt.timedelta(seconds=seconds)
        except OverflowError:
            raise ConfigError(f"time {text!r} is too far back") from None
    s = text.strip()
    if s[-1:] in ("z", "Z"):
        s = s[:-1] + "+00:00"
    try:
        t = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise ConfigError(
            f"cannot parse time {text!r}: use a relative time (30s, 15m, 2h, 7d, 1w) "
            "or ISO 8601 (2026-01-20, 2026-01-20T10:00, 2026-01-20T10:00:00+02:00)"
        ) from None
    try:
        if t.tzinfo is None:
            t = t.astimezone()  # local time, as the clock on the wall says
        t.astimezone(_dt.UTC)  # representable in UTC too (what PostgreSQL is sent)
    except (ValueError, OverflowError):
        raise ConfigError(f"time {text!r} is out of range (years 1 to 9999)") from None
    return t


def parse_level(text: str) -> int:
    """A minimum level by name (``error``, ``WARNING``, ``warn``) or number (``35``)."""
    s = text.strip()
    if s.isdigit():
        return int(s)
    try:
        return LEVELS[s.upper()]
    except KeyError:
        raise ConfigError(
            f"unknown level {text!r}: use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number"
        ) from None


_INT = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


def parse_extra(text: str) -> tuple[str, JSONValue]:
    """``KEY=VALUE`` from ``--extra``, the value typed the way JSON would hold it.

    ``17`` is an integer, ``1.5`` and ``1e3`` floats, ``true``/``false`` booleans, ``null``
    null; anything else is a string. A value in double quotes is always a string
    (``id="17"`` matches the string "17", not the number). The key is everything before the
    first ``=`` and is matched literally (no nesting).

    Raises:
        ConfigError: no ``=``, or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--extra {text!r} must be KEY=VALUE, for example trace_id=17")
    key = key.strip()
    value: JSONValue
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        value = raw[1:-1]
    elif _INT.match(raw):
        value = int(raw)
    elif _FLOAT.match(raw) and math.isfinite(float(raw)):
        value = float(raw)
    elif raw in ("true", "false"):
        value = raw == "true"
    elif raw == "null":
        value = None
    else:
        value = raw
    return key, value


def _like_escape(text: str) -> str:
    # LIKE's default escape character is the backslash.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def host_patterns(addresses: Iterable[str]) -> list[str]:
    """LIKE patterns matching ``peer`` ("ip:port", IPv6 as "[ip]:port") for these IPs."""
    out = []
    for a in addresses:
        ip = ipaddress.ip_address(a)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # an IPv4 client of a dual-stack listener
        shown = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
        out.append(_like_escape(shown) + ":%")
    return out


# -- filters -> SQL (pure) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """What to select; every field optional, all of them combine with AND."""

    since: _dt.datetime | None = None
    until: _dt.datetime | None = None
    level: int | None = None
    loggers: tuple[str, ...] = ()  # any of them (OR), each a name or a prefix of names
    grep: str | None = None
    regex: str | None = None
    hosts: tuple[str, ...] = ()  # LIKE patterns from host_patterns(), any of them
    pid: int | None = None
    extra: tuple[tuple[str, JSONValue], ...] = ()

    def where(self) -> tuple[str, Params]:
        """The WHERE clause (``TRUE`` when nothing is filtered) and its parameters."""
        parts: list[str] = []
        params: Params = []
        if self.since is not None:
            parts.append("created >= %s")
            params.append(self.since)
        if self.until is not None:
            parts.append("created < %s")
            params.append(self.until)
        if self.level is not None:
            parts.append("levelno >= %s")
            params.append(self.level)
        if self.loggers:
            ors = []
            for name in self.loggers:
                ors.append("logger = %s OR logger LIKE %s")
                params += [name, _like_escape(name) + ".%"]
            parts.append("(" + " OR ".join(ors) + ")")
        if self.grep is not None:
            parts.append("message ILIKE %s")
            params.append("%" + _like_escape(self.grep) + "%")
        if self.regex is not None:
            parts.append("message ~* %s")
            params.append(self.regex)
        if self.hosts:
            parts.append("(" + " OR ".join(["peer LIKE %s"] * len(self.hosts)) + ")")
            params += list(self.hosts)
        if self.pid is not None:
            parts.append("process = %s")
            params.append(self.pid)
        for key, value in self.extra:
            # Equality of the key's value serves an expression index on (extra -> 'key')
            # (schema.INDEXES has one for trace_id); the containment, equal in meaning for
            # scalars, serves a GIN index on extra if an operator adds one. JSON numbers
            # compare by value: 17 matches 17.0, never the string "17".
            parts.append("extra -> %s = %s::jsonb AND extra @> %s::jsonb")
            # json, not orjson: a number past 64 bits is still a JSON (and jsonb) number.
            params += [key, _json(value), _json({key: value})]
        return (" AND ".join(parts) or "TRUE"), params


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def build_select(
    schema: str, f: Filters, *, limit: int | None, oldest_first: bool = False
) -> tuple[str, Params]:
    """SELECT every field of the matching records, newest first (or oldest first)."""
    s = _schema.check_identifier(schema)
    where, params = f.where()
    order = "ASC" if oldest_first else "DESC"
    sql = f"SELECT {', '.join(FIELDS)} FROM {s}.records WHERE {where} ORDER BY created {order}, seq {order}"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    return sql, params


def plan_windows(
    since: _dt.datetime, until: _dt.datetime | None, now: _dt.datetime
) -> list[tuple[_dt.datetime, _dt.datetime | None]]:
    """Split ``[since, until)`` into disjoint ranges, newest first, growing 4x each.

    ``--logger app.db --since 1d`` newest first would read the whole day (every row of it,
    through the BRIN index) to keep the newest 100. Asking the newest hour first, then the
    3 hours before it, then 12, ... stops as soon as the limit is met: a common logger costs
    one small range, a rare one at most about 4/3 of the single query. The first range is
    open above when ``until`` is None, so rows from clients with clocks ahead are not lost.
    """
    edge = until if until is not None else now
    out: list[tuple[_dt.datetime, _dt.datetime | None]] = []
    hi, span = until, FIRST_WINDOW
    while edge - span > since:
        out.append((edge - span, hi))
        hi, span = edge - span, span * WINDOW_GROWTH
    out.append((since, hi))
    return out


def build_follow(schema: str, f: Filters, after: _dt.datetime) -> tuple[str, Params]:
    """SELECT the matching records stored after ``after``, in the order they were stored."""
    s = _schema.check_identifier(schema)
    where, params = f.where()
    sql = f"SELECT {', '.join(FIELDS)} FROM {s}.records WHERE stored > %s AND {where} ORDER BY stored, seq"
    return sql, [after, *params]


def build_count(schema: str, f: Filters) -> tuple[str, Params]:
    s = _schema.check_identifier(schema)
    where, params = f.where()
    return f"SELECT count(*) FROM {s}.records WHERE {where}", params


def build_stats(schema: str, f: Filters, by_logger: bool) -> tuple[str, Params]:
    """Counts by level (and logger): rows of ``(logger or NULL, levelno, count)``."""
    s = _schema.check_identifier(schema)
    where, params = f.where()
    key = "logger" if by_logger else "NULL::text"
    sql = (
        f"SELECT {key} AS logger, levelno, count(*) FROM {s}.records WHERE {where} "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return sql, params


# -- output ----------------------------------------------------------------------------------

_COLOURS = {10: "\x1b[2m", 30: "\x1b[33m", 40: "\x1b[31m", 50: "\x1b[1;31m"}
_RESET = "\x1b[0m"


def level_name(levelno: int | None, levelname: str | None = None) -> str:
    if levelname:
        return levelname
    if levelno is None:
        return "-"
    return _LEVEL_NAMES.get(levelno, f"Level {levelno}")


def use_colour(mode: str, stream: IO[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    """``auto``: only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return bool(stream.isatty()) and not environ.get("NO_COLOR")


def _iso(v: _dt.datetime | None) -> str | None:
    return None if v is None else v.isoformat()


class Printer:
    """Write records as ``text``, ``json`` (one object per line) or ``csv`` (header first)."""

    def __init__(self, fmt: str, out: IO[str], colour: bool = False) -> None:
        self.fmt = fmt
        self.out = out
        self.colour = colour
        self._csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        self._header_done = False

    def records(self, rows: Iterable[Sequence[Any]]) -> int:
        n = 0
        for row in rows:
            rec = dict(zip(FIELDS, row, strict=True))
            if self.fmt == "json":
                self.out.write(json_line(rec))
            elif self._csv is not None:
                if not self._header_done:
                    self._csv.writerow(FIELDS)
                    self._header_done = True
                self._csv.writerow(csv_row(rec))
            else:
                self.out.write(text_line(rec, self.colour))
            n += 1
        self.out.flush()
        return n


def json_line(rec: dict[str, Any]) -> str:
    """One JSON object with every stored field; times ISO 8601 with their offset."""
    obj = {k: (_iso(v) if k in _TIME_FIELDS else v) for k, v in rec.items()}
    return orjson.dumps(obj).decode() + "\n"


def csv_row(rec: dict[str, Any]) -> list[str]:
    out = []
    for k in FIELDS:
        v = rec[k]
        if v is None:
            out.append("")
        elif k in _TIME_FIELDS:
            out.append(v.isoformat())
        elif k == "extra":
            out.append(orjson.dumps(v).decode())
        else:
            out.append(str(v))
    return out


def text_line(rec: dict[str, Any], colour: bool) -> str:
    """Like a logging line: local time, level, logger, message, then extra and traceback."""
    t: _dt.datetime = rec["created"].astimezone()
    stamp = t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"
    level = level_name(rec["levelno"], rec["levelname"])
    shown = f"{level:<8}"
    if colour:
        code = _COLOURS.get(_level_bucket(rec["levelno"]))
        if code:
            shown = f"{code}{shown}{_RESET}"
    line = f"{stamp} {shown} {rec['logger'] or '-'}: {rec['message'] or ''}"
    if rec["extra"]:
        line += "  " + orjson.dumps(rec["extra"], option=orjson.OPT_SORT_KEYS).decode()
    for extra_text in (rec["exc_text"], rec["stack_info"]):
        if extra_text:
            line += "\n" + extra_text.rstrip("\n")
    return line + "\n"


def _level_bucket(levelno: int | None) -> int:
    if levelno is None:
        return 0
    for bound in (50, 40, 30):
        if levelno >= bound:
            return bound
    return 10 if levelno <= 10 else 20


def print_stats(
    rows: Sequence[tuple[str | None, int | None, int]], by_logger: bool, fmt: str, out: IO[str]
) -> None:
    """Counts by level, or a logger x level table with ``--by logger``, with totals."""
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow((["logger"] if by_logger else []) + ["level", "levelno", "count"])
        for logger, levelno, count in rows:
            cells = [level_name(levelno), "" if levelno is None else str(levelno), str(count)]
            w.writerow(([logger or ""] if by_logger else []) + cells)
        return
    if fmt == "json":
        for logger, levelno, count in rows:
            obj: dict[str, Any] = {"logger": logger} if by_logger else {}
            obj.update(level=level_name(levelno), levelno=levelno, count=count)
            out.write(orjson.dumps(obj).decode() + "\n")
        return
    levels = sorted({lv for _, lv, _ in rows}, key=lambda v: -1 if v is None else v)
    total = sum(c for _, _, c in rows)
    if not by_logger:
        width = max([5, *(len(level_name(lv)) for lv in levels)])
        out.write(f"{'level':<{width}} {'count':>12}\n")
        for lv in levels:
            out.write(f"{level_name(lv):<{width}} {sum(c for _, v, c in rows if v == lv):>12}\n")
        out.write(f"{'total':<{width}} {total:>12}\n")
        return
    table: dict[str, dict[int | None, int]] = {}
    for logger, lv, count in rows:
        table.setdefault(logger or "-", {})[lv] = count
    width = max([6, *(len(name) for name in table)])
    names = [level_name(lv) for lv in levels]
    cols = [max(8, len(n)) for n in names]
    out.write(f"{'logger':<{width}}" + "".join(f" {n:>{w}}" for n, w in zip(names, cols, strict=True)))
    out.write(f" {'total':>10}\n")
    for name in sorted(table):
        counts = table[name]
        row_cells = "".join(f" {counts.get(lv, 0):>{w}}" for lv, w in zip(levels, cols, strict=True))
        out.write(f"{name:<{width}}{row_cells} {sum(counts.values()):>10}\n")
    sums = "".join(
        f" {sum(c for _, v, c in rows if v == lv):>{w}}" for lv, w in zip(levels, cols, strict=True)
    )
    out.write(f"{'total':<{width}}{sums} {total:>10}\n")


# -- the command line ------------------------------------------------------------------------


def _add_filter_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (all combine with AND)")
    g.add_argument("--since", metavar="TIME", help="from this time: 15m, 2h, 7d, 1w ago, or ISO 8601")
    g.add_argument("--until", metavar="TIME", help="before this time (same forms as --since)")
    g.add_argument("--level", metavar="LEVEL", help="this level and above: DEBUG ... CRITICAL, or a number")
    g.add_argument(
        "--logger",
        metavar="NAME",
        action="append",
        help="this logger and its children (app.db matches app.db.pool); repeatable, any of them",
    )
    g.add_argument("--grep", metavar="TEXT", help="message contains TEXT, case-insensitive")
    g.add_argument(
        "--regex",
        metavar="RE",
        help="message matches this PostgreSQL regular expression, case-insensitive (~*)",
    )
    g.add_argument(
        "--host",
        metavar="HOST",
        action="append",
        help="sent from this address (the IP part of the stored peer; a name is resolved); repeatable",
    )
    g.add_argument("--pid", metavar="N", help="sent by this process id")
    g.add_argument(
        "--extra",
        metavar="KEY=VALUE",
        action="append",
        help="extra field KEY equals VALUE, typed: 17 is a number, true/false/null, "
        '"17" a string; repeatable, all of them',
    )
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=("text", "json", "csv"), default="text", help="default: text")
    o.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the level in text output; auto: on a terminal, unless NO_COLOR is set",
    )
    config.add_arguments(p, only=config.DATABASE_OPTIONS)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``query`` and ``tail`` subcommands."""
    q = sub.add_parser(
        "query",
        help="find stored records by time, level, logger, text, host, pid and extra fields",
        description="Print the records matching every filter given, newest first. Finds the database "
        "the way serve does (--dsn, LOGSVC_DSN, the config file, or the embedded PostgreSQL under "
        "--data-dir). Example: logsvc query --level ERROR --since 1h --logger app --extra trace_id=17",
    )
    _add_filter_arguments(q)
    q.add_argument("--limit", metavar="N", default=str(DEFAULT_LIMIT), help="at most N records; 0: all")
    q.add_argument("--reverse", action="store_true", help="oldest first (the first N of the range)")
    what = q.add_mutually_exclusive_group()
    what.add_argument("--count", action="store_true", help="print only the number of matching records")
    what.add_argument("--stats", action="store_true", help="print counts by level for the matching records")
    q.add_argument("--by", choices=("level", "logger"), default="level", help="with --stats: by logger too")
    q.set_defaults(func=_query)

    t = sub.add_parser(
        "tail",
        help="print the last records, and with -f follow new ones as they are stored",
        description="Print the last N matching records, oldest first; with -f keep printing new ones "
        "within about a second of their commit until interrupted (Ctrl-C exits 0).",
    )
    _add_filter_arguments(t)
    t.add_argument("-n", "--lines", metavar="N", default=str(DEFAULT_TAIL_LINES), help="default: 10")
    t.add_argument("-f", "--follow", action="store_true", help="follow new records as they are committed")
    t.add_argument(
        "--poll-interval",
        metavar="SECONDS",
        default=str(DEFAULT_POLL_S),
        help="with -f, look for new records at least this often even without a notification "
        f"(default: {DEFAULT_POLL_S:g})",
    )
    t.set_defaults(func=_tail)


def _int_arg(flag: str, text: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{flag} must be at least {minimum}")
    return value


def filters_from_args(
    args: argparse.Namespace,
    now: _dt.datetime,
    resolve: Callable[[str], list[str]] | None = None,
) -> Filters:
    """Parse the filter flags (pure, given ``now`` and a host resolver).

    Raises:
        ConfigError: with a message naming the flag, for any malformed value.
    """

    def t(flag: str, text: str | None) -> _dt.datetime | None:
        if text is None:
            return None
        try:
            return parse_time(text, now)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None

    since, until = t("--since", args.since), t("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise ConfigError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    level = None
    if args.level is not None:
        try:
            level = parse_level(args.level)
        except ConfigError as exc:
            raise ConfigError(f"--level: {exc}") from None
    hosts: list[str] = []
    for h in args.host or ():
        hosts += host_patterns((resolve or _resolve_host)(h))
    for name in args.logger or ():
        if not name:
            raise ConfigError("--logger must not be empty")
    return Filters(
        since=since,
        until=until,
        level=level,
        loggers=tuple(args.logger or ()),
        grep=args.grep,
        regex=args.regex,
        hosts=tuple(hosts),
        pid=None if args.pid is None else _int_arg("--pid", args.pid),
        extra=tuple(parse_extra(x) for x in args.extra or ()),
    )


def _resolve_host(host: str) -> list[str]:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [host.strip("[]")]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host!r}: not an IP address, and it does not resolve ({exc})") from None
    return sorted({str(info[4][0]) for info in infos})


def _connect(args: argparse.Namespace) -> tuple[psycopg.Connection[Any], str]:
    settings = config.resolve(args)
    dsn = config.conninfo(settings)
    try:
        # connect_timeout and keepalives (unless the DSN sets them): a hung server makes the
        # command fail after --pg-timeout instead of waiting for ever.
        dsn = pgproto.conninfo_with_timeouts(dsn, settings.pg_timeout)
        conn = psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS)
    except psycopg.Error as exc:
        raise LogsvcError(f"cannot connect to PostgreSQL: {_one_line(exc)}") from None
    s = settings.schema
    found = conn.execute("SELECT to_regclass(%s)", [f"{_schema.check_identifier(s)}.records"]).fetchone()
    if found is None or found[0] is None:
        conn.close()
        raise ConfigError(f"schema {s!r} has no records table: has logsvc serve run with --schema {s}?")
    return conn, s


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _execute(conn: psycopg.Connection[Any], sql: str, params: Params) -> list[tuple[Any, ...]]:
    """Run a query; a bad --regex is the user's error (exit 2), anything else exits 1."""
    try:
        return conn.execute(sql, params).fetchall()
    except psycopg.errors.InvalidRegularExpression as exc:
        raise ConfigError(f"--regex: {_one_line(exc)}") from None
    except psycopg.Error as exc:
        raise LogsvcError(f"query failed: {_one_line(exc)}") from None


# SIGTERM and SIGHUP (the terminal closed) end query and tail through the normal exit path, as
# Ctrl-C does: their default action skips atexit, which is where an embedded PostgreSQL this
# process started is stopped (embedded.py, "Who stops it").
_EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _exits_on_signals(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` with SIGTERM/SIGHUP raising ``SystemExit(128 + signum)``."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            before = {s: signal.signal(s, _raise) for s in _EXIT_SIGNALS}
        except ValueError:  # not the main thread: leave the handlers alone
            return command(args)
        try:
            return command(args)
        finally:
            for s, handler in before.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    return run


@_exits_on_signals
def _query(args: argparse.Namespace) -> int:
    now = _dt.datetime.now(_dt.UTC)
    f = filters_from_args(args, now)
    limit = _int_arg("--limit", args.limit)
    if args.by == "logger" and not args.stats:
        raise ConfigError("--by logger needs --stats")
    conn, s = _connect(args)
    with conn, _quiet_pipe():
        if args.count:
            rows = _execute(conn, *build_count(s, f))
            sys.stdout.write(f"{rows[0][0]}\n")
        elif args.stats:
            rows = _execute(conn, *build_stats(s, f, args.by == "logger"))
            print_stats(rows, args.by == "logger", args.format, sys.stdout)
        else:
            printer = Printer(args.format, sys.stdout, use_colour(args.color, sys.stdout, os.environ))
            printer.records(select(conn, s, f, limit or None, args.reverse, now))
        sys.stdout.flush()
    return 0


def select(
    conn: psycopg.Connection[Any],
    schema: str,
    f: Filters,
    limit: int | None,
    oldest_first: bool,
    now: _dt.datetime,
) -> list[tuple[Any, ...]]:
    """The matching records, newest (or oldest) first; by widening ranges where that helps."""
    if oldest_first or limit is None or f.since is None or f.extra:
        # --extra is served by its own index over all days: one query is cheapest.
        return _execute(conn, *build_select(schema, f, limit=limit, oldest_first=oldest_first))
    rows: list[tuple[Any, ...]] = []
    for lo, hi in plan_windows(f.since, f.until, now):
        part = replace(f, since=lo, until=hi)
        rows += _execute(conn, *build_select(schema, part, limit=limit - len(rows)))
        if len(rows) >= limit:
            break
    return rows


@_exits_on_signals
def _tail(args: argparse.Namespace) -> int:
    now = _dt.datetime.now(_dt.UTC)
    f = filters_from_args(args, now)
    lines = _int_arg("--lines", args.lines)
    try:
        poll = float(args.poll_interval)
    except ValueError:
        raise ConfigError(f"--poll-interval {args.poll_interval!r} is not a number of seconds") from None
    if not 0.05 <= poll <= MAX_POLL_S:
        raise ConfigError(f"--poll-interval must be between 0.05 and {MAX_POLL_S:g} seconds")
    conn, s = _connect(args)
    printer = Printer(args.format, sys.stdout, use_colour(args.color, sys.stdout, os.environ))
    try:
        with conn, _quiet_pipe():
            if args.follow:
                # LISTEN first: a batch committed between the first look and LISTEN would
                # otherwise wait for the fallback poll.
                conn.execute(f"LISTEN {_schema.notify_channel(s)}")
            follower = Follower(conn, s, f)
            printer.records(follower.start(lines))
            if not args.follow:
                return 0
            print(
                f"logsvc: following new records in {s}.records (Ctrl-C to stop)", file=sys.stderr, flush=True
            )
            while True:
                # Wake at a notification or after the poll interval, whichever comes first;
                # notifications that piled up meanwhile are taken too (timeout 0 means one
                # look at the socket), so a burst of batches costs one query, not one each.
                # Each generator is run to its end: a suspended one would keep the
                # connection's lock.
                if sum(1 for _ in conn.notifies(timeout=poll, stop_after=1)):
                    for _ in conn.notifies(timeout=0):
                        pass
                printer.records(follower.more())
    except KeyboardInterrupt:
        return 0
    return 0  # stdout was closed (_quiet_pipe)


class Follower:
    """The rows ``tail -f`` has yet to print, by stored time, each printed once."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str, f: Filters) -> None:
        self._conn = conn
        self._schema = schema
        self._filters = f
        self._cursor: _dt.datetime | None = None  # newest stored time seen
        self._seen: dict[tuple[Any, ...], _dt.datetime] = {}  # key -> stored, within the overlap

    def start(self, lines: int) -> list[tuple[Any, ...]]:
        """The last ``lines`` records, oldest first; marks what the follow must not repeat.

        The last lines and the keys of the records stored in the overlap window are read in
        one snapshot, so a record is printed either now or by a later ``more``, not both.
        """
        conn = self._conn
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute("SELECT statement_timestamp()").fetchone()
            assert row is not None
            self._cursor = row[0]
            last: list[tuple[Any, ...]] = []
            if lines:
                now = _dt.datetime.now(_dt.UTC)
                last = select(conn, self._schema, self._filters, lines, False, now)
            assert self._cursor is not None
            overlap = self._cursor - _dt.timedelta(seconds=FOLLOW_OVERLAP_S)
            self._remember(_execute(conn, *build_follow(self._schema, self._filters, overlap)))
        last.reverse()
        return last

    def more(self) -> list[tuple[Any, ...]]:
        """Records stored since the last look that have not been printed."""
        assert self._cursor is not None
        after = self._cursor - _dt.timedelta(seconds=FOLLOW_OVERLAP_S)
        return self._remember(_execute(self._conn, *build_follow(self._schema, self._filters, after)))

    def _remember(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        fresh = []
        for row in rows:
            rec = dict(zip(FIELDS, row, strict=True))
            key = (rec["stored"], rec["seq"], rec["peer"], rec["created"])
            if key in self._seen:
                continue
            self._seen[key] = rec["stored"]
            fresh.append(row)
            if self._cursor is None or rec["stored"] > self._cursor:
                self._cursor = rec["stored"]
        assert self._cursor is not None
        horizon = self._cursor - _dt.timedelta(seconds=FOLLOW_OVERLAP_S)
        for key in [k for k, stored in self._seen.items() if stored <= horizon]:
            del self._seen[key]
        return fresh


class _quiet_pipe:
    """``logsvc query | head``: a closed stdout ends the command quietly, status 0.

    As the Python docs advise (signal module, "Note on SIGPIPE"): point stdout at devnull
    so the interpreter's final flush does not raise again.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is not None and issubclass(exc_type, BrokenPipeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return True
        return False


__all__ = [
    "FIELDS",
    "Filters",
    "Follower",
    "Printer",
    "add_parsers",
    "build_count",
    "build_follow",
    "build_select",
    "build_stats",
    "filters_from_args",
    "parse_extra",
    "parse_level",
    "parse_time",
    "plan_windows",
    "print_stats",
    "select",
]
