"""PostgreSQL protocol steps as generators over ``psycopg.pq.PGconn``; no waiting in here.

Each function is a generator that yields ``(fd, Wait)`` whenever libpq would block and is
resumed with the readiness mask (``READY_R``/``READY_W`` bits) once the socket is ready, the
way psycopg's own ``generators.py`` is written (we copy the pattern; those modules are
internal to psycopg, so we do not import them). Whoever drives the generator owns the
waiting: the server's reactor registers ``pgconn.socket`` ``EPOLLONESHOT``; tests may drive
them with :func:`run_blocking`.

Rule (psycopg ``_fetch``): check ``is_busy()`` and ``flush()`` *before* waiting. libpq may
already hold a whole result in its own buffer, and no readiness edge will ever come for it.

Errors: a broken connection raises :class:`StoreError` with reason ``"connection"``; a
statement PostgreSQL refused raises it with reason ``"rejected"`` (the connection is still
usable). Callers decide what each means. When PostgreSQL sent an error result, the error is a
:class:`PgError` (still a ``StoreError`` with the same reasons) that also carries the
result's SQLSTATE, primary message, detail and the COPY line it names, so the caller can
tell a row PostgreSQL will never take from a server that cannot take anything right now.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import enum
import math
import os
import re
import select
from collections.abc import Generator, Iterable, Mapping
from typing import TypeAlias, TypeVar

import psycopg
from psycopg import conninfo as _conninfo
from psycopg import pq

from logsvc.errors import StoreError


class Wait(enum.IntEnum):
    R = 1
    W = 2
    RW = 3


READY_R = 1
READY_W = 2

RV = TypeVar("RV")
# A step yields (socket fd, what to wait for): the fd can change while connecting.
PgGen: TypeAlias = Generator[tuple[int, Wait], int, RV]

# Aliases for the hot path (psycopg generators.py L37-57 does the same).
_OK = pq.ExecStatus.COMMAND_OK
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_EMPTY = pq.ExecStatus.EMPTY_QUERY
_COPY_IN = pq.ExecStatus.COPY_IN
_COPY_OUT = pq.ExecStatus.COPY_OUT
_COPY_BOTH = pq.ExecStatus.COPY_BOTH
_FATAL = pq.ExecStatus.FATAL_ERROR
_CONN_OK = pq.ConnStatus.OK
_POLL_OK = pq.PollingStatus.OK
_POLL_READING = pq.PollingStatus.READING
_POLL_WRITING = pq.PollingStatus.WRITING


_SQLSTATE = pq.DiagnosticField.SQLSTATE
_PRIMARY = pq.DiagnosticField.MESSAGE_PRIMARY
_DETAIL = pq.DiagnosticField.MESSAGE_DETAIL
_CONTEXT = pq.DiagnosticField.CONTEXT
_TABLE = pq.DiagnosticField.TABLE_NAME
# The last line of an error's CONTEXT names the COPY input line being processed:
# 'COPY records, line 2: "2\t..."' (PostgreSQL's CopyFromErrorCallback). The word "line" is
# translated with lc_messages, so only the shape is matched: the first number after the
# comma. It is a hint the caller must verify, never a fact.
_COPY_LINE = re.compile(r"^COPY [^,\n]+, \D*?(\d+)", re.MULTILINE)


class PgError(StoreError):
    """A ``StoreError`` PostgreSQL explained with an error result.

    ``reason`` keeps its meaning (``"rejected"``, or ``"connection"`` when the connection
    went down with the error, e.g. SQLSTATE 57P01 at a shutdown). The extra attributes are
    what the server reported; any of them may be None (old servers, or errors raised by
    libpq itself).

    Attributes:
        sqlstate: the five-character SQLSTATE, e.g. ``"23514"`` (check_violation).
        primary: the primary message, without severity, detail or context.
        detail: the DETAIL field (for a constraint, "Failing row contains (...)").
        table: the table the error is about, if PostgreSQL named one.
        copy_line: the 1-based line of the COPY data PostgreSQL was processing, if the
            error came from a COPY and its context could be read (a hint: see ``_COPY_LINE``).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        sqlstate: str | None = None,
        primary: str | None = None,
        detail: str | None = None,
        table: str | None = None,
        copy_line: int | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.sqlstate = sqlstate
        self.primary = primary
        self.detail = detail
        self.table = table
        self.copy_line = copy_line


def _field(res: pq.abc.PGresult, which: pq.DiagnosticField) -> str | None:
    value = res.error_field(which)
    return value.decode("utf-8", "replace") if value is not None else None


def _result_error(res: pq.abc.PGresult, message: str, reason: str) -> PgError:
    context = _field(res, _CONTEXT)
    line = None
    if context is not None:
        # The COPY's own line is the outermost context, the last one (a trigger's PL/pgSQL
        # frames come first).
        found = _COPY_LINE.findall(context)
        if found:
            line = int(found[-1])
    return PgError(
        message,
        reason=reason,
        sqlstate=_field(res, _SQLSTATE),
        primary=_field(res, _PRIMARY),
        detail=_field(res, _DETAIL),
        table=_field(res, _TABLE),
        copy_line=line,
    )


