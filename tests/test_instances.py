"""Several instances on one database: one schema, one leader for DDL, no waiting on reconnect.

Three real ``serve`` processes (their own data directories, one DSN and schema) under load
from stock ``SocketHandler`` clients, one of them killed and restarted; a connect while
another session holds an open write on ``records`` and the schema's lock; an older logsvc
on a newer schema. See "Several instances on one database" in docs/design.md.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from logsvc.journal import Journal
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.store import schema as sch
from logsvc.store.sink import IDLE, PgSink
from tests.faults.helpers import ClientPlan, TaggedClients, connected_lines, final_counts, tally
from tests.helpers import Service, run_until, wait_for

KEYS = ("trace_id",)


def _sink(reactor: Reactor, tmp_path: Path, dsn: str, schema: str) -> tuple[PgSink, Journal]:
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
        extra_index_keys=KEYS,
    )
    return sink, journal


def _create(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sch.create_sql(schema, KEYS))
        c.execute(sch.partitions_sql(schema, _dt.datetime.now(_dt.UTC).date()))


def _catalog(dsn: str, schema: str) -> dict[str, Any]:
    """What an old binary must not change: functions (source and row version), relations, version."""
    with psycopg.connect(dsn, autocommit=True) as c:
        funcs = c.execute(
            "SELECT p.proname, p.xmin::text, p.prosrc FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = %s ORDER BY 1",
            [schema],
        ).fetchall()
        rels = c.execute(
            "SELECT c.relname, c.xmin::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s ORDER BY 1",
            [schema],
        ).fetchall()
        version = c.execute(f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'").fetchone()
    return {"functions": funcs, "relations": rels, "version": version}


def test_a_connect_does_not_wait_behind_open_writes_or_another_instances_lock(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    _create(dsn, schema)
    key = f"logsvc.schema.{schema}"
    writer = psycopg.connect(dsn)  # another instance's batch, left open: ROW EXCLUSIVE on records
    leader = psycopg.connect(dsn, autocommit=True)  # another instance in its maintenance
    reactor = Reactor()
    sink, journal = _sink(reactor, tmp_path, dsn, schema)
    try:
        writer.execute(f"INSERT INTO {schema}.records (seq, created, received) VALUES (1, now(), now())")
        leader.execute("SELECT pg_advisory_lock(hashtext(%s))", [key])
        # Before: CREATE INDEX IF NOT EXISTS on every connect waited for the writer (and every
        # later COPY queued behind it); bench/connect_ddl_wait.py shows it.
        started = time.monotonic()
        sink.start()
        run_until(reactor, lambda: sink.state == IDLE or bool(sink.last_error), timeout=20)
        elapsed = time.monotonic() - started
        assert sink.state == IDLE, sink.last_error
        # Under the DDL's lock timeout (2 s): it took no table lock at all.
        assert elapsed < 1.5, f"the connect took {elapsed:.2f} s"
        print(f"connect with an open write and the schema's lock held elsewhere: {elapsed:.3f} s")
        with psycopg.connect(dsn, autocommit=True) as c:
            waiting = c.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()"
            ).fetchone()
        assert waiting == (0,)
    finally:
        sink.close()
        journal.close()
        reactor.close()
        writer.rollback()
        writer.close()
        leader.close()


def test_a_missing_schema_is_created_once_by_whichever_instance_gets_the_lock(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    # While another session holds the schema's lock, an instance that finds the schema missing
    # does not wait for it: it says why and retries; once the lock is free it creates it.
    with psycopg.connect(dsn, autocommit=True) as leader:
        leader.execute("SELECT pg_advisory_lock(hashtext(%s))", [f"logsvc.schema.{schema}"])
        reactor = Reactor()
        sink, journal = _sink(reactor, tmp_path, dsn, schema)
        try:
            sink.start()
            run_until(reactor, lambda: "another logsvc holds the lock" in sink.last_error, timeout=20)
            with psycopg.connect(dsn, autocommit=True) as c:
                assert c.execute("SELECT to_regnamespace(%s)", [schema]).fetchone() == (None,)
            leader.execute("SELECT pg_advisory_unlock_all()")
            run_until(reactor, lambda: sink.state == IDLE, timeout=30)
        finally:
            sink.close()
            journal.close()
            reactor.close()
    assert _catalog(dsn, schema)["version"] == (str(sch.SCHEMA_VERSION),)


def test_an_older_logsvc_refuses_a_newer_schema_and_changes_nothing(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    _create(dsn, schema)
    newer = sch.SCHEMA_VERSION + 1
    with psycopg.connect(dsn, autocommit=True) as c:
        # What a newer release might have done: its own function body, an index gone, a version.
        c.execute(
            f"CREATE OR REPLACE FUNCTION {schema}.advance_shipped(p_journal text, p_from bigint, "
            "p_to bigint) RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'newer'; END $$"
        )
        c.execute(f"DROP INDEX {schema}.records_stored_brin")
        c.execute(f"UPDATE {schema}.meta SET value = %s WHERE key = 'schema_version'", [str(newer)])
    before = _catalog(dsn, schema)
    reactor = Reactor()
    sink, journal = _sink(reactor, tmp_path, dsn, schema)
    try:
        sink.start()
        run_until(reactor, lambda: "newer than this logsvc" in sink.last_error, timeout=20)
        assert sink.state != IDLE
    finally:
        sink.close()
        journal.close()
        reactor.close()
    assert _catalog(dsn, schema) == before
    # The full DDL (what tests and benches run, and serve once something is missing) refuses
    # before its first CREATE too.
    with psycopg.connect(dsn, autocommit=True) as c, pytest.raises(psycopg.errors.RaiseException) as err:
        c.execute(sch.create_sql(schema, KEYS))
    assert f"is version {newer}, newer than this logsvc" in str(err.value)
    assert _catalog(dsn, schema) == before


# -- three instances under load ------------------------------------------------------------------

INSTANCES = 3
CLIENTS = 2  # per instance
KEEP_SENDING = 300  # records each client logs between checkpoints


def _journal_rows(dsn: str, schema: str) -> dict[str, tuple[int, int, int]]:
    """journal id (hex) -> (rows, distinct seqs, max seq)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        got = c.execute(
            f"SELECT journal::text, count(*), count(DISTINCT seq), max(seq) FROM {schema}.records GROUP BY 1"
        ).fetchall()
    return {uuid.UUID(j).hex: (int(n), int(d), int(m)) for j, n, d, m in got}


