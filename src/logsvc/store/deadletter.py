"""The dead-letter file: records PostgreSQL refuses for their content, kept for a person.

When PostgreSQL refuses a batch because of what is in some of its rows (a CHECK constraint,
a value out of range, a trigger's validation; see ``store.sink`` for the classification),
the sink isolates those rows and appends each one here before it commits the journal
position past it. Nothing is dropped silently: the row, the error and where it came from are
on disk, and ``records_dead_lettered`` counts them.

Theory of operation
-------------------
::

    DATA_DIR/deadletter/
      deadletter-20260120.jsonl     one JSON object per line, by UTC day of rejection
      deadletter-20260121.jsonl

Each line::

    {"journal_id": "3f2a...", "seq": 1234, "rejected_at": "2026-01-20T10:11:12.123456+00:00",
     "sqlstate": "23514", "error": "new row for relation ... violates check constraint ...",
     "detail": "Failing row contains (...)",          # only if PostgreSQL sent one
     "row": "1234\\t2026-01-20 10:11:12.000000+00\\t...\\n",   # the COPY text row, exactly
     "columns": {"seq": 1234, "created": "...", "message": "...", "extra": {...}}}

``row`` is what COPY received, so it can be replayed as it is (``COPY ... FROM STDIN`` of
the rows, once the cause is fixed); ``columns`` is the same row unescaped into named columns
(``copyfmt.COLUMN_NAMES``) for a person reading it, with ``extra`` parsed back into JSON.
A row that is not UTF-8 (PostgreSQL may have refused it for exactly that: SQLSTATE 22021)
is given as ``row`` with backslash escapes plus ``row_base64``, and no ``columns``.

Durability and duplicates. ``write`` appends one line with a single ``write`` on an
``O_APPEND`` descriptor and ``fdatasync``s it (and the directory, when it created the file)
before returning; the sink commits the journal position past the row only after that. A
crash between the two leaves the row in this file but not past PostgreSQL's position, so
the next run dead-letters it again: an entry may appear twice, never zero times. Entries are
identified by ``(journal_id, seq)``; :func:`read_entries` with ``unique=True`` keeps the
first of each. A crash in the middle of a write leaves a torn last line: the next open
starts a new line after it, and :func:`read_entries` skips lines that are not JSON.

Bounds. Writes are synchronous on the reactor (this is the rare path; one write and one
fdatasync per refused row, about a millisecond on a local disk). An entry holds one row,
itself bounded by the wire's frame cap (1 MiB by default), plus error texts cut to
``MAX_ERROR_CHARS``. The files are never rotated away or trimmed by logsvc: they are the
only copy of those records.

This module must not import socket, select or psycopg.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import base64
import datetime as _dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from logsvc.store.copyfmt import COLUMNS, COPY_COLUMNS

FILE_PREFIX = "deadletter-"
FILE_SUFFIX = ".jsonl"
# PostgreSQL's messages are short, but a DETAIL repeats the whole failing row; the row is
# kept in full already, so its echo need not be.
MAX_ERROR_CHARS = 4096

_fdatasync = getattr(os, "fdatasync", os.fsync)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

# Columns shown as numbers in ``columns`` (every other one stays text).
_INT_COLUMNS = frozenset(name for name, decl in COLUMNS if decl.split()[0] in ("bigint", "integer"))
# Text COPY escapes (PostgreSQL docs, "COPY ... Text Format"): \b \f \n \r \t \v, octal
# \d{1,3}, hex \xh{1,2}, and a backslash before any other character means that character.
_UNESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.DOTALL)
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape_match(m: re.Match[str]) -> str:
    octal, hexa, char = m.groups()
    if octal is not None:
        return chr(int(octal, 8))
    if hexa is not None:
        return chr(int(hexa, 16))
    return _SIMPLE.get(char, char)


_NAMES_BY_COUNT = {len(names): names for names in COPY_COLUMNS.values()}


def decode_row(row: str) -> dict[str, Any] | None:
    """Unescape one COPY text row into ``{column: value}``; None if it has the wrong shape.

    NULL (``\\N``) becomes None, integer columns become ints where they parse, ``extra``
    becomes its JSON value where it parses; everything else stays text.
    """
    fields = row.removesuffix("\n").split("\t")
    # Each row layout has its own column count (copyfmt.COPY_COLUMNS): the count tells them apart.
    names = _NAMES_BY_COUNT.get(len(fields))
    if names is None:
        return None
    out: dict[str, Any] = {}
    for name, raw in zip(names, fields, strict=True):
        if raw == "\\N":
            out[name] = None
            continue
        value = _UNESCAPE.sub(_unescape_match, raw) if "\\" in raw else raw
        if name in _INT_COLUMNS:
            try:
                out[name] = int(value)
                continue
            except ValueError:
                pass
        elif name == "extra":
            try:
                out[name] = orjson.loads(value)
                continue
            except orjson.JSONDecodeError:
                pass
        out[name] = value
    return out


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


class DeadLetter:
    """Append refused rows to ``directory/deadletter-YYYYMMDD.jsonl``, durably.

    The directory and the day's file are created on the first write, so a service that never
    dead-letters anything has no such directory. Single-threaded, like the rest of the sink.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None
        self._day = ""

    def path_for(self, day: _dt.date) -> Path:
        return self.directory / f"{FILE_PREFIX}{day.strftime('%Y%m%d')}{FILE_SUFFIX}"

    def write(
        self,
        journal_id: str,
        seq: int,
        row: bytes,
        *,
        sqlstate: str | None,
        error: str,
        detail: str | None = None,
        now: _dt.datetime | None = None,
    ) -> Path:
        """Append one entry and fdatasync it; return the file written.

        Args:
            journal_id: the journal the row comes from.
            seq: its journal seq; with ``journal_id``, the entry's identity.
            row: the COPY text row PostgreSQL refused, as shipped.
            sqlstate: PostgreSQL's SQLSTATE for the refusal, if it sent one.
            error: the error's primary message.
            detail: the error's DETAIL field, if any.
            now: the time of the refusal (UTC); defaults to the current time.

        Raises:
            OSError: the directory or the file could not be written or synced. Nothing may
                then be committed past this row: the caller keeps it in the journal.
        """
        when = now if now is not None else _dt.datetime.now(_dt.UTC)
        entry: dict[str, Any] = {
            "journal_id": journal_id,
            "seq": seq,
            "rejected_at": when.isoformat(),
            "sqlstate": sqlstate,
            "error": _cut(error),
        }
        if detail:
            entry["detail"] = _cut(detail)
        try:
            text = row.decode("utf-8")
        except UnicodeDecodeError:
            entry["row"] = row.decode("utf-8", "backslashreplace")
            entry["row_base64"] = base64.b64encode(row).decode("ascii")
        else:
            entry["row"] = text
            columns = decode_row(text)
            if columns is not None:
                entry["columns"] = columns
        line = orjson.dumps(entry) + b"\n"
        fd, path = self._open(when.date())
        view = memoryview(line)
        while view:  # one write in practice; a short write (a signal) is finished here
            n = os.write(fd, view)
            view = view[n:]
        _fdatasync(fd)
        return path

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._day = ""

    def _open(self, day: _dt.date) -> tuple[int, Path]:
        path = self.path_for(day)
        key = path.name
        if self._fd is not None and self._day == key:
            return self._fd, path
        self.close()
        created_dir = not self.directory.is_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        if created_dir:
            _sync_dir(self.directory.parent)
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | _O_CLOEXEC, 0o644)
        try:
            if not existed:
                _sync_dir(self.directory)  # the new name must survive a machine crash too
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A torn last line from a crash mid-write: end it, so our entry starts clean.
                os.write(fd, b"\n")
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._day = fd, key
        return fd, path


def read_entries(directory: Path, *, unique: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the entries of every dead-letter file in ``directory``, oldest file first.

    Lines that are not a JSON object (a torn last line after a crash) are skipped. With
    ``unique=True`` only the first entry of each ``(journal_id, seq)`` is yielded: a later
    one is the same row dead-lettered again after a crash (see the module docstring).
    """
    seen: set[tuple[str, int]] = set()
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}")):
        with path.open("rb") as f:
            for line in f:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(entry, dict):
                    continue
                if unique:
                    key = (str(entry.get("journal_id")), int(entry.get("seq", -1)))
                    if key in seen:
                        continue
                    seen.add(key)
                yield entry


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
