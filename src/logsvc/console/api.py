"""The console's HTTP side: the page's static files and the JSON API under ``/api/``.

Theory of operation
-------------------
``Console.handle(conn, request)`` is an ``ingest.http`` application: it answers static files
at once and API requests later, once their statement has run on the console's own pool
(``console.db``), so the loop never waits for PostgreSQL. Each API request is:

1. parameters read and checked (bounded: a handful of fields, limits clamped), the query
   compiled by ``query_lang`` (a bad query is a 400 with its position), the time range read
   like the CLI's ``--since``/``--until`` (``query.parse_time``; default: the last hour);
2. statements sent with every value as a parameter: one, or for lists a few over time
   windows growing from the starting point (``spans``, ``_windowed``) until the page is
   full; the histogram's on a fixed grid with its settled buckets cached
   (``console.histogram``);
3. the answer assembled from rows PostgreSQL already rendered as JSON (``json_build_object``
   with the CLI's ``--format json`` names), so records are passed through, not decoded.
   In lists the long fields are cut (``LIST_JSON``); ``/api/record`` gives them whole.

Record ids are ``"<journal uuid hex>:<seq>"`` (``records.journal``, ``records.seq``); rows
stored before the journal column existed have ``"-:<seq>"``. Cursors are opaque to clients:
``"<created in µs since the epoch>_<seq>"``, a keyset on ``(created, seq)``, the order every
list is in.

Authentication (``token``): when set, every console route needs ``Authorization: Bearer
TOKEN`` or the cookie the page gets from ``/?token=TOKEN`` (HttpOnly, SameSite=Strict).
When the console is bound off loopback without a token (``require_token``), its routes
answer 403 and say why; ``/metrics`` and the health routes are not the console's.

Errors are JSON ``{"error": ...}``: 400 for a bad query (with ``position``) or parameter,
401/403 for authentication, 404 for an unknown record, 503 while PostgreSQL is unreachable,
too slow (``statement_timeout``) or the console's queue is full. Never a traceback.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import orjson

from logsvc.console import histogram as hg
from logsvc.console import query_lang as ql
from logsvc.console.brin import BrinSummarizer
from logsvc.console.db import ConsoleDb, Row
from logsvc.errors import ConfigError, StoreError
from logsvc.ingest.http import HttpConnection, Request, Response
from logsvc.query import FIELDS, parse_time
from logsvc.store import rollup
from logsvc.store import schema as _schema
from logsvc.store.pgproto import PgError

log = logging.getLogger("logsvc.console")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_RANGE = _dt.timedelta(hours=1)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_BUCKETS = 60
MAX_BUCKETS = 1000
DEFAULT_CONTEXT = 20
MAX_CONTEXT = 500
# Context looks this far from its starting point (a process's neighbours a day away are
# not its context, and the bound keeps a rare process from scanning every partition), first
# within CONTEXT_FIRST_WINDOW, then in windows six times wider each (``spans``).
CONTEXT_WINDOW = _dt.timedelta(days=1)
CONTEXT_FIRST_WINDOW = _dt.timedelta(minutes=10)
# Search (and the facets' sample) looks first from a bound found among the newest rows
# (``_newest_windows``), which on a busy service is a fraction of a second back; without one
# (a quiet service, a rare match) at the newest 10 seconds, then windows four times wider
# (``spans``): a scan of a whole hour of a busy service (millions of rows) would not end
# within the statement timeout, and a quiet one pays a few more cheap statements (an hour is
# 6 windows, each pruned by the BRIN index).
SEARCH_FIRST_WINDOW = _dt.timedelta(seconds=10)
SEARCH_WINDOW_GROWTH = 4
# How many of the last pages of today's partition give the first window's bound
# (_newest_windows): about 7,000 rows, read in 2-3 ms.
TAIL_PAGES = 256


def newest_pages(schema: str, now: _dt.datetime) -> tuple[str, str]:
    """``(table, condition)``: today's partition and a TID range over its last ``TAIL_PAGES`` pages.

    Rows are appended, so those pages hold the rows stored last (a TID range scan reads only
    them). The search's bound and the sampling tail use them; neither needs every recent
    row there, only some.
    """
    part = f"{schema}.records_{now.astimezone(_dt.UTC):%Y%m%d}"
    cond = (
        f"ctid >= (SELECT format('(%s,0)', greatest(0, pg_relation_size('{part}') / "
        f"current_setting('block_size')::int - {TAIL_PAGES}))::tid)"
    )
    return part, cond


_MICROSECOND = _dt.timedelta(microseconds=1)
# A record looked up by id: first in the newest hour (and one ahead, for clocks ahead).
FIND_AHEAD = _dt.timedelta(hours=1)
FIND_FIRST_WINDOW = _dt.timedelta(hours=2)
_FIRST_TIME = _dt.datetime(1, 1, 2, tzinfo=_dt.UTC)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
# An unfiltered histogram reads the counts table (store.rollup) for ranges of two of its
# buckets or more; rows stored before it existed are counted from records when the range
# starts less than this after then (rows whose clock was ahead by more are not counted).
_ROLLUP_BUCKET = _dt.timedelta(seconds=rollup.BUCKET_S)
_COUNTS_SLACK = _dt.timedelta(hours=1)
# Facets are computed over the newest rows of the range, at most this many: their top values
# are a sample's either way (Kibana's field list samples 500 documents), and each row costs
# PostgreSQL ~20-30 us (its extra taken apart): 10,000 rows took 160-200 ms of its CPU
# (measured on a busy table), taken from ingest at every query of a user re-querying.
FACET_SAMPLE = 1_000
FACET_TOP = 10
FACET_MAX_EXTRA_KEYS = 30
FACET_VALUE_CHARS = 200
# A field with more distinct values than this in the sample is shown as high-cardinality.
HIGH_CARDINALITY = 50
MAX_PARAMS = 16
# Static files are read once and kept while unchanged; larger files are not served.
MAX_STATIC_BYTES = 4 << 20
COOKIE = "logsvc_console"
LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
# Every log field is shown as text by the page; the policy makes sure nothing else runs even
# if a bug let markup through: scripts only from our own files, no inline ones, no frames.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
]
_STATIC_PATH = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$")
_CURSOR = re.compile(r"^(-?\d{1,19})_(\d{1,19})$")
_ID = re.compile(r"^([0-9a-f]{32}|-):(\d{1,19})$")

# One record as JSON, built by PostgreSQL: the CLI's field names (query.FIELDS) plus "id".
_ID_SQL = "coalesce(replace(journal::text, '-', ''), '-') || ':' || seq"
RECORD_JSON = "json_build_object('id', " + _ID_SQL + ", " + ", ".join(f"'{f}', {f}" for f in FIELDS) + ")"
# In lists (search, context, tail) the long fields are cut at LIST_FIELD_CHARS and the record
# says "truncated": true; /api/record gives it whole. A page of 1,000 records holding 8 MiB
# messages (the store's cap) would otherwise be gigabytes in the service and the browser.
LIST_FIELD_CHARS = 16384
_LONG = ("message", "exc_text", "stack_info")


def _list_field(f: str) -> str:
    if f in _LONG:
        return f"left({f}, {LIST_FIELD_CHARS})"
    if f == "extra":
        return (
            f"CASE WHEN length(extra::text) > {LIST_FIELD_CHARS} "
            f"THEN jsonb_build_object('_truncated', left(extra::text, {LIST_FIELD_CHARS})) ELSE extra END"
        )
    return f


_CUT = " OR ".join(f"length({f}) > {LIST_FIELD_CHARS}" for f in _LONG)
LIST_JSON = (
    "json_build_object('id', " + _ID_SQL + ", " + ", ".join(f"'{f}', {_list_field(f)}" for f in FIELDS)
    + f", 'truncated', coalesce({_CUT} OR length(extra::text) > {LIST_FIELD_CHARS}, false))"
)  # fmt: skip
# The keyset of a row: created in µs since the epoch, and seq.
_KEY_SQL = "(extract(epoch FROM created) * 1000000)::bigint, seq"
_HOST_SQL = "regexp_replace(peer, ':[^:]*$', '')"


class ApiError(Exception):
    """An answer other than 200, with its JSON body."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **fields}


