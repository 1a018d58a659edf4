"""The real Python logging libraries, as their users configure them, through JsonFormat.

Each library (structlog, python-json-logger, loguru, ecs-logging, graypy) logs the same script:
debug to critical, an exception, a child or bound logger with structured fields, and unicode.
The test keeps exactly what the library wrote and, beside it, what the library meant: the
``LogRecord`` (stdlib-based libraries), loguru's own record dict, or what the call said
(structlog). Every stored column is checked: each line goes through ``JsonFormat.parse`` and
the store's ``RowEncoder`` (the row PostgreSQL receives), and once end to end through a real
``logsvc serve --listen-json``.

``LIBRARIES`` maps each library to its run; ``python -m tests.test_json_libraries`` prints the
per-library table of records and fields checked (issue 15's closing note).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import re
import socket
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from logsvc.store.copyfmt import COLUMN_NAMES, RowEncoder
from logsvc.wire import JsonFormat
from tests.helpers import Service, wait_for

structlog = pytest.importorskip("structlog", reason="pip install -e .[dev] (structlog)")
pythonjsonlogger = pytest.importorskip(
    "pythonjsonlogger", reason="pip install -e .[dev] (python-json-logger)"
)
loguru = pytest.importorskip("loguru", reason="pip install -e .[dev] (loguru)")
ecs_logging = pytest.importorskip("ecs_logging", reason="pip install -e .[dev] (ecs-logging)")
graypy = pytest.importorskip("graypy", reason="pip install -e .[dev] (graypy)")

from graypy import GELFUDPHandler  # noqa: E402  (after the skip)

# The columns a record fills; seq, received and peer are the service's own, stream and
# stream_seq the acknowledged protocol's (NULL for JSON lines).
CHECKED = tuple(c for c in COLUMN_NAMES if c not in {"seq", "received", "peer", "stream", "stream_seq"})
UNICODE = "naïve café ✓ 日本語 🚀 \u2028 end"
FIELDS: dict[str, Any] = {"user_id": 7, "tags": ["a", "ü"], "order": {"id": 42, "total": 9.5}}
ANY = object()  # an extra value whose presence is checked, not its value (loguru's elapsed)


@dataclass
class Expect:
    """What one record means, column by column (``logsvc.store.copyfmt.COLUMNS`` names).

    ``created`` is a window (lo, hi) in epoch seconds; ``exc_text`` may be a predicate.
    """

    created: tuple[float, float]
    levelno: int | None
    levelname: str | None
    logger: str | None
    message: str | None
    exc_text: str | Callable[[str], bool] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, Any] = field(default_factory=dict)  # pathname, lineno, func, ...


@dataclass
class Run:
    lines: list[bytes]
    expected: list[Expect]
    tz: _dt.tzinfo = _dt.UTC


_UNESCAPE = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _copy_text(value: str) -> str | None:
    if value == "\\N":
        return None
    return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(1)), value)


def stored(line: bytes, tz: _dt.tzinfo = _dt.UTC) -> dict[str, Any]:
    """The row the store would write for ``line``, as Python values per column."""
    rec = JsonFormat(tz).parse(line)
    enc = RowEncoder()
    row = enc.encode(rec, 1, "peer", enc.timestamp(0.0)).decode()
    texts = dict(zip(COLUMN_NAMES, row.rstrip("\n").split("\t"), strict=True))
    out: dict[str, Any] = {c: _copy_text(t) for c, t in texts.items()}
    for c in ("levelno", "lineno", "process", "thread"):
        out[c] = None if out[c] is None else int(out[c])
    out["created"] = _dt.datetime.fromisoformat(out["created"] + ":00").timestamp()
    out["extra"] = {} if out["extra"] is None else json.loads(out["extra"])
    return out


def check(row: dict[str, Any], exp: Expect) -> int:
    """Assert every column of ``row`` is what ``exp`` says; return how many fields were checked."""
    lo, hi = exp.created
    assert lo - 1e-6 <= row["created"] <= hi + 1e-6, (row["created"], exp.created)
    want: dict[str, Any] = {
        "levelno": exp.levelno,
        "levelname": exp.levelname,
        "logger": exp.logger,
        "message": exp.message,
        "pathname": None,
        "lineno": None,
        "func": None,
        "module": None,
        "process": None,
        "process_name": None,
        "thread": None,
        "thread_name": None,
        "stack_info": None,
        **exp.columns,
    }
    for col, value in want.items():
        assert row[col] == value, (col, row[col], value)
    if callable(exp.exc_text):
        assert row["exc_text"] is not None and exp.exc_text(row["exc_text"]), row["exc_text"]
    else:
        assert row["exc_text"] == exp.exc_text, (row["exc_text"], exp.exc_text)
    extra = row["extra"]
    assert extra.keys() == exp.extra.keys(), (sorted(extra), sorted(exp.extra))
    for key, value in exp.extra.items():
        assert value is ANY or extra[key] == value, (key, extra[key], value)
    assert set(want) | {"created", "exc_text", "extra"} == set(CHECKED)
    return len(CHECKED) - 1 + len(extra)  # every column, and each extra key on its own


# --- the stdlib-based libraries: the LogRecord is what they meant ---------------------------------


def stdlib_script(logger: logging.Logger) -> None:
    """What every library logs: five levels, an exception, a child with fields, unicode."""
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        logger.log(level, "%s at %s", "message", logging.getLevelName(level))
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logger.exception("it failed: %s", "ü")
    logger.getChild("child").info("from the child", extra=FIELDS)
    logger.warning(UNICODE)


class CapturingHandler(logging.Handler):
    """Keeps each record with exactly what the library's formatter wrote for it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.out: list[tuple[logging.LogRecord, bytes]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append((record, self.format(record).encode()))


