"""JsonFormat: the field mapping, real senders' lines, hostile values, and the store's encoder."""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import STANDARD_ATTRS, RecordDict
from logsvc.store.copyfmt import COLUMN_NAMES, RowEncoder
from logsvc.wire import Decoder, JsonFormat, LineFramer
from logsvc.wire.json_format import SHAPES, epoch_of, level_of
from tests.wire.helpers import collect

from .helpers import examples, make_record

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC).timestamp()


def parse(obj: Any) -> RecordDict:
    return JsonFormat().parse(obj if isinstance(obj, bytes) else orjson.dumps(obj))


def rejected(line: bytes) -> str:
    with pytest.raises(RecordRejected) as info:
        JsonFormat().parse(line)
    return info.value.reason


def encode(rec: RecordDict, received: float = 1_700_000_000.0) -> dict[str, str]:
    """One COPY row of the store's encoder, as {column: text}."""
    enc = RowEncoder()
    row = enc.encode(rec, 1, "peer", enc.timestamp(received)).decode()
    assert row.endswith("\n")
    fields = row[:-1].split("\t")
    assert len(fields) == len(COLUMN_NAMES)
    return dict(zip(COLUMN_NAMES, fields, strict=True))


# --- LogRecord names as they are ---------------------------------------------------------------


def test_stdlib_record_dict_passes_through() -> None:
    # What a JSON formatter that dumps record.__dict__ sends (python-json-logger's "%(...)s" set).
    record = make_record("hello", extra={"trace_id": "t1"})
    d = {k: v for k, v in record.__dict__.items() if k not in {"args", "exc_info"}}
    rec = parse(d)
    # LogRecord names without a column are kept under "_<name>": the encoder drops the names.
    unstored = {"filename", "msecs", "relativeCreated", "taskName"}
    assert rec == {("_" + k if k in unstored else k): v for k, v in d.items()}
    row = encode(rec)
    assert row["message"] == "hello"
    assert row["logger"] == "app.module"
    assert row["levelno"] == "20"
    assert row["lineno"] == "42"
    assert row["created"] == RowEncoder().timestamp(record.created)
    assert orjson.loads(row["extra"]) == {
        "trace_id": "t1",
        **{"_" + k: d[k] for k in unstored if k in d},
    }


def test_created_as_iso_string_or_milliseconds_is_normalized() -> None:
    assert parse({"created": "2024-05-01T12:00:00.123456Z"})["created"] == T0
    assert parse({"created": 1714564800123})["created"] == 1714564800.123
    assert parse({"created": 1714564800})["created"] == 1714564800.0
    assert parse({"created": "soon"})["created"] == "soon"  # the encoder keeps it in _bad_created


def test_levelname_alone_gives_levelno() -> None:
    rec = parse({"levelname": "WARNING", "msg": "m"})
    assert (rec["levelno"], rec["levelname"]) == (30, "WARNING")
    rec = parse({"levelname": "verbose"})
    assert rec["levelname"] == "verbose" and "levelno" not in rec


# --- aliases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["@timestamp", "timestamp", "time", "ts", "date"])
def test_time_aliases(key: str) -> None:
    rec = parse({key: "2024-05-01T12:00:00.123456Z", "msg": "m"})
    assert rec == {"created": T0, "msg": "m"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00.123456Z", T0),
        ("2024-05-01T12:00:00.123456+00:00", T0),
        ("2024-05-01T14:00:00.123456+02:00", T0),
        ("2024-05-01T12:00:00.123456789Z", T0),  # Vector, Go: nanoseconds, cut to microseconds
        ("2024-05-01 12:00:00.123456", T0),  # Fluent Bit java_sql_timestamp; no zone is UTC
        ("2024-05-01T12:00:00.123456", T0),
        ("2024-05-01", T0 - 12 * 3600 - 0.123456),
        (T0, T0),
        (1714564800, 1714564800.0),
        (1714564800123, 1714564800.123),  # ms (pino, Fluent Bit epoch_ms)
        (1714564800123456, 1714564800.123456),  # us
        (1714564800123456789, 1714564800.123456789),  # ns
        ("1714564800.5", 1714564800.5),  # Splunk HEC-style numeric string
        (0, 0.0),
        (-86400, -86400.0),
    ],
)
def test_time_values(value: Any, expected: float) -> None:
    got = epoch_of(value)
    assert got is not None
    assert math.isclose(got, expected, abs_tol=1e-6)


