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
    created     created            @timestamp, timestamp, time, ts, date    ISO 8601 / epoch
    levelno     levelno            level (also from levelname)              std logging numbers
    levelname   levelname          level                                    canonical name
    logger      name               logger, logger_name                      str
    message     msg                message, log                             any
    process     process            pid                                      int
    exc_text    exc_text           exc_info                                 str
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
  ``emerg``/``panic`` 50); a number (or numeric string) is a stdlib level number (so pino's and
  bunyan's 30 is WARNING, not their "info"); an unknown name is kept as ``levelname`` with no
  ``levelno``.
- ``message`` is a LogRecord attribute the encoder never stores, so it is always consumed: it
  becomes ``msg``, or, if ``msg`` is there too and differs, the extra key ``_message``.
  ``log`` (Fluent Bit's tail and docker inputs) and ``exc_info`` (python-json-logger's
  traceback text) are used only when they are strings.
- An alias whose value cannot be used (a time that does not parse, a ``host`` object) is left
  under its own key, i.e. in ``extra``: nothing the sender wrote is dropped.

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
from logsvc.record import RecordDict
from logsvc.wire.localtime import local_epoch

__all__ = ["LEVELS", "JsonFormat", "epoch_of", "level_of"]

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
# Every key parse() looks at; a record with none of them is returned as orjson built it.
_WATCHED = _TEXT_FIELDS | frozenset(
    {"levelno", "level", "logger", "logger_name", "log", "host", "pid", *_TIME_ALIASES}
)
_intersection = _WATCHED.intersection  # iterates the record's keys: faster than keys() & set


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


class JsonFormat:
    """Parses one JSON object per frame into a record dict; see the module docstring.

    Attributes:
        tz: the zone of times written without one (``--assume-timezone``; default UTC).
    """

    __slots__ = ("tz",)

    def __init__(self, tz: _dt.tzinfo = _UTC) -> None:
        self.tz = tz

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
        # Hot path: ~5 watched keys per record; each branch below is a set lookup when unused.
        if 0x5B in frame or frame.count(0x7B) > 1:  # "[", or a "{" past the first: containers
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
        return rec
