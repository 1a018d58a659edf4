"""Records to PostgreSQL COPY text rows: the one place a record is encoded.

The bytes this module produces are written to the journal unchanged and later sent to
``COPY ... FROM STDIN`` unchanged, so each record is encoded exactly once (psycopg keeps its
``Formatter`` apart from the ``Writer`` the same way).

Row layout (COPY text format, tab-separated, ``\\N`` for NULL, one row per line)::

    seq  created  received  levelno  levelname  logger  message  pathname  lineno  func
    module  process  process_name  thread  thread_name  exc_text  stack_info  peer  extra

``COLUMNS`` below is the authority; ``store.schema`` creates the table from it.

What PostgreSQL text cannot hold is replaced, never a reason to lose a record: NUL
characters and lone surrogates become U+FFFD and are counted in ``EncodeStats``. Standard
fields of the wrong type (a sender may put anything in a pickle) are coerced: numbers that are
not numbers become NULL, text that is not text becomes its ``str()``; a ``created`` that is
not a usable time becomes the receive time and the original goes to ``extra._bad_created``;
a number column whose value is no usable integer is NULL and the value goes to
``extra._bad_<key>`` (``_bad_process``, ...).

No single record can build an unbounded row: each text column and ``extra`` has a cap
(``MAX_MESSAGE_CHARS`` and the others below). A value over its cap is cut and ends with a
visible marker, ``… [truncated 12345678 chars]``; the cut is counted in
``EncodeStats.truncated_fields`` and the record is kept. So every row is at most
``MAX_ROW_BYTES`` (about 8 MiB), and a journal block can always be split under its limit.

This module must not import socket, select, time or psycopg.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import decimal
import math
import operator
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from logsvc.record import STANDARD_ATTRS, RecordDict

COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "bigint NOT NULL"),
    ("created", "timestamptz NOT NULL"),
    ("received", "timestamptz NOT NULL"),
    ("levelno", "integer"),
    ("levelname", "text"),
    ("logger", "text"),
    ("message", "text"),
    ("pathname", "text"),
    ("lineno", "integer"),
    ("func", "text"),
    ("module", "text"),
    ("process", "bigint"),
    ("process_name", "text"),
    ("thread", "bigint"),
    ("thread_name", "text"),
    ("exc_text", "text"),
    ("stack_info", "text"),
    ("peer", "text"),
    ("extra", "jsonb"),
    # Records sent over the acknowledged protocol (docs/protocol.md): the client's stream and
    # its seq for the record, by which PostgreSQL keeps each of them once. NULL otherwise.
    ("stream", "uuid"),
    ("stream_seq", "bigint"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)

# The row layout ``RowEncoder`` writes. Journal blocks carry it (``journal.format``), and the
# shipper names the COPY columns by it, so a release that changes the layout still ships a
# backlog an older release left in the journal. A new layout gets the next number; the old
# ones stay in ``COPY_COLUMNS`` for as long as an upgrade may find them in a journal.
ROW_FORMAT = 2
COPY_COLUMNS: dict[int, tuple[str, ...]] = {
    1: COLUMN_NAMES[:-2],  # logsvc 0.1: up to extra (LSJ1 blocks, and LSJ2 before streams)
    2: COLUMN_NAMES,  # + stream, stream_seq
}
# How every row of layout 2 ends when it belongs to no stream: stream and stream_seq NULL.
# Data never holds a raw tab or newline (COPY escapes them), so a block whose count of this
# suffix equals its row count holds no stream rows: the shipper's test, at memmem speed.
PLAIN_ROW_END = b"\t\\N\t\\N\n"
_STREAM_NULLS = len(PLAIN_ROW_END) - 1  # the bytes ``with_stream`` replaces: \N\t\N\n
_NCOLS = len(COLUMNS)

_NULL = "\\N"
_INT32 = 1 << 31
_INT64 = 1 << 63
_UINT64 = 1 << 64
# The integer columns' record keys and bounds (for keeping unusable values in extra).
_NUMBER_FIELDS = (("levelno", 1 << 31), ("lineno", 1 << 31), ("process", 1 << 63), ("thread", 1 << 63))
# Years PostgreSQL timestamptz and Python datetime both hold: 1..9999.
_MIN_EPOCH = -62135596800.0
_MAX_EPOCH = 253402300799.0

# Caps on one record's values (issue 10: a 71-byte HTTP form made a 200 MB message, and a block
# the journal refuses). Precedents: rsyslog cuts a message at maxMessageSize (8 KiB by default)
# and syslog-ng at log-msg-size (64 KiB); Loki refuses lines over max_line_size (256 KB), or
# cuts them with max_line_size_truncate; Lucene (so Elasticsearch and Graylog) cannot index a
# term over 32766 bytes. Ours are larger because our own inputs allow more: one pickled record
# may be 1 MiB (--max-frame-bytes, LineFramer's lines too), so no message a stock client can
# send is cut; a traceback (exc_text, stack_info) gets a quarter of that; names and paths
# (PATH_MAX is 4096) get Lucene's 32 Ki. Characters, not bytes: one is at most 4 bytes in the
# row (UTF-8; a COPY escape is 2, the U+FFFD for a NUL 3).
MAX_MESSAGE_CHARS = 1 << 20
MAX_TRACE_CHARS = 1 << 18  # exc_text, stack_info
MAX_FIELD_CHARS = 1 << 15  # every other text column, peer included
# ``extra`` as written in the row (JSON, backslashes doubled for COPY). Over it, each top-level
# value over MAX_EXTRA_VALUE_CHARS is cut (a string itself, anything else its JSON text); if
# that is not enough (many keys, huge keys), extra becomes {"_truncated_extra": its JSON text,
# cut}. jsonb must stay valid, so extra is never cut mid-JSON.
MAX_EXTRA_BYTES = 1 << 20
MAX_EXTRA_VALUE_CHARS = 1 << 16
_MARKER = "… [truncated {} chars]"
_MARKER_MAX = len(_MARKER.format(1 << 64))
_EXTRA_FALLBACK_KEY = "_truncated_extra"
# The fallback's text: each of its characters is at most 4 bytes in the row ('"' -> '\"' ->
# COPY '\\"' is 3, a backslash 4, non-ASCII UTF-8 at most 4), plus the key and braces.
_EXTRA_FALLBACK_CHARS = (MAX_EXTRA_BYTES - 64) // 4 - _MARKER_MAX
# The text columns' caps, in the order of ``_get_texts``, then peer.
_TEXT_CAPS = (
    MAX_FIELD_CHARS,  # levelname
    MAX_FIELD_CHARS,  # name
    MAX_MESSAGE_CHARS,  # msg
    MAX_FIELD_CHARS,  # pathname
    MAX_FIELD_CHARS,  # funcName
    MAX_FIELD_CHARS,  # module
    MAX_FIELD_CHARS,  # processName
    MAX_FIELD_CHARS,  # threadName
    MAX_TRACE_CHARS,  # exc_text
    MAX_TRACE_CHARS,  # stack_info
    MAX_FIELD_CHARS,  # peer
)
# The longest row ``RowEncoder.encode`` can return (8 MiB and 1,943 bytes), for the journal
# writer: text columns at their caps plus a marker, 4 bytes a character; extra; seq (a u64),
# two timestamps (``timestamp()`` writes at most 32 characters; ``received_ts`` must come from
# it), four 64-bit integers, the tabs and the newline. A test encodes the worst records.
MAX_ROW_BYTES = (
    4 * (sum(_TEXT_CAPS) + len(_TEXT_CAPS) * _MARKER_MAX) + MAX_EXTRA_BYTES + 20 + 2 * 32 + 4 * 20 + 19
)

# Text COPY escaping (PostgreSQL docs, "COPY ... Text Format"): backslash, and the three
# characters that would end a field or a row. NUL is not representable in text at all.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\ufffd"})
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_OPTS = orjson.OPT_NON_STR_KEYS
_orjson_dumps = orjson.dumps
_get_texts = operator.itemgetter(
    "levelname",
    "name",
    "msg",
    "pathname",
    "funcName",
    "module",
    "processName",
    "threadName",
    "exc_text",
    "stack_info",
)
_get_numbers = operator.itemgetter("levelno", "lineno", "process", "thread", "created")
# Records from JSON, syslog, HTTP or _bulk lack most LogRecord keys: read with .get (None is
# NULL) they take the fast path too. A LogRecord's dict has them all, stack_info included, and
# the itemgetters are quicker for it; a record without stack_info goes by .get at once
# (raising and catching the KeyError, then merging in the absent keys, cost ~2 us more).
_TEXT_KEYS = ("levelname", "name", "msg", "pathname", "funcName", "module", "processName", "threadName",
              "exc_text", "stack_info")  # fmt: skip
_NUMBER_KEYS = ("levelno", "lineno", "process", "thread", "created")


@dataclass(slots=True)
class EncodeStats:
    """What the encoder had to repair, for the metrics."""

    replaced_chars: int = 0  # NUL and lone surrogates replaced by U+FFFD
    bad_fields: int = 0  # standard fields of the wrong type, coerced
    truncated_fields: int = 0  # values cut to their cap (MAX_MESSAGE_CHARS, ...), record kept


class RowEncoder:
    """Encode record dicts into COPY text rows.

    One instance per server; it caches the formatted second of the last timestamp, because
    records arrive nearly in time order and formatting a datetime is the slow part.
    """

    def __init__(self) -> None:
        self.stats = EncodeStats()
        self._sec = -1
        self._sec_prefix = ""
        self._standard = STANDARD_ATTRS
        # The (created second, levelno) of each row encoded since the last take_tally(): the
        # journal writer takes their tally at each block, for the histogram's counts
        # (store.rollup). A list append per row, counted in C at the seal: 0.26 us a record
        # in all, against 0.30 for a dict update per row (paired, in process).
        self._keys: list[tuple[str, object]] = []
        self._key = self._keys.append

    def take_tally(self) -> dict[tuple[str, object], int]:
        """The rows encoded since the last call by (created second, levelno); start anew."""
        tally = Counter(self._keys)
        self._keys.clear()
        return tally

    def timestamp(self, epoch: float) -> str:
        """Format seconds since the epoch as a UTC timestamptz literal with microseconds."""
        sec = math.floor(epoch)
        usec = int((epoch - sec) * 1e6 + 0.5)
        if usec >= 1_000_000:
            sec += 1
            usec -= 1_000_000
        return f"{self._prefix(sec)}.{usec:06d}+00"

    def _prefix(self, sec: int) -> str:
        if sec != self._sec:
            self._sec = sec
            t = _dt.datetime.fromtimestamp(sec, _dt.UTC)
            self._sec_prefix = t.strftime("%Y-%m-%d %H:%M:%S") if t.year >= 1000 else t.isoformat(" ")[:19]
        return self._sec_prefix

    def encode(self, rec: RecordDict, seq: int, peer: str, received_ts: str) -> bytes:
        """Return one COPY text row (ending in ``\\n``) for ``rec``.

        Args:
            rec: a decoded record dict (``logsvc.record``).
            seq: the journal sequence number this record will have.
            peer: where it came from, for the ``peer`` column (already plain text; cut past
                ``MAX_FIELD_CHARS`` like any text column).
            received_ts: ``self.timestamp(receive time)``, formatted once per read by the caller.

        Returns:
            The row: at most ``MAX_ROW_BYTES``, whatever ``rec`` holds (values over their caps
            are cut, marked and counted in ``stats.truncated_fields``).
        """
        # Fast path, for records shaped the way the stdlib makes them: every standard key
        # present, text fields str or None with nothing to escape, numbers ints, a sane
        # time. It is straight-line code on purpose: at 100k records/s each function call
        # per field is a measurable share of the service's CPU.
        try:
            texts = None
            if "stack_info" in rec:
                try:
                    texts = _get_texts(rec)
                    levelno, lineno, process, thread, created = _get_numbers(rec)
                except KeyError:
                    texts = None
            if texts is None:
                get = rec.get
                texts = tuple(map(get, _TEXT_KEYS))
                levelno, lineno, process, thread, created = map(get, _NUMBER_KEYS)
            # One C call type-checks the text fields (join raises on non-str) and gives us one
            # string to search for characters that need escaping.
            probe = "".join(filter(None, texts))
        except TypeError:
            return self._encode_slow(rec, seq, peer, received_ts)
        if (
            # One check bounds every text column: all of them together are within the
            # smallest cap (and peer, which the caller hands over unescaped, with them).
            len(probe) + len(peer) > MAX_FIELD_CHARS
            or "\\" in probe
            or "\t" in probe
            or "\n" in probe
            or "\r" in probe
            or "\x00" in probe
            or (created is not None and (type(created) is not float or not 0.0 < created < _MAX_EPOCH))
            or (levelno is not None and (type(levelno) is not int or not -_INT32 <= levelno < _INT32))
            or (lineno is not None and (type(lineno) is not int or not -_INT32 <= lineno < _INT32))
            or (process is not None and (type(process) is not int or not -_INT64 <= process < _INT64))
            or (thread is not None and (type(thread) is not int or not -_INT64 <= thread < _INT64))
        ):
            return self._encode_slow(rec, seq, peer, received_ts)
        levelname, name, msg, pathname, func, module, pname, tname, exc, stack = texts
        n = _NULL
        if created is None:
            created_ts = received_ts  # a sender without a clock: the receive time stands in
            second = received_ts[:19]
        else:
            # self.timestamp(created), inlined (created > 0 here, so int() is floor()).
            sec = int(created)
            usec = int((created - sec) * 1e6 + 0.5)
            if usec >= 1_000_000:
                return self._encode_slow(rec, seq, peer, received_ts)
            second = self._sec_prefix if sec == self._sec else self._prefix(sec)
            created_ts = f"{second}.{usec:06d}+00"
        line = (
            f"{seq}\t{created_ts}\t{received_ts}\t{n if levelno is None else levelno}\t"
            f"{n if levelname is None else levelname}\t{n if name is None else name}\t"
            f"{n if msg is None else msg}\t{n if pathname is None else pathname}\t"
            f"{n if lineno is None else lineno}\t"
            f"{n if func is None else func}\t{n if module is None else module}\t"
            f"{n if process is None else process}\t{n if pname is None else pname}\t"
            f"{n if thread is None else thread}\t{n if tname is None else tname}\t"
            f"{n if exc is None else exc}\t{n if stack is None else stack}\t{peer}\t"
        )
        try:
            head = line.encode()
        except UnicodeEncodeError:
            return self._encode_slow(rec, seq, peer, received_ts)
        extra_keys = rec.keys() - self._standard
        if not extra_keys:
            row = head + b"\\N\t\\N\t\\N\n"
        else:
            extra = {k: rec[k] for k in extra_keys}
            # self._json(extra), its common case inline: plain values, nothing to escape or cut.
            try:
                js = _orjson_dumps(extra, default=_json_default, option=_JSON_OPTS)
            except (TypeError, orjson.JSONEncodeError):
                js = b"\\"  # whatever makes the test below send it to _json
            if b"\\" in js or len(js) > MAX_EXTRA_BYTES:
                js = self._json(extra)
            row = b"%s%s\t\\N\t\\N\n" % (head, js)
        # Counted once the row exists (store.rollup): by its second and level as written.
        key = (second, levelno)
        self._key(key)
        return row

    def _encode_slow(self, rec: RecordDict, seq: int, peer: str, received_ts: str) -> bytes:
        # Any record at all: missing keys, wrong types, text to escape or repair.
        g = rec.get
        bad_created = None
        created = g("created")
        if type(created) is float and _MIN_EPOCH < created < _MAX_EPOCH:
            created_ts = self.timestamp(created)
        elif type(created) is int and _MIN_EPOCH < created < _MAX_EPOCH:
            created_ts = self.timestamp(float(created))
        elif created is None:
            created_ts = received_ts  # no time sent (JSON, syslog): not a bad field
        else:
            bad_created = created
            created_ts = received_ts
            self.stats.bad_fields += 1

        fields = [
            str(seq),
            created_ts,
            received_ts,
            self._int(g("levelno"), _INT32),
            self._text(g("levelname"), MAX_FIELD_CHARS),
            self._text(g("name"), MAX_FIELD_CHARS),
            self._text(g("msg"), MAX_MESSAGE_CHARS),
            self._text(g("pathname"), MAX_FIELD_CHARS),
            self._int(g("lineno"), _INT32),
            self._text(g("funcName"), MAX_FIELD_CHARS),
            self._text(g("module"), MAX_FIELD_CHARS),
            self._int(g("process"), _INT64),
            self._text(g("processName"), MAX_FIELD_CHARS),
            self._int(g("thread"), _INT64),
            self._text(g("threadName"), MAX_FIELD_CHARS),
            self._text(g("exc_text"), MAX_TRACE_CHARS),
            self._text(g("stack_info"), MAX_TRACE_CHARS),
            self._text(peer, MAX_FIELD_CHARS),
        ]
        line = "\t".join(f if f is _NULL else self._escape(f) for f in fields)
        try:
            head = line.encode()
        except UnicodeEncodeError:
            self.stats.replaced_chars += len(_SURROGATE.findall(line))
            head = _SURROGATE.sub("\ufffd", line).encode()

        extra_keys = rec.keys() - self._standard
        kept: dict[str, Any] = {}
        if bad_created is not None:
            kept["_bad_created"] = repr(bad_created)[:200]
        for key, bound in _NUMBER_FIELDS:
            # A number column NULLed because its value was no number ("process": "worker-1"
            # from a JSON sender): the value is kept beside the row, not lost.
            v = g(key)
            if (
                v is not None
                and not (type(v) is int and -bound <= v < bound)
                and not (type(v) is float and v.is_integer() and -bound <= v < bound)
            ):
                kept["_bad_" + key] = v  # _json copes with anything (depth caps, surrogates)
        if kept:
            extra_keys.update(kept)
            rec = rec | kept
        if extra_keys:
            extra = self._json({k: rec[k] for k in extra_keys})
        else:
            extra = b"\\N"
        row = b"%s\t%s\t\\N\t\\N\n" % (head, extra)
        second = (created_ts[:19], fields[3])
        self._key(second)
        return row

    def _escape(self, s: str) -> str:
        if "\x00" in s:
            self.stats.replaced_chars += s.count("\x00")
        return s.translate(_ESCAPES)

    def _text(self, v: Any, cap: int) -> str:
        if type(v) is not str:
            if v is None:
                return _NULL
            self.stats.bad_fields += 1
            v = str(v)
        return v if len(v) <= cap else self._cut(v, cap)

    def _cut(self, s: str, cap: int) -> str:
        # The first ``cap`` characters and a marker saying how many followed; counted.
        self.stats.truncated_fields += 1
        return s[:cap] + _MARKER.format(len(s) - cap)

    def _int(self, v: Any, bound: int) -> str:
        if type(v) is int and -bound <= v < bound:
            return str(v)
        if v is None:
            return _NULL
        self.stats.bad_fields += 1
        if type(v) is float and v.is_integer() and -bound <= v < bound:
            return str(int(v))
        return _NULL

    def _json(self, extra: dict[str, Any]) -> bytes:
        # Once per record with extra keys: the common case is one orjson call and two
        # searches, inline; repairs and caps are calls off that path.
        replaced = -1  # the count before a repair, which _cut_extra redoes on what it keeps
        try:
            js = _orjson_dumps(extra, default=_json_default, option=_JSON_OPTS)
        except (TypeError, orjson.JSONEncodeError):
            replaced = self.stats.replaced_chars
            js = self._dumps(extra)
        else:
            if b"\\u0000" in js:
                replaced = self.stats.replaced_chars
                js = self._dumps(extra)
        # JSON escapes are backslashes, which COPY text would eat: double them (_copy_escape).
        if b"\\" in js:
            js = js.replace(b"\\", b"\\\\")
        if len(js) > MAX_EXTRA_BYTES:
            if replaced >= 0:
                self.stats.replaced_chars = replaced
            js = self._cut_extra(extra)
        return js

    def _dumps(self, v: Any) -> bytes:
        # JSON that jsonb accepts, not yet escaped for COPY.
        try:
            js = orjson.dumps(v, default=_json_default, option=_JSON_OPTS)
        except (TypeError, orjson.JSONEncodeError):
            # Lone surrogates, integers beyond 64 bits, nesting orjson refuses: make every
            # value plain and try once more. Rare, so the slow path may be slow.
            js = orjson.dumps(self._sanitize(v, 0), default=_json_default, option=_JSON_OPTS)
        if b"\\u0000" in js:
            # jsonb cannot hold U+0000 even escaped ("unsupported Unicode escape sequence").
            js = orjson.dumps(self._sanitize(v, 0), default=_json_default, option=_JSON_OPTS)
        return js

    def _cut_extra(self, extra: dict[str, Any]) -> bytes:
        # extra over MAX_EXTRA_BYTES. First each top-level value over MAX_EXTRA_VALUE_CHARS is
        # cut (the usual case: one huge value beside small ones, which stay as they are).
        kept: dict[Any, Any] = {}
        for key, value in extra.items():
            if type(value) is str:
                if len(value) > MAX_EXTRA_VALUE_CHARS:
                    value = self._cut(value, MAX_EXTRA_VALUE_CHARS)
            elif not (value is None or type(value) in (bool, int, float)):
                replaced = self.stats.replaced_chars
                text = self._dumps(value)
                if len(text) > MAX_EXTRA_VALUE_CHARS and len(chars := text.decode()) > MAX_EXTRA_VALUE_CHARS:
                    value = self._cut(chars, MAX_EXTRA_VALUE_CHARS)
                else:
                    self.stats.replaced_chars = replaced  # counted when the value is dumped below
            kept[key] = value
        plain = self._dumps(kept)
        js = _copy_escape(plain)
        if len(js) <= MAX_EXTRA_BYTES:
            return js
        # Still too large (thousands of keys, or huge keys): what is left, as JSON text, cut.
        # Its characters cost at most 4 bytes each (_EXTRA_FALLBACK_CHARS), so this fits.
        cut = self._cut(plain.decode(), _EXTRA_FALLBACK_CHARS)
        return _copy_escape(orjson.dumps({_EXTRA_FALLBACK_KEY: cut}))

    def _sanitize(self, v: Any, depth: int) -> Any:
        if isinstance(v, str):
            if "\x00" in v or _SURROGATE.search(v):
                self.stats.replaced_chars += v.count("\x00") + len(_SURROGATE.findall(v))
                return _SURROGATE.sub("\ufffd", v.replace("\x00", "\ufffd"))
            return v
        if depth > 32:
            return f"<too deep: {type(v).__name__}>"
        if isinstance(v, dict):
            return {str(self._sanitize(k, depth + 1)): self._sanitize(x, depth + 1) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self._sanitize(x, depth + 1) for x in v]
        if isinstance(v, int) and not isinstance(v, bool) and not -_INT64 <= v < _UINT64:
            # orjson writes i64 and u64; past them it raises. The fast path (orjson directly)
            # writes 2**63..2**64-1 as numbers, so this must too, or one value would be
            # stored two ways depending on its neighbours (hypothesis found 2**63).
            return str(v)
        return v


def with_stream(row: bytes, stream: bytes, stream_seq: int) -> bytes:
    """Return ``row`` (as ``RowEncoder.encode`` made it) with its stream and stream seq set.

    ``stream`` is the stream id as 32 lower-case hex digits (bytes); PostgreSQL reads that as
    a uuid.
    """
    return b"%s%s\t%d\n" % (row[:-_STREAM_NULLS], stream, stream_seq)


def stream_of(row: bytes) -> tuple[bytes, int] | None:
    """The ``(stream, stream_seq)`` a layout-2 row carries, or None (a plain row)."""
    if row.endswith(PLAIN_ROW_END):
        return None
    _, stream, seq = row.rsplit(b"\t", 2)
    return stream, int(seq)


def _copy_escape(js: bytes) -> bytes:
    # JSON escapes are backslashes, which COPY text would eat: double them. orjson never emits
    # a raw tab, newline or carriage return (they are escaped inside strings).
    return js.replace(b"\\", b"\\\\") if b"\\" in js else js


def _json_default(v: Any) -> Any:
    # orjson handles datetime, date, time and UUID natively (RFC 3339 strings). The rest of
    # the wire allow-list gets its natural JSON form here.
    if isinstance(v, decimal.Decimal):
        return str(v)  # a string keeps every digit; a JSON number would round
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, bytes | bytearray):
        # Text where it is UTF-8, \xNN escapes where it is not; NUL spelled out for jsonb.
        return bytes(v).decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, set | frozenset):
        return sorted(map(repr, v))
    return f"<unserializable {type(v).__name__}>"