def _run_rows(dsn: str, schema: str, run: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        if c.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
            return 0
        row = c.execute(f"SELECT count(*) FROM {schema}.records WHERE extra->>'run' = %s", [run]).fetchone()
    assert row is not None
    return int(row[0])


def _keep_sending(clients: TaggedClients) -> None:
    base = clients.sent
    wait_for(
        lambda: all(s >= b + KEEP_SENDING for s, b in zip(clients.sent, base, strict=True)),
        30,
        "the clients to keep sending",
    )


@pytest.mark.slow
def test_three_instances_one_schema_one_killed_and_restarted_under_load(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    services = [Service(tmp_path / f"i{i}", dsn, schema) for i in range(INSTANCES)]
    for svc in services:  # not waiting for each other: they race for the schema's creation
        svc.start()
    plan = ClientPlan(run="", pause=0.001, retry_start=0.1, retry_max=0.5, max_seconds=90)
    runs = [f"inst{i}" for i in range(INSTANCES)]
    clients = [
        TaggedClients(svc.port, CLIENTS, dataclasses.replace(plan, run=run))
        for svc, run in zip(services, runs, strict=True)
    ]
    victim = services[1]
    try:
        for c in clients:
            c.start()
        wait_for(
            lambda: all(_run_rows(dsn, schema, r) >= 500 for r in runs), 60, "every instance to store rows"
        )
        _keep_sending(clients[1])
        victim.kill()  # SIGKILL mid-load: its journal holds what it had not shipped
        journal = Journal(victim.data_dir / "journal")
        try:
            report = journal.open()
        finally:
            journal.close()
        victim_jid = report.journal_id
        journaled = report.next_seq - report.seq_jump - 1  # a fresh journal: seqs 1..journaled
        victim.start()  # same data directory and port
        for c in clients:
            _keep_sending(c)
        for c in clients:
            c.stop()
        for svc in services:
            assert svc.stop() == 0, svc.log()[-3000:]
    finally:
        for c in clients:
            c.kill()
        for svc in services:
            svc.kill()

    by_journal = _journal_rows(dsn, schema)
    assert len(by_journal) == INSTANCES, by_journal
    for jid, (rows, distinct, _) in by_journal.items():
        assert rows == distinct, f"journal {jid}: {rows - distinct} rows stored twice"
    # The killed instance: everything its first process journaled is stored (the restarted
    # process shipped what was left), once.
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*), count(DISTINCT seq) FROM {schema}.records WHERE journal = %s AND seq <= %s",
            [uuid.UUID(victim_jid), journaled],
        ).fetchone()
    assert row == (journaled, journaled), f"of {journaled} journaled before the kill: {row}"
    second_run = victim.log()
    assert "Connected to PostgreSQL" in second_run
    # (shipped_seq, unshipped) at the restart's connect: what the killed process left to ship.
    print(f"killed instance: {journaled} journaled; restarted with {connected_lines(second_run)}")
    assert "creating or upgrading" not in second_run, "a restart on a current schema runs no DDL"
    for i, (svc, c, run) in enumerate(zip(services, clients, runs, strict=True)):
        t = tally(dsn, schema, run, c.sent)
        print(f"{run}: sent {t.sent}, stored {t.rows}, lost {t.lost}, duplicated {t.duplicated}")
        assert t.duplicated == 0 and t.unexpected == 0, (run, t)
        jid = _journal_id(svc)
        assert by_journal[jid][0] == t.rows, (i, by_journal[jid], t)  # each instance, its own clients
        if svc is not victim:
            # A survivor stored everything it journaled (its last line after the drain), and
            # its clients lost only what the stock handler dropped while it had no connection.
            final = final_counts(svc.log())
            assert final.journaled == final.stored == by_journal[jid][0], (run, final, by_journal[jid])
            assert t.lost <= sum(c.dropped), (run, t.lost, c.dropped)


