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
from logsvc.store.copyfmt import (
    COLUMN_NAMES,
    COLUMNS,
    MAX_EXTRA_BYTES,
    MAX_EXTRA_VALUE_CHARS,
    MAX_FIELD_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_ROW_BYTES,
    MAX_TRACE_CHARS,
    RowEncoder,
)
from logsvc.wire.http_body import MAX_FORMATTED_CHARS

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


# --- caps: no single record builds an unbounded row (issue 10) ---------------------------------

_TEXT_KEYS = {
    "levelname": ("levelname", MAX_FIELD_CHARS),
    "name": ("logger", MAX_FIELD_CHARS),
    "msg": ("message", MAX_MESSAGE_CHARS),
    "pathname": ("pathname", MAX_FIELD_CHARS),
    "funcName": ("func", MAX_FIELD_CHARS),
    "module": ("module", MAX_FIELD_CHARS),
    "processName": ("process_name", MAX_FIELD_CHARS),
    "threadName": ("thread_name", MAX_FIELD_CHARS),
    "exc_text": ("exc_text", MAX_TRACE_CHARS),
    "stack_info": ("stack_info", MAX_TRACE_CHARS),
}


def test_the_http_format_cap_is_the_message_cap() -> None:
    # Two numbers that must agree, checked where they meet: formatting past the message cap
    # would only build characters the encoder cuts.
    assert MAX_FORMATTED_CHARS == MAX_MESSAGE_CHARS


def test_a_value_at_its_cap_is_kept_whole_and_one_over_is_cut_with_a_marker() -> None:
    for key, (_, cap) in _TEXT_KEYS.items():
        enc = RowEncoder()
        rec = record()
        rec[key] = "a" * cap
        assert "a" * cap in encode(enc, rec).decode()
        assert enc.stats.truncated_fields == 0
        rec[key] = "a" * cap + "bcd"
        row = encode(enc, rec).decode()
        assert "a" * cap + "… [truncated 3 chars]\t" in row, key
        assert "bcd" not in row
        assert enc.stats.truncated_fields == 1


def test_oversized_fields_are_cut_the_record_kept_and_postgresql_takes_the_row(dsn: str, schema: str) -> None:
    enc = RowEncoder()
    rec = record("m" * (MAX_MESSAGE_CHARS + 5), trace_id=17, blob="b" * (MAX_EXTRA_BYTES + 7))
    rec["exc_text"] = "Traceback\n" * (MAX_TRACE_CHARS // 10 + 1)
    rec["name"] = "n" * (MAX_FIELD_CHARS + 1)
    rows = [encode(enc, rec, 1), encode(enc, record("next"), 2)]
    assert enc.stats.truncated_fields == 4
    first, second = load(dsn, schema, rows)
    assert first["message"] == "m" * MAX_MESSAGE_CHARS + "… [truncated 5 chars]"
    assert first["logger"] == "n" * MAX_FIELD_CHARS + "… [truncated 1 chars]"
    assert first["exc_text"].endswith(" chars]") and len(first["exc_text"]) < MAX_TRACE_CHARS + 40
    assert first["extra"]["trace_id"] == 17  # the small keys of an oversized extra stay as they were
    assert (
        first["extra"]["blob"]
        == "b" * MAX_EXTRA_VALUE_CHARS + f"… [truncated {MAX_EXTRA_BYTES + 7 - MAX_EXTRA_VALUE_CHARS} chars]"
    )
    assert second["message"] == "next"


def test_an_extra_of_many_keys_becomes_one_cut_json_text(dsn: str, schema: str) -> None:
    enc = RowEncoder()
    rec = record(**{f"k{i:06d}": "v" * 20 for i in range(60_000)})  # ~2 MiB of small keys
    row = encode(enc, rec)
    assert len(row) <= MAX_ROW_BYTES and enc.stats.truncated_fields == 1
    (got,) = load(dsn, schema, [row])
    (text,) = got["extra"].values()
    assert list(got["extra"]) == ["_truncated_extra"]
    assert text.startswith('{"k') and text.endswith(" chars]")


def test_a_huge_nested_extra_value_is_cut_as_json_text() -> None:
    enc = RowEncoder()
    rec = record(rows=[{"id": i, "name": "x" * 50} for i in range(40_000)], small=1)
    fields = encode(enc, rec).rstrip(b"\n").split(b"\t")
    extra = orjson.loads(fields[COLUMN_NAMES.index("extra")].replace(b"\\\\", b"\\"))
    assert extra["small"] == 1
    assert extra["rows"].startswith('[{"id":0,"name":"xxx') and extra["rows"].endswith(" chars]")
    assert enc.stats.truncated_fields == 1


# The characters that cost the most bytes in a row: 4-byte UTF-8, COPY escapes, a NUL (U+FFFD, 3
# bytes), a lone surrogate, and for extra the JSON escapes that COPY then doubles.
_COSTLY = ["\U0001f600", "\\", "\t", "\x00", "\ud800", '"', "\x01", "é", "a"]
_sizes = st.sampled_from(
    [0, 1, MAX_FIELD_CHARS, MAX_FIELD_CHARS + 1, MAX_TRACE_CHARS + 3, MAX_MESSAGE_CHARS + 9]
)


@st.composite
def huge_records(draw: st.DrawFn) -> RecordDict:
    rec = record()
    for key in _TEXT_KEYS:
        if draw(st.booleans()):
            rec[key] = draw(st.sampled_from(_COSTLY)) * draw(_sizes) + draw(st.sampled_from(_COSTLY))
    for i in range(draw(st.integers(0, 3))):
        rec[f"x{i}"] = draw(st.sampled_from(_COSTLY)) * draw(_sizes)
    if draw(st.booleans()):
        key = draw(st.sampled_from(_COSTLY)) * draw(_sizes)
        rec[key or "k"] = [draw(st.sampled_from(_COSTLY)) * 1000] * draw(st.integers(0, 2000))
    return rec


@settings(max_examples=40, deadline=None)
@given(huge_records(), st.sampled_from(["127.0.0.1:5555", "\U0001f600" * (MAX_FIELD_CHARS + 1)]))
def test_no_record_builds_a_row_over_max_row_bytes(rec: RecordDict, peer: str) -> None:
    enc = RowEncoder()
    row = enc.encode(rec, (1 << 64) - 1, peer, enc.timestamp(RECEIVED))
    assert len(row) <= MAX_ROW_BYTES
    assert row.endswith(b"\n") and row.count(b"\n") == 1 and row.count(b"\t") == len(COLUMNS) - 1


def test_the_worst_record_fits_max_row_bytes_which_is_about_8_mib() -> None:
    over = "\U0001f600"
    # In extra a backslash costs the most: JSON doubles it, then COPY doubles that. Five values
    # cut to MAX_EXTRA_VALUE_CHARS are still over MAX_EXTRA_BYTES, so the fallback runs too.
    rec = record(
        over * (MAX_MESSAGE_CHARS + 1), **{f"k{i}": "\\" * (MAX_EXTRA_VALUE_CHARS + 1) for i in range(5)}
    )
    for key in _TEXT_KEYS:
        if key != "msg":
            rec[key] = over * (MAX_MESSAGE_CHARS + 1)
    rec.update(levelno=-(1 << 31), lineno=-(1 << 31), process=-(1 << 63), thread=-(1 << 63), created=1e-6)
    enc = RowEncoder()
    row = enc.encode(rec, (1 << 64) - 1, over * (MAX_FIELD_CHARS + 1), enc.timestamp(RECEIVED))
    assert MAX_ROW_BYTES - 4096 < len(row) <= MAX_ROW_BYTES < 9 << 20
