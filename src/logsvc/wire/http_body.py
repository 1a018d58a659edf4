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
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import ast
from collections.abc import Iterator
from urllib.parse import parse_qsl

import orjson

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.json_format import JsonFormat

__all__ = ["parse_ingest"]

# ``args`` longer than this is not evaluated (the message is stored unformatted).
MAX_ARGS_CHARS = 64 * 1024
# Fields HTTPHandler sends as str() that are numbers in a LogRecord.
_FLOATS = ("created", "msecs", "relativeCreated")
_INTS = ("levelno", "lineno", "process", "thread")
_NONE_IF_TEXT_NONE = ("exc_info", "exc_text", "stack_info", "args", "taskName", "processName", "threadName")

_json = JsonFormat()


def parse_ingest(
    method: str, content_type: str, body: bytes, query: str
) -> Iterator[RecordDict | RecordRejected]:
    """Yield each record of a request (or a ``RecordRejected`` for each bad one).

    Raises:
        ProtocolError: the body as a whole cannot be read (a JSON array that is not JSON).
    """
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
            try:
                yield _json.parse(orjson.dumps(item))
            except (RecordRejected, orjson.JSONEncodeError):
                yield RecordRejected("Array element cannot be read.", reason="not_json")
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
    if isinstance(args, str) and isinstance(msg, str) and len(args) <= MAX_ARGS_CHARS:
        try:
            value = ast.literal_eval(args)
            rec["msg"] = msg % value if isinstance(value, tuple | dict) else msg % (value,)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, KeyError):
            pass  # stored as sent: the unformatted message, args in extra
        else:
            rec["args"] = None
    # HTTPHandler's record has no "message" and sends exc_info as its repr; drop the repr.
    if isinstance(rec.get("exc_info"), str):
        rec["exc_info"] = None
    yield rec
