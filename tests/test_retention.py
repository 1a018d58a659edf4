"""Retention drops whole old daily partitions, never rows, never the default partition."""

from __future__ import annotations

import argparse
import datetime as _dt
import time
from pathlib import Path

import psycopg
import pytest

from logsvc import config
from logsvc.errors import ConfigError
from logsvc.journal import Journal
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.store import schema as sch
from logsvc.store.sink import IDLE, PgSink

TODAY = _dt.datetime.now(_dt.UTC).date()
# Days (relative to today) that get a partition and two rows each.
DAYS = (-30, -10, -8, -7, -6, -1, 0, 2)


def _setup(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sch.create_sql(schema))
        for d in DAYS:
            day = TODAY + _dt.timedelta(days=d)
            conn.execute(f"SELECT {schema}.ensure_partition(%s)", [day])
            noon = _dt.datetime.combine(day, _dt.time(12), _dt.UTC)
            for seq in (1, 2):
                conn.execute(
                    f"INSERT INTO {schema}.records (seq, created, received) VALUES (%s, %s, %s)",
                    [seq, noon, noon],
                )
        # A client with a wrong clock: its row sits in the default partition, whatever its age.
        old = _dt.datetime(2001, 1, 1, tzinfo=_dt.UTC)
        conn.execute(
            f"INSERT INTO {schema}.records (seq, created, received) VALUES (3, %s, %s)",
            [old, old],
        )


def _state(dsn: str, schema: str) -> tuple[set[str], dict[str, int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        parts = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass",
                [f"{schema}.records"],
            )
        }
        counts = {
            str(r[0]): int(r[1])
            for r in conn.execute(
                f"SELECT tableoid::regclass::text, count(*) FROM {schema}.records GROUP BY 1"
            )
        }
    return parts, counts


def _name(d: int) -> str:
    return "records_" + (TODAY + _dt.timedelta(days=d)).strftime("%Y%m%d")


def test_retention_drops_only_whole_partitions_older_than_the_cutoff(dsn: str, schema: str) -> None:
    _setup(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sch.retention_sql(schema, 7, TODAY))
    parts, counts = _state(dsn, schema)
    assert parts == {"records_default"} | {_name(d) for d in (-7, -6, -1, 0, 2)}
    # What is left is untouched: two rows in every kept day, the default partition's row.
    assert counts == {f"{schema}.{_name(d)}": 2 for d in (-7, -6, -1, 0, 2)} | {
        f"{schema}.records_default": 1
    }
    # Idempotent: running again changes nothing.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sch.retention_sql(schema, 7, TODAY))
    assert _state(dsn, schema)[0] == parts


def test_retention_skips_a_partition_locked_by_a_query_and_drops_the_rest(dsn: str, schema: str) -> None:
    _setup(dsn, schema)
    with psycopg.connect(dsn) as reader:
        # A long query on one old partition holds its lock until this transaction ends.
        reader.execute(f"SELECT count(*) FROM {schema}.{_name(-30)}")
        t = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sch.retention_sql(schema, 7, TODAY))
        assert time.monotonic() - t < 10
        parts, _ = _state(dsn, schema)
        assert _name(-30) in parts
        assert _name(-10) not in parts and _name(-8) not in parts
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sch.retention_sql(schema, 7, TODAY))
    assert _name(-30) not in _state(dsn, schema)[0]


@pytest.mark.parametrize("days", [0, -1])
def test_retention_sql_refuses_non_positive_days(days: int) -> None:
    with pytest.raises(ValueError):
        sch.retention_sql("logsvc", days, TODAY)


def test_retention_setting_is_a_positive_number_of_days() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    assert config.resolve(parser.parse_args([]), environ={}).retention is None
    assert config.resolve(parser.parse_args(["--retention", "30"]), environ={}).retention == 30
    assert config.resolve(parser.parse_args([]), environ={"LOGSVC_RETENTION": "7"}).retention == 7
    with pytest.raises(ConfigError, match="--retention"):
        config.resolve(parser.parse_args(["--retention", "0"]), environ={})


def test_the_sink_applies_retention_when_it_connects(tmp_path: Path, dsn: str, schema: str) -> None:
    _setup(dsn, schema)
    reactor = Reactor()
    journal = Journal(tmp_path / "journal", segment_bytes=1 << 16, fsync="never")
    journal.open()
    sink = PgSink(
        reactor,
        journal,
        Metrics(),
        conninfo=dsn,
        schema_name=schema,
        max_records=100,
        max_bytes=1 << 20,
        max_age=0.05,
        retention_days=7,
    )
    try:
        sink.start()
        deadline = time.monotonic() + 20
        while sink.state != IDLE:
            assert time.monotonic() < deadline, f"sink did not connect: {sink.last_error}"
            reactor.run_once(max_timeout=0.05)
    finally:
        sink.close()
        journal.close()
        reactor.close()
    parts, _ = _state(dsn, schema)
    assert _name(-8) not in parts and _name(-7) in parts and "records_default" in parts