@pytest.mark.parametrize(
    "value", ["yesterday", "", "nan", "inf", "9999-12-31T23:59:60Z", None, True, [1], {"a": 1}, 1e300, -1e300]
)
def test_unusable_times_stay_in_extra(value: Any) -> None:
    assert epoch_of(value) is None
    assert epoch_of(10**30) is None and epoch_of(-(10**400)) is None
    rec = parse({"time": value, "msg": "m"})
    assert "created" not in rec
    assert rec["time"] == value


def test_times_without_a_zone_are_read_in_the_assumed_one() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    fmt = JsonFormat(tz=berlin)
    assert JsonFormat().tz is UTC
    naive = fmt.parse(b'{"time": "2024-05-01T14:00:00.123456", "msg": "m"}')
    assert naive["created"] == T0  # 14:00 CEST is 12:00 UTC
    assert fmt.parse(b'{"time": "2024-05-01T12:00:00.123456Z"}')["created"] == T0  # an offset wins
    assert fmt.parse(b'{"created": "2024-05-01T14:00:00.123456"}')["created"] == T0
    assert fmt.parse(b'{"ts": 1714564800.123456}')["created"] == T0  # epochs have no zone to assume
    assert epoch_of("2024-05-01T14:00:00.123456", berlin) == T0
    # The repeated 02:30 of 2024-10-27 in Berlin is the later one, 02:30 CET (PostgreSQL's reading).
    assert (
        fmt.parse(b'{"time": "2024-10-27 02:30"}')["created"]
        == datetime(2024, 10, 27, 1, 30, tzinfo=UTC).timestamp()
    )


def test_a_naive_time_that_leaves_the_stored_years_once_read_in_the_zone_stays_in_extra() -> None:
    fmt = JsonFormat(tz=ZoneInfo("Asia/Tokyo"))
    rec = fmt.parse(b'{"time": "0001-01-01T00:00:00", "msg": "m"}')
    assert rec == {"time": "0001-01-01T00:00:00", "msg": "m"}


def test_time_alias_precedence() -> None:
    rec = parse({"ts": 1.0, "time": "bad", "timestamp": "2024-05-01T12:00:00.123456Z"})
    assert rec == {"created": T0, "ts": 1.0, "time": "bad"}
    rec = parse({"created": 5.5, "timestamp": "2024-05-01T12:00:00Z"})
    assert rec == {"created": 5.5, "timestamp": "2024-05-01T12:00:00Z"}


@pytest.mark.parametrize(
    ("value", "levelno", "levelname"),
    [
        ("error", 40, "ERROR"),
        ("ERROR", 40, "ERROR"),
        ("err", 40, "ERROR"),
        ("WARN", 30, "WARNING"),
        ("warning", 30, "WARNING"),
        ("Warning", 30, "WARNING"),
        (" info ", 20, "INFO"),
        ("notice", 20, "INFO"),
        ("debug", 10, "DEBUG"),
        ("trace", 5, "TRACE"),
        ("fatal", 50, "CRITICAL"),
        ("critical", 50, "CRITICAL"),
        ("panic", 50, "CRITICAL"),
        (40, 40, "ERROR"),
        (30, 30, "WARNING"),  # a stdlib number: pino's 30 ("info") reads as WARNING
        (25, 25, "Level 25"),
        (20.0, 20, "INFO"),
        ("50", 50, "CRITICAL"),
        ("-3", -3, "Level -3"),
    ],
)
def test_levels(value: Any, levelno: int, levelname: str) -> None:
    assert level_of(value) == (levelno, levelname)
    rec = parse({"level": value})
    assert rec == {"levelno": levelno, "levelname": levelname}


def test_unknown_level_name_is_kept_as_levelname() -> None:
    assert parse({"level": "verbose"}) == {"levelname": "verbose"}


@pytest.mark.parametrize("value", [None, True, 2.5, 1e20, 2**40, [20], {"n": 20}])
def test_unusable_levels_stay_in_extra(value: Any) -> None:
    assert parse({"level": value}) == {"level": value}


def test_level_precedence() -> None:
    assert parse({"level": "error", "levelno": 10}) == {"level": "error", "levelno": 10}
    assert parse({"level": "error", "levelname": "oops"}) == {"levelno": 40, "levelname": "oops"}


