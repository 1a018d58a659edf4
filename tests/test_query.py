"""``logsvc query``: parsing and SQL building without a database, then the command on known rows."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from logsvc import cli
from logsvc import query as q
from logsvc.errors import ConfigError
from logsvc.store import schema as sch

NOW = _dt.datetime(2026, 1, 20, 12, 0, tzinfo=_dt.UTC)

# -- pure: times, levels, extra ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30s", _dt.timedelta(seconds=30)),
        ("15m", _dt.timedelta(minutes=15)),
        ("15min", _dt.timedelta(minutes=15)),
        ("2h", _dt.timedelta(hours=2)),
        ("1.5h", _dt.timedelta(minutes=90)),
        ("7d", _dt.timedelta(days=7)),
        ("1w", _dt.timedelta(days=7)),
        (" 2H ", _dt.timedelta(hours=2)),
    ],
)
def test_relative_times_count_back_from_now(text: str, ago: _dt.timedelta) -> None:
    assert q.parse_time(text, NOW) == NOW - ago


def test_iso_times_keep_their_offset_and_z_means_utc() -> None:
    assert q.parse_time("2026-01-19T10:00:00+02:00", NOW) == _dt.datetime(2026, 1, 19, 8, tzinfo=_dt.UTC)
    assert q.parse_time("2026-01-19T10:00Z", NOW) == _dt.datetime(2026, 1, 19, 10, tzinfo=_dt.UTC)


def test_iso_times_without_offset_are_local_time() -> None:
    t = q.parse_time("2026-01-19 10:00", NOW)
    assert t.tzinfo is not None
    assert t == _dt.datetime(2026, 1, 19, 10).astimezone()
    assert q.parse_time("2026-01-19", NOW) == _dt.datetime(2026, 1, 19).astimezone()


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "15", "15x", "-2h", "2026-13-01", "1e400d", "0001-01-01", "9999-12-31T23:59-02:00"],
)
def test_unparsable_times_raise_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        q.parse_time(text, NOW)


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("error", 40),
        ("ERROR", 40),
        ("Warning", 30),
        ("warn", 30),
        ("critical", 50),
        ("fatal", 50),
        ("35", 35),
    ],
)
def test_levels_by_name_or_number(text: str, level: int) -> None:
    assert q.parse_level(text) == level


@pytest.mark.parametrize("text", ["loud", "", "-1", "4O"])
def test_unknown_levels_raise_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="unknown level"):
        q.parse_level(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trace_id=17", ("trace_id", 17)),
        ("n=-3", ("n", -3)),
        ("ratio=0.5", ("ratio", 0.5)),
        ("big=1e3", ("big", 1000.0)),
        ("ok=true", ("ok", True)),
        ("ok=false", ("ok", False)),
        ("gone=null", ("gone", None)),
        ("svc=api", ("svc", "api")),
        ('id="17"', ("id", "17")),
        ("q=a=b", ("q", "a=b")),
        ("empty=", ("empty", "")),
        ("nan=nan", ("nan", "nan")),
        ("True=True", ("True", "True")),
    ],
)
def test_extra_values_are_typed_like_json(text: str, expected: tuple[str, Any]) -> None:
    key, value = q.parse_extra(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text", ["trace_id", "=17", " =1", ""])
def test_malformed_extra_raises_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        q.parse_extra(text)


def test_host_patterns_match_the_stored_peer_forms() -> None:
    assert q.host_patterns(["10.0.0.1"]) == ["10.0.0.1:%"]
    assert q.host_patterns(["::1"]) == ["[::1]:%"]
    assert q.host_patterns(["::ffff:10.0.0.1"]) == ["10.0.0.1:%"]
    with pytest.raises(ValueError):
        q.host_patterns(["not-an-ip"])


# -- pure: filters -> SQL ----------------------------------------------------------------------


def test_no_filters_select_everything_newest_first() -> None:
    sql, params = q.build_select("logsvc", q.Filters(), limit=100)
    assert sql.endswith("FROM logsvc.records WHERE TRUE ORDER BY created DESC, seq DESC LIMIT %s")
    assert params == [100]
    sql, params = q.build_select("logsvc", q.Filters(), limit=None, oldest_first=True)
    assert sql.endswith("ORDER BY created ASC, seq ASC") and params == []


def test_every_filter_becomes_a_parameterized_predicate() -> None:
    since, until = NOW - _dt.timedelta(hours=1), NOW
    f = q.Filters(
        since=since,
        until=until,
        level=40,
        loggers=("app.db", "x_y%"),
        grep="50%_off",
        regex="dead(lock)?",
        hosts=("10.0.0.1:%",),
        pid=42,
        extra=(("trace_id", 17), ("svc", "api")),
    )
    where, params = f.where()
    assert where == (
        "created >= %s AND created < %s AND levelno >= %s AND "
        "(logger = %s OR logger LIKE %s OR logger = %s OR logger LIKE %s) AND message ILIKE %s AND "
        "message ~* %s AND (peer LIKE %s) AND process = %s AND "
        "extra -> %s = %s::jsonb AND extra @> %s::jsonb AND extra -> %s = %s::jsonb AND extra @> %s::jsonb"
    )
    assert params == [
        since,
        until,
        40,
        "app.db",
        "app.db.%",
        "x_y%",
        "x\\_y\\%.%",
        "%50\\%\\_off%",
        "dead(lock)?",
        "10.0.0.1:%",
        42,
        "trace_id",
        "17",
        '{"trace_id":17}',
        "svc",
        '"api"',
        '{"svc":"api"}',
    ]


@given(st.text(min_size=1, max_size=30), st.integers() | st.text() | st.booleans() | st.none())
def test_the_sql_text_never_depends_on_user_values(value: str, extra_value: Any) -> None:
    def statements(v: str, x: Any) -> list[str]:
        f = q.Filters(loggers=(v,), grep=v, regex=v, hosts=(v,), extra=((v, x),))
        built = [q.build_select("logsvc", f, limit=1), q.build_count("logsvc", f)]
        built += [q.build_stats("logsvc", f, True), q.build_follow("logsvc", f, NOW)]
        return [sql for sql, _ in built]

    assert statements(value, extra_value) == statements("x", 0)


def test_windows_cover_the_range_newest_first_without_gaps_or_overlaps() -> None:
    h = _dt.timedelta(hours=1)
    assert q.plan_windows(NOW - h, None, NOW) == [(NOW - h, None)]
    assert q.plan_windows(NOW - 24 * h, None, NOW) == [
        (NOW - h, None),
        (NOW - 4 * h, NOW - h),
        (NOW - 16 * h, NOW - 4 * h),
        (NOW - 24 * h, NOW - 16 * h),
    ]
    until = NOW - 2 * h
    assert q.plan_windows(NOW - 8 * h, until, NOW) == [
        (until - h, until),
        (until - 4 * h, until - h),
        (NOW - 8 * h, until - 4 * h),
    ]
    assert len(q.plan_windows(NOW - _dt.timedelta(days=3650), None, NOW)) == 10  # 4**8 h < 10 years


def test_schema_names_are_checked() -> None:
    with pytest.raises(ConfigError):
        q.build_select("logsvc; DROP TABLE x", q.Filters(), limit=1)
    with pytest.raises(ConfigError):
        q.build_count("Bad", q.Filters())


def test_colour_only_on_a_terminal_without_no_color() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert q.use_colour("auto", Tty(), {}) is True
    assert q.use_colour("auto", Tty(), {"NO_COLOR": "1"}) is False
    assert q.use_colour("auto", Tty(), {"NO_COLOR": ""}) is True  # no-color.org: empty means unset
    assert q.use_colour("auto", io.StringIO(), {}) is False
    assert q.use_colour("always", io.StringIO(), {"NO_COLOR": "1"}) is True
    assert q.use_colour("never", Tty(), {}) is False


# -- the command on a real PostgreSQL with known rows ---------------------------------------------

COLS = ("seq", "created", "levelno", "levelname", "logger", "message", "process", "peer", "extra", "exc_text")


def _rows(now: _dt.datetime) -> list[tuple[Any, ...]]:
    m = _dt.timedelta(minutes=1)
    return [
        (1, now - 10 * m, 40, "ERROR", "app.db", "connection TIMEOUT", 100, "10.0.0.1:5555",
         {"trace_id": 17, "svc": "api"}, "Traceback (most recent call last):\n  boom"),
        (2, now - 20 * m, 20, "INFO", "app.db.pool", "pool ok", 101, "10.0.0.2:1", {"trace_id": 17}, None),
        (3, now - 120 * m, 30, "WARNING", "app.http", "slow: timeout soon", 100, "10.0.0.1:2",
         {"trace_id": "17"}, None),
        (4, now - 3 * 1440 * m, 50, "CRITICAL", "app.dbx", "disk 100% full", 102, "[::1]:3",
         {"trace_id": 18, "flag": True}, None),
        (5, now - m, 10, "DEBUG", "app", "tab\there \\ back", 103, "10.0.0.3:4", None, None),
        (6, now - 30 * m, 40, "ERROR", "app.db", "query failed: deadlock", 101, "10.0.0.2:9",
         {"trace_id": 19, "ratio": 0.5}, None),
        (7, now - 40 * m, 25, None, "other", "custom level", 104, "10.0.0.4:1", {}, None),
    ]  # fmt: skip


@pytest.fixture
def db(dsn: str, schema: str) -> Iterator[tuple[str, str]]:
    now = _dt.datetime.now(_dt.UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sch.create_sql(schema))
        conn.execute(sch.partitions_sql(schema, now.date()))
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {schema}.records ({', '.join(COLS)}, received) "
                f"VALUES ({', '.join(['%s'] * (len(COLS) + 1))})",
                [(*r[:-2], Jsonb(r[-2]) if r[-2] is not None else None, r[-1], r[1]) for r in _rows(now)],
            )
    yield dsn, schema


def run(capsys: pytest.CaptureFixture[str], db: tuple[str, str], *args: str) -> tuple[int, str, str]:
    dsn, schema = db
    status = cli.main([args[0], "--dsn", dsn, "--schema", schema, *args[1:]])
    out, err = capsys.readouterr()
    return status, out, err


def seqs(capsys: pytest.CaptureFixture[str], db: tuple[str, str], *args: str) -> list[int]:
    status, out, err = run(capsys, db, "query", "--format", "json", *args)
    assert status == 0, err
    return [json.loads(line)["seq"] for line in out.splitlines()]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), [5, 1, 2, 6, 7, 3, 4]),
        (("--reverse",), [4, 3, 7, 6, 2, 1, 5]),
        (("--limit", "2"), [5, 1]),
        (("--limit", "0"), [5, 1, 2, 6, 7, 3, 4]),
        (("--since", "1h"), [5, 1, 2, 6, 7]),
        (("--since", "15m"), [5, 1]),
        (("--until", "1h"), [3, 4]),
        (("--since", "1d", "--until", "25m"), [6, 7, 3]),
        (("--level", "ERROR"), [1, 6, 4]),
        (("--level", "warn"), [1, 6, 3, 4]),
        (("--level", "21"), [1, 6, 7, 3, 4]),
        (("--logger", "app.db"), [1, 2, 6]),
        (("--logger", "app"), [5, 1, 2, 6, 3, 4]),
        (("--logger", "app.http", "--logger", "other"), [7, 3]),
        (("--grep", "timeout"), [1, 3]),
        (("--grep", "100%"), [4]),
        (("--grep", "%"), [4]),
        (("--grep", "\\"), [5]),
        (("--regex", "dead(lock|beef)"), [6]),
        (("--regex", "^CONNECTION"), [1]),
        (("--host", "10.0.0.1"), [1, 3]),
        (("--host", "::1"), [4]),
        (("--host", "10.0.0.1", "--host", "10.0.0.2"), [1, 2, 6, 3]),
        (("--pid", "100"), [1, 3]),
        (("--extra", "trace_id=17"), [1, 2]),
        (("--extra", 'trace_id="17"'), [3]),
        (("--extra", "trace_id=17", "--extra", "svc=api"), [1]),
        (("--extra", "flag=true"), [4]),
        (("--extra", "ratio=0.5"), [6]),
        (("--extra", "trace_id=19.0"), [6]),
        (("--level", "ERROR", "--since", "1h", "--logger", "app.db", "--extra", "trace_id=17"), [1]),
        (("--since", "1h", "--grep", "o", "--pid", "101", "--host", "10.0.0.2"), [2, 6]),
    ],
)
def test_filters_select_exactly_the_matching_rows(
    capsys: pytest.CaptureFixture[str], db: tuple[str, str], args: tuple[str, ...], expected: list[int]
) -> None:
    assert seqs(capsys, db, *args) == expected


def _stored(dsn: str, schema: str) -> dict[int, dict[str, Any]]:
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        cur = conn.execute(f"SELECT {', '.join(q.FIELDS)} FROM {schema}.records")
        return {row[0]: dict(zip(q.FIELDS, row, strict=True)) for row in cur}


def test_json_round_trips_every_stored_field(capsys: pytest.CaptureFixture[str], db: tuple[str, str]) -> None:
    status, out, _ = run(capsys, db, "query", "--format", "json")
    assert status == 0
    stored = _stored(*db)
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(stored)
    for obj in lines:
        assert tuple(obj) == q.FIELDS
        row = stored[obj["seq"]]
        for k in q.FIELDS:
            if k in ("created", "received", "stored"):
                assert _dt.datetime.fromisoformat(obj[k]) == row[k], k
            else:
                assert obj[k] == row[k], k


def test_csv_has_a_header_and_parses(capsys: pytest.CaptureFixture[str], db: tuple[str, str]) -> None:
    status, out, _ = run(capsys, db, "query", "--format", "csv", "--since", "1h")
    assert status == 0
    reader = csv.DictReader(io.StringIO(out))
    assert tuple(reader.fieldnames or ()) == q.FIELDS
    rows = list(reader)
    assert [int(r["seq"]) for r in rows] == [5, 1, 2, 6, 7]
    first = rows[1]
    assert first["exc_text"] == "Traceback (most recent call last):\n  boom"
    assert json.loads(first["extra"]) == {"trace_id": 17, "svc": "api"}
    assert rows[0]["message"] == "tab\there \\ back"
    assert _dt.datetime.fromisoformat(first["created"]).tzinfo is not None


def test_text_is_a_logging_line_without_colour_when_piped(
    capsys: pytest.CaptureFixture[str], db: tuple[str, str]
) -> None:
    status, out, _ = run(capsys, db, "query", "--level", "ERROR", "--since", "1h")
    assert status == 0
    assert "\x1b[" not in out
    lines = out.splitlines()
    assert lines[0].endswith('ERROR    app.db: connection TIMEOUT  {"svc":"api","trace_id":17}')
    assert lines[1:3] == ["Traceback (most recent call last):", "  boom"]
    assert "ERROR    app.db: query failed: deadlock" in lines[3]
    status, out, _ = run(capsys, db, "query", "--level", "ERROR", "--color", "always", "--limit", "1")
    assert "\x1b[31mERROR   \x1b[0m app.db" in out


def test_count_and_stats_agree_with_the_rows(capsys: pytest.CaptureFixture[str], db: tuple[str, str]) -> None:
    for filt in ((), ("--since", "1h"), ("--logger", "app.db"), ("--level", "warning", "--until", "5m")):
        rows = seqs(capsys, db, "--limit", "0", *filt)
        status, out, _ = run(capsys, db, "query", "--count", *filt)
        assert status == 0 and out == f"{len(rows)}\n"
        status, out, _ = run(capsys, db, "query", "--stats", "--format", "json", *filt)
        assert status == 0
        assert sum(json.loads(line)["count"] for line in out.splitlines()) == len(rows)
    status, out, _ = run(capsys, db, "query", "--stats", "--since", "1h")
    assert out.splitlines() == [
        "level           count",
        "DEBUG               1",
        "INFO                1",
        "Level 25            1",
        "ERROR               2",
        "total               5",
    ]
    status, out, _ = run(
        capsys, db, "query", "--stats", "--by", "logger", "--format", "csv", "--logger", "app"
    )
    assert list(csv.reader(io.StringIO(out))) == [
        ["logger", "level", "levelno", "count"],
        ["app", "DEBUG", "10", "1"],
        ["app.db", "ERROR", "40", "2"],
        ["app.db.pool", "INFO", "20", "1"],
        ["app.dbx", "CRITICAL", "50", "1"],
        ["app.http", "WARNING", "30", "1"],
    ]
    status, out, _ = run(capsys, db, "query", "--stats", "--by", "logger", "--level", "error")
    assert out.splitlines()[0].split() == ["logger", "ERROR", "CRITICAL", "total"]
    assert out.splitlines()[-1].split() == ["total", "2", "1", "3"]


def test_tail_without_follow_prints_the_last_lines_oldest_first(
    capsys: pytest.CaptureFixture[str], db: tuple[str, str]
) -> None:
    status, out, _ = run(capsys, db, "tail", "-n", "3", "--format", "json")
    assert status == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2, 1, 5]
    status, out, _ = run(capsys, db, "tail", "-n", "1", "--level", "error")
    assert "connection TIMEOUT" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("query", "--level", "LOUD"), "--level: unknown level 'LOUD'"),
        (("query", "--since", "yesterday"), "--since: cannot parse time 'yesterday'"),
        (("query", "--until", "2026-02-30"), "--until: cannot parse time"),
        (("query", "--since", "1h", "--until", "2h"), "must be before --until"),
        (("query", "--extra", "trace_id"), "--extra 'trace_id' must be KEY=VALUE"),
        (("query", "--regex", "(unclosed"), "--regex: invalid regular expression"),
        (("query", "--limit", "ten"), "--limit 'ten' is not a whole number"),
        (("query", "--pid", "-1"), "--pid must be at least 0"),
        (("query", "--by", "logger"), "--by logger needs --stats"),
        (("query", "--host", "no-such-host.invalid"), "--host 'no-such-host.invalid'"),
        (("tail", "-n", "x"), "--lines 'x' is not a whole number"),
        (("tail", "--poll-interval", "0"), "--poll-interval must be between"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_status_2(
    capsys: pytest.CaptureFixture[str], db: tuple[str, str], args: tuple[str, ...], message: str
) -> None:
    status, out, err = run(capsys, db, *args)
    assert status == 2
    assert out == ""
    assert err.startswith("logsvc: ") and message in err, err
    assert err.count("\n") == 1


def test_a_schema_without_records_is_a_usage_error(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    status = cli.main(["query", "--dsn", dsn, "--schema", "no_such_schema_here"])
    _, err = capsys.readouterr()
    assert status == 2
    assert "schema 'no_such_schema_here' has no records table" in err
