"""JsonFormat: one JSON object (one line of JSON lines) -> one ``RecordDict``.

Sans-IO: bytes in, a record dict or ``RecordRejected`` out. No clock: a record without a time
gets no ``created`` key and the store's encoder uses the receive time. No configuration: the
zone for times written without one is the constructor's ``tz`` (``--assume-timezone``).

Theory of operation. A record is shaped like ``logging.LogRecord.__dict__`` (``logsvc.record``).
JSON senders use the stdlib names (python-json-logger) or their own; we keep the object as it
is (orjson builds it) and only rename the handful of keys people use for the columns, so any
other key goes through and ends up in the ``extra`` jsonb column. The table, first match wins
within a row, and a LogRecord name, when present, always beats its aliases::

    column      LogRecord name     aliases                                  value
    created     created            @timestamp, timestamp, time, ts, date,   ISO 8601 / epoch
                                   asctime (only the stdlib's default form)
    levelno     levelno            level (also from levelname)              std logging numbers
    levelname   levelname          level                                    canonical name
    logger      name               logger, logger_name                      str
    message     msg                message, log                             any
    process     process            pid                                      int
    exc_text    exc_text           exc_info, stack                          str
    extra       hostname           host                                     str

- Times: ISO 8601 / RFC 3339 (``datetime.fromisoformat``: ``Z``, offsets, a space for ``T``,
  nanoseconds cut to microseconds; no zone means the format's ``tz``, UTC unless the server
  was given ``--assume-timezone``; a time a DST change skips or repeats is read as
  ``wire.localtime`` says, PostgreSQL's way), or epoch seconds as a number or a
  numeric string. An epoch too large to be seconds is taken as milliseconds (> 1e11, i.e. past
  the year 5138), microseconds (> 1e14) or nanoseconds (> 1e17). ``date`` is Fluent Bit's
  default ``json_date_key``.
- Levels: names are case-insensitive (``trace`` 5, ``debug`` 10, ``info``/``notice`` 20,
  ``warn``/``warning`` 30, ``error``/``err`` 40, ``critical``/``crit``/``fatal``/``alert``/
  ``emerg``/``panic`` 50); a number (or numeric string) is a stdlib level number (pino's and
  bunyan's numbers are read on their own scale by their shapes, below); an unknown name is
  kept as ``levelname`` with no ``levelno``.
- ``message`` is a LogRecord attribute the encoder never stores, so it is always consumed: it
  becomes ``msg``, or, if ``msg`` is there too and differs, the extra key ``_message``.
  ``log`` (Fluent Bit's tail and docker inputs) and ``exc_info`` (python-json-logger's
  traceback text) are used only when they are strings.
- An alias whose value cannot be used (a time that does not parse, a ``host`` object) is left
  under its own key, i.e. in ``extra``: nothing the sender wrote is dropped.
- ``stack`` (winston's ``format.errors({stack: true})``), when a string and no ``exc_text``
  is sent, is the traceback. ``asctime`` (python-json-logger's ``%(asctime)s``, the stdlib's
  default ``2024-05-01 12:00:00,123``) is the time, in the format's ``tz``, when no other time
  is sent.
- LogRecord names the store has no column for (``asctime``, ``filename``, ``msecs``,
  ``relativeCreated``, ``taskName``, ``args``, an ``exc_info`` that is not text) would be
  dropped by the encoder, which keeps only non-LogRecord keys in ``extra``; from a JSON sender
  they are kept under ``_<name>`` (``_filename``), as ``message`` is kept as ``_message``.

Library shapes. Some libraries write their own vocabulary, which the table above would misread
(pino's ``"level":30`` is its info). Each has a signature no plain line carries; ``shape``
``"auto"`` (the default) looks for it, in this order, and a named shape skips the detection:

    shape      signature                                  mapped first (then the table above)
    gelf       "version" and "short_message"              short_message -> msg, full_message ->
                                                          exc_text, level: syslog severity,
                                                          timestamp, host -> hostname, facility
                                                          -> logger (unless _logger), file/line,
                                                          "_x" fields -> "x" (graypy's _pid,
                                                          _function, _thread_name, ... -> columns)
    loguru     "record" object beside "text"              record.time.timestamp, record.level.no/
                                                          name, message, name, file.path, line,
                                                          function, module, process/thread id+name;
                                                          record.extra -> top-level keys; the
                                                          traceback part of text -> exc_text
    bunyan     "v": 0 with a numeric "level"              level on the pino/bunyan scale, msg,
                                                          name, time, pid, err.stack -> exc_text
    ecs        "ecs.version", "log.level" (dotted or      @timestamp, log.level, log.logger,
               nested), or an "ecs" object                log.origin.file.line/function,
                                                          process.pid/name/thread.id/name,
                                                          error.stack_trace (+ error.type:
                                                          error.message) -> exc_text
    pino       numeric "level" and epoch-ms "time"        level on the pino scale (10 trace, 20
                                                          debug, 30 info, 40 warn, 50 error, 60
                                                          fatal), time in ms, err.stack -> exc_text
    structlog  "event" with no msg/message                event -> msg, exception -> exc_text,
                                                          stack -> stack_info
    plain      anything else                              the table above only

Keys a shape reads are consumed; whatever it does not read (``hostname``, ``v``, pino's
``err.type``, ECS's ``log.original``, loguru's ``elapsed``) stays, in ``extra``. Two renderings
are not kept because every piece of them is: loguru's ``text`` when it holds no traceback, and
its ``time.repr``/``level.icon``/``file.name``. A nested object whose key is a column
(ECS's ``process``) has its unread rest kept as dotted keys (``process.executable``).

Hostile values. orjson refuses nesting deeper than 1024, invalid UTF-8, lone surrogates and
numbers that overflow a double. We retry such a line once, leniently (invalid UTF-8 replaced
by U+FFFD, then the stdlib ``json``, which accepts lone surrogates and 1e400), so a record is
lost only if it is not JSON at all. What reaches the store's encoder must not crash it: it
calls ``str()``/``repr()`` on standard fields of the wrong type, and ``repr`` of a list nested
~1000 deep raises ``RecursionError``, so a list or dict in a standard text field (or in
``created``) is replaced here by its compact JSON text (``"<too large: list>"`` if orjson
cannot write it). Extra keys need nothing: the encoder sanitizes them with a depth cap.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import orjson

from logsvc.errors import RecordRejected
from logsvc.record import STANDARD_ATTRS, RecordDict
from logsvc.wire.localtime import local_epoch

__all__ = ["LEVELS", "SHAPES", "JsonFormat", "epoch_of", "level_of"]

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError
_fromisoformat = _dt.datetime.fromisoformat
_UTC = _dt.UTC

# Years datetime and PostgreSQL timestamptz both hold, 1..9999 (as store/copyfmt.py).
_MIN_EPOCH = -62135596800.0
_MAX_EPOCH = 253402300799.0
_INT32 = 1 << 31
_INT64 = 1 << 63

# Level names, lower case -> (levelno, levelname). The stdlib has no TRACE; 5 is the usual
# choice (loguru, structlog's add_log_level_number).
_CRITICAL = (50, "CRITICAL")
LEVELS: dict[str, tuple[int, str]] = {
    "trace": (5, "TRACE"),
    "debug": (10, "DEBUG"),
    "info": (20, "INFO"),
    "notice": (20, "INFO"),
    "warn": (30, "WARNING"),
    "warning": (30, "WARNING"),
    "error": (40, "ERROR"),
    "err": (40, "ERROR"),
    "critical": _CRITICAL,
    "crit": _CRITICAL,
    "fatal": _CRITICAL,
    "alert": _CRITICAL,
    "emerg": _CRITICAL,
    "emergency": _CRITICAL,
    "panic": _CRITICAL,
}
# The hot case: the exact spellings senders use, without a .lower() call.
_LEVELS_EXACT = {**LEVELS, **{k.upper(): v for k, v in LEVELS.items()}}
# logging.getLevelName for the standard numbers ("Level N" otherwise).
_LEVEL_NAMES = {0: "NOTSET", 5: "TRACE", 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}

_TIME_ALIASES = ("@timestamp", "timestamp", "time", "ts", "date")
# Standard fields the encoder turns into text with str() (or repr(), for a bad created).
_TEXT_FIELDS = frozenset(
    {
        "created",
        "levelname",
        "name",
        "msg",
        "message",
        "pathname",
        "funcName",
        "module",
        "processName",
        "threadName",
        "exc_text",
        "exc_info",
        "stack_info",
    }
)
# LogRecord names with no column: the encoder drops them (record.STANDARD_ATTRS), so a JSON
# sender's are renamed to "_<name>". "message" is not here: it is always consumed as msg.
_UNSTORED = frozenset({"args", "asctime", "exc_info", "filename", "msecs", "relativeCreated", "taskName"})
# Keys whose presence sends a line in "auto" to _detect (pino's numeric level is checked apart).
_SIGNATURE_KEYS = frozenset(
    {"short_message", "record", "v", "ecs.version", "log.level", "ecs", "log", "event"}
)
# Every key parse() looks at; a record with none of them is returned as orjson built it.
_WATCHED = (
    _TEXT_FIELDS
    | _UNSTORED
    | _SIGNATURE_KEYS
    | frozenset({"levelno", "level", "logger", "logger_name", "log", "host", "pid", "stack", *_TIME_ALIASES})
)
# Keys only some records carry: one isdisjoint() skips all their branches in the common case.
_RARE = _SIGNATURE_KEYS | _UNSTORED | {"stack"}
_intersection = _WATCHED.intersection  # iterates the record's keys: faster than keys() & set

SHAPES = ("auto", "plain", "pino", "bunyan", "ecs", "loguru", "structlog", "gelf")

# pino's and bunyan's level numbers (their docs: "trace" 10 .. "fatal" 60).
_PINO_LEVELS: dict[int, tuple[int, str]] = {
    10: LEVELS["trace"],
    20: LEVELS["debug"],
    30: LEVELS["info"],
    40: LEVELS["warning"],
    50: LEVELS["error"],
    60: _CRITICAL,
}
# GELF's level is a syslog severity (RFC 5424 6.2.1): 0 emerg .. 7 debug.
_SYSLOG_LEVELS: dict[int, tuple[int, str]] = {
    0: _CRITICAL,
    1: _CRITICAL,
    2: _CRITICAL,
    3: LEVELS["error"],
    4: LEVELS["warning"],
    5: LEVELS["info"],
    6: LEVELS["info"],
    7: LEVELS["debug"],
}
# graypy's additional fields (handler.py _add_debugging_fields, _set_custom_facility) and the
# GELF 1.0 file/line, to LogRecord names; any other "_x" becomes "x".
_GELF_FIELDS = {
    "file": "pathname",
    "line": "lineno",
    "_file": "pathname",
    "_line": "lineno",
    "_function": "funcName",
    "_pid": "process",
    "_thread_name": "threadName",
    "_process_name": "processName",
    "_logger": "name",
    "_logger_name": "name",
    "_level_name": "levelname",
}


def epoch_of(value: Any, tz: _dt.tzinfo = _UTC) -> float | None:
    """Seconds since the epoch for a JSON time value, or None if it is not a usable time.

    Accepts ISO 8601 strings (no zone means ``tz``, read by ``localtime.local_epoch``), and
    epoch numbers or numeric strings in seconds, or in milliseconds, microseconds or
    nanoseconds when too large to be seconds.
    """
    t = type(value)
    if t is float or t is int:
        if t is int and not -_INT64 <= value < 1 << 64:
            return None
        x = float(value)
    elif t is str:
        try:
            d = _fromisoformat(value)
        except ValueError:
            try:
                x = float(value)
            except (ValueError, OverflowError):
                return None
        else:
            try:
                epoch = d.timestamp() if d.tzinfo is not None else local_epoch(d, tz)
            except (ValueError, OverflowError):
                return None
            # A time near year 1 or 9999 with an offset can leave the years the store holds.
            return epoch if _MIN_EPOCH <= epoch <= _MAX_EPOCH else None
    else:
        return None
    ax = abs(x)
    if ax > 1e11:
        x /= 1e9 if ax > 1e17 else 1e6 if ax > 1e14 else 1e3
    if _MIN_EPOCH < x < _MAX_EPOCH:  # also false for nan
        return x
    return None


def level_of(value: Any) -> tuple[int | None, str] | None:
    """``(levelno, levelname)`` for a level name or number; None if it is neither."""
    t = type(value)
    if t is str:
        hit = _LEVELS_EXACT.get(value)
        if hit is not None:
            return hit
        hit = LEVELS.get(value.strip().lower())
        if hit is not None:
            return hit
        s = value.strip()
        digits = s[1:] if s[:1] == "-" else s
        if not (digits.isascii() and digits.isdigit() and len(digits) < 11):
            return None, value  # an unknown name: keep it as the levelname
        n = int(s)
    elif t is int:
        n = value
    elif t is float and value.is_integer():
        n = int(value)
    else:
        return None
    if not -_INT32 <= n < _INT32:
        return None
    name = _LEVEL_NAMES.get(n)
    return n, (f"Level {n}" if name is None else name)


def _as_text(value: Any) -> str:
    # A container in a text column: its compact JSON, or a placeholder like PickleFormat's.
    try:
        return _dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: nesting over 254, an int over 64 bits
        return f"<too large: {type(value).__name__}>"


def _lenient_loads(frame: bytes) -> Any:
    # orjson refused the line. Give it a second chance for what real senders get wrong: bytes
    # that are not UTF-8 (a Latin-1 message), and what only the stdlib json accepts (lone
    # surrogate escapes, which Python's json.dumps writes for surrogateescape'd text, numbers
    # beyond a double). Both are rare, so this path may be slow.
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        text = frame.decode("utf-8", "replace")
        try:
            return _loads(text)
        except _JSONDecodeError:
            pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and ints of more than 4300 digits.
        raise RecordRejected("Line is not JSON.", reason="not_json") from None


_MISSING: Any = object()


def _take(obj: dict[str, Any], path: tuple[str, ...], dotted: str | None = None) -> Any:
    # Pop obj[path[0]][path[1]]... (or, given dotted, the key "a.b.c" first, as ECS allows
    # both), dropping the objects along the path that are left empty; _MISSING if the path is
    # not there. A loop, not a recursion: ECS documents take a dozen of these each.
    if dotted is not None and dotted in obj:
        return obj.pop(dotted)
    if len(path) == 2:  # most paths: one object down
        head = obj.get(path[0])
        if type(head) is not dict:
            return _MISSING
        value = head.pop(path[1], _MISSING)
        if not head:
            del obj[path[0]]
        return value
    node = obj
    chain: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    for key in path[:-1]:
        child = node.get(key)
        if type(child) is not dict:
            value = _MISSING
            break
        chain.append((node, key, child))
        node = child
    else:
        value = node.pop(path[-1], _MISSING)
    for parent, key, child in reversed(chain):
        if child:
            break
        del parent[key]
    return value


def _put(rec: RecordDict, key: str, value: Any, fallback: str) -> None:
    # A value a shape read goes to its column, unless the sender also wrote that column:
    # then it stays under its own name (fallback), in extra.
    if key in rec:
        rec[fallback] = value
    else:
        rec[key] = value


def _numeric_level(rec: RecordDict, table: dict[int, tuple[int, str]]) -> None:
    # A "level" number on a library's own scale (pino/bunyan, syslog) -> levelno + levelname.
    level = rec.get("level")
    if type(level) is not int or "levelno" in rec:
        return
    del rec["level"]
    hit = table.get(level)
    if hit is None:
        rec.setdefault("levelname", f"Level {level}")  # a custom level: its number, kept
    else:
        rec["levelno"] = hit[0]
        rec.setdefault("levelname", hit[1])


def _err_stack(rec: RecordDict, key: str) -> None:
    # pino's and bunyan's err serializer: {"type"/"name", "message", "stack", ...}.
    err = rec.get(key)
    if type(err) is dict and type(err.get("stack")) is str and "exc_text" not in rec:
        rec["exc_text"] = err.pop("stack")
        if not err:
            del rec[key]


def _pino(rec: RecordDict, tz: _dt.tzinfo) -> None:
    _numeric_level(rec, _PINO_LEVELS)
    t = rec.get("time")
    if "created" not in rec and (type(t) is int or type(t) is float):
        x = t / 1000.0  # pino's time is always epoch milliseconds (pino.stdTimeFunctions.epochTime)
        if _MIN_EPOCH < x < _MAX_EPOCH:
            rec["created"] = x
            del rec["time"]
    _err_stack(rec, "err")


def _bunyan(rec: RecordDict, tz: _dt.tzinfo) -> None:
    _numeric_level(rec, _PINO_LEVELS)
    _err_stack(rec, "err")


def _gelf(rec: RecordDict, tz: _dt.tzinfo) -> None:
    for key in [k for k in rec if k[:1] == "_" or k in _GELF_FIELDS]:
        dst = _GELF_FIELDS.get(key) or key[1:]
        if dst and dst not in rec:
            rec[dst] = rec.pop(key)
    if "msg" not in rec and "short_message" in rec:
        rec["msg"] = rec.pop("short_message")
    full = rec.get("full_message")
    if type(full) is str and "exc_text" not in rec:
        rec["exc_text"] = full
        del rec["full_message"]
    _numeric_level(rec, _SYSLOG_LEVELS)
    if "name" not in rec and type(rec.get("facility")) is str:
        rec["name"] = rec.pop("facility")


# loguru's serialize=True record (loguru/_handler.py _serialize_record) -> LogRecord names.
_LOGURU_PATHS = (
    (("time", "timestamp"), "created"),
    (("level", "no"), "levelno"),
    (("level", "name"), "levelname"),
    (("message",), "msg"),
    (("name",), "name"),
    (("file", "path"), "pathname"),
    (("line",), "lineno"),
    (("function",), "funcName"),
    (("module",), "module"),
    (("process", "id"), "process"),
    (("process", "name"), "processName"),
    (("thread", "id"), "thread"),
    (("thread", "name"), "threadName"),
)
# Renderings of values kept above: not stored twice.
_LOGURU_RENDERINGS = (("time", "repr"), ("level", "icon"), ("file", "name"))
_TRACEBACK_HEAD = "Traceback (most recent call last):"


def _loguru(rec: RecordDict, tz: _dt.tzinfo) -> None:
    r = rec.get("record")
    if type(r) is not dict:
        return
    del rec["record"]
    text = rec.pop("text") if type(rec.get("text")) is str else None
    for path, column in _LOGURU_PATHS:
        value = _take(r, path)
        if value is not _MISSING:
            _put(rec, column, value, "record." + ".".join(path))
    for path in _LOGURU_RENDERINGS:
        _take(r, path)
    if "created" in rec and type(rec["created"]) is not float:
        epoch = epoch_of(rec["created"], tz)
        if epoch is not None:
            rec["created"] = epoch
    exc = r.get("exception", _MISSING)
    if exc is None:
        del r["exception"]  # loguru's "no exception"
    elif exc is not _MISSING and text is not None and "exc_text" not in rec:
        # text is the formatted line, then the traceback loguru formatted (with its own
        # "> File" markers): the traceback part is exc_text; the line is a rendering.
        at = text.find(_TRACEBACK_HEAD)
        rec["exc_text"] = (text[at:] if at >= 0 else text).rstrip("\n")
        text = None
    if text is not None and exc is not None and exc is not _MISSING:
        rec["text"] = text  # a traceback we could not place: the text is all there is of it
    user = r.pop("extra", None)
    for key, value in r.items():  # what loguru wrote that has no column: elapsed, exception
        rec["record." + key if key in rec else key] = value
    if type(user) is dict:
        for key, value in user.items():  # logger.bind(...) / extra=: the user's own fields
            rec["_" + key if key in rec or key in STANDARD_ATTRS else key] = value


# ECS (ecs-logging, the Elastic Common Schema): dotted or nested keys -> LogRecord names.
_ECS_PATHS = tuple(
    (path, ".".join(path), column)
    for path, column in (
        (("log", "logger"), "name"),
        (("log", "origin", "file", "line"), "lineno"),
        (("log", "origin", "function"), "funcName"),
        (("process", "pid"), "process"),
        (("process", "name"), "processName"),
        (("process", "thread", "id"), "thread"),
        (("process", "thread", "name"), "threadName"),
    )
)
# The paths by their first key, and the keys that say one of them may be there.
_ECS_GROUPS = tuple(
    (frozenset({head} | {dotted for path, dotted, _ in _ECS_PATHS if path[0] == head}),
     tuple(p for p in _ECS_PATHS if p[0][0] == head))
    for head in ("log", "process")
)  # fmt: skip


# Every top-level key the ECS reading looks at besides a nested "log": when none is there
# (Filebeat's documents, the usual _bulk), ``_ecs`` takes its short way.
_ECS_OTHER_KEYS = frozenset(
    {"process", "error", "log.level", "error.stack_trace"} | {dotted for _, dotted, _ in _ECS_PATHS}
)


def _ecs(rec: RecordDict, tz: _dt.tzinfo) -> None:
    log = rec.get("log")
    if type(log) is dict and "origin" not in log and _ECS_OTHER_KEYS.isdisjoint(rec):
        # The reading below for a document whose only ECS paths are log.level and log.logger
        # (2.5 -> ~1 us a Filebeat document; tests/wire/test_json_take.py holds them equal).
        level = log.pop("level", _MISSING)
        logger = log.pop("logger", _MISSING)
        if not log:
            del rec["log"]
        if level is not _MISSING:
            _ecs_level(rec, level)
        if logger is not _MISSING:
            _put(rec, "name", logger, "log.logger")
        return
    _ecs_general(rec)


def _ecs_level(rec: RecordDict, level: Any) -> None:
    hit = level_of(level) if "levelno" not in rec else None
    if hit is None:
        rec["log.level"] = level
    else:
        if hit[0] is not None:
            rec["levelno"] = hit[0]
        rec.setdefault("levelname", hit[1])


def _ecs_general(rec: RecordDict) -> None:
    level = _take(rec, ("log", "level"), "log.level")
    if level is not _MISSING:
        _ecs_level(rec, level)
    found = [
        (dotted, column, _take(rec, path, dotted))
        for keys, paths in _ECS_GROUPS
        if not keys.isdisjoint(rec)  # else none of its paths is there
        for path, dotted, column in paths
    ]
    proc = rec.get("process")
    if type(proc) is dict:  # the rest of ECS's process object: its column is the pid
        del rec["process"]
        for key, value in proc.items():
            rec[f"process.{key}"] = value
    for dotted, column, value in found:
        if value is not _MISSING:
            _put(rec, column, value, dotted)
    stack = _take(rec, ("error", "stack_trace"), "error.stack_trace")
    if stack is not _MISSING:
        if type(stack) is str and "exc_text" not in rec:
            # ecs-logging (Python) writes only the frames (traceback.format_tb); the type and
            # message are error.type / error.message, kept in extra as well.
            etype, emsg = rec.get("error.type"), rec.get("error.message")
            error = rec.get("error")
            if type(error) is dict:
                etype, emsg = error.get("type", etype), error.get("message", emsg)
            if stack.startswith('  File "'):
                stack = f"{_TRACEBACK_HEAD}\n{stack}"
            if type(etype) is str and etype not in stack:
                stack = (
                    f"{stack.rstrip()}\n{etype}: {emsg}" if emsg is not None else f"{stack.rstrip()}\n{etype}"
                )
            rec["exc_text"] = stack
        else:
            rec["error.stack_trace"] = stack


def _structlog(rec: RecordDict, tz: _dt.tzinfo) -> None:
    if "event" in rec and "msg" not in rec and "message" not in rec:
        rec["msg"] = rec.pop("event")
    if type(rec.get("exception")) is str and "exc_text" not in rec:
        rec["exc_text"] = rec.pop("exception")  # format_exc_info / ExceptionRenderer
    if type(rec.get("stack")) is str and "stack_info" not in rec:
        rec["stack_info"] = rec.pop("stack")  # StackInfoRenderer


_SHAPES: dict[str, Any] = {
    "pino": _pino,
    "bunyan": _bunyan,
    "gelf": _gelf,
    "loguru": _loguru,
    "ecs": _ecs,
    "structlog": _structlog,
}


def _detect(rec: RecordDict) -> str:
    """The library shape whose signature ``rec`` carries, else ``"plain"``; see the docstring."""
    if "short_message" in rec and "version" in rec:
        return "gelf"
    if type(rec.get("record")) is dict and "text" in rec:
        return "loguru"
    level = rec.get("level")
    v = rec.get("v", _MISSING)
    if v == 0 and type(v) is int and type(level) is int:
        return "bunyan"
    if "ecs.version" in rec or "log.level" in rec or type(rec.get("ecs")) is dict:
        return "ecs"
    log = rec.get("log")
    if type(log) is dict and ("level" in log or "logger" in log):
        return "ecs"
    if "event" in rec and "msg" not in rec and "message" not in rec:
        return "structlog"
    if type(level) is int and _is_epoch_ms(rec.get("time")):
        return "pino"
    return "plain"


def _is_epoch_ms(t: Any) -> bool:
    return type(t) is int and 1e11 < t < 1e14


def _asctime(value: Any, tz: _dt.tzinfo) -> float | None:
    # logging.Formatter's default asctime, "2024-05-01 12:00:00,123" (default_time_format +
    # default_msec_format): local time, no zone. Only that exact form.
    if type(value) is not str or len(value) != 23 or value[19] != "," or value[10] != " ":
        return None
    return epoch_of(f"{value[:19]}.{value[20:]}", tz)


class JsonFormat:
    """Parses one JSON object per frame into a record dict; see the module docstring.

    Attributes:
        tz: the zone of times written without one (``--assume-timezone``; default UTC).
        shape: ``"auto"`` (detect a library's shape by its signature), ``"plain"`` (the key
            table only), or one library's shape (``--json-format``); see ``SHAPES``.
    """

    __slots__ = ("_auto", "_map", "shape", "tz")

    def __init__(self, tz: _dt.tzinfo = _UTC, shape: str = "auto") -> None:
        if shape not in SHAPES:
            raise ValueError(f"unknown JSON shape {shape!r}; one of {', '.join(SHAPES)}")
        self.tz = tz
        self.shape = shape
        self._map = _SHAPES.get(shape)
        self._auto = shape == "auto"

    def parse(self, frame: bytes) -> RecordDict:
        """Turn one JSON object into a record dict.

        Args:
            frame: one JSON text (a line, without its newline).

        Returns:
            The object, with the aliases in the module docstring renamed to LogRecord names
            and every other key left as it is (the store puts those in ``extra``).

        Raises:
            RecordRejected: ``not_json`` if the frame is not JSON, ``not_object`` if it is JSON
                but not an object. Never anything else.
        """
        try:
            rec = _loads(frame)
        except _JSONDecodeError:
            rec = _lenient_loads(frame)
        if type(rec) is not dict:
            raise RecordRejected(f"JSON value is a {type(rec).__name__}, not an object.", reason="not_object")
        hits = _intersection(rec)
        if not hits:
            return rec
        # "[", or a "{" past the first: there may be containers in the text fields.
        return self._parse(rec, hits, 0x5B in frame or frame.count(0x7B) > 1)

    def parse_object(self, obj: dict[str, Any]) -> RecordDict:
        """Turn one already decoded JSON object into a record dict, as ``parse`` does.

        For transports that decode a body themselves (a JSON array, Elasticsearch ``_bulk``).
        ``obj`` is changed in place and returned; it must hold only what JSON decodes to
        (dict, list, str, int, float, bool, None).
        """
        hits = _intersection(obj)
        return self._parse(obj, hits, True) if hits else obj

    def _parse(self, rec: RecordDict, hits: frozenset[str], containers: bool) -> RecordDict:
        rare = not hits.isdisjoint(_RARE)
        shape_map = self._map
        if shape_map is None and self._auto:
            if (rare and not hits.isdisjoint(_SIGNATURE_KEYS)) or (
                "level" in hits and type(rec["level"]) is int
            ):
                shape_map = _SHAPES.get(_detect(rec))
        if shape_map is not None:
            shape_map(rec, self.tz)
            hits = _intersection(rec)
            containers = rare = True
        # Hot path: ~5 watched keys per record; each branch below is a set lookup when unused.
        if containers:
            for key in hits & _TEXT_FIELDS:
                t = type(rec[key])
                if t is list or t is dict:
                    rec[key] = _as_text(rec[key])

        if "created" in hits:
            created = rec["created"]
            if type(created) is not float:
                epoch = epoch_of(created, self.tz)
                if epoch is not None:
                    rec["created"] = epoch
                # else left as is: the encoder uses the receive time and keeps the original
                # in extra._bad_created.
        else:
            for key in _TIME_ALIASES:
                if key in hits:
                    epoch = epoch_of(rec[key], self.tz)
                    if epoch is not None:
                        rec["created"] = epoch
                        del rec[key]
                        break
            else:
                if "asctime" in hits:
                    epoch = _asctime(rec["asctime"], self.tz)
                    if epoch is not None:
                        rec["created"] = epoch
                        del rec["asctime"]

        if "levelno" not in hits:
            level = None
            if "level" in hits:
                level = level_of(rec["level"])
                if level is not None:
                    del rec["level"]
            if level is None and "levelname" in hits and type(rec["levelname"]) is str:
                level = level_of(rec["levelname"])
            if level is not None:
                levelno, levelname = level
                if levelno is not None:
                    rec["levelno"] = levelno
                if "levelname" not in hits:
                    rec["levelname"] = levelname

        if "name" not in hits:
            if "logger" in hits and type(rec["logger"]) is str:
                rec["name"] = rec.pop("logger")
            elif "logger_name" in hits and type(rec["logger_name"]) is str:
                rec["name"] = rec.pop("logger_name")

        if "message" in hits:
            message = rec.pop("message")
            if "msg" not in hits:
                rec["msg"] = message
            elif message != rec["msg"]:
                rec["_message"] = message
        elif "log" in hits and "msg" not in hits and type(rec["log"]) is str:
            rec["msg"] = rec.pop("log")

        if "host" in hits and "hostname" not in rec and type(rec["host"]) is str:
            rec["hostname"] = rec.pop("host")

        if "pid" in hits and "process" not in rec:
            pid = rec["pid"]
            if type(pid) is int and -_INT64 <= pid < _INT64:
                rec["process"] = rec.pop("pid")
            elif type(pid) is str and pid.isascii() and pid.isdigit() and len(pid) < 19:
                rec["process"] = int(pid)
                del rec["pid"]

        if "exc_info" in hits:
            exc_info = rec["exc_info"]
            if "exc_text" not in rec and type(exc_info) is str:
                rec["exc_text"] = exc_info
                del rec["exc_info"]
        if not rare:
            return rec
        if "stack" in hits and "exc_text" not in rec and type(rec.get("stack")) is str:
            rec["exc_text"] = rec.pop("stack")  # winston's format.errors({stack: true})

        for key in hits & _UNSTORED:
            if key in rec:
                # The encoder drops LogRecord names it has no column for; a JSON sender's
                # value is kept under "_<name>" instead (nothing a sender wrote vanishes).
                alt = "_" + key
                while alt in rec:
                    alt = "_" + alt
                rec[alt] = rec.pop(key)
        return rec