@pytest.mark.parametrize("key", ["logger", "logger_name"])
def test_logger_aliases(key: str) -> None:
    assert parse({key: "app.db"}) == {"name": "app.db"}
    assert parse({key: "app.db", "name": "main"}) == {"name": "main", key: "app.db"}
    assert parse({key: {"name": "x"}}) == {key: {"name": "x"}}


def test_message_aliases() -> None:
    assert parse({"message": "hi"}) == {"msg": "hi"}
    assert parse({"message": "hi", "msg": "hi"}) == {"msg": "hi"}
    assert parse({"message": "formatted", "msg": "raw %s"}) == {"msg": "raw %s", "_message": "formatted"}
    assert parse({"log": "line"}) == {"msg": "line"}
    assert parse({"log": "line", "message": "m"}) == {"msg": "m", "log": "line"}
    # An object under "log" with a level is ECS's nested shape (ecs-logging): not a message.
    assert parse({"log": {"level": "info"}}) == {"levelno": 20, "levelname": "INFO"}
    assert parse({"log": {"file": "x"}}) == {"log": {"file": "x"}}


def test_host_and_pid() -> None:
    assert parse({"host": "web-1", "pid": 42}) == {"hostname": "web-1", "process": 42}
    assert parse({"hostname": "a", "host": "b"}) == {"hostname": "a", "host": "b"}
    assert parse({"host": {"name": "web-1"}}) == {"host": {"name": "web-1"}}
    assert parse({"pid": "42"}) == {"process": 42}
    assert parse({"pid": "worker-1"}) == {"pid": "worker-1"}
    assert parse({"pid": 42, "process": 7}) == {"pid": 42, "process": 7}
    assert parse({"pid": True}) == {"pid": True}


def test_exc_info_text_becomes_exc_text() -> None:
    assert parse({"exc_info": "Traceback ..."}) == {"exc_text": "Traceback ..."}
    # exc_info has no column: kept as _exc_info when exc_text is there too.
    assert parse({"exc_info": "a", "exc_text": "b"}) == {"_exc_info": "a", "exc_text": "b"}


def test_other_keys_go_through_untouched() -> None:
    obj = {"user": {"id": 7, "roles": ["a", "b"]}, "n": 1.5, "ok": False, "nothing": None, "": "empty key"}
    assert parse(obj) == obj


def test_missing_time_means_no_created_and_the_encoder_uses_the_receive_time() -> None:
    rec = parse({"message": "no time here", "level": "info"})
    assert "created" not in rec
    row = encode(rec, received=1_700_000_000.25)
    assert row["created"] == row["received"] == RowEncoder().timestamp(1_700_000_000.25)
    assert row["extra"] == "\\N"  # no _bad_created for a time that was never sent
    assert row["message"] == "no time here"


# --- real senders ------------------------------------------------------------------------------

# Vector's socket sink with `encoding.codec = "json"` and newline_delimited framing writes each
# event's fields as they are. The first is the log event of Vector's data model page
# (vector.dev/docs/architecture/data-model/log); the second a stdin source event; the third an
# event from Vector's syslog source (its documented output fields); the fourth a
# kubernetes_logs event, nested.
VECTOR_LINES = [
    b'{"custom":"field","host":"my.host.com","message":"Hello world",'
    b'"timestamp":"2020-11-01T21:15:47+00:00"}',
    b'{"host":"my-host.local","message":"2019-02-13T19:48:34+00:00 [info] Started GET \\"/\\" for '
    b'127.0.0.1","source_type":"stdin","timestamp":"2020-10-10T17:07:36.452332Z"}',
    b'{"appname":"non","facility":"local7","host":"gerras.net","hostname":"dynamicwireless.name",'
    b'"message":"Try to override the THX port, maybe it will reboot the neural interface!",'
    b'"msgid":"ID931","procid":"2426","severity":"notice","source_ip":"34.33.222.212",'
    b'"source_type":"syslog","timestamp":"2020-03-13T20:45:38.119Z","version":1}',
    b'{"file":"/var/log/pods/default_web-0_1/web/0.log","kubernetes":{"container_name":"web",'
    b'"pod_labels":{"app":"web"},"pod_name":"web-0","pod_namespace":"default"},'
    b'"message":"GET /healthz 200","source_type":"kubernetes_logs","stream":"stdout",'
    b'"timestamp":"2024-05-01T12:00:00.123456789Z"}',
]


