"""The COPY row encoder, checked against PostgreSQL's own parsing of the rows."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import logging.handlers
import pickle
import uuid
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logsvc.record import RecordDict
from logsvc.store import schema as sch
from logsvc.store.copyfmt import COLUMN_NAMES, COLUMNS, RowEncoder

RECEIVED = 1_700_000_000.25


def record(msg: str = "hello", **extra: Any) -> RecordDict:
    rec = logging.LogRecord("app.db", logging.WARNING, "/srv/app/db.py", 42, msg, None, None, func="query")
    for k, v in extra.items():
        setattr(rec, k, v)
    # What SocketHandler.makePickle sends, round-tripped through plain pickle.
    d = dict(rec.__dict__)
    d["msg"] = rec.getMessage()
    d["args"] = None
    out: RecordDict = pickle.loads(pickle.dumps(d, 1))
    return out


def load(dsn: str, schema: str, rows: list[bytes]) -> list[dict[str, Any]]:
    """COPY the rows into a fresh schema and read them back as dicts."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sch.create_sql(schema))
        with conn.cursor() as cur:
            with cur.copy(f"COPY {schema}.records ({', '.join(COLUMN_NAMES)}) FROM STDIN") as cp:
                for row in rows:
                    cp.write(row)
            cur.execute(f"SELECT * FROM {schema}.records ORDER BY seq")
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def encode(enc: RowEncoder, rec: RecordDict, seq: int = 1) -> bytes:
    return enc.encode(rec, seq, "127.0.0.1:5555", enc.timestamp(RECEIVED))


def test_plain_record_round_trips_every_field(dsn: str, schema: str) -> None:
    enc = RowEncoder()
    rec = record("[000007] log message 00000008", trace_id=17)
    (row,) = load(dsn, schema, [encode(enc, rec)])
    assert row["seq"] == 1
    assert row["created"] == dt.datetime.fromtimestamp(rec["created"], dt.UTC)
    assert row["received"] == dt.datetime.fromtimestamp(RECEIVED, dt.UTC)
    assert (row["levelno"], row["levelname"], row["logger"]) == (30, "WARNING", "app.db")
    assert row["message"] == "[000007] log message 00000008"
    assert (row["pathname"], row["lineno"], row["func"], row["module"]) == (
        "/srv/app/db.py",
        42,
        "query",
        "db",
    )
    assert row["process"] == rec["process"] and row["thread"] == rec["thread"]
    assert row["process_name"] == rec["processName"] and row["thread_name"] == rec["threadName"]
    assert row["peer"] == "127.0.0.1:5555"
    assert row["extra"] == {"trace_id": 17}
    assert row["exc_text"] is None and row["stack_info"] is None


def test_text_that_copy_would_misread_is_escaped(dsn: str, schema: str) -> None:
    enc = RowEncoder()
    nasty = "tab\there\nnewline\r\\N back\\slash \\. end"
    rec = record(nasty, note=nasty, path="C:\\temp\\x")
    rec["exc_text"] = "Traceback\n  line\t1"
    (row,) = load(dsn, schema, [encode(enc, rec)])
    assert row["message"] == nasty
    assert row["exc_text"] == "Traceback\n  line\t1"
    assert row["extra"] == {"note": nasty, "path": "C:\\temp\\x"}


def test_nul_and_lone_surrogates_are_replaced_not_lost(dsn: str, schema: str) -> None:
    enc = RowEncoder()
    rec = record("a\x00b\ud800c", bad="x\x00y\udfff")
    rec["name"] = "log\x00ger"
    (row,) = load(dsn, schema, [encode(enc, rec)])
    assert row["message"] == "a\ufffdb\ufffdc"
    assert row["logger"] == "log\ufffdger"
    assert row["extra"] == {"bad": "x\ufffdy\ufffd"}
    assert enc.stats.replaced_chars >= 5


