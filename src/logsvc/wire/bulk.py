"""Elasticsearch ``_bulk`` bodies in, record dicts out; the answer shippers check (sans-IO).

What Filebeat, Logstash, Fluent Bit (``es`` output), Vector (``elasticsearch`` sink) and the
OpenTelemetry Collector's Elasticsearch exporter send to ``POST /_bulk`` or
``POST /{index}/_bulk``: NDJSON, an action line then (for all but ``delete``) a document line::

    {"create":{"_index":"vector","_type":"_doc"}}
    {"message":"hello there","timestamp":"2020-12-01T01:02:03Z"}
    {"index":{"_index":"fluent-bit","_id":"x1"}}
    {"@timestamp":"2015-11-24T22:15:40.000Z","log":"..."}

- ``index`` and ``create`` documents become records, read by ``JsonFormat.parse_object``
  exactly as JSON lines are (``@timestamp``, ``message``, ``log``, ECS's ``log.level``, ...),
  with the target index in ``extra["_index"]`` (the action's ``_index``, else the path's) and
  a given ``_id`` in ``extra["_id"]``. ``create`` never answers 409: logsvc keeps every
  document it is sent and does not look ids up.
- ``update`` (a document line follows) and ``delete`` (none does) are answered per item with
  status 400: a log store does not change what it stored.
- A document line that is not a JSON object is that item's 400
  (``document_parsing_exception``), counted as a rejected record; the others are kept.
- An action line that is not one object naming one of the four actions makes the whole
  request a ``ProtocolError`` (400), as Elasticsearch answers it; the action lines are read
  before any document, so that answer comes before anything is written.

The answer (``bulk_response``) has the fields the shippers read: ``took``, ``errors`` (true
when any item failed; Fluent Bit and Vector retry or log on it), and ``items`` in request
order, each ``{action: {_index, _id, status, ...}}`` with ``result``/``_version``/``_shards``
for a 201 and ``error {type, reason}`` otherwise (Filebeat decides per item by ``status``).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import orjson

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.json_format import JsonFormat

__all__ = ["BulkRequest", "bulk_response", "parse_bulk"]

_ACTIONS = ("index", "create", "update", "delete")
_KEPT = ("index", "create")
_OK_SHARDS = {"total": 1, "successful": 1, "failed": 0}


class BulkRequest:
    """A ``_bulk`` body whose action lines have been read: ``records()`` yields its documents.

    ``items`` fills in request order as ``records()`` is consumed; ``bulk_response`` turns it
    into the answer once the records are written.
    """

    __slots__ = ("_fmt", "_ops", "items")

    def __init__(self, ops: list[tuple[str, dict[str, Any], bytes | None]], fmt: JsonFormat) -> None:
        self._ops = ops
        self._fmt = fmt
        self.items: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def records(self) -> Iterator[RecordDict | RecordRejected]:
        """Each kept document as a record dict; a refused one as ``RecordRejected``."""
        items = self.items
        parse_object = self._fmt.parse_object
        for n, (action, meta, doc) in enumerate(self._ops):
            index = meta.get("_index")
            doc_id = meta.get("_id")
            item: dict[str, Any] = {
                "_index": index if isinstance(index, str) else "logsvc",
                "_id": str(doc_id) if doc_id is not None else _new_id(n),
            }
            items.append({action: item})
            if action not in _KEPT:
                item["status"] = 400
                item["error"] = {
                    "type": "illegal_argument_exception",
                    "reason": f"logsvc keeps logs as they were sent: {action} is not supported",
                }
                yield RecordRejected(f"_bulk {action} is not supported.", reason="unsupported_action")
                continue
            try:
                obj = orjson.loads(doc or b"")
            except orjson.JSONDecodeError as exc:
                obj = exc
            if type(obj) is not dict:
                item["status"] = 400
                item["error"] = {
                    "type": "document_parsing_exception",
                    "reason": "the document is not a JSON object",
                }
                yield RecordRejected("_bulk document is not a JSON object.", reason="not_object")
                continue
            rec = parse_object(obj)
            if isinstance(index, str):
                rec["_index"] = index
            if doc_id is not None:
                rec["_id"] = item["_id"]
            item |= _CREATED
            item["_seq_no"] = n
            yield rec


# What a stored document's item says besides its _index, _id and _seq_no: Elasticsearch's
# answer to a new document, the one every shipper counts as done.
_CREATED: dict[str, Any] = {"_version": 1, "result": "created", "_shards": _OK_SHARDS, "_primary_term": 1,
                            "status": 201}  # fmt: skip


_ID_PREFIX = os.urandom(6).hex()  # ids Elasticsearch would generate; unique enough per process


def _new_id(n: int) -> str:
    return f"{_ID_PREFIX}{n:x}"


def parse_bulk(body: bytes, path_index: str | None, fmt: JsonFormat) -> BulkRequest:
    """Read a ``_bulk`` body's action lines; the documents are read as the records are taken.

    Args:
        body: the (decompressed) request body, NDJSON.
        path_index: ``{index}`` of ``POST /{index}/_bulk``, the default ``_index``.
        fmt: the JSON lines reader (``--assume-timezone``, ``--json-format``).

    Raises:
        ProtocolError: ``malformed`` for an action line that is not one object naming
            ``index``, ``create``, ``update`` or ``delete``, or a document line missing at the
            end of the body.
    """
    lines = [line for line in body.split(b"\n") if line.strip()]
    ops: list[tuple[str, dict[str, Any], bytes | None]] = []
    i = 0
    n = len(lines)
    last_line = b""
    action: str = ""
    meta: dict[str, Any] = {}
    while i < n:
        line = lines[i]
        if line != last_line:  # a shipper repeats one action line for every document: read once
            action, meta = _action(line, i, path_index)
            last_line = line
        i += 1
        doc: bytes | None = None
        if action != "delete":
            if i >= n:
                raise ProtocolError("_bulk body ends after an action line.", reason="malformed")
            doc = lines[i]
            i += 1
        ops.append((action, meta, doc))
    return BulkRequest(ops, fmt)


def _action(line: bytes, i: int, path_index: str | None) -> tuple[str, dict[str, Any]]:
    # One action line -> (action, its metadata); the metadata is only read from here on, so
    # the documents of one repeated action line share it.
    try:
        action_line = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ProtocolError(f"_bulk line {i + 1} is not a JSON action line.", reason="malformed") from None
    if type(action_line) is not dict or len(action_line) != 1:
        raise ProtocolError(f"_bulk line {i + 1} is not an action line.", reason="malformed")
    ((action, meta),) = action_line.items()
    if action not in _ACTIONS or type(meta) is not dict:
        raise ProtocolError(f"_bulk action {str(action)[:40]!r} is not known.", reason="malformed")
    if path_index is not None and "_index" not in meta:
        meta["_index"] = path_index
    return action, meta


def bulk_response(req: BulkRequest, took_ms: int) -> bytes:
    """The ``_bulk`` answer for ``req`` once its records are durable."""
    errors = any(item[next(iter(item))].get("status") != 201 for item in req.items)
    return orjson.dumps({"took": took_ms, "errors": errors, "items": req.items})