def test_vector_json_sink_lines() -> None:
    recs = [parse(line) for line in VECTOR_LINES]
    assert recs[0] == {
        "custom": "field",
        "hostname": "my.host.com",
        "msg": "Hello world",
        "created": datetime(2020, 11, 1, 21, 15, 47, tzinfo=UTC).timestamp(),
    }
    assert recs[1]["msg"].startswith("2019-02-13T19:48:34+00:00 [info] Started GET")
    assert recs[1]["created"] == datetime(2020, 10, 10, 17, 7, 36, 452332, tzinfo=UTC).timestamp()
    assert recs[2]["hostname"] == "dynamicwireless.name"
    assert recs[2]["host"] == "gerras.net"  # hostname was there already: host stays in extra
    assert recs[2]["severity"] == "notice" and recs[2]["procid"] == "2426"
    assert recs[3]["kubernetes"]["pod_labels"] == {"app": "web"}
    assert recs[3]["created"] == T0
    for rec in recs:
        row = encode(rec)
        assert row["message"] == rec["msg"].replace("\\", "\\\\")


# Fluent Bit's tcp (and stdout/http) output with `format json_lines`: each record plus its time
# under json_date_key ("date" by default) in json_date_format (double by default; epoch,
# epoch_ms, iso8601, java_sql_timestamp). Records as in Fluent Bit's "Output Formats" page (the
# first commits of its repository) and its tail input's "log" key.
FLUENT_BIT_LINES = [
    b'{"date":1398282091.0,"log":"Core: initialization and 32 bit fixes.",'
    b'"commit":"b327996bfcbc0f1f47e62c862c6f303592dfacea","author":"Eduardo Silva"}',
    b'{"date":1422350608,"log":"Initial import.","commit":"49269c5ec3c74411943e362cfef85052665ae97f",'
    b'"author":"Eduardo Silva"}',
    b'{"date":1422418113000,"log":"Doc: add reference to Apache License v2.0",'
    b'"commit":"6e09478733e8273ec216328dfc921e622740695d","author":"Eduardo Silva"}',
    b'{"date":"2018-05-30T09:39:52.000681Z","cpu_p":0.25,"user_p":0.25,"system_p":0}',
    b'{"date":"2018-05-30 09:39:52.000681","cpu_p":0.25,"user_p":0.25,"system_p":0}',
    b'{"timestamp":1398282091.000,"log":"Core: initialization and 32 bit fixes.","author":"Eduardo Silva"}',
]


def test_fluent_bit_json_lines() -> None:
    recs = [parse(line) for line in FLUENT_BIT_LINES]
    assert recs[0] == {
        "created": 1398282091.0,
        "msg": "Core: initialization and 32 bit fixes.",
        "commit": "b327996bfcbc0f1f47e62c862c6f303592dfacea",
        "author": "Eduardo Silva",
    }
    assert recs[1]["created"] == 1422350608.0
    assert recs[2]["created"] == 1422418113.0
    when = datetime(2018, 5, 30, 9, 39, 52, 681, tzinfo=UTC).timestamp()
    assert recs[3] == {"created": when, "cpu_p": 0.25, "user_p": 0.25, "system_p": 0}
    assert recs[4]["created"] == when
    assert recs[5]["created"] == 1398282091.0 and recs[5]["msg"].startswith("Core")


