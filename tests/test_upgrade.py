"""Upgrading with a backlog: a journal and a database the previous release left behind.

The previous release (logsvc 0.1) wrote ``LSJ1`` blocks (no row format in the header) and a
schema of version 1 (no ``records.journal``). A real ``serve`` of this release must ship such a
backlog once, into the upgraded table, and keep numbering after it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from logsvc.journal import encode_block_v1, segment_name
from logsvc.store import schema as sch
from logsvc.store.copyfmt import PLAIN_ROW_END, RowEncoder
from tests.helpers import Service, counts, join_clients, start_clients, wait_for

pytestmark = pytest.mark.slow


def _old_journal(directory: Path, blocks: int, per_block: int) -> str:
    """A journal as logsvc 0.1 wrote it: journal.id and one segment of LSJ1 blocks."""
    directory.mkdir(parents=True)
    jid = uuid.uuid4().hex
    (directory / "journal.id").write_text(jid + "\n")
    enc = RowEncoder()
    now = time.time()
    ts = enc.timestamp(now)
    data = b""
    seq = 1
    for b in range(blocks):
        # Layout 1: this release's rows without the stream columns it added.
        rows = [
            enc.encode(
                {"msg": f"old {b}/{i}", "name": "upgrade", "created": now, "run": "old"}, seq + i, "old", ts
            ).removesuffix(PLAIN_ROW_END)
            + b"\n"
            for i in range(per_block)
        ]
        data += encode_block_v1(seq, per_block, b"".join(rows))
        seq += per_block
    (directory / segment_name(1)).write_bytes(data)
    return jid


def _version_1_schema(dsn: str, schema: str) -> None:
    """The schema as logsvc 0.1 created it: no journal or stream columns, schema_version 1."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(sch.create_sql(schema))
        c.execute(
            f"ALTER TABLE {schema}.records DROP COLUMN journal, DROP COLUMN stream, DROP COLUMN stream_seq"
        )
        c.execute(f"DROP TABLE {schema}.streams")
        c.execute(f"UPDATE {schema}.meta SET value = '1' WHERE key = 'schema_version'")
        # A row stored by the old release, before the upgrade.
        c.execute(
            f"INSERT INTO {schema}.records (seq, created, received, message, peer) "
            "VALUES (0, now(), now(), 'stored by 0.1', 'old')"
        )


def test_a_backlog_in_the_previous_format_ships_once_into_the_upgraded_schema(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    data = tmp_path / "data"
    jid = _old_journal(data / "journal", blocks=5, per_block=200)
    _version_1_schema(dsn, schema)
    svc = Service(data, dsn, schema)
    svc.start()
    try:
        wait_for(lambda: counts(dsn, schema)[0] >= 1001, 60, "the old backlog to be shipped")
        # New records after the backlog: numbered after it, stored with it.
        join_clients(start_clients(svc.port, procs=1, count=300, pause=0.0, run="new"), timeout=60)
        wait_for(lambda: counts(dsn, schema)[0] >= 1301, 60, "the new records")
        assert svc.stop() == 0
    finally:
        svc.kill()
    rows, distinct, _ = counts(dsn, schema)
    assert rows == distinct == 1301
    with psycopg.connect(dsn) as c:
        by_journal = c.execute(
            f"SELECT journal::text, count(*), min(seq), max(seq) FROM {schema}.records GROUP BY 1 ORDER BY 3"
        ).fetchall()
        version = c.execute(f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'").fetchone()
        old = c.execute(
            f"SELECT count(*) FROM {schema}.records WHERE extra->>'run' = 'old' AND message LIKE 'old %'"
        ).fetchone()
    assert version == (str(sch.SCHEMA_VERSION),)
    assert old == (1000,), "every row of the LSJ1 backlog, with its columns in place"
    # The row stored before the upgrade knows no journal; every shipped row names its own.
    assert by_journal[0] == (None, 1, 0, 0)
    assert by_journal[1][0] == str(uuid.UUID(jid)) and by_journal[1][1] == 1300
    assert by_journal[1][2] == 1 and by_journal[1][3] >= 1300