def _run_stdlib(name: str, handler: logging.Handler) -> None:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        stdlib_script(logger)
    finally:
        logger.removeHandler(handler)


def _exc_text(record: logging.LogRecord) -> str | None:
    return logging.Formatter().formatException(record.exc_info) if record.exc_info else None


def _user_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in FIELDS if hasattr(record, k)}


def run_python_json_logger() -> Run:
    # Its README's setup: JsonFormatter with the "%(asctime)s %(levelname)s %(name)s
    # %(message)s" format. asctime is local time to the millisecond: read in the host's zone.
    from pythonjsonlogger.json import JsonFormatter

    handler = CapturingHandler()
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    _run_stdlib("lib.pjl", handler)
    expected = []
    for r, _ in handler.out:
        ms = int(r.created) + int(r.msecs) / 1000
        expected.append(
            Expect((ms, ms), r.levelno, r.levelname, r.name, r.getMessage(), _exc_text(r), _user_fields(r))
        )
    local = _dt.datetime.now().astimezone().tzinfo
    assert local is not None
    return Run([line for _, line in handler.out], expected, local)


def run_ecs_logging() -> Run:
    # ecs-logging's documented setup: StdlibFormatter on a handler.
    handler = CapturingHandler()
    handler.setFormatter(ecs_logging.StdlibFormatter())
    _run_stdlib("lib.ecs", handler)
    expected = []
    for r, _ in handler.out:
        ms = int(r.created * 1000) / 1000  # @timestamp has milliseconds
        extra: dict[str, Any] = {
            "ecs.version": ecs_logging.ECS_VERSION,
            "log": {"origin": {"file": {"name": r.filename}}, "original": r.getMessage()},
            **_user_fields(r),
        }
        if r.exc_info:
            extra["error"] = {"type": "ZeroDivisionError", "message": "division by zero"}
        expected.append(
            Expect(
                (ms - 0.001, ms + 0.001),
                r.levelno,
                r.levelname,
                r.name,
                r.getMessage(),
                _exc_text(r),
                extra,
                {
                    "lineno": r.lineno,
                    "func": r.funcName,
                    "process": r.process,
                    "process_name": r.processName,
                    "thread": r.thread,
                    "thread_name": r.threadName,
                },
            )
        )
    return Run([line for _, line in handler.out], expected)