class _JsonFormatter(logging.Formatter):
    """A python-json-logger-like formatter: selected record attributes as one JSON object."""

    converter = staticmethod(time.gmtime)  # asctime in UTC, the zone JsonFormat() assumes

    def format(self, record: logging.LogRecord) -> str:
        d = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            d["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(d)


def test_python_json_formatter_line() -> None:
    record = make_record("disk %s full", level=logging.ERROR)
    record.args = ("/var",)
    try:
        raise OSError("boom")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()
    rec = parse(_JsonFormatter().format(record).encode())
    assert rec["msg"] == "disk /var full"
    assert (rec["levelno"], rec["levelname"], rec["name"]) == (40, "ERROR", "app.module")
    assert rec["exc_text"].startswith("Traceback") and "OSError: boom" in rec["exc_text"]
    # asctime in the stdlib's default format is the time (to the millisecond it shows).
    assert abs(rec["created"] - record.created) < 0.001 and "_asctime" not in rec


def test_json_lines_through_the_decoder_three_ways() -> None:
    data = b"\n".join([*VECTOR_LINES, b"not json", b"[1,2]", *FLUENT_BIT_LINES]) + b"\n"
    expected = [parse(line) for line in VECTOR_LINES] + ["!not_json", "!not_object"]
    expected += [parse(line) for line in FLUENT_BIT_LINES]
    chunkings = [
        [data],
        [data[i : i + 1] for i in range(len(data))],
        [data[i : i + 50] for i in range(0, len(data), 50)],
    ]
    for chunks in chunkings:
        assert decode(chunks) == expected


def decode(chunks: list[bytes]) -> list[RecordDict | str | ProtocolError]:
    return collect(Decoder(LineFramer(), JsonFormat()), chunks)


# --- library shapes ------------------------------------------------------------------------------
# Lines as each library writes them (the real libraries run in tests/wire/test_json_libraries.py).

PINO_LINE = (
    b'{"level":30,"time":1714564800123,"pid":42,"hostname":"web-1","name":"api","req":"r1","msg":"hello"}'
)
PINO_ERR = (
    b'{"level":50,"time":1714564800123,"pid":42,"hostname":"web-1","err":{"type":"Error",'
    b'"message":"boom","stack":"Error: boom\\n    at f (a.js:1:1)"},"msg":"boom"}'
)
BUNYAN_LINE = (
    b'{"name":"api","hostname":"web-1","pid":42,"level":40,"msg":"careful",'
    b'"time":"2024-05-01T12:00:00.123Z","v":0}'
)
GELF_LINE = (
    b'{"version":"1.0","host":"web-1","short_message":"disk full","timestamp":1714564800.123,'
    b'"level":3,"facility":"app.disk","full_message":"Traceback ...","file":"/a.py","line":7,'
    b'"_function":"f","_pid":42,"_thread_name":"MainThread","_user_id":7}'
)
ECS_LINE = (
    b'{"@timestamp":"2024-05-01T12:00:00.123Z","log.level":"warning","message":"m",'
    b'"ecs.version":"1.6.0","log":{"logger":"app","origin":{"file":{"line":7,"name":"a.py"},'
    b'"function":"f"},"original":"m"},"process":{"name":"MainProcess","pid":42,"thread":'
    b'{"id":9,"name":"MainThread"}},"error":{"type":"ValueError","message":"bad",'
    b'"stack_trace":"  File \\"a.py\\", line 7, in f\\n"}}'
)
STRUCTLOG_LINE = (
    b'{"req":"r1","event":"hi","level":"info","timestamp":"2024-05-01T12:00:00.123456Z",'
    b'"logger":"app","exception":"Traceback ...","stack":"Stack (most recent call last) ..."}'
)
LOGURU_LINE = orjson.dumps(
    {
        "text": "2024-05-01 12:00:00.123 | ERROR | m:f:7 - boom\nTraceback (most recent call last):\nX\n",
        "record": {
            "elapsed": {"repr": "0:00:01", "seconds": 1.0},
            "exception": {"type": "ValueError", "value": "bad", "traceback": True},
            "extra": {"req": "r1", "name": "mine"},
            "file": {"name": "m.py", "path": "/src/m.py"},
            "function": "f",
            "level": {"icon": "x", "name": "ERROR", "no": 40},
            "line": 7,
            "message": "boom",
            "module": "m",
            "name": "pkg.m",
            "process": {"id": 42, "name": "MainProcess"},
            "thread": {"id": 9, "name": "MainThread"},
            "time": {"repr": "2024-05-01 12:00:00.123000+00:00", "timestamp": 1714564800.123},
        },
    }
)


def test_pino() -> None:
    rec = parse(PINO_LINE)
    assert rec == {
        "levelno": 20, "levelname": "INFO", "created": 1714564800.123, "process": 42,
        "hostname": "web-1", "name": "api", "req": "r1", "msg": "hello",
    }  # fmt: skip
    rec = parse(PINO_ERR)
    assert (rec["levelno"], rec["exc_text"]) == (40, "Error: boom\n    at f (a.js:1:1)")
    assert rec["err"] == {"type": "Error", "message": "boom"}
    for n, (levelno, name) in {10: (5, "TRACE"), 60: (50, "CRITICAL"), 35: (None, "Level 35")}.items():
        rec = parse({"level": n, "time": 1714564800123})
        assert (rec.get("levelno"), rec["levelname"]) == (levelno, name)


def test_bunyan() -> None:
    rec = parse(BUNYAN_LINE)
    assert rec == {
        "name": "api", "hostname": "web-1", "process": 42, "levelno": 30, "levelname": "WARNING",
        "msg": "careful", "created": 1714564800.123, "v": 0,
    }  # fmt: skip


def test_gelf() -> None:
    rec = parse(GELF_LINE)
    assert rec == {
        "version": "1.0", "hostname": "web-1", "msg": "disk full", "created": 1714564800.123,
        "levelno": 40, "levelname": "ERROR", "name": "app.disk", "exc_text": "Traceback ...",
        "pathname": "/a.py", "lineno": 7, "funcName": "f", "process": 42, "threadName": "MainThread",
        "user_id": 7,
    }  # fmt: skip
    for severity, levelno in {0: 50, 2: 50, 4: 30, 5: 20, 6: 20, 7: 10}.items():
        assert parse({"version": "1.1", "short_message": "m", "level": severity})["levelno"] == levelno
    # graypy's custom facility: the logger is _logger, facility stays.
    rec = parse({"version": "1.0", "short_message": "m", "facility": "f", "_logger": "app"})
    assert (rec["name"], rec["facility"]) == ("app", "f")


def test_ecs_dotted_and_nested() -> None:
    rec = parse(ECS_LINE)
    assert rec == {
        "created": 1714564800.123, "levelno": 30, "levelname": "WARNING", "msg": "m",
        "ecs.version": "1.6.0", "name": "app", "lineno": 7, "funcName": "f",
        "log": {"origin": {"file": {"name": "a.py"}}, "original": "m"},
        "process": 42, "processName": "MainProcess", "thread": 9, "threadName": "MainThread",
        "error": {"type": "ValueError", "message": "bad"},
        "exc_text": 'Traceback (most recent call last):\n  File "a.py", line 7, in f\nValueError: bad',
    }  # fmt: skip
    nested = parse({"ecs": {"version": "8"}, "log": {"level": "error", "logger": "x"}, "message": "m"})
    assert nested == {"ecs": {"version": "8"}, "levelno": 40, "levelname": "ERROR", "name": "x", "msg": "m"}
    rec = parse({"log.level": "info", "process": {"pid": 1, "executable": "/bin/x"}})
    assert rec == {"levelno": 20, "levelname": "INFO", "process": 1, "process.executable": "/bin/x"}


def test_structlog() -> None:
    rec = parse(STRUCTLOG_LINE)
    assert rec == {
        "req": "r1", "msg": "hi", "levelno": 20, "levelname": "INFO", "created": T0, "name": "app",
        "exc_text": "Traceback ...", "stack_info": "Stack (most recent call last) ...",
    }  # fmt: skip


def test_loguru() -> None:
    rec = parse(LOGURU_LINE)
    assert rec == {
        "created": 1714564800.123, "levelno": 40, "levelname": "ERROR", "msg": "boom",
        "name": "pkg.m", "pathname": "/src/m.py", "lineno": 7, "funcName": "f", "module": "m",
        "process": 42, "processName": "MainProcess", "thread": 9, "threadName": "MainThread",
        "exc_text": "Traceback (most recent call last):\nX",
        "elapsed": {"repr": "0:00:01", "seconds": 1.0},
        "exception": {"type": "ValueError", "value": "bad", "traceback": True},
        "req": "r1", "_name": "mine",
    }  # fmt: skip


def test_winston_stack_and_asctime() -> None:
    rec = parse({"level": "error", "message": "boom", "stack": "Error: boom\n    at x", "service": "s"})
    assert rec == {"levelno": 40, "levelname": "ERROR", "msg": "boom", "exc_text": "Error: boom\n    at x",
                   "service": "s"}  # fmt: skip
    assert parse({"asctime": "2024-05-01 12:00:00,123", "message": "m"}) == {
        "created": 1714564800.123,
        "msg": "m",
    }
    berlin = JsonFormat(ZoneInfo("Europe/Berlin")).parse(b'{"asctime": "2024-05-01 14:00:00,123"}')
    assert berlin == {"created": 1714564800.123}
    # Not the default form, or beside a real time: kept, as _asctime.
    assert parse({"asctime": "May 1 12:00"}) == {"_asctime": "May 1 12:00"}
    assert parse({"asctime": "2024-05-01 12:00:00,123", "time": 5.0}) == {
        "created": 5.0,
        "_asctime": "2024-05-01 12:00:00,123",
    }


@pytest.mark.parametrize(
    "obj",
    [
        # Plain lines that carry one part of a signature, but not all of it.
        {"level": 30, "time": "2024-05-01T12:00:00Z", "msg": "m"},  # no epoch-ms time: stdlib 30
        {"level": 30, "msg": "m"},
        {"v": 1, "level": 30, "msg": "m"},
        {"v": "0", "level": 30},
        {"version": "1.1", "message": "m"},
        {"record": {"id": 1}, "message": "m"},
        {"event": "login", "message": "user logged in"},
        {"log": "line", "level": 30},
    ],
)
def test_plain_lines_are_not_misread_as_a_library(obj: dict[str, Any]) -> None:
    assert parse(obj) == JsonFormat(shape="plain").parse(orjson.dumps(obj))


def test_an_explicit_shape_skips_detection() -> None:
    line = b'{"level":30,"time":1714564800123,"msg":"m"}'
    assert JsonFormat(shape="plain").parse(line)["levelno"] == 30  # read as a stdlib number
    assert JsonFormat(shape="pino").parse(line)["levelno"] == 20
    assert JsonFormat(shape="structlog").parse(b'{"event":"e","message":"m"}') == {"msg": "m", "event": "e"}
    with pytest.raises(ValueError):
        JsonFormat(shape="log4j")


def test_parse_object_is_parse_without_the_decoding() -> None:
    for line in (PINO_LINE, BUNYAN_LINE, GELF_LINE, ECS_LINE, STRUCTLOG_LINE, LOGURU_LINE, *VECTOR_LINES):
        assert JsonFormat().parse_object(orjson.loads(line)) == parse(line)


@pytest.mark.parametrize("line", [PINO_LINE, BUNYAN_LINE, GELF_LINE, ECS_LINE, STRUCTLOG_LINE, LOGURU_LINE])
def test_library_lines_through_the_decoder_three_ways(line: bytes) -> None:
    data = line + b"\n" + line + b"\n"
    expected = [parse(line), parse(line)]
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))], [data + b'{"x": 1']):
        assert decode(chunks)[:2] == expected