@dataclass(frozen=True, slots=True)
class Cursor:
    micros: int
    seq: int

    def __str__(self) -> str:
        return f"{self.micros}_{self.seq}"

    @property
    def time(self) -> _dt.datetime:
        try:
            return _EPOCH + _dt.timedelta(microseconds=self.micros)
        except OverflowError:
            raise ApiError(400, "the cursor is out of range") from None


def spans(
    start: _dt.datetime, stop: _dt.datetime, first: _dt.timedelta, growth: int
) -> list[tuple[_dt.datetime, _dt.datetime]]:
    """Disjoint ``(lo, hi)`` ranges from ``start`` toward ``stop`` (either way), growing.

    The first is ``first`` long and nearest ``start``; each next is ``growth`` times longer;
    the last ends at ``stop``. Each range is ``lo <= t < hi``.
    """
    out: list[tuple[_dt.datetime, _dt.datetime]] = []
    edge, span, backward = start, first, stop < start
    while edge != stop:
        if abs(stop - edge) <= span:
            nxt = stop
        else:
            nxt = edge - span if backward else edge + span
            span *= growth  # only while short of the rest: no overflow for year-1 ranges
        out.append((nxt, edge) if backward else (edge, nxt))
        edge = nxt
    return out


def parse_cursor(text: str, name: str) -> Cursor:
    m = _CURSOR.match(text)
    if m is None:
        raise ApiError(400, f"{name}: not a cursor this console gave out")
    return Cursor(int(m.group(1)), int(m.group(2)))


def _cursor_of(row: Row, at: int) -> Cursor:
    micros, seq = row[at], row[at + 1]
    assert micros is not None and seq is not None
    return Cursor(int(micros), int(seq))