def _conn_error(pgconn: pq.abc.PGconn, what: str) -> StoreError:
    msg = pgconn.get_error_message().strip() or "connection lost"
    return StoreError(f"{what}: {msg}", reason="connection")


# TCP keepalives: an idle connection whose server vanished (its host down, a NAT or firewall
# that forgot the flow) is found dead after IDLE + INTERVAL * COUNT = 11 s of silence instead
# of the kernel's 2 h 11 min (tcp_keepalive_time 7200 s + 9 probes x 75 s). One 60-byte probe
# every 5 s on an idle connection costs nothing worth measuring.
KEEPALIVES_IDLE_S = 5
KEEPALIVES_INTERVAL_S = 2
KEEPALIVES_COUNT = 3
# libpq reads connect_timeout in whole seconds and takes 1 as 2 (its documented minimum).
_MIN_CONNECT_TIMEOUT_S = 2


def conninfo_with_timeouts(conninfo: str, timeout: float, environ: Mapping[str, str] | None = None) -> str:
    """``conninfo`` with connect, keepalive and TCP user timeouts added where it sets none.

    Added, unless the DSN sets the keyword or the environment sets its libpq variable
    (``PGCONNECT_TIMEOUT``): ``connect_timeout`` (``timeout`` rounded up; libpq enforces it
    for blocking connects such as ``logsvc query``'s, the sink's driver enforces its own),
    ``keepalives=1`` with ``keepalives_idle/interval/count`` (``KEEPALIVES_*``), and
    ``tcp_user_timeout`` (``timeout`` in ms: data the server's host has not acknowledged
    for that long closes the connection, where keepalives do not probe because data is
    outstanding). ``timeout`` 0 adds only the keepalives.

    A Unix-socket DSN (the embedded server) keeps working: libpq ignores the TCP keywords
    for a Unix-domain socket. Keywords a ``pg_service.conf`` entry sets are overridden by
    these; set them in the DSN to keep them. A DSN libpq cannot parse is returned as it is,
    so the error is libpq's, at connect, where it always was.
    """
    env = os.environ if environ is None else environ
    try:
        given = _conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return conninfo
    wanted: dict[str, int] = {
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE_S,
        "keepalives_interval": KEEPALIVES_INTERVAL_S,
        "keepalives_count": KEEPALIVES_COUNT,
    }
    if timeout > 0:
        wanted["connect_timeout"] = max(_MIN_CONNECT_TIMEOUT_S, math.ceil(timeout))
        wanted["tcp_user_timeout"] = math.ceil(timeout * 1000)
    from_env = {
        o.keyword.decode(): o.envvar.decode() for o in pq.Conninfo.get_defaults() if o.envvar is not None
    }
    extra = {k: v for k, v in wanted.items() if k not in given and from_env.get(k, "") not in env}
    return _conninfo.make_conninfo(conninfo, **extra) if extra else conninfo


def connect(conninfo: str) -> PgGen[pq.abc.PGconn]:
    """Open a non-blocking connection (libpq ``PQconnectStart``/``PQconnectPoll``)."""
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        if pgconn.status == pq.ConnStatus.BAD:
            raise _conn_error(pgconn, "cannot connect to PostgreSQL")
        while True:
            status = pgconn.connect_poll()
            if status == _POLL_OK:
                break
            if status == _POLL_READING:
                yield pgconn.socket, Wait.R
            elif status == _POLL_WRITING:
                yield pgconn.socket, Wait.W
            else:
                raise _conn_error(pgconn, "cannot connect to PostgreSQL")
        pgconn.nonblocking = 1
    except BaseException:
        pgconn.finish()
        raise
    return pgconn


def _flush(pgconn: pq.abc.PGconn) -> PgGen[None]:
    # PQflush returns 1 while data is still queued; a read may be needed to make progress
    # (the server may be waiting for us to read before it reads more), hence RW.
    while True:
        try:
            if pgconn.flush() == 0:
                return
        except Exception:
            raise _conn_error(pgconn, "lost the connection to PostgreSQL") from None
        ready = yield pgconn.socket, Wait.RW
        if ready & READY_R:
            _consume(pgconn)


def _consume(pgconn: pq.abc.PGconn) -> None:
    try:
        pgconn.consume_input()
    except Exception:
        raise _conn_error(pgconn, "lost the connection to PostgreSQL") from None


def _fetch(pgconn: pq.abc.PGconn) -> PgGen[pq.abc.PGresult | None]:
    """Return the next result, or None when the query is complete."""
    while pgconn.is_busy():
        yield pgconn.socket, Wait.R
        _consume(pgconn)
    return pgconn.get_result()