# --- rejections and hostile input --------------------------------------------------------------


@pytest.mark.parametrize("line", [b"not json", b"{", b'{"a":}', b"", b" ", b"\x00", b"{'a': 1}", b'{"a":1}x'])
def test_not_json(line: bytes) -> None:
    assert rejected(line) == "not_json"


@pytest.mark.parametrize("line", [b"[]", b"[1]", b'"text"', b"42", b"null", b"true"])
def test_not_an_object(line: bytes) -> None:
    assert rejected(line) == "not_object"


def test_invalid_utf8_is_replaced_not_rejected() -> None:
    assert parse(b'{"msg":"caf\xe9 \xff"}') == {"msg": "caf\ufffd \ufffd"}


def test_lone_surrogate_escape_is_read_and_repaired_by_the_encoder() -> None:
    # json.dumps writes surrogateescape'd text (a non-UTF-8 file name) this way; orjson refuses it.
    line = json.dumps({"msg": "file \udcff"}).encode()
    rec = parse(line)
    assert rec == {"msg": "file \udcff"}
    assert encode(rec)["message"] == "file \ufffd"


def test_enormous_numbers() -> None:
    rec = parse(b'{"n":1e400,"m":-1e400,"i":123456789012345678901234567890,"levelno":1e30,"created":1e300}')
    assert rec["n"] == math.inf and rec["m"] == -math.inf
    assert rec["i"] == pytest.approx(1.2345678901234568e29)
    row = encode(rec)
    assert row["levelno"] == "\\N"
    assert row["created"] == row["received"]
    assert "_bad_created" in orjson.loads(row["extra"])
    assert rejected(b'{"n":' + b"9" * 5000 + b"}") == "not_json"  # over Python's 4300 digits