class CapturingGELFHandler(GELFUDPHandler):  # type: ignore[misc]
    """graypy's UDP handler, defaults and all, keeping the packed GELF instead of sending it."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 9)
        self.out: list[tuple[logging.LogRecord, bytes]] = []
        self.full_messages: list[str | None] = []

    def emit(self, record: logging.LogRecord) -> None:
        # graypy's full_message (handler.py _add_full_message): record.exc_text if another
        # handler's formatter has set it, else the traceback lines joined with "\n".
        if record.exc_text:
            self.full_messages.append(record.exc_text)
        elif record.exc_info:
            self.full_messages.append("\n".join(traceback.format_exception(*record.exc_info)))
        else:
            self.full_messages.append(None)
        self.out.append((record, self.makePickle(record)))


def run_graypy_json() -> Run:
    # GELF as graypy packs it (zlib-compressed by default), decompressed: the mapping alone.
    # The GELF listener (UDP chunks, TCP) is tested in tests/test_gelf_listener.py.
    handler = CapturingGELFHandler()
    _run_stdlib("lib.gelf", handler)
    expected = []
    for (r, _), full in zip(handler.out, handler.full_messages, strict=True):
        expected.append(
            Expect(
                (r.created, r.created),
                r.levelno,
                r.levelname,
                r.name,
                r.getMessage(),
                full,
                {"version": "1.0", "hostname": socket.gethostname(), **_user_fields(r)},
                {
                    "pathname": r.pathname,
                    "lineno": r.lineno,
                    "func": r.funcName,
                    "process": r.process,
                    "process_name": r.processName,
                    "thread_name": r.threadName,
                },
            )
        )
    return Run([zlib.decompress(packed) for _, packed in handler.out], expected)


# --- structlog: what the call said ---------------------------------------------------------------


def run_structlog() -> Run:
    # structlog's documented production JSON setup (docs "Performance" / "Logging Best
    # Practices"): add_log_level, format_exc_info, ISO UTC TimeStamper, JSONRenderer.
    buf = io.StringIO()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.WriteLoggerFactory(file=buf),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger()
        expected: list[Expect] = []

        def call(fn: Callable[..., Any], levelno: int, event: str, exc: str | None = None, **kw: Any) -> None:
            before = time.time()
            fn(event, **kw)
            after = time.time()
            expected.append(
                Expect((before, after), levelno, logging.getLevelName(levelno), None, event, exc, dict(kw))
            )

        for name, levelno in (("debug", 10), ("info", 20), ("warning", 30), ("error", 40), ("critical", 50)):
            call(getattr(log, name), levelno, f"message at {name}")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            text = logging.Formatter().formatException(sys.exc_info())
            call(log.exception, 40, "it failed: ü", text)
        child = log.bind(component="child", **FIELDS)
        before = time.time()
        child.info("from the child")
        expected.append(
            Expect(
                (before, time.time()),
                20,
                "INFO",
                None,
                "from the child",
                None,
                {"component": "child", **FIELDS},
            )
        )
        call(log.warning, 30, UNICODE)
    finally:
        structlog.reset_defaults()
    return Run([line.encode() for line in buf.getvalue().split("\n") if line], expected)


# --- loguru: its own record is what it meant -----------------------------------------------------


def run_loguru() -> Run:
    # loguru's documented JSON: logger.add(sink, serialize=True); default level DEBUG.
    from loguru import logger

    buf = io.StringIO()
    records: list[Any] = []  # loguru's Record TypedDicts
    logger.remove()  # users replace loguru's default stderr sink; so do we, for the run
    sink_id = logger.add(buf, serialize=True, level="DEBUG")
    keep_id = logger.add(lambda m: records.append(m.record), level="DEBUG")
    try:
        for method in ("debug", "info", "success", "warning", "error", "critical"):
            getattr(logger, method)("message at {}", method)
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("it failed: {}", "ü")
        logger.bind(**FIELDS).info("from the bound logger")
        logger.warning(UNICODE)
    finally:
        logger.remove(sink_id)
        logger.remove(keep_id)
        logger.add(sys.stderr)
    expected = []
    for r in records:
        extra: dict[str, Any] = {"elapsed": ANY, **r["extra"]}
        if r["exception"] is not None:
            extra["exception"] = {"type": "ZeroDivisionError", "value": "division by zero", "traceback": True}

        def traceback_of(text: str) -> bool:
            return text.startswith("Traceback (most recent call last):") and text.endswith(
                "ZeroDivisionError: division by zero"
            )

        t = r["time"].timestamp()
        expected.append(
            Expect(
                (t, t),
                r["level"].no,
                r["level"].name,
                r["name"],
                r["message"],
                traceback_of if r["exception"] is not None else None,
                extra,
                {
                    "pathname": r["file"].path,
                    "lineno": r["line"],
                    "func": r["function"],
                    "module": r["module"],
                    "process": r["process"].id,
                    "process_name": r["process"].name,
                    "thread": r["thread"].id,
                    "thread_name": r["thread"].name,
                },
            )
        )
    return Run([line.encode() for line in buf.getvalue().split("\n") if line], expected)


LIBRARIES: dict[str, Callable[[], Run]] = {
    "structlog": run_structlog,
    "python-json-logger": run_python_json_logger,
    "loguru": run_loguru,
    "ecs-logging": run_ecs_logging,
    "graypy (GELF JSON)": run_graypy_json,
}


def table() -> Iterator[tuple[str, int, int]]:
    """(library, records, fields checked) for each library: the issue's closing table."""
    for name, run_lib in LIBRARIES.items():
        run = run_lib()
        checked = sum(
            check(stored(line, run.tz), exp) for line, exp in zip(run.lines, run.expected, strict=True)
        )
        yield name, len(run.lines), checked


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_every_field_of_every_record(library: str) -> None:
    run = LIBRARIES[library]()
    assert len(run.lines) == len(run.expected) >= 8
    for line, exp in zip(run.lines, run.expected, strict=True):
        check(stored(line, run.tz), exp)