def _results_until_copy_or_end(pgconn: pq.abc.PGconn) -> PgGen[list[pq.abc.PGresult]]:
    results: list[pq.abc.PGresult] = []
    while True:
        res = yield from _fetch(pgconn)
        if res is None:
            if pgconn.status != _CONN_OK:
                raise _conn_error(pgconn, "lost the connection to PostgreSQL")
            return results
        results.append(res)
        if res.status in (_COPY_IN, _COPY_OUT, _COPY_BOTH):
            return results


def _check(pgconn: pq.abc.PGconn, results: Iterable[pq.abc.PGresult]) -> None:
    for res in results:
        if res.status == _FATAL:
            msg = (res.error_message or b"").decode("utf-8", "replace").strip()
            if pgconn.status != _CONN_OK:
                raise _result_error(res, f"lost the connection to PostgreSQL: {msg}", "connection")
            raise _result_error(res, msg or "PostgreSQL rejected the statement", "rejected")
        if res.status not in (_OK, _TUPLES_OK, _EMPTY):
            raise StoreError(f"unexpected result status {res.status!r}", reason="rejected")


def execute(pgconn: pq.abc.PGconn, sql: str) -> PgGen[list[pq.abc.PGresult]]:
    """Run one simple query (possibly several statements); return every result.

    Raises StoreError if any statement failed. The query must not contain COPY.
    """
    pgconn.send_query(sql.encode())
    yield from _flush(pgconn)
    results = yield from _results_until_copy_or_end(pgconn)
    if results and results[-1].status in (_COPY_IN, _COPY_OUT, _COPY_BOTH):
        raise StoreError("execute() was given a COPY statement", reason="rejected")
    _check(pgconn, results)
    return results


def copy_in(pgconn: pq.abc.PGconn, sql: str, chunks: Iterable[bytes]) -> PgGen[None]:
    """Run ``sql`` whose last statement is ``COPY ... FROM STDIN``, sending ``chunks`` as data.

    Statements before the COPY and the COPY itself form one implicit transaction (one simple
    query message): if anything fails, none of it is committed. Returns once PostgreSQL has
    committed. Precondition: no other query is in progress on ``pgconn``.
    """
    pgconn.send_query(sql.encode())
    yield from _flush(pgconn)
    results = yield from _results_until_copy_or_end(pgconn)
    if not results or results[-1].status != _COPY_IN:
        _check(pgconn, results)
        raise StoreError("the batch statement did not start a COPY", reason="rejected")
    _check(pgconn, results[:-1])
    for chunk in chunks:
        while pgconn.put_copy_data(chunk) == 0:  # libpq's buffer is full: wait to write
            ready = yield pgconn.socket, Wait.W
            if ready:
                yield from _flush(pgconn)
    while pgconn.put_copy_end() == 0:
        yield pgconn.socket, Wait.W
    yield from _flush(pgconn)
    tail: list[pq.abc.PGresult] = []
    while True:
        res = yield from _fetch(pgconn)
        if res is None:
            break
        tail.append(res)
    if pgconn.status != _CONN_OK:
        raise _conn_error(pgconn, "lost the connection to PostgreSQL")
    _check(pgconn, tail)


def watch_idle(pgconn: pq.abc.PGconn) -> PgGen[None]:
    """Wait on a connection no statement uses; raise when it is lost. Never returns.

    Whatever the server sends between statements (a notice, a parameter change) is read and
    dropped; an end of stream, a socket error (keepalives gave up) or a FATAL error before
    the server closes (``57P01`` at a shutdown) raises ``StoreError`` with reason
    ``"connection"``. Precondition: no query is in progress. The caller closes the generator
    to use the connection again.
    """
    while True:
        yield pgconn.socket, Wait.R
        _consume(pgconn)
        if pgconn.status != _CONN_OK:
            raise _conn_error(pgconn, "lost the connection to PostgreSQL")
        while pgconn.notifies() is not None:
            pass


def run_blocking(gen: PgGen[RV], timeout: float = 30.0) -> RV:
    """Drive a generator to completion with plain ``select.poll`` (for tools and tests).

    The server never uses this; it drives generators from its reactor.
    """
    try:
        fd, wait = next(gen)
        while True:
            poller = select.poll()
            mask = (select.POLLIN if wait & Wait.R else 0) | (select.POLLOUT if wait & Wait.W else 0)
            poller.register(fd, mask)
            events = poller.poll(timeout * 1000)
            if not events:
                raise StoreError(f"PostgreSQL did not answer within {timeout:g} s", reason="timeout")
            ev = events[0][1]
            ready = (READY_R if ev & (select.POLLIN | select.POLLERR | select.POLLHUP) else 0) | (
                READY_W if ev & (select.POLLOUT | select.POLLERR | select.POLLHUP) else 0
            )
            fd, wait = gen.send(ready)
    except StopIteration as ex:
        return ex.value  # type: ignore[no-any-return]