def test_nul_characters_survive_to_the_encoder() -> None:
    rec = parse(b'{"msg":"a\\u0000b","k\\u0000":"v\\u0000"}')
    assert rec == {"msg": "a\x00b", "k\x00": "v\x00"}
    row = encode(rec)
    assert row["message"] == "a\ufffdb"
    assert orjson.loads(row["extra"]) == {"k\ufffd": "v\ufffd"}


@pytest.mark.parametrize("depth", [10, 300, 1000, 1023])
@pytest.mark.parametrize(
    "key", ["msg", "name", "created", "exc_text", "message", "levelno", "thread", "extra"]
)
def test_deep_nesting_in_any_field_does_not_crash_the_encoder(depth: int, key: str) -> None:
    rec = parse(b'{"%s":%s1%s}' % (key.encode(), b"[" * depth, b"]" * depth))
    encode(rec)
    rec = parse(b'{"%s":%s1%s}' % (key.encode(), b'{"a":' * depth, b"}" * depth))
    encode(rec)


def test_nesting_deeper_than_orjson_allows_is_not_json() -> None:
    assert rejected(b"[" * 5000 + b"]" * 5000) == "not_json"
    assert rejected(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}") == "not_json"


def test_container_in_a_text_field_becomes_json_text() -> None:
    assert parse({"msg": {"event": "login", "ok": True}})["msg"] == '{"event":"login","ok":true}'
    assert parse({"name": [1, 2]})["name"] == "[1,2]"
    deep = parse(b'{"msg":' + b"[" * 1000 + b"]" * 1000 + b"}")
    assert deep["msg"] == "<too large: list>"


