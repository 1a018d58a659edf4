"""The bodies ``POST /ingest`` accepts, turned into records (sans-IO: bytes in, records out).

Three shapes, told apart by the Content-Type and the first byte:

* NDJSON (``application/x-ndjson``, ``application/jsonl``, ``text/plain``, or anything not
  below): one JSON object per line, each through ``JsonFormat`` exactly as on
  ``--listen-json``. A bad line is one ``RecordRejected``; the others are kept.
* A JSON array of objects (``application/json`` whose body starts with ``[``); a single object
  (``application/json`` starting with ``{``) is one record. Vector's and Fluent Bit's HTTP
  outputs send these.
* ``application/x-www-form-urlencoded`` (or a ``GET`` query string): what the stdlib
  ``logging.handlers.HTTPHandler`` sends, ``urlencode(record.__dict__)``. Every value arrives
  as its ``str()``: numbers are read back, ``"None"`` is None, and ``msg % args`` is done
  here, since HTTPHandler sends the unformatted ``msg`` with ``str(args)``. ``args`` is read
  with ``ast.literal_eval`` (literals only: it cannot call anything), size-capped.

``msg % args`` is bounded before it runs. A conversion's width and precision are the sender's
to choose (``msg=%200000000d&args=(1,)`` is a 33-byte form asking for a 200 MB string, and a
mapping key may be named a million times), so ``_format_bound`` walks the format first and adds
up the most each conversion can produce: literal text, max(width, the value's own length) for
``%s``/``%r``/``%a`` (computed once per value), digits by bit length for integers, 309 integer
digits plus the precision for floats. Only if that is within ``MAX_FORMATTED_CHARS`` is the
real ``%`` done; otherwise, as on any format error, the message is kept unformatted and the
args text goes to ``extra["_args"]`` (``args`` itself is a LogRecord attribute, which the store
never writes). Anything the walk does not recognise counts as "too large": the worst outcome
of a doubt is an unformatted message, never an allocation.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import ast
import datetime as _dt
import math
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import orjson

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.json_format import JsonFormat

__all__ = ["MAX_ARGS_CHARS", "MAX_FORMATTED_CHARS", "parse_ingest"]

# ``args`` longer than this is not evaluated (the message is stored unformatted).
MAX_ARGS_CHARS = 64 * 1024
# The longest ``msg % args`` we build: the store's message cap (store/copyfmt.py
# MAX_MESSAGE_CHARS, 1 Mi characters; a test checks they agree). Anything longer would be cut
# there anyway, so formatting past it would only spend memory on characters never stored.
MAX_FORMATTED_CHARS = 1 << 20
# Fields HTTPHandler sends as str() that are numbers in a LogRecord.
_FLOATS = ("created", "msecs", "relativeCreated")
_INTS = ("levelno", "lineno", "process", "thread")
_NONE_IF_TEXT_NONE = ("exc_info", "exc_text", "stack_info", "args", "taskName", "processName", "threadName")

_UTC_JSON = JsonFormat()


def parse_ingest(
    method: str,
    content_type: str,
    body: bytes,
    query: str,
    *,
    tz: _dt.tzinfo = _dt.UTC,
    json_format: str = "auto",
) -> Iterator[RecordDict | RecordRejected]:
    """Yield each record of a request (or a ``RecordRejected`` for each bad one).

    Args:
        method: the request method (``GET`` reads the query string as HTTPHandler's form).
        content_type: the Content-Type header, parameters and all.
        body: the whole request body.
        query: the query string, without ``?``.
        tz: the zone of JSON times written without one (``--assume-timezone``; default UTC).
            HTTPHandler's form sends ``created`` as epoch seconds, which need none.
        json_format: the shape of JSON records (``--json-format``; ``JsonFormat.shape``).

    Raises:
        ProtocolError: the body as a whole cannot be read (a JSON array that is not JSON).
    """
    _json = _UTC_JSON if tz is _dt.UTC and json_format == "auto" else JsonFormat(tz, json_format)
    ctype = content_type.split(";", 1)[0].strip().lower()
    if method == "GET" or ctype == "application/x-www-form-urlencoded":
        text = query if method == "GET" else body.decode("utf-8", "replace")
        yield from _form_record(text)
        return
    stripped = body.lstrip()
    if ctype == "application/json" and stripped[:1] == b"[":
        try:
            items = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"The body is not a JSON array: {exc}.", reason="not_json") from None
        if not isinstance(items, list):
            raise ProtocolError("The body is not a JSON array.", reason="not_json")
        for item in items:
            if not isinstance(item, dict):
                yield RecordRejected("Array element is not an object.", reason="not_object")
                continue
            # Already decoded: mapped as it is (JsonFormat.parse_object), not written and read again.
            yield _json.parse_object(item)
        return
    for line in body.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        try:
            yield _json.parse(line)
        except RecordRejected as exc:
            yield exc


def _form_record(text: str) -> Iterator[RecordDict | RecordRejected]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=10_000)
    except ValueError:
        yield RecordRejected("Too many form fields.", reason="malformed")
        return
    if not pairs:
        yield RecordRejected("Empty form.", reason="malformed")
        return
    rec: RecordDict = dict(pairs)
    for key in _FLOATS:
        if key in rec:
            try:
                rec[key] = float(rec[key])
            except ValueError:
                pass  # the encoder keeps what it cannot use in extra
    for key in _INTS:
        if key in rec:
            try:
                rec[key] = int(rec[key])
            except ValueError:
                pass
    for key in _NONE_IF_TEXT_NONE:
        if rec.get(key) == "None":
            rec[key] = None
    args = rec.get("args")
    msg = rec.get("msg")
    if isinstance(args, str) and isinstance(msg, str):
        formatted = _format(msg, args)
        if formatted is not None:
            rec["msg"] = formatted
        else:
            rec["_args"] = args  # stored as sent: the unformatted message, the args text in extra
        rec["args"] = None
    # HTTPHandler's record has no "message" and sends exc_info as its repr; drop the repr.
    if isinstance(rec.get("exc_info"), str):
        rec["exc_info"] = None
    yield rec


def _format(msg: str, args: str) -> str | None:
    # msg % args as LogRecord.getMessage does it, or None if it fails or could be too long.
    if len(args) > MAX_ARGS_CHARS:
        return None
    try:
        value = ast.literal_eval(args)
        if not isinstance(value, tuple | dict):
            value = (value,)
        bound = _format_bound(msg, value)
        if bound is None or bound > MAX_FORMATTED_CHARS:
            return None
        formatted: str = msg % value
        return formatted
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, KeyError, OverflowError):
        # OverflowError: "%d" of 1e999 (inf), "%c" past U+10FFFF, "%e" of an int past a double.
        return None


_FLAGS = frozenset("#0- +")
_LENGTH_MODIFIERS = frozenset("hlL")
_STR_CONVERSIONS: dict[str, Callable[[object], str]] = {"s": str, "r": repr, "a": ascii}
_INT_CONVERSIONS = frozenset("diuoxX")
_FLOAT_CONVERSIONS = frozenset("eEfFgG")
# "%f" of the largest double (1.8e308) has 309 digits before the point.
_FLOAT_INT_DIGITS = 309
_MAX_DOUBLE = 1.7976931348623157e308
# Room for a sign, "0x"/"0o", a point, an exponent ("e+308"): more than any conversion adds.
_SLACK = 8
# A width or precision of more digits than this is over any cap we would use (and int() of
# thousands of digits is slow, or refused past sys.int_info.default_max_str_digits).
_MAX_NUMBER_DIGITS = 9


def _format_bound(msg: str, value: tuple[Any, ...] | dict[Any, Any]) -> int | None:
    """An upper bound on ``len(msg % value)``, or None if this walk cannot vouch for it.

    Follows CPython's printf-style grammar (``%[(key)][flags][width][.precision][length]type``,
    ``*`` taking an int from the args). Stops as soon as the bound passes
    ``MAX_FORMATTED_CHARS``; cheap per conversion (a value's ``str``/``repr`` is computed once).
    None stands for both "too large" and "the real % would raise": either way the message is
    kept unformatted.
    """
    mapping: dict[Any, Any] | None
    positional: tuple[Any, ...]
    if isinstance(value, dict):
        # A dict is also the one positional argument ("%s" % {"a": 1} is "{'a': 1}").
        mapping, positional = value, (value,)
    else:
        mapping, positional = None, value
    lengths: dict[tuple[int, str], int] = {}  # (id(value), conversion) -> len(conversion(value))
    n = len(msg)
    cap = MAX_FORMATTED_CHARS
    total = 0
    used = 0  # positional arguments consumed
    i = 0
    while True:
        j = msg.find("%", i)
        if j < 0:
            total += n - i
            return total if total <= cap else None
        total += j - i
        k = j + 1
        if k < n and msg[k] == "%":  # "%%" -> "%"
            total += 1
            i = k + 1
            continue
        arg: Any = None
        keyed = False
        if k < n and msg[k] == "(":
            # The key runs to the matching ")" (CPython counts nested parentheses).
            depth = 1
            k += 1
            start = k
            while k < n and depth:
                c = msg[k]
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                k += 1
            if depth or mapping is None:
                return None
            key = msg[start : k - 1]
            if key not in mapping:
                return None
            arg = mapping[key]
            keyed = True
        while k < n and msg[k] in _FLAGS:
            k += 1
        # Width, then precision: digits, or "*" for the next positional argument.
        numbers: list[int] = []
        for part in range(2):
            if part == 1:
                if k < n and msg[k] == ".":
                    k += 1
                else:
                    numbers.append(-1)  # no precision
                    break
            if k < n and msg[k] == "*":
                if keyed or mapping is not None or used >= len(positional):
                    return None
                star = positional[used]
                used += 1
                if type(star) is not int and type(star) is not bool:
                    return None
                # A negative width is a left-aligned one; a negative precision is 0.
                numbers.append(abs(star) if part == 0 else max(star, 0))
                k += 1
            else:
                start = k
                while k < n and "0" <= msg[k] <= "9":
                    k += 1
                if k - start > _MAX_NUMBER_DIGITS:
                    return None
                numbers.append(int(msg[start:k]) if k > start else 0)  # "%.f": precision 0
        width, precision = numbers
        if k < n and msg[k] in _LENGTH_MODIFIERS:
            k += 1
        if k >= n:
            return None  # "incomplete format"
        conv = msg[k]
        i = k + 1
        if not keyed:
            if conv == "%" or used >= len(positional):
                return None  # "%5%" takes an argument and prints "%"; rare enough to refuse
            arg = positional[used]
            used += 1
        if width > cap or precision > cap:
            return None
        to_text = _STR_CONVERSIONS.get(conv)
        if to_text is not None:
            memo = (id(arg), conv)
            size = lengths.get(memo)
            if size is None:
                size = lengths[memo] = len(to_text(arg))
            if precision >= 0:
                size = min(size, precision)
        elif conv in _INT_CONVERSIONS:
            if type(arg) is float:
                if not math.isfinite(arg):
                    return None
                arg = int(arg)
            elif type(arg) is not int and type(arg) is not bool:
                return None
            # Octal has the most digits per bit, 1 per 3 bits; decimal and hex fewer.
            size = max(abs(arg).bit_length() // 3 + 1, precision) + _SLACK
        elif conv in _FLOAT_CONVERSIONS:
            if type(arg) is int and abs(arg) > _MAX_DOUBLE:
                return None
            if type(arg) not in (float, int, bool):
                return None
            size = _FLOAT_INT_DIGITS + (6 if precision < 0 else precision) + _SLACK
        elif conv == "c":
            size = 1
        else:
            return None  # "unsupported format character"
        total += max(width, size)
        if total > cap:
            return None
