"""OpenTelemetry logs over OTLP/HTTP: request bodies in, record dicts out (sans-IO).

What arrives at ``POST /v1/logs`` (OTLP specification, "OTLP/HTTP")::

    Content-Type: application/x-protobuf    an ExportLogsServiceRequest, binary protobuf
    Content-Type: application/json          the same message in OTLP's JSON: lowerCamelCase
                                            names, trace and span ids as hex (not base64),
                                            enums as integers, int64 as strings or numbers
    Content-Encoding: gzip                  optional, either way

    ExportLogsServiceRequest
      resource_logs[]: resource {attributes[]}, scope_logs[]
        scope_logs[]:  scope {name, version, attributes[]}, log_records[]
          log_records[]: time_unix_nano, observed_time_unix_nano, severity_number,
                         severity_text, body (AnyValue), attributes[], trace_id (16 bytes),
                         span_id (8 bytes), flags, event_name

The answer is an ExportLogsServiceResponse, in the request's encoding; when some records were
rejected it carries ``partial_success {rejected_log_records, error_message}``
(``export_response``). A refusal (4xx, 5xx) carries a ``google.rpc.Status`` in the request's
encoding, as the specification requires of every 4xx and 5xx (``error_response``): ``code``
(a ``google.rpc.Code``), ``message``, and for a 400 a ``google.rpc.BadRequest`` in
``details``. The body is parsed whole first (``parse_logs``): a body that does not
decode is a ``ProtocolError`` before any record is produced (the route answers 400); the
records then come one at a time, so a large request is written a turn's worth at a time.

Mapping to the record (a ``LogRecord.__dict__``-shaped dict, as every other format)::

    created         time_unix_nano, else observed_time_unix_nano (ns -> s); neither: the
                    receive time
    levelno         severity_number: 1-4 TRACE -> 5, 5-8 DEBUG -> 10, 9-12 INFO -> 20,
    levelname       13-16 WARN -> 30 WARNING, 17-20 ERROR -> 40, 21-24 FATAL -> 50 CRITICAL;
                    0 (unspecified): severity_text read as a level name, else INFO
    msg             body: a string as is; any other value as JSON; none: ""
    name            attribute logger.name or log.logger, else the scope's name (the Python
                    SDK's LoggingHandler names the scope after the logger), else resource
                    attribute service.name
    pathname,       the code.* attributes (code.file.path, code.line.number,
    lineno,         code.function.name, and their older names code.filepath, code.lineno,
    funcName,       code.function), thread.id, thread.name, exception.stacktrace: into the
    thread, ...     LogRecord columns they are
    process         resource attribute process.pid
    extra           trace_id, span_id (hex; absent when all zero), every other attribute by
                    its key (one that is a LogRecord attribute name or one of ours goes under
                    "attributes" instead, so it cannot overwrite a column), "resource" (its
                    attributes), "hostname" (host.name), "scope" {name, version,
                    attributes}, "event_name", "severity_text" when it says more than the level

Limits: an AnyValue nested deeper than ``MAX_ANY_DEPTH`` rejects its record (``complexity``),
counted in the partial success; the body itself is capped by the HTTP layer, and a gzip body
after decompression by ``decompress``'s cap (``oversized``, answered 413).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import STANDARD_ATTRS, RecordDict
from logsvc.wire.compression import decompress  # re-exported: its home is wire.compression

__all__ = [
    "JSON",
    "MAX_ANY_DEPTH",
    "PROTOBUF",
    "decompress",
    "error_response",
    "export_response",
    "media_type",
    "parse_logs",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# How deep an AnyValue (arrays and key-value lists inside each other) may nest. protobuf's own
# parser stops at 100 (its default recursion limit); what people log is a few levels deep, and
# the store's extra column must stay within jsonb's nesting too.
MAX_ANY_DEPTH = 32

# severity_number // 4 (1..24 in six bands of four) -> (levelno, levelname)
_BANDS = ((5, "TRACE"), (10, "DEBUG"), (20, "INFO"), (30, "WARNING"), (40, "ERROR"), (50, "CRITICAL"))
_INFO = (20, "INFO")
_NAMES = {
    "TRACE": 0,
    "DEBUG": 1,
    "INFO": 2,
    "NOTICE": 2,
    "WARN": 3,
    "WARNING": 3,
    "ERROR": 4,
    "ERR": 4,
    "FATAL": 5,
    "CRITICAL": 5,
}
# OTLP JSON may name the enum: "SEVERITY_NUMBER_WARN2" -> 14.
_SEVERITY_ENUM = {
    f"SEVERITY_NUMBER_{name}{'' if i == 0 else i + 1}": 4 * band + i + 1
    for band, name in enumerate(("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"))
    for i in range(4)
}
# Attributes that are LogRecord columns (current semantic conventions, then the older names).
_COLUMNS = {
    "code.file.path": "pathname",
    "code.filepath": "pathname",
    "code.line.number": "lineno",
    "code.lineno": "lineno",
    "code.function.name": "funcName",
    "code.function": "funcName",
    "thread.id": "thread",
    "thread.name": "threadName",
    "exception.stacktrace": "exc_text",
}
_INT_COLUMNS = frozenset({"lineno", "thread"})  # the others are text; a value of another type stays in extra
_LOGGER_ATTRS = ("logger.name", "log.logger")
# Keys this mapping sets in extra; an attribute named so goes under "attributes".
_OURS = frozenset({"trace_id", "span_id", "resource", "scope", "hostname", "event_name", "severity_text"})
_RESERVED = STANDARD_ATTRS | _OURS | {"attributes"}


class _TooDeep(Exception):
    pass


def media_type(content_type: str) -> str | None:
    """``PROTOBUF``, ``JSON``, or None for a Content-Type OTLP/HTTP does not use."""
    mt = content_type.split(";", 1)[0].strip().lower()
    return mt if mt in (PROTOBUF, JSON) else None


def parse_logs(body: bytes, media: str) -> Iterator[RecordDict | RecordRejected]:
    """Decode an ExportLogsServiceRequest whole, then yield its records one at a time.

    Args:
        body: the (decompressed) request body.
        media: ``PROTOBUF`` or ``JSON`` (see ``media_type``).

    Returns:
        An iterator of record dicts, and ``RecordRejected`` for a record that cannot be kept.

    Raises:
        ProtocolError: ``malformed`` if the body does not decode as the message (raised here,
            before the iterator is returned).
    """
    if media == PROTOBUF:
        req = ExportLogsServiceRequest()
        try:
            req.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise ProtocolError(
                f"The body is not an OTLP ExportLogsServiceRequest: {exc}", reason="malformed"
            ) from None
        # The request decoded whole (above) is the check that every part of it decodes, as
        # before any record is produced; the records are then read from the same bytes as
        # _Shadow messages (see there), which cannot fail where the full parse did not.
        del req
        return _pb_records(_Shadow.FromString(body))
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"The body is not JSON: {exc}", reason="malformed") from None
    if not isinstance(doc, dict) or not isinstance(_get(doc, "resourceLogs", "resource_logs", []), list):
        raise ProtocolError("The body is not an OTLP ExportLogsServiceRequest in JSON.", reason="malformed")
    return _json_records(doc)


def export_response(media: str, rejected: int, message: str) -> bytes:
    """The ExportLogsServiceResponse body, with ``partial_success`` when ``rejected``."""
    if media == PROTOBUF:
        if not rejected:
            return ExportLogsServiceResponse().SerializeToString()
        partial = ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=message)
        return ExportLogsServiceResponse(partial_success=partial).SerializeToString()
    if not rejected:
        return b"{}"
    # proto3's JSON mapping writes int64 as a string.
    return orjson.dumps({"partialSuccess": {"rejectedLogRecords": str(rejected), "errorMessage": message}})


# google.rpc.Code for the HTTP statuses /v1/logs refuses with (the specification leaves the
# code optional and clients go by the HTTP status; it helps a human reading a Collector's log).
_RPC_CODES = {400: 3, 405: 12, 413: 3, 415: 3, 429: 8, 503: 14}  # INVALID_ARGUMENT, UNIMPLEMENTED, ...
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def error_response(media: str | None, status: int, message: str) -> tuple[bytes, str]:
    """The body and Content-Type of a 4xx/5xx answer: a ``google.rpc.Status``.

    OTLP/HTTP: "The response body for all HTTP 4xx and HTTP 5xx responses MUST be a
    Protobuf-encoded Status message", in the request's Content-Type (``media``; JSON, the
    proto3 JSON mapping, when the request's type is not one OTLP uses). A 400 says what was
    wrong with the data in a ``google.rpc.BadRequest`` too, as the specification's "Bad Data"
    asks.

    Returns:
        (body, content type).
    """
    code = _RPC_CODES.get(status, 2)  # UNKNOWN
    if media == PROTOBUF:
        # Status {int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3}
        # written directly: two fields do not need googleapis-common-protos at run time.
        body = b"\x08" + _varint(code) + _pb_field(2, message.encode())
        if status == 400:
            # Any {string type_url = 1; bytes value = 2}, value a BadRequest {repeated
            # FieldViolation field_violations = 1}, FieldViolation {field = 1, description = 2}.
            violation = _pb_field(1, _pb_field(2, message.encode()))
            body += _pb_field(3, _pb_field(1, _BAD_REQUEST_TYPE.encode()) + _pb_field(2, violation))
        return body, PROTOBUF
    doc: dict[str, Any] = {"code": code, "message": message}
    if status == 400:
        doc["details"] = [{"@type": _BAD_REQUEST_TYPE, "fieldViolations": [{"description": message}]}]
    return orjson.dumps(doc), JSON


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_field(number: int, payload: bytes) -> bytes:
    # A length-delimited field (wire type 2): a string, bytes or a message.
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# --- the record, from either encoding ------------------------------------------------------


def _level(number: int, text: str) -> tuple[int, str]:
    if 1 <= number <= 24:
        return _BANDS[(number - 1) >> 2]
    band = _NAMES.get(text.strip().upper())
    return _INFO if band is None else _BANDS[band]


# The columns an OTLP record may leave unset (copyfmt's _TEXT_KEYS and _NUMBER_KEYS less
# levelno, levelname, msg, which every record sets). Every record holds all of them, so the
# encoder reads it the way it reads a LogRecord's dict.
_NO_COLUMNS: dict[str, Any] = dict.fromkeys(
    ("name", "pathname", "funcName", "module", "processName", "threadName", "exc_text", "stack_info",
     "lineno", "process", "thread", "created")
)  # fmt: skip


def _base(resource: dict[str, Any], scope: dict[str, Any], scope_name: str) -> dict[str, Any]:
    # What every record of one resource and scope shares, worked out once for all of them.
    # Every LogRecord column starts as None (what an absent key means to the encoder), so
    # RowEncoder.encode finds them all and takes its fast path instead of filling them in
    # per record; a record sets the ones it has.
    base: dict[str, Any] = dict(_NO_COLUMNS)
    name = scope_name or resource.get("service.name")
    if isinstance(name, str) and name:
        base["name"] = name
    pid = resource.get("process.pid")
    if isinstance(pid, int):
        base["process"] = pid
    host = resource.get("host.name")
    if isinstance(host, str):
        base["hostname"] = host
    if resource:
        base["resource"] = resource  # shared by the records of one resource; only read
    if scope:
        base["scope"] = scope
    return base


def _start(
    base: dict[str, Any],
    time_ns: int,
    observed_ns: int,
    severity: int,
    severity_text: str,
    body: Any,
    trace_id: str,
    span_id: str,
    event_name: str,
) -> RecordDict:
    # A record from its scope's base and its own fields, before its attributes.
    levelno, levelname = _level(severity, severity_text)
    rec: RecordDict = {"levelno": levelno, "levelname": levelname, **base}
    ns = time_ns or observed_ns
    if ns:
        rec["created"] = ns / 1e9
    rec["msg"] = body if isinstance(body, str) else "" if body is None else orjson.dumps(body).decode()
    if trace_id:
        rec["trace_id"] = trace_id
    if span_id:
        rec["span_id"] = span_id
    if event_name:
        rec["event_name"] = event_name
    if severity_text and severity_text not in _PLAIN_TEXTS[levelname]:
        text = severity_text.strip()
        if text and text.upper() not in _PLAIN_TEXTS[levelname]:
            rec["severity_text"] = text
    return rec


def _put_attrs(rec: RecordDict, attrs: dict[str, Any]) -> None:
    # The attributes: a logger name, the columns they are, the rest into extra (one named as
    # a column or one of our keys under "attributes", so it cannot overwrite anything).
    if "logger.name" in attrs or "log.logger" in attrs:
        name = next((attrs.pop(k) for k in _LOGGER_ATTRS if isinstance(attrs.get(k), str)), None)
        if name:
            rec["name"] = name
    clashing: dict[str, Any] | None = None
    for key, value in attrs.items():
        target = _target(key, value)
        if target is not None:
            rec[target] = value
        else:
            if clashing is None:
                clashing = rec["attributes"] = {}
            clashing[key] = value


def _target(key: str, value: Any) -> str | None:
    # Where an attribute goes in the record: its column, its own key, or None: under
    # "attributes" (a name that is a column or ours). A logger attribute is _put_attrs's.
    column = _COLUMNS.get(key)
    if column is not None and isinstance(value, int if column in _INT_COLUMNS else str):
        return column
    return None if key in _RESERVED else key


# severity_text that says nothing the level does not: the level's names, ours and OTel's.
_PLAIN_TEXTS = {
    "TRACE": frozenset({"TRACE"}),
    "DEBUG": frozenset({"DEBUG"}),
    "INFO": frozenset({"INFO"}),
    "WARNING": frozenset({"WARNING", "WARN"}),
    "ERROR": frozenset({"ERROR"}),
    "CRITICAL": frozenset({"CRITICAL", "FATAL"}),
}


def _hex_id(raw: bytes) -> str:
    return raw.hex() if raw.strip(b"\x00") else ""


# --- protobuf ------------------------------------------------------------------------------


def _pb_value(v: AnyValue, depth: int) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return v.double_value
    if depth >= MAX_ANY_DEPTH:
        raise _TooDeep
    if kind == "kvlist_value":
        return _pb_attrs(v.kvlist_value.values, depth + 1)
    if kind == "array_value":
        return [_pb_value(x, depth + 1) for x in v.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def _pb_attrs(kvs: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        # The scalar kinds nearly every attribute is, inline: one Python call less each.
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "string_value":
            out[kv.key] = v.string_value
        elif kind == "int_value":
            out[kv.key] = v.int_value
        else:
            out[kv.key] = _pb_value(v, depth)
    return out


def _shadow_request() -> Any:
    # ExportLogsServiceRequest as this module reads it: wire-compatible with the real one, but
    # a resource, a scope, a body and each attribute are left as their encoded bytes (a
    # sub-message and a bytes field are the same on the wire). Reading an attribute of the
    # real message costs four upb calls and two wrapper objects (~0.6 us, 7 of them per
    # Python SDK record); a bytes element is one, and the attributes a logging call site
    # repeats in every record (code.*, thread.*) are decoded once per request (_AttrCache).
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="logsvc/otlp_shadow.proto", package="logsvc.otlp_shadow", syntax="proto3"
    )
    for name, fields in (
        ("Request", [("resource_logs", 1, f.TYPE_MESSAGE, "ResourceLogs")]),
        ("ResourceLogs", [("resource", 1, f.TYPE_BYTES, ""), ("scope_logs", 2, f.TYPE_MESSAGE, "ScopeLogs")]),
        ("ScopeLogs", [("scope", 1, f.TYPE_BYTES, ""), ("log_records", 2, f.TYPE_MESSAGE, "LogRecord")]),
        (
            "LogRecord",
            [
                ("time_unix_nano", 1, f.TYPE_FIXED64, ""),
                ("observed_time_unix_nano", 11, f.TYPE_FIXED64, ""),
                ("severity_number", 2, f.TYPE_INT32, ""),  # an open enum: any int32
                ("severity_text", 3, f.TYPE_STRING, ""),
                ("body", 5, f.TYPE_BYTES, ""),
                ("attributes", 6, f.TYPE_BYTES, "*"),
                ("trace_id", 9, f.TYPE_BYTES, ""),
                ("span_id", 10, f.TYPE_BYTES, ""),
                ("event_name", 12, f.TYPE_STRING, ""),
            ],
        ),
    ):
        msg = fdp.message_type.add(name=name)
        for field, number, kind, type_name in fields:
            repeated = kind == f.TYPE_MESSAGE or type_name == "*"
            fd = msg.field.add(
                name=field, number=number, type=kind, label=f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL
            )
            if kind == f.TYPE_MESSAGE:
                fd.type_name = f".logsvc.otlp_shadow.{type_name}"
    pool = descriptor_pool.DescriptorPool()  # its own pool: nothing else sees these names
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logsvc.otlp_shadow.Request"))


_Shadow = _shadow_request()
_AttrCache = dict[bytes, tuple[str, Any, str | None]]
# Decoded attributes remembered per request: their number, and the size of one remembered.
_ATTR_CACHE_ENTRIES = 4096
_ATTR_CACHE_BYTES = 512


def _pb_kv(raw: bytes, cache: _AttrCache) -> tuple[str, Any, str | None]:
    # One KeyValue's bytes -> (key, value, where it goes in the record: _target, None for a
    # logger attribute too); a scalar one is remembered for the next records.
    kv = KeyValue.FromString(raw)
    key = kv.key
    v = kv.value
    kind = v.WhichOneof("value")
    if kind == "string_value":
        value: Any = v.string_value
    elif kind == "int_value":
        value = v.int_value
    else:
        value = _pb_value(v, 0)
    hit = (key, value, None if key in _LOGGER_ATTRS else _target(key, value))
    if isinstance(value, dict | list):
        return hit  # never shared between records: it is theirs to keep
    if len(cache) < _ATTR_CACHE_ENTRIES and len(raw) <= _ATTR_CACHE_BYTES:
        cache[raw] = hit
    return hit


def _pb_body(raw: bytes) -> Any:
    # A body's AnyValue bytes: a string (field 1, the common case) read directly.
    if not raw:
        return None  # no body, or an empty AnyValue: both are no message
    if raw[0] == 0x0A:
        n, at, shift = 0, 1, 0
        while at < len(raw) and at < 6:
            b = raw[at]
            n |= (b & 0x7F) << shift
            at += 1
            if b < 0x80:
                if at + n == len(raw):
                    return raw[at:].decode()  # UTF-8: the full parse checked it
                break
            shift += 7
    return _pb_value(AnyValue.FromString(raw), 0)


def _pb_records(req: Any) -> Iterator[RecordDict | RecordRejected]:
    cache: _AttrCache = {}
    for rl in req.resource_logs:
        try:
            resource = _pb_attrs(Resource.FromString(rl.resource).attributes)
        except _TooDeep:
            resource = {}
        for sl in rl.scope_logs:
            sc = InstrumentationScope.FromString(sl.scope)
            scope: dict[str, Any] = {}
            if sc.name:
                scope["name"] = sc.name
            if sc.version:
                scope["version"] = sc.version
            if sc.attributes:
                try:
                    scope["attributes"] = _pb_attrs(sc.attributes)
                except _TooDeep:
                    pass
            base = _base(resource, scope, sc.name)
            for lr in sl.log_records:
                try:
                    rec = _start(
                        base,
                        lr.time_unix_nano,
                        lr.observed_time_unix_nano,
                        lr.severity_number,
                        lr.severity_text,
                        _pb_body(lr.body),
                        _hex_id(lr.trace_id),
                        _hex_id(lr.span_id),
                        lr.event_name,
                    )
                    # Each attribute straight to where _put_attrs would put it; a logger name
                    # or a clashing name (rare) sends the record through _put_attrs itself.
                    # (OTLP keys are unique; were one repeated, its last value wins.)
                    for raw in lr.attributes:
                        _, value, target = cache.get(raw) or _pb_kv(raw, cache)
                        if target is None:
                            _put_attrs(rec, {k: v for k, v, _ in (cache.get(r) or _pb_kv(r, cache)
                                                                  for r in lr.attributes)})  # fmt: skip
                            break
                        rec[target] = value
                except _TooDeep:
                    yield RecordRejected(
                        f"A value nests deeper than {MAX_ANY_DEPTH} levels.", reason="complexity"
                    )
                    continue
                yield rec


# --- OTLP JSON -----------------------------------------------------------------------------


def _get(d: Mapping[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    # The specification's names are lowerCamelCase; proto3's JSON parsers accept the field
    # names too, and some senders use them.
    v = d.get(camel)
    if v is None:
        v = d.get(snake, default)
    return v


def _int(v: Any) -> int:
    # int64 and uint64 arrive as strings or numbers.
    if isinstance(v, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        return int(v)
    raise ValueError(f"not an integer: {v!r}")


def _json_value(v: Any, depth: int) -> Any:
    if not isinstance(v, dict):
        return None
    for camel, snake in (("stringValue", "string_value"), ("boolValue", "bool_value")):
        x = _get(v, camel, snake)
        if x is not None:
            return x
    x = _get(v, "intValue", "int_value")
    if x is not None:
        return _int(x)
    x = _get(v, "doubleValue", "double_value")
    if x is not None:
        return float(x)  # also "NaN", "Infinity", as proto3 JSON writes them
    if depth >= MAX_ANY_DEPTH:
        raise _TooDeep
    x = _get(v, "kvlistValue", "kvlist_value")
    if isinstance(x, dict):
        return _json_attrs(x.get("values"), depth + 1)
    x = _get(v, "arrayValue", "array_value")
    if isinstance(x, dict):
        return [_json_value(i, depth + 1) for i in x.get("values") or ()]
    x = _get(v, "bytesValue", "bytes_value")
    if x is not None:
        return x  # already base64, as proto3 JSON writes bytes
    return None


def _json_attrs(kvs: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(kvs, list):
        return out
    for kv in kvs:
        if isinstance(kv, dict):
            key = kv.get("key", "")  # proto3 JSON leaves out a default (empty) key
            if isinstance(key, str):
                out[key] = _json_value(kv.get("value"), depth)
    return out


def _json_id(v: Any) -> str:
    # OTLP JSON writes ids as hex (the one departure from proto3's base64).
    if not isinstance(v, str) or not v.strip("0"):
        return ""
    return v.lower()


def _json_records(doc: dict[str, Any]) -> Iterator[RecordDict | RecordRejected]:
    for rl in _get(doc, "resourceLogs", "resource_logs") or ():
        if not isinstance(rl, dict):
            yield RecordRejected("A resourceLogs entry is not an object.", reason="malformed")
            continue
        res = rl.get("resource")
        try:
            resource = _json_attrs(res.get("attributes")) if isinstance(res, dict) else {}
        except (_TooDeep, ValueError, TypeError):
            resource = {}
        for sl in _get(rl, "scopeLogs", "scope_logs") or ():
            if not isinstance(sl, dict):
                yield RecordRejected("A scopeLogs entry is not an object.", reason="malformed")
                continue
            sc = sl.get("scope")
            sc = sc if isinstance(sc, dict) else {}
            scope: dict[str, Any] = {}
            name = sc.get("name")
            scope_name = name if isinstance(name, str) else ""
            if scope_name:
                scope["name"] = scope_name
            if isinstance(sc.get("version"), str) and sc["version"]:
                scope["version"] = sc["version"]
            if sc.get("attributes"):
                try:
                    scope["attributes"] = _json_attrs(sc["attributes"])
                except (_TooDeep, ValueError, TypeError):
                    pass
            base = _base(resource, scope, scope_name)
            for lr in _get(sl, "logRecords", "log_records") or ():
                try:
                    yield _json_record(base, lr)
                except _TooDeep:
                    yield RecordRejected(
                        f"A value nests deeper than {MAX_ANY_DEPTH} levels.", reason="complexity"
                    )
                except (ValueError, TypeError, OverflowError) as exc:
                    yield RecordRejected(f"A log record does not read: {exc}", reason="malformed")


def _json_record(base: dict[str, Any], lr: Any) -> RecordDict:
    if not isinstance(lr, dict):
        raise TypeError("a logRecords entry is not an object")
    sev = _get(lr, "severityNumber", "severity_number", 0)
    sev = _SEVERITY_ENUM.get(sev, 0) if isinstance(sev, str) and not sev.isdigit() else _int(sev)
    text = _get(lr, "severityText", "severity_text", "")
    body = _get(lr, "body", "body")
    event = _get(lr, "eventName", "event_name", "")
    rec = _start(
        base,
        _int(_get(lr, "timeUnixNano", "time_unix_nano", 0)),
        _int(_get(lr, "observedTimeUnixNano", "observed_time_unix_nano", 0)),
        sev,
        text if isinstance(text, str) else "",
        None if body is None else _json_value(body, 0),
        _json_id(_get(lr, "traceId", "trace_id")),
        _json_id(_get(lr, "spanId", "span_id")),
        event if isinstance(event, str) else "",
    )
    _put_attrs(rec, _json_attrs(lr.get("attributes"), 0))
    return rec