def test_huge_line() -> None:
    big = "x" * (1 << 20)
    rec = parse({"msg": big, "timestamp": "2024-05-01T12:00:00.123456Z"})
    assert rec["msg"] == big and rec["created"] == T0


# --- properties --------------------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
_ALL_KEYS = sorted(
    (STANDARD_ATTRS | {"@timestamp", "timestamp", "time", "ts", "date", "level", "logger"})
    | {"logger_name", "log", "host", "hostname", "pid", "stack"}
    # the library shapes' signatures and the keys they read
    | {"v", "event", "record", "text", "short_message", "full_message", "version", "facility"}
    | {"ecs.version", "log.level", "ecs", "err", "error", "exception", "process.pid", "_pid", "_x"}
)
_PLAIN_KEYS = st.text(max_size=10).filter(lambda k: k not in _ALL_KEYS)


@settings(max_examples=examples(200), deadline=None)
@given(st.dictionaries(st.sampled_from(_ALL_KEYS), _json_values, max_size=10))
def test_any_values_in_any_field_parse_and_encode(obj: dict[str, Any]) -> None:
    rec = parse(orjson.dumps(obj))
    assert all(type(k) is str for k in rec)
    encode(rec)


@settings(max_examples=examples(100), deadline=None)
@given(st.dictionaries(_PLAIN_KEYS, _json_values, max_size=6))
def test_objects_without_special_keys_round_trip(obj: dict[str, Any]) -> None:
    assert parse(orjson.dumps(obj)) == obj


@settings(max_examples=examples(200), deadline=None)
@given(
    st.sampled_from(SHAPES),
    st.dictionaries(
        st.sampled_from(_ALL_KEYS),
        _json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "level": _json_values,
                "logger": _json_values,
                "stack_trace": _json_values,
                "pid": _json_values,
                "time": st.fixed_dictionaries({}, optional={"timestamp": _json_values}),
                "extra": _json_values,
                "thread": _json_values,
                "stack": _json_values,
                "exception": _json_values,
            },
        ),
        max_size=10,
    ),
)
def test_any_values_in_any_shape_parse_and_encode(shape: str, obj: dict[str, Any]) -> None:
    # Every shape's mapping, forced on any object (nested ones too): a dict the encoder takes.
    fmt = JsonFormat(shape=shape)
    rec = fmt.parse(orjson.dumps(obj))
    assert all(type(k) is str for k in rec)
    encode(rec)
    assert fmt.parse_object(orjson.loads(orjson.dumps(obj))) == rec


@settings(max_examples=examples(300), deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(timezone(timedelta(hours=-7))),
    )
)
def test_iso_times_round_trip(when: datetime) -> None:
    rec = parse({"@timestamp": when.isoformat(), "message": "m"})
    assert rec["created"] == when.timestamp()


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_dict_or_record_rejected(line: bytes) -> None:
    try:
        rec = JsonFormat().parse(line)
    except RecordRejected as exc:
        assert exc.reason in {"not_json", "not_object"}
    else:
        assert type(rec) is dict


# (tests/wire/test_thorough.py runs this property again, longer.)
STREAM_CASES = (st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6))


@settings(max_examples=examples(200), deadline=None)
@given(*STREAM_CASES)
def test_arbitrary_streams_never_raise_protocol_error(data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]
    for item in decode(chunks):
        assert isinstance(item, dict | str)