def test_allow_listed_types_keep_their_natural_json_form(dsn: str, schema: str) -> None:
    enc = RowEncoder()
    u = uuid.UUID(int=12345)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
    rec = record(
        when=when,
        day=dt.date(2026, 1, 2),
        at=dt.time(3, 4, 5),
        took=dt.timedelta(seconds=1.5),
        amount=decimal.Decimal("12.3400000000000000001"),
        id=u,
        raw=b"\x00\xffok",
        big=1 << 70,
        nested={"a": [1, 2.5, None, True, ("t", 1)]},
        keys={1: "int key"},
    )
    (row,) = load(dsn, schema, [encode(enc, rec)])
    assert row["extra"] == {
        "when": "2026-01-02T03:04:05.600000+00:00",
        "day": "2026-01-02",
        "at": "03:04:05",
        "took": 1.5,
        "amount": "12.3400000000000000001",
        "id": str(u),
        "raw": "\\x00\\xffok",
        "big": str(1 << 70),
        "nested": {"a": [1, 2.5, None, True, ["t", 1]]},
        "keys": {"1": "int key"},
    }


def test_standard_fields_of_the_wrong_type_are_coerced(dsn: str, schema: str) -> None:
    enc = RowEncoder()
    rec = record()
    rec.update(levelno="high", lineno=1 << 40, name=["not", "text"], process=None, created="yesterday")
    (row,) = load(dsn, schema, [encode(enc, rec)])
    assert row["levelno"] is None and row["lineno"] is None and row["process"] is None
    assert row["logger"] == "['not', 'text']"
    assert row["created"] == row["received"]
    # What could not go in its column is kept beside the row, never lost.
    assert row["extra"] == {"_bad_created": "'yesterday'", "_bad_levelno": "high", "_bad_lineno": 1 << 40}
    assert enc.stats.bad_fields >= 4


def test_timestamp_formatting_matches_datetime_across_seconds() -> None:
    enc = RowEncoder()
    for epoch in (0.0, 0.9999996, 1_700_000_000.123456, 1_700_000_000.9999999, 1_700_000_001.5, -1.25):
        expected = dt.datetime.fromtimestamp(round(epoch, 6), dt.UTC)
        got = dt.datetime.fromisoformat(enc.timestamp(epoch).replace("+00", "+00:00"))
        assert got == expected, epoch


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=st.text(), value=json_values)
def test_any_text_and_json_value_is_accepted_by_postgresql(dsn: str, msg: str, value: Any) -> None:
    enc = RowEncoder()
    row = encode(enc, record(msg, v=value))
    assert row.endswith(b"\n") and row.count(b"\n") == 1
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE t (" + ", ".join(f"{n} {d}" for n, d in COLUMNS) + ") ON COMMIT DROP")
        with conn.cursor() as cur:
            with cur.copy(f"COPY t ({', '.join(COLUMN_NAMES)}) FROM STDIN") as cp:
                cp.write(row)
            # jsonb normalizes numbers; compare inside PostgreSQL so both sides get the same.
            expected = orjson.dumps(enc._sanitize({"v": value}, 0)).decode()
            cur.execute("SELECT message, extra = %s::jsonb FROM t", [expected])
            got = cur.fetchone()
    assert got is not None
    assert got[0] == "".join("\ufffd" if c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF else c for c in msg)
    assert got[1] is True


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e300, -1e300])
def test_unusable_created_falls_back_to_received(bad: float) -> None:
    enc = RowEncoder()
    rec = record()
    rec["created"] = bad
    row = encode(enc, rec).decode()
    assert row.split("\t")[1] == enc.timestamp(RECEIVED)


text_or_none = st.none() | st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.tuples(*[text_or_none] * 6),
    levelno=st.integers(-(2**33), 2**33) | st.none() | st.booleans(),
    process=st.integers(-(2**65), 2**65) | st.none(),
    created=st.floats(allow_nan=True) | st.integers(0, 2**40),
    extra=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
def test_fast_path_and_slow_path_encode_the_same_row(
    texts: tuple[str | None, ...],
    levelno: int | None,
    process: int | None,
    created: float,
    extra: dict[str, Any],
) -> None:
    rec = record()
    for key, value in zip(
        ("name", "msg", "funcName", "exc_text", "stack_info", "threadName"), texts, strict=True
    ):
        rec[key] = value
    rec.update(levelno=levelno, process=process, created=created)
    rec.update({f"x_{k}": v for k, v in extra.items()})
    enc = RowEncoder()
    ts = enc.timestamp(RECEIVED)
    assert enc.encode(rec, 7, "peer", ts) == enc._encode_slow(rec, 7, "peer", ts)