class Console:
    """The console's routes: ``/``, ``/static/...``, ``/api/...``.

    Args:
        db: the console's connection pool.
        schema: the schema holding ``records``.
        token: the token every request must carry, or None.
        require_token: the console is reachable off loopback: without a token it refuses.
        tail: makes the SSE response of ``/api/tail`` (``console.tail.Tail.subscribe``).
    """

    def __init__(
        self,
        db: ConsoleDb,
        schema: str,
        *,
        token: str | None = None,
        require_token: bool = False,
        static_dir: Path = STATIC_DIR,
        now: Callable[[], _dt.datetime] = lambda: _dt.datetime.now(_dt.UTC),
    ) -> None:
        self.db = db
        self.schema = _schema.check_identifier(schema)
        self.token = token
        self.require_token = require_token
        self.static_dir = static_dir
        self._now = now
        self._static: dict[str, tuple[int, int, bytes, str]] = {}  # path -> mtime, size, body, etag
        self.tail: Callable[[HttpConnection, Request, str], ApiError | None] | None = None
        self.summarizer: BrinSummarizer | None = None  # keeps the BRIN indexes current (console.brin)
        self.closers: list[Callable[[], None]] = []
        self.histograms = hg.HistogramCache()
        # (monotonic time to look again, meta.counts_since or None): see _counts_since.
        self._counts_known: tuple[float, _dt.datetime | None] | None = None
        self._routes: dict[str, Callable[[HttpConnection, dict[str, str]], None]] = {
            "search": self._search,
            "histogram": self._histogram,
            "record": self._record,
            "context": self._context,
            "facets": self._facets,
        }
        self.requests = 0

    def close(self) -> None:
        """Close the live tails and the connections (at the service's stop)."""
        for close in self.closers:
            close()

    @staticmethod
    def claims(path: str) -> bool:
        """Whether ``path`` is the console's (the operator port's router asks)."""
        return path == "/" or path.startswith(("/static/", "/api/")) or path == "/favicon.ico"

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, conn: HttpConnection, req: Request) -> Response | None:
        """Answer ``req`` now, or later through ``conn.respond`` (never leave it unanswered)."""
        self.requests += 1
        try:
            return self._handle(conn, req)
        except Exception:
            # A bug, not the user's mistake: logged with its traceback, answered without one.
            log.exception("Console: %s %s failed", req.method, req.path[:200])
            return _json(500, {"error": "the console failed on this request (the service log has why)"})

    def _handle(self, conn: HttpConnection, req: Request) -> Response | None:
        try:
            denied = self._check_auth(req)
            if denied is not None:
                return denied
            if req.method != "GET":
                raise ApiError(405, f"{req.method} is not allowed here; the console only reads")
            if req.path.startswith("/api/"):
                return self._api(conn, req)
            return self._static_file(req)
        except ApiError as exc:
            return _json(exc.status, exc.body)

    def _check_auth(self, req: Request) -> Response | None:
        if self.token is None:
            if self.require_token:
                return _json(
                    403,
                    {
                        "error": "the console is reachable from other machines and has no token: "
                        "start it with --console-token (or bind it to loopback)"
                    },
                )
            return None
        given = _bearer(req.headers.get("authorization", "")) or _cookie(
            req.headers.get("cookie", ""), COOKIE
        )
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        try:
            params = dict(parse_qsl(req.query, max_num_fields=MAX_PARAMS)) if req.path == "/" else {}
        except ValueError:
            params = {}
        offered = params.pop("token", None)
        if offered is not None and hmac.compare_digest(offered.encode(), self.token.encode()):
            # The page's link carries the token once; the cookie carries it from then on, and
            # the address bar no longer shows it.
            cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            where = "/" + ("?" + urlencode(params) if params else "")
            return Response(303, b"", "text/plain", [("Location", where), ("Set-Cookie", cookie)])
        return _json(
            401,
            {"error": "this console needs its token: open /?token=TOKEN, or send Authorization: Bearer"},
            [("WWW-Authenticate", 'Bearer realm="logsvc console"')],
        )

    def _api(self, conn: HttpConnection, req: Request) -> Response | None:
        try:
            pairs = parse_qsl(req.query, keep_blank_values=True, max_num_fields=MAX_PARAMS)
        except ValueError:
            raise ApiError(400, f"too many parameters (at most {MAX_PARAMS})") from None
        params = dict(pairs)
        if self.summarizer is not None:
            self.summarizer.poke()
        route = self._routes.get(req.path[5:])
        if route is not None:
            route(conn, params)
            return None  # answered once the statement has run
        if req.path == "/api/tail" and self.tail is not None:
            q = params.get("q", "")
            _compile(q)  # a bad query is a 400 here, before the stream starts
            err = self.tail(conn, req, q)
            if err is not None:
                raise err
            return None
        raise ApiError(404, f"no such API: {req.path[:100]}")

    # -- running statements ------------------------------------------------------------------

    def _run(
        self,
        conn: HttpConnection,
        sql: str,
        params: list[str | None],
        answer: Callable[[list[Row]], Response],
        regexes: tuple[int, ...] = (),
    ) -> None:
        def on_rows(rows: list[Row]) -> None:
            resp = _answered(answer, rows)
            if resp is not None:
                conn.respond(resp)

        def on_error(exc: StoreError) -> None:
            conn.respond(db_error_response(exc, regexes))

        if not self.db.submit(sql, params, on_rows, on_error):
            raise ApiError(503, "the console is busy (too many queries waiting); retry in a moment")

    def _range(self, params: dict[str, str]) -> tuple[_dt.datetime, _dt.datetime]:
        now = self._now()
        try:
            until = parse_time(params["until"], now) if params.get("until") else now
            since = parse_time(params["since"], now) if params.get("since") else until - DEFAULT_RANGE
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        except (OverflowError, ValueError):  # query.parse_time: "0001-01-01" local is year 0
            raise ApiError(400, "the time is out of range") from None
        if since >= until:
            raise ApiError(400, f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
        return since, until

    # -- the routes --------------------------------------------------------------------------

    def _search(self, conn: HttpConnection, params: dict[str, str]) -> None:
        started = time.monotonic()
        limit = _int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        since, until = self._range(params)
        base = ql.Params()
        query = _compile(params.get("q", ""), base)
        cond = query.sql
        start = until
        if params.get("cursor"):
            c = parse_cursor(params["cursor"], "cursor")
            cond += _keyset("<", c, base)
            start = max(since, min(until, c.time + _MICROSECOND))
        statement = self._select_in(cond, base, "DESC")

        def answer(rows: list[Row]) -> Response:
            more = len(rows) > limit
            rows = rows[:limit]
            nxt = str(_cursor_of(rows[-1], 1)) if more else None
            took = round((time.monotonic() - started) * 1000, 1)
            body = b'{"records":' + _json_array(rows) + b',"next":' + orjson.dumps(nxt)
            return _raw(body + b',"took_ms":' + orjson.dumps(took) + b"}\n")

        def failed(exc: StoreError) -> None:
            conn.respond(db_error_response(exc, query.regex_positions))

        def search(windows: list[tuple[_dt.datetime, _dt.datetime]]) -> None:
            self._windowed(conn, windows, statement, limit + 1, answer, failed)

        self._newest_windows(since, start, cond, base, limit + 1, search)

    def _newest_windows(
        self,
        since: _dt.datetime,
        until: _dt.datetime,
        cond: str,
        base: ql.Params,
        want: int,
        then: Callable[[list[tuple[_dt.datetime, _dt.datetime]]], None],
    ) -> None:
        """The windows in which to look for the newest ``want`` rows matching ``cond``: ``then(windows)``.

        They grow back from ``until`` (``spans``), but first from a bound found where the
        newest rows are: the ``want``-th newest ``created`` among the matching rows of the
        last ``TAIL_PAGES`` pages of today's partition (a TID range scan: rows are appended,
        so those are the rows stored last). Any subset of the matching rows gives a bound
        at or below the true ``want``-th newest, so the first window, from it to ``until``,
        holds the answer, and as rows lie on disk in about the order they were created the
        BRIN index on ``created`` reads only the last pages for it. Without the bound, records
        sent with times already seconds old (a client's backlog, a benchmark's pre-made
        records: hundreds of thousands in a few seconds of ``created``) would all be read and
        sorted by the first window that reaches them. With fewer matching rows there than
        ``want`` (a quiet service, a rare match, a range in the past, no partition for today)
        the windows start at ``until``.
        """
        ps = ql.Params(list(base.values))
        lo, hi = ps.add(since.isoformat(), "timestamptz"), ps.add(until.isoformat(), "timestamptz")
        part, tail = newest_pages(self.schema, self._now())
        sql = (
            f"SELECT created FROM {part} WHERE {tail} AND created >= {lo} AND created < {hi} AND {cond} "
            f"ORDER BY created DESC OFFSET {ps.add(want - 1, 'bigint')} LIMIT 1"
        )

        def got(rows: list[Row]) -> None:
            bound = None
            if rows and rows[0][0] is not None:
                bound = _dt.datetime.fromisoformat(rows[0][0].decode())
            if bound is None or not since <= bound < until:
                then(spans(until, since, SEARCH_FIRST_WINDOW, SEARCH_WINDOW_GROWTH))
                return
            then([(bound, until), *spans(bound, since, SEARCH_FIRST_WINDOW, SEARCH_WINDOW_GROWTH)])

        def no_bound(exc: StoreError) -> None:
            # No partition for today (or it went): the windows alone, as without a bound. A
            # statement that fails for its query fails again in the windows, with its message.
            got([])

        if not self.db.submit(sql, ps.values, got, no_bound):
            raise ApiError(503, "the console is busy (too many queries waiting); retry in a moment")

    def _select_in(
        self, cond: str, base: ql.Params, order: str
    ) -> Callable[[_dt.datetime, _dt.datetime, int], tuple[str, list[str | None]]]:
        """Makes the statement selecting records matching ``cond`` in one window, in ``order``."""

        def statement(lo: _dt.datetime, hi: _dt.datetime, want: int) -> tuple[str, list[str | None]]:
            ps = ql.Params(list(base.values))
            # The rows are chosen by their keys alone (a sort of narrow rows), then fetched by
            # tuple id and rendered as JSON, for the rows kept only: in one query PostgreSQL
            # would build the JSON of every row it sorts (10x slower on a busy hour), and a sort
            # carrying whole rows costs about half as much again as one of keys.
            lo_p, hi_p = ps.add(lo.isoformat(), "timestamptz"), ps.add(hi.isoformat(), "timestamptz")
            rng, n = f"created >= {lo_p} AND created < {hi_p}", ps.add(want, "bigint")
            sql = (
                f"WITH k AS MATERIALIZED (SELECT tableoid AS t, ctid AS c FROM {self.schema}.records "
                f"WHERE {rng} AND {cond} ORDER BY created {order}, seq {order} LIMIT {n}) "
                f"SELECT {LIST_JSON}, {_KEY_SQL} FROM {self.schema}.records WHERE {rng} "
                f"AND ctid = ANY (ARRAY(SELECT c FROM k)) AND (tableoid, ctid) IN (SELECT t, c FROM k) "
                f"ORDER BY created {order}, seq {order}"
            )
            return sql, ps.values

        return statement

    def _windowed(
        self,
        conn: HttpConnection,
        windows: list[tuple[_dt.datetime, _dt.datetime]],
        statement: Callable[[_dt.datetime, _dt.datetime, int], tuple[str, list[str | None]]],
        want: int,
        answer: Callable[[list[Row]], Response | None],
        failed: Callable[[StoreError], None],
    ) -> None:
        """Run ``statement`` over ``windows`` one after another until ``want`` rows are found.

        The first window is the one nearest the starting point, and each is several times
        the one before (``spans``): the newest 100 of a common match cost one small range,
        a rare one at most a few more statements than one query over everything (the CLI's
        ``query.plan_windows``, for the same reason). ``answer`` gets the rows in window
        order; it may return a response to send, or None when it answers itself.
        """
        rows: list[Row] = []
        left = list(windows)

        def step() -> None:
            lo, hi = left.pop(0)
            sql, params = statement(lo, hi, want - len(rows))
            if not self.db.submit(sql, params, got, failed):
                failed(StoreError("the console is busy (too many queries waiting)", reason="busy"))

        def got(new: list[Row]) -> None:
            rows.extend(new)
            if len(rows) >= want or not left:
                resp = _answered(answer, rows)
                if resp is not None:
                    conn.respond(resp)
                return
            step()

        if not windows:
            got([])
            return
        if not self.db.submit(*statement(*left.pop(0), want), got, failed):
            raise ApiError(503, "the console is busy (too many queries waiting); retry in a moment")

    def _histogram(self, conn: HttpConnection, params: dict[str, str]) -> None:
        buckets = _int_param(params, "buckets", DEFAULT_BUCKETS, 1, MAX_BUCKETS)
        since, until = self._range(params)
        q = params.get("q", "")
        base = ql.Params()
        query = _compile(q, base)
        if query.sql == "TRUE" and until - since >= 2 * _ROLLUP_BUCKET:

            def counted(since_counts: _dt.datetime | None) -> None:
                if since_counts is None:
                    self._histogram_scan(conn, since, until, buckets, q, base, query)
                else:
                    self._histogram_counts(conn, since, until, buckets, since_counts)

            self._counts_since(counted, lambda exc: conn.respond(db_error_response(exc)))
            return
        self._histogram_scan(conn, since, until, buckets, q, base, query)

    def _counts_since(
        self, then: Callable[[_dt.datetime | None], None], failed: Callable[[StoreError], None]
    ) -> None:
        """Call ``then`` with ``meta.counts_since`` (None: the schema has no counts table)."""
        clock = time.monotonic()
        if self._counts_known is not None and (
            self._counts_known[1] is not None or clock < self._counts_known[0]
        ):
            then(self._counts_known[1])
            return

        def got(rows: list[Row]) -> None:
            value = rows[0][0] if rows else None
            since = None if value is None else _epoch_time(float(value))
            # Known for good once found; looked for again a minute later while missing (a
            # console started against a schema that serve upgrades afterwards).
            self._counts_known = (time.monotonic() + 60.0, since)
            then(since)

        s = self.schema
        sql = (
            f"SELECT CASE WHEN to_regclass('{s}.counts') IS NOT NULL THEN (SELECT extract(epoch FROM "
            f"value::timestamptz) FROM {s}.meta WHERE key = 'counts_since') END"
        )
        if not self.db.submit(sql, [], got, failed):
            raise ApiError(503, "the console is busy (too many queries waiting); retry in a moment")

    def _histogram_counts(
        self,
        conn: HttpConnection,
        since: _dt.datetime,
        until: _dt.datetime,
        buckets: int,
        counts_since: _dt.datetime,
    ) -> None:
        """The histogram of every record in the range, from the counts table (``store.rollup``).

        Its buckets are whole ``rollup.BUCKET_S`` spans (the step rounded up to a multiple),
        so each sums rows of ``counts``; the range's edges inside a span are counted from
        ``records``: the rows from ``since`` to its span's end are added, the rows from
        ``until`` to its span's end (nearly always none: ``until`` is now) taken away. Rows
        stored before the counts table existed are counted from ``records`` when the range
        reaches back to then (an hour of slack for clocks).
        """
        started = time.monotonic()
        g = rollup.BUCKET_S
        step, _, _ = hg.grid(since, until, buckets)
        step = -(-step // g) * g
        t0, t1 = (since - _EPOCH).total_seconds(), (until - _EPOCH).total_seconds()
        k0, k1 = math.floor(t0 / step), math.ceil(t1 / step) - 1
        g_lo, g_end = math.ceil(t0 / g) * g, math.ceil(t1 / g) * g
        ps = ql.Params()
        step_p = ps.add(step, "bigint")
        lo_p, end_p = ps.add(g_lo, "bigint"), ps.add(g_end, "bigint")
        s = self.schema
        k_of = f"floor(extract(epoch FROM created) / {step_p})::bigint"
        lvl = "CASE WHEN levelno IS NULL OR levelno <= 10 THEN 0 ELSE least(4, (levelno - 1) / 10) END"
        parts = [
            f"SELECT floor(extract(epoch FROM bucket) / {step_p})::bigint AS k, level::int AS l, n "
            f"FROM {s}.counts WHERE bucket >= to_timestamp({lo_p}) AND bucket < to_timestamp({end_p})"
        ]
        since_p = ps.add(since.isoformat(), "timestamptz")
        until_p = ps.add(until.isoformat(), "timestamptz")
        counted_all = counts_since <= _FIRST_TIME  # a schema made with its counts table
        cs_p = "" if counted_all else ps.add(counts_since.isoformat(), "timestamptz")
        if t0 < g_lo:
            parts.append(
                f"SELECT {k_of}, {lvl}, 1 FROM {s}.records WHERE created >= {since_p} "
                f"AND created < to_timestamp({lo_p})"
            )
        if t1 < g_end:
            # (Only rows the counts hold are taken away; the condition on stored is left out
            # when that is every row, or the planner may scan by it.)
            newer = "" if counted_all else f" AND stored >= {cs_p}"
            parts.append(
                f"SELECT {k_of}, {lvl}, -1 FROM {s}.records WHERE created >= {until_p} "
                f"AND created < to_timestamp({end_p}){newer}"
            )
        if not counted_all and since < counts_since + _COUNTS_SLACK:
            parts.append(
                f"SELECT {k_of}, {lvl}, 1 FROM {s}.records WHERE created >= to_timestamp({lo_p}) "
                f"AND created < {until_p} AND stored < {cs_p}"
            )
        sql = f"SELECT k, l, sum(n) FROM ({' UNION ALL '.join(parts)}) u GROUP BY 1, 2"

        def answer(rows: list[Row]) -> Response:
            counts = {k: [0] * len(LEVEL_NAMES) for k in range(k0, k1 + 1)}
            for k, lv, n in rows:
                assert k is not None and lv is not None and n is not None
                c = counts.get(int(k))
                if c is not None:
                    c[int(lv)] += int(n)
            return self._histogram_answer(since, until, step, counts, started, "counts")

        self._run(conn, sql, ps.values, answer)

    def _histogram_answer(
        self,
        since: _dt.datetime,
        until: _dt.datetime,
        step: int,
        counts: dict[int, list[int]],
        started: float,
        source: str,
    ) -> Response:
        out = [
            {
                "t": hg.start_of(k, step).isoformat(),
                "counts": {name: c[j] for j, name in enumerate(LEVEL_NAMES) if c[j]},
                "total": sum(c),
            }
            for k, c in sorted(counts.items())
        ]
        return _json(
            200,
            {
                "since": since.isoformat(),
                "until": until.isoformat(),
                "step_s": step,
                "levels": list(LEVEL_NAMES),
                "buckets": out,
                "source": source,
                "took_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )

    def _histogram_scan(
        self,
        conn: HttpConnection,
        since: _dt.datetime,
        until: _dt.datetime,
        buckets: int,
        q: str,
        base: ql.Params,
        query: ql.Query,
    ) -> None:
        # Buckets on a fixed grid, the settled ones cached when costly (console.histogram).
        step, k0, k1 = hg.grid(since, until, buckets)
        key, clock = (q, step), time.monotonic()
        settled = self.histograms.settled(k0, k1, step, since, until, self._now())
        known = self.histograms.known(key, settled, clock)
        runs = hg.ranges([k for k in range(k0, k1 + 1) if k not in known])
        if len(runs) > 4:  # holes here and there: one range is cheaper than many
            known, runs = {}, [(k0, k1)]

        def answer(rows: list[Row]) -> Response:
            counts = {k: [0] * len(LEVEL_NAMES) for k in range(k0, k1 + 1) if k not in known}
            for b, lvl, n in rows:
                assert b is not None and n is not None
                c = counts.get(int(b))
                if c is not None:
                    c[level_index(None if lvl is None else int(lvl))] += int(n)
            took = time.monotonic() - clock
            self.histograms.keep(key, {k: counts[k] for k in settled if k in counts}, clock, took)
            counts.update(known)
            return self._histogram_answer(since, until, step, counts, clock, "records")

        if not runs:
            conn.respond(answer([]))
            return
        ps = ql.Params(list(base.values))
        spans_sql = []
        for a, b in runs:
            lo, hi = max(since, hg.start_of(a, step)), min(until, hg.start_of(b + 1, step))
            lo_p, hi_p = ps.add(lo.isoformat(), "timestamptz"), ps.add(hi.isoformat(), "timestamptz")
            spans_sql.append(f"(created >= {lo_p} AND created < {hi_p})")
        step_p = ps.add(step, "bigint")
        # date_bin groups in integer arithmetic; the bucket's number is computed per group only.
        sql = (
            f"SELECT (extract(epoch FROM b) / {step_p})::bigint, levelno, n FROM ("
            f"SELECT date_bin({step_p} * INTERVAL '1 second', created, TIMESTAMPTZ 'epoch') AS b, "
            f"levelno, count(*) AS n FROM {self.schema}.records "
            f"WHERE ({' OR '.join(spans_sql)}) AND {query.sql} GROUP BY 1, 2) g"
        )
        self._run(conn, sql, ps.values, answer, query.regex_positions)

    def _record(self, conn: HttpConnection, params: dict[str, str]) -> None:
        def answer(row: Row | None) -> Response:
            if row is None or row[0] is None:
                raise ApiError(404, f"no record with id {params.get('id', '')[:80]!r}")
            return _raw(row[0] + b"\n")

        self._find(conn, params, RECORD_JSON, answer)

    def _find(
        self,
        conn: HttpConnection,
        params: dict[str, str],
        columns: str,
        answer: Callable[[Row | None], Response | None],
    ) -> None:
        """Look the record ``params["id"]`` up and call ``answer`` with its row (or None).

        No index serves ``(journal, seq)``; the ids the page asks for are mostly of recent
        records, so the newest hour is looked at first (partition pruning and the BRIN index on
        ``created`` make that cheap), then windows eight times wider, back to the year 1. A
        ``created`` parameter (the record's own time, as listed) is looked at before all that:
        an old record is then as cheap to find as a new one.
        """
        base = ql.Params()
        cond = _id_condition(params.get("id", ""), base)
        windows = spans(self._now() + FIND_AHEAD, _FIRST_TIME, FIND_FIRST_WINDOW, 8)
        if params.get("created"):
            try:
                t = _dt.datetime.fromisoformat(params["created"].replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(400, "created must be the record's ISO 8601 time, as listed") from None
            if t.tzinfo is None:
                raise ApiError(400, "created must have its offset (+00:00), as listed")
            windows.insert(0, (t, t + _MICROSECOND))

        def statement(lo: _dt.datetime, hi: _dt.datetime, want: int) -> tuple[str, list[str | None]]:
            ps = ql.Params(list(base.values))
            sql = (
                f"SELECT {columns} FROM (SELECT * FROM {self.schema}.records "
                f"WHERE created >= {ps.add(lo.isoformat(), 'timestamptz')} "
                f"AND created < {ps.add(hi.isoformat(), 'timestamptz')} AND {cond} LIMIT 1) r"
            )
            return sql, ps.values

        def found(rows: list[Row]) -> Response | None:
            return answer(rows[0] if rows else None)

        self._windowed(conn, windows, statement, 1, found, lambda exc: conn.respond(db_error_response(exc)))

    def _context(self, conn: HttpConnection, params: dict[str, str]) -> None:
        by = params.get("by", "process")
        if by not in ("process", "trace"):
            raise ApiError(400, "by must be process or trace")
        n = _int_param(params, "n", DEFAULT_CONTEXT, 1, MAX_CONTEXT)
        cursors = {side: parse_cursor(params[side], side) for side in ("before", "after") if params.get(side)}
        # With a cursor, only that side is loaded ("load more"); without, both around the anchor.
        sides = tuple(cursors) or ("before", "after")

        def anchored(row: Row | None) -> Response | None:
            if row is None or row[0] is None:
                raise ApiError(404, f"no record with id {params.get('id', '')[:80]!r}")
            anchor = _cursor_of(row, 1)
            same = ql.Params()
            if by == "process":
                process, peer = row[3], row[4]
                if process is None:
                    raise ApiError(400, "this record has no process id: try by=trace")
                match = f"process = {same.add(process.decode(), 'bigint')} AND " + (
                    f"peer LIKE {same.add(_host_like(peer.decode()), 'text')}"
                    if peer is not None
                    else "peer IS NULL"
                )
            else:
                trace = row[5]
                if trace is None or trace == b"null":
                    raise ApiError(400, "this record has no trace_id in its extra fields: try by=process")
                match = f"extra -> 'trace_id' = {same.add(trace.decode(), 'jsonb')}"
            self._context_sides(conn, sides, cursors, anchor, match, same, n, row[0])
            return None

        columns = f"{LIST_JSON}, {_KEY_SQL}, process, peer, extra -> 'trace_id'"
        self._find(conn, params, columns, anchored)

    def _context_sides(
        self,
        conn: HttpConnection,
        sides: tuple[str, ...],
        cursors: dict[str, Cursor],
        anchor: Cursor,
        match: str,
        same: ql.Params,
        n: int,
        anchor_json: bytes,
    ) -> None:
        lists: dict[str, bytes] = {"before": b"[]", "after": b"[]"}
        nexts: dict[str, str | None] = {"before": None, "after": None}
        waiting = set(sides)
        failed: list[Response] = []

        def finish() -> None:
            if failed:
                conn.respond(failed[0])
                return
            body = (
                b'{"anchor":' + anchor_json + b',"before":' + lists["before"] + b',"after":' + lists["after"]
                + b',"before_next":' + orjson.dumps(nexts["before"])
                + b',"after_next":' + orjson.dumps(nexts["after"]) + b"}\n"
            )  # fmt: skip
            conn.respond(_raw(body))

        for side in sides:
            start = cursors.get(side, anchor)
            older = side == "before"
            op, order = ("<", "DESC") if older else (">", "ASC")
            base = ql.Params(list(same.values))
            cond = match + _keyset(op, start, base)
            # Backwards, the anchor's own microsecond is in the first window; forwards it is too.
            t = start.time + _MICROSECOND if older else start.time
            windows = spans(t, t - CONTEXT_WINDOW if older else t + CONTEXT_WINDOW, CONTEXT_FIRST_WINDOW, 6)

            statement = self._select_in(cond, base, order)

            def got(rows: list[Row], side: str = side, older: bool = older) -> None:
                more = len(rows) > n
                rows = rows[:n]
                nexts[side] = str(_cursor_of(rows[-1], 1)) if more else None
                if older:
                    rows.reverse()  # older first, the nearest last
                lists[side] = _json_array(rows)
                waiting.discard(side)
                if not waiting:
                    finish()

            def err(exc: StoreError, side: str = side) -> None:
                failed.append(db_error_response(exc, ()))
                waiting.discard(side)
                if not waiting:
                    finish()

            try:
                self._windowed(conn, windows, statement, n + 1, got, err)
            except ApiError:
                err(StoreError("the console is busy (too many queries waiting)", reason="busy"))

    def _facets(self, conn: HttpConnection, params: dict[str, str]) -> None:
        # The sample is the newest FACET_SAMPLE matching rows of the range, found in windows
        # growing back from its end, as a search finds its page: on a busy service the newest
        # second holds them, and a sort of the whole range would read all of it.
        since, until = self._range(params)
        base = ql.Params()
        query = _compile(params.get("q", ""), base)
        lows: list[_dt.datetime] = []

        def failed(exc: StoreError) -> None:
            conn.respond(db_error_response(exc, query.regex_positions))

        def attempt(i: int) -> None:
            ps = ql.Params(list(base.values))
            lo, hi = ps.add(lows[i].isoformat(), "timestamptz"), ps.add(until.isoformat(), "timestamptz")
            sql = self._facets_sql(f"created >= {lo} AND created < {hi} AND {query.sql}")

            def got(rows: list[Row]) -> None:
                size = int(rows[0][5] or 0) if rows else 0
                if size < FACET_SAMPLE and i + 1 < len(lows):
                    attempt(i + 1)
                    return
                conn.respond(_facets_answer(rows))

            if not self.db.submit(sql, ps.values, got, failed):
                failed(StoreError("the console is busy (too many queries waiting)", reason="busy"))

        def start(windows: list[tuple[_dt.datetime, _dt.datetime]]) -> None:
            lows.extend(lo for lo, _ in windows)
            attempt(0)

        self._newest_windows(since, until, query.sql, base, FACET_SAMPLE, start)

    def _facets_sql(self, where: str) -> str:
        s = self.schema
        return f"""
WITH k AS MATERIALIZED (SELECT tableoid AS t, ctid AS c FROM {s}.records WHERE {where}
           ORDER BY created DESC LIMIT {FACET_SAMPLE}),
s AS (SELECT levelname, levelno, logger, peer, extra FROM {s}.records WHERE {where}
      AND ctid = ANY (ARRAY(SELECT c FROM k)) AND (tableoid, ctid) IN (SELECT t, c FROM k)),
keys AS (SELECT k FROM s, jsonb_object_keys(CASE WHEN jsonb_typeof(extra) = 'object' THEN extra END) k
         GROUP BY k ORDER BY count(*) DESC, k LIMIT {FACET_MAX_EXTRA_KEYS}),
g AS (
    SELECT 'level' AS f, coalesce(levelname, levelno::text) AS v, count(*) AS n FROM s GROUP BY 2
    UNION ALL SELECT 'logger', logger, count(*) FROM s GROUP BY 2
    UNION ALL SELECT 'host', {_HOST_SQL}, count(*) FROM s GROUP BY 2
    UNION ALL SELECT 'extra.' || e.key, left(e.value #>> '{{}}', {FACET_VALUE_CHARS}), count(*)
        FROM s, jsonb_each(CASE WHEN jsonb_typeof(extra) = 'object' THEN extra END) e
        WHERE e.key IN (SELECT k FROM keys) GROUP BY 1, 2
),
r AS (SELECT f, v, n, count(*) OVER w AS d, sum(n) OVER w AS total,
             row_number() OVER (PARTITION BY f ORDER BY n DESC, v) AS k
      FROM g WHERE v IS NOT NULL WINDOW w AS (PARTITION BY f))
SELECT f, v, n, d, total, (SELECT count(*) FROM s) FROM r WHERE k <= {FACET_TOP} ORDER BY f, k"""

    # -- static files ------------------------------------------------------------------------

    def _static_file(self, req: Request) -> Response:
        if req.path == "/":
            rel = "index.html"
        elif req.path == "/favicon.ico":
            raise ApiError(404, "no favicon")
        else:
            rel = unquote(req.path[len("/static/") :])
        if not _STATIC_PATH.match(rel) or ".." in rel.split("/"):
            raise ApiError(404, "no such file")
        path = self.static_dir / rel
        try:
            st = path.stat()
            root = self.static_dir.resolve()
            if not path.resolve().is_relative_to(root) or not path.is_file() or st.st_size > MAX_STATIC_BYTES:
                raise ApiError(404, "no such file")
            cached = self._static.get(rel)
            if cached is None or cached[0] != st.st_mtime_ns or cached[1] != st.st_size:
                # A small file of our own package, read once (then kept until it changes).
                body = path.read_bytes()
                cached = (st.st_mtime_ns, st.st_size, body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
                self._static[rel] = cached
        except OSError:
            raise ApiError(404, "no such file") from None
        _, _, body, etag = cached
        ctype = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        headers = [("ETag", etag), ("Cache-Control", "no-cache"), *SECURITY_HEADERS]
        if ctype.startswith("text/html"):
            headers.append(("Content-Security-Policy", CSP))
        if req.headers.get("if-none-match") == etag:
            return Response(304, b"", ctype, headers)
        return Response(200, body, ctype, headers)


# -- helpers -----------------------------------------------------------------------------------


def _answered(answer: Callable[[list[Row]], Response | None], rows: list[Row]) -> Response | None:
    """``answer(rows)``, with an ``ApiError`` or a bug turned into its JSON answer."""
    try:
        return answer(rows)
    except ApiError as exc:
        return _json(exc.status, exc.body)
    except Exception:
        log.exception("Console: building an answer failed")
        return _json(500, {"error": "the console failed on this request (the service log has why)"})


def _epoch_time(seconds: float) -> _dt.datetime:
    """A time from seconds since the epoch; -infinity (counted from the start) as year 1."""
    if seconds == -math.inf:
        return _dt.datetime(1, 1, 2, tzinfo=_dt.UTC)
    return _EPOCH + _dt.timedelta(seconds=seconds)


def _facets_answer(rows: list[Row]) -> Response:
    fields: dict[str, dict[str, Any]] = {}
    sample = 0
    for f, v, n, d, total, size in rows:
        assert f is not None and n is not None and d is not None and total is not None
        sample = int(size or 0)
        name = f.decode()
        entry = fields.setdefault(
            name,
            {
                "name": name,
                "values": [],
                "distinct": int(d),
                "high_cardinality": int(d) > HIGH_CARDINALITY,
                "count": int(total),
            },
        )
        entry["values"].append({"value": None if v is None else v.decode(), "count": int(n)})
    order = {"level": 0, "logger": 1, "host": 2}
    out = sorted(fields.values(), key=lambda e: (order.get(e["name"], 3), -e["count"], e["name"]))
    return _json(200, {"fields": out, "sample": sample, "sampled": sample >= FACET_SAMPLE})


def _compile(q: str, ps: ql.Params | None = None) -> ql.Query:
    try:
        return ql.compile_query(q, ps)
    except ql.QueryError as exc:
        raise ApiError(400, exc.message, position=exc.position) from None


def _keyset(op: str, c: Cursor, ps: ql.Params) -> str:
    t = f"(TIMESTAMPTZ 'epoch' + {ps.add(c.micros, 'bigint')} * INTERVAL '1 microsecond')"
    bound = "<=" if op == "<" else ">="
    return f" AND created {bound} {t} AND (created, seq) {op} ({t}, {ps.add(c.seq, 'bigint')})"


def _id_condition(text: str, ps: ql.Params) -> str:
    m = _ID.match(text)
    if m is None:
        raise ApiError(400, "id must be <journal uuid hex>:<seq> (or -:<seq>), as the records carry it")
    seq = ps.add(int(m.group(2)), "bigint")
    if m.group(1) == "-":
        return f"journal IS NULL AND seq = {seq}"
    return f"journal = {ps.add(m.group(1), 'uuid')} AND seq = {seq}"


def level_index(levelno: int | None) -> int:
    """The histogram's level column of a ``levelno``: <=10 DEBUG (and none), <=20 INFO, ..."""
    if levelno is None or levelno <= 10:
        return 0
    return min(4, (levelno - 1) // 10)


def _host_like(peer: str) -> str:
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return ql.like_escape(host) + ":%"


def _int_param(params: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    text = params.get(name)
    if not text:
        return default
    if not text.isdigit() or len(text) > 9:
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}")
    return max(lo, min(hi, int(text)))


def _json_array(rows: list[Row]) -> bytes:
    return b"[" + b",".join(r[0] for r in rows if r[0] is not None) + b"]"


def _json(status: int, value: object, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response.json(status, value, [("Cache-Control", "no-store"), *SECURITY_HEADERS, *(headers or [])])


def _raw(body: bytes) -> Response:
    return Response(200, body, "application/json", [("Cache-Control", "no-store"), *SECURITY_HEADERS])


def db_error_response(exc: StoreError, regexes: tuple[int, ...] = ()) -> Response:
    """The answer to a statement that failed: 400 for the user's mistakes, else 500 or 503."""
    if isinstance(exc, PgError):
        state = exc.sqlstate or ""
        primary = exc.primary or str(exc)
        if state == "2201B":  # invalid_regular_expression
            return _json(
                400,
                {"error": f"invalid regular expression: {primary}", "position": regexes[0] if regexes else 0},
            )
        if state == "57014":  # query_canceled: the statement_timeout
            return _json(
                503,
                {"error": "the query took too long and was cancelled: narrow the time range or the query"},
                [("Retry-After", "1")],
            )
        if state in ("42P01", "3F000"):  # no table, no schema
            return _json(503, {"error": f"no logsvc records there yet: {primary}"}, [("Retry-After", "5")])
        if state.startswith("22"):  # a value PostgreSQL cannot take (a date out of range, ...)
            return _json(400, {"error": primary})
        if exc.reason == "rejected":
            log.warning("Console query failed: %s", exc)
            return _json(500, {"error": f"the query failed: {primary}"})
    if exc.reason == "busy":
        return _json(503, {"error": str(exc)}, [("Retry-After", "1")])
    return _json(503, {"error": f"PostgreSQL is unreachable: {exc}"}, [("Retry-After", "1")])


def _bearer(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v
    return None