def test_json_format_setting_reads_the_named_shape() -> None:
    from logsvc.config import parse_json_format
    from logsvc.errors import ConfigError

    assert parse_json_format(" Pino ") == "pino"
    with pytest.raises(ConfigError):
        parse_json_format("log4j")


@pytest.mark.slow
def test_end_to_end_through_listen_json(tmp_path: Path, dsn: str, schema: str) -> None:
    # Every library's lines, as written, over one TCP connection to a real serve.
    runs = {name: run_lib() for name, run_lib in LIBRARIES.items()}
    svc = Service(tmp_path / "data", dsn, schema, "--listen-json", "127.0.0.1:0").start()
    try:
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(JSON lines\)", svc.log())
        assert m, svc.log()
        # One connection per library: each may need its own --assume-timezone (pjl's asctime
        # is local time), which is the host's here as in the pure test.
        lines = [line for run in runs.values() for line in run.lines]
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=10) as sock:
            sock.sendall(b"".join(line + b"\n" for line in lines))
        total = len(lines)

        def rows() -> list[dict[str, Any]]:
            with psycopg.connect(dsn) as conn:
                if conn.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
                    return []  # the service has not created its table yet
                cur = conn.execute(
                    f"SELECT {', '.join(CHECKED)}, extract(epoch FROM created)::float8 AS epoch "
                    f"FROM {schema}.records ORDER BY seq"
                )
                names = [d.name for d in cur.description or []]
                return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

        wait_for(lambda: len(rows()) >= total, 30, f"{total} rows")
        got = rows()
        assert len(got) == total
        i = 0
        for run in runs.values():
            for line, exp in zip(run.lines, run.expected, strict=True):
                row = got[i]
                i += 1
                want = {k: v for k, v in stored(line, run.tz).items() if k in CHECKED}
                row["created"] = row.pop("epoch")
                row["extra"] = row["extra"] or {}
                assert row == want, (line, row, want)
                check(row, exp)
    finally:
        svc.stop()


if __name__ == "__main__":
    print("| library | records | fields checked |\n| --- | ---: | ---: |")
    for name, n, checked in table():
        print(f"| {name} | {n} | {checked} |")


@pytest.mark.slow
def test_json_format_flag_reaches_listen_json_and_ingest(tmp_path: Path, dsn: str, schema: str) -> None:
    # pino's 30 without its epoch-ms time: auto would read a stdlib 30 (WARNING); --json-format
    # pino says every record is pino's, on both JSON transports.
    import urllib.request

    svc = Service(
        tmp_path / "data",
        dsn,
        schema,
        *("--listen-json", "127.0.0.1:0", "--listen-http", "127.0.0.1:0", "--json-format", "pino"),
    ).start()
    try:
        log = svc.log()
        json_port = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(JSON lines\)", log)
        http_port = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: POST", log)
        assert json_port and http_port, log
        with socket.create_connection(("127.0.0.1", int(json_port.group(1))), timeout=10) as sock:
            sock.sendall(b'{"level":30,"msg":"over tcp"}\n')
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port.group(1)}/ingest",
            data=b'{"level":30,"msg":"over http"}\n',
            headers={"Content-Type": "application/x-ndjson"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

        def levels() -> dict[str, tuple[int, str]]:
            with psycopg.connect(dsn) as conn:
                if conn.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
                    return {}
                got = conn.execute(f"SELECT message, levelno, levelname FROM {schema}.records").fetchall()
                return {m: (n, name) for m, n, name in got}

        wait_for(lambda: len(levels()) == 2, 30, "two rows")
        assert levels() == {"over tcp": (20, "INFO"), "over http": (20, "INFO")}
    finally:
        svc.stop()