def _journal_id(svc: Service) -> str:
    return (svc.data_dir / "journal" / "journal.id").read_text().strip()


def test_maintenance_by_two_instances_at_once_never_fails_and_drops_each_partition_once(
    dsn: str, schema: str
) -> None:
    # Two instances' maintenance at the same moment: one holds the schema's lock and drops,
    # the other returns at once; and one run after a partition is already gone is no error.
    _create(dsn, schema)
    today = _dt.datetime.now(_dt.UTC).date()
    old = [today - _dt.timedelta(days=d) for d in (30, 20, 10)]
    with psycopg.connect(dsn, autocommit=True) as c:
        for day in old:
            c.execute(f"SELECT {schema}.ensure_partition(%s)", [day])
    sql = sch.maintenance_sql(schema, today, 7)
    first = psycopg.connect(dsn)
    try:
        first.execute(sql.replace("COMMIT;", ""))  # the leader, its transaction still open
        t = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute(sql)  # skips: it does not wait for the leader
        assert time.monotonic() - t < 1.0
        first.commit()
    finally:
        first.close()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sql)  # nothing left to drop: no error
        parts = {
            r[0]
            for r in c.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass",
                [f"{schema}.records"],
            )
        }
    assert not {f"records_{d:%Y%m%d}" for d in old} & parts
    assert f"records_{today:%Y%m%d}" in parts and "records_default" in parts
