"""The PostgreSQL schema: created on start if missing, versioned, partitioned by day.

Objects, all inside one schema (``--schema``, default ``logsvc``)::

    meta(key, value)                   schema_version lives here
    shipped(journal_id, seq, updated)  how far each journal has been committed
    streams(id, seqs, updated)         per stream of the acknowledged protocol, every seq
                                       stored so far (an int8multirange); a batch leaves
                                       out rows already in it (``store/streams.py``)
    counts(bucket, journal, level, n)  records per 5 seconds of ``created`` and level class,
                                       added by each batch in its transaction: the console's
                                       histogram (``store/rollup.py``); ``meta.counts_since``
                                       says from when it holds every stored row
    records(...)                       the logs: range-partitioned by day on ``created``;
                                       ``journal`` says which journal a row came from
      records_YYYYMMDD                 one partition per UTC day, created ahead of time
      records_default                  catches any time outside the prepared days, so a
                                       client with a wrong clock never costs a record
    advance_shipped(journal, from, to) moves a journal's position; raises if it does not
                                       stand at ``from`` (the exactly-once guard)
    ensure_partition(day)              creates a day's partition, moving rows of that day
                                       out of the default partition first if there are any

The batch COPY and the ``advance_shipped`` call are one implicit transaction (one simple
query string), so PostgreSQL holds a record if and only if it also holds the journal position
past it. After any crash the service resumes from ``shipped.seq``: nothing lost, nothing
twice. If two services ever shipped the same journal, ``advance_shipped`` makes the second
batch fail instead of duplicating it.

``stored`` is not in the COPY: PostgreSQL fills it with ``now()``, the start of the batch's
transaction, so ``stored - created`` measures how long a record waited before its batch went
in (it undercounts the commit latency by the batch's own COPY time). ``now()`` and not
``clock_timestamp()``: a volatile default turns COPY's multi-row inserts off (about a third
of the COPY rate, measured).

Indexes (``INDEXES``; chosen by measurement on a 10-million-row table, see docs/query.md):
a BRIN index on ``created`` (cheap to maintain, records arrive in time order) and the
others listed in ``INDEXES``, each declared on the partitioned parent so every partition
has it. ``create_sql`` adds any that are missing, so an existing database gets them at the
next start of ``serve`` (building them on a large table takes a while, once).

Several instances on one database: a (re)connect only reads the catalogs (``check_sql``,
``version_sql``: no table lock, so it never waits behind another instance's COPY); only when
an object is missing or the version is older does it run ``create_sql``, under a try-lock
(never waiting for another instance) with every DDL statement's lock wait bounded by
``DDL_LOCK_TIMEOUT``. A schema newer than this release is refused before anything is
created or replaced (``refuse_newer``, and the first statement of ``create_sql``).
Partitions ahead and retention (``maintenance_sql``) are done by whichever instance gets the
schema's advisory lock at that moment; the others skip.

Each committed batch notifies ``notify_channel(schema)`` (``NOTIFY`` in the batch's own
transaction, so it is delivered at commit and never for a batch that rolled back):
``logsvc tail -f`` listens on it. ``retention_sql`` drops whole daily partitions past
``--retention`` days; rows are never deleted one by one, and the default partition is kept.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import re

from logsvc.errors import ConfigError, StoreError
from logsvc.store.copyfmt import COLUMNS, COPY_COLUMNS, ROW_FORMAT

# 1: logsvc 0.1. 2: records.journal, the journal each row came from. 3: records.stream and
# stream_seq, and the streams table (the acknowledged protocol's exactly-once, docs/protocol.md).
# 4: the counts table (the console's histogram, store.rollup) and meta.counts_since.
SCHEMA_VERSION = 4

# ``records.journal`` is not in the COPY rows: PostgreSQL fills it from the setting each batch
# makes with SET LOCAL, in the batch's own transaction. Every row of a journal would otherwise
# repeat its 32-character id, in the journal and on the wire. current_setting() is STABLE, so
# COPY keeps its multi-row inserts (a volatile default turns them off). Rows stored before
# schema version 2 and rows inserted by hand have NULL there.
JOURNAL_SETTING = "logsvc.journal"
_JOURNAL_DEFAULT = f"NULLIF(current_setting('{JOURNAL_SETTING}', true), '')::uuid"

# How many UTC days of partitions exist ahead of today (and one behind, for clients whose
# clocks lag). Checked at every connect and hourly.
PARTITION_DAYS_AHEAD = 3

# Indexes for ``logsvc query`` and ``tail``, beyond the BRIN on ``created``: (name, what
# follows ``ON records``). Every index costs ingest; docs/query.md has the measurements that
# chose these and rejected others.
INDEXES: tuple[tuple[str, str], ...] = (
    # tail -f selects by stored time; rows arrive in stored order, so BRIN costs ~nothing.
    ("records_stored_brin", "USING brin (stored)"),
)
# Indexes on ``extra`` keys come from ``serve --index-extra KEY`` (default: trace_id), as
# btrees on ``extra -> KEY``. Measured on the COPY path alone, such a btree keeps about half
# of PostgreSQL's rate, but end to end (the service is bound by its own CPU, not by COPY)
# the trace_id btree keeps ~83 % of the service's ingest rate. A hash index is worse when
# few distinct values repeat (29 %: long overflow chains); a GIN on all of extra costs
# 38-62 %. See docs/benchmarks.md.
_EXTRA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


def check_extra_key(key: str) -> str:
    """Return ``key`` if it can name an index on ``extra -> key``, else raise ConfigError."""
    if not _EXTRA_KEY.match(key):
        raise ConfigError(f"--index-extra {key!r}: a key of letters, digits and underscores, at most 41")
    return key


def extra_index_sql(schema: str, keys: tuple[str, ...] | list[str]) -> str:
    """``CREATE INDEX IF NOT EXISTS`` statements for btree indexes on ``extra -> key``."""
    s = check_identifier(schema)
    return "".join(
        f"CREATE INDEX IF NOT EXISTS records_extra_{k.lower()} ON {s}.records "
        f"((extra -> '{check_extra_key(k)}'));\n"
        for k in keys
    )


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain lower-case SQL identifier, else raise ConfigError."""
    if not _IDENT.match(name):
        raise ConfigError(
            f"schema name {name!r} is not a plain identifier (lower-case letters, digits, "
            "underscore, at most 63 characters, not starting with a digit)"
        )
    return name


# The advisory lock of one schema: held by whoever creates or upgrades it, or runs its
# maintenance (partitions ahead, retention). Only ever taken with a try-lock by the service,
# so an instance never waits for another; the one that does not get it skips or retries.
def _lock_key(s: str) -> str:
    return f"hashtext('logsvc.schema.' || '{s}')"


# How long a DDL statement may wait for its lock before it gives up. A DDL statement that
# waits for a lock makes every later writer of that table queue behind it (PostgreSQL's lock
# queue is fair), so it must never wait long behind other instances' COPYs.
DDL_LOCK_TIMEOUT = "2s"


def required_objects(schema: str, extra_index_keys: tuple[str, ...] | list[str] = ()) -> list[str]:
    """What this release needs in ``schema``: tables and indexes by name, functions by signature."""
    s = check_identifier(schema)
    names = ["meta", "shipped", "records", "records_default", "streams", "counts", "records_created_brin"]
    names += [name for name, _ in INDEXES]
    names += [f"records_extra_{check_extra_key(k).lower()}" for k in extra_index_keys]
    return [f"{s}.{n}" for n in names] + [f"{s}.{f}" for f in _FUNCTIONS]


_FUNCTIONS = ("advance_shipped(text,bigint,bigint)", "ensure_partition(date)")


def check_sql(schema: str, extra_index_keys: tuple[str, ...] | list[str] = ()) -> str:
    """A read-only query: one row per required object that does not exist (none: all there).

    It looks names up in the catalogs only (``to_regclass``, ``to_regprocedure``): no lock on
    any table, so it never waits behind another instance's writes, however long they hold.
    """
    rows = ", ".join(
        f"('{name}', {'to_regprocedure' if name.endswith(')') else 'to_regclass'}('{name}')::oid)"
        for name in required_objects(schema, extra_index_keys)
    )
    return f"SELECT name FROM (VALUES {rows}) AS o(name, oid) WHERE oid IS NULL"


def version_sql(schema: str) -> str:
    """The schema's version (one row, one text column); run only once ``meta`` exists."""
    return f"SELECT value FROM {check_identifier(schema)}.meta WHERE key = 'schema_version'"


def refuse_newer(schema: str, version: int | None) -> None:
    """Raise StoreError (reason ``"schema_newer"``) if ``version`` is newer than this release.

    An older logsvc on a newer schema would write rows the newer one does not expect and could
    replace its functions with older ones: it refuses before it changes anything.
    """
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(_newer_message(schema, str(version)), reason="schema_newer")


def _newer_message(schema: str, version: str) -> str:
    return (
        f'the logsvc schema "{schema}" is version {version}, newer than this logsvc (version '
        f"{SCHEMA_VERSION}); nothing was changed: upgrade logsvc to the release that created it"
    )


def create_sql(schema: str, extra_index_keys: tuple[str, ...] | list[str] = (), *, wait: bool = True) -> str:
    """SQL that brings an empty or older database to this schema version (idempotent).

    One transaction under the schema's advisory lock, so two services starting together do
    not race each other. With ``wait=False`` (what ``serve`` uses) the lock is only tried: if
    another session holds it, the transaction fails at once with SQLSTATE 55P03 and changes
    nothing. Every statement waits at most ``DDL_LOCK_TIMEOUT`` for a table lock (55P03 too).

    The version check comes first, before any object is created or replaced: on a schema
    newer than this release it raises (P0001) and the transaction changes nothing.
    ``serve`` runs this only when ``check_sql`` finds something missing or the version is
    older (``CREATE INDEX IF NOT EXISTS`` waits behind every open write on ``records``, even
    when the index exists).
    """
    s = check_identifier(schema)
    cols = ",\n    ".join(f"{name} {decl}" for name, decl in COLUMNS)
    indexes = "\n".join(f"CREATE INDEX IF NOT EXISTS {name} ON {s}.records {how};" for name, how in INDEXES)
    if wait:
        lock = f"SELECT pg_advisory_xact_lock({_lock_key(s)});"
    else:
        lock = f"""DO $$
BEGIN
    IF NOT pg_try_advisory_xact_lock({_lock_key(s)}) THEN
        RAISE EXCEPTION USING ERRCODE = 'lock_not_available', MESSAGE = 'another logsvc holds the lock '
            || 'of schema "{s}" (creating, upgrading or maintaining it)';
    END IF;
END $$;"""
    return f"""
BEGIN;
SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}';
{lock}
DO $$
DECLARE v int;
BEGIN
    IF to_regclass('{s}.meta') IS NOT NULL THEN
        SELECT value::int INTO v FROM {s}.meta WHERE key = 'schema_version';
        IF v > {SCHEMA_VERSION} THEN
            RAISE EXCEPTION USING MESSAGE = format('{_newer_message(s, "%s")}', v);
        END IF;
    END IF;
END $$;
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO {s}.meta VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.shipped (
    journal_id text PRIMARY KEY,
    seq bigint NOT NULL,
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.records (
    {cols},
    stored timestamptz NOT NULL DEFAULT now(),
    journal uuid DEFAULT {_JOURNAL_DEFAULT}
) PARTITION BY RANGE (created);
-- Version 1 had no journal column; adding one with a non-volatile default rewrites nothing.
-- Looked up first: ALTER TABLE would take an exclusive lock on records at every start.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{s}.records'::regclass
                   AND attname = 'journal' AND NOT attisdropped) THEN
        ALTER TABLE {s}.records ADD COLUMN journal uuid DEFAULT {_JOURNAL_DEFAULT};
    END IF;
END $$;
-- Version 3: the acknowledged protocol's stream columns (nullable, no default: catalog only).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{s}.records'::regclass
                   AND attname = 'stream' AND NOT attisdropped) THEN
        ALTER TABLE {s}.records ADD COLUMN stream uuid, ADD COLUMN stream_seq bigint;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS {s}.streams (
    id uuid PRIMARY KEY,
    seqs int8multirange NOT NULL DEFAULT '{{}}',
    updated timestamptz NOT NULL DEFAULT now()
);
-- Version 4: records per bucket of created and level class, written by each batch (store.rollup).
-- It holds every row stored from counts_since on; the console counts older rows from records.
CREATE TABLE IF NOT EXISTS {s}.counts (
    bucket timestamptz NOT NULL,
    journal uuid NOT NULL,
    level smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (bucket, journal, level)
);
-- From the beginning when records is empty (a new schema), else from now (an upgrade).
INSERT INTO {s}.meta
    SELECT 'counts_since', CASE WHEN EXISTS (SELECT 1 FROM {s}.records) THEN now()::text ELSE '-infinity' END
    ON CONFLICT (key) DO NOTHING;
UPDATE {s}.meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version' AND value::int < {SCHEMA_VERSION};
CREATE TABLE IF NOT EXISTS {s}.records_default PARTITION OF {s}.records DEFAULT;
CREATE INDEX IF NOT EXISTS records_created_brin ON {s}.records USING brin (created);
{indexes}
{extra_index_sql(s, extra_index_keys)}
CREATE OR REPLACE FUNCTION {s}.advance_shipped(p_journal text, p_from bigint, p_to bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE cur bigint;
BEGIN
    SELECT seq INTO cur FROM {s}.shipped WHERE journal_id = p_journal FOR UPDATE;
    IF NOT FOUND THEN
        cur := 0;
        INSERT INTO {s}.shipped (journal_id, seq) VALUES (p_journal, p_to);
    ELSE
        UPDATE {s}.shipped SET seq = p_to, updated = now() WHERE journal_id = p_journal;
    END IF;
    IF cur <> p_from THEN
        RAISE EXCEPTION 'journal % is shipped to %, not %: another logsvc ships this journal',
            p_journal, cur, p_from USING ERRCODE = 'serialization_failure';
    END IF;
END $$;
CREATE OR REPLACE FUNCTION {s}.ensure_partition(p_day date)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    part text := 'records_' || to_char(p_day, 'YYYYMMDD');
    lo timestamptz := p_day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (p_day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(format('%I.%I', '{s}', part)) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE %I.%I (LIKE %I.records INCLUDING DEFAULTS)', '{s}', part, '{s}');
    -- Rows of that day that reached the default partition (a client clock ahead of ours)
    -- must move, or attaching the partition would fail.
    EXECUTE format('WITH moved AS (DELETE FROM %I.records_default WHERE created >= $1 AND created < $2
                    RETURNING *) INSERT INTO %I.%I SELECT * FROM moved', '{s}', '{s}', part)
        USING lo, hi;
    EXECUTE format('ALTER TABLE %I.records ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                   '{s}', '{s}', part, lo, hi);
END $$;
COMMIT;
"""


def maintenance_sql(
    schema: str, today: _dt.date, retention_days: int | None = None, *, partitions: bool = True
) -> str:
    """Partitions ahead (unless not ``partitions``) and, with ``retention_days``, retention: by
    one leader at a time.

    One transaction. It first tries the schema's advisory lock (``pg_try_advisory_xact_lock``):
    if another session holds it (another instance doing the same, or creating the schema),
    it does nothing and returns at once; the leader of the moment does the work, and every
    instance tries again at its next maintenance. It also does nothing on a schema of another
    version (a newer logsvc maintains its own). Each DDL statement waits at most
    ``DDL_LOCK_TIMEOUT`` for its lock and is otherwise skipped with a NOTICE, to be retried
    next time: it never fails the transaction, never queues long behind COPYs.

    A partition exists from yesterday to ``PARTITION_DAYS_AHEAD`` days ahead. Retention drops
    the daily partitions whose every row is more than ``retention_days`` days old (see
    ``retention_sql``); two instances never drop at once (the lock), and a partition already
    gone is not an error.
    """
    s = check_identifier(schema)
    days = [today + _dt.timedelta(days=d) for d in range(-1, PARTITION_DAYS_AHEAD + 1)] if partitions else []
    array = ", ".join(f"'{d.isoformat()}'" for d in days)
    retention = ""
    if retention_days is not None:
        if type(retention_days) is not int or retention_days < 1:
            raise ValueError(f"retention must be a positive number of days, not {retention_days!r}")
        cutoff = (today - _dt.timedelta(days=retention_days)).strftime("%Y%m%d")
        retention = f"""
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = '{s}.records'::regclass
          AND c.relname ~ '^records_[0-9]{{8}}$' AND substr(c.relname, 9) < '{cutoff}'
        ORDER BY c.relname
    LOOP
        BEGIN
            EXECUTE format('DROP TABLE IF EXISTS %I.%I', '{s}', part);
            -- The day's counts go with its rows (rows of that day kept in records_default by a
            -- client's clock are not counted after this).
            day := to_date(substr(part, 9), 'YYYYMMDD');
            DELETE FROM {s}.counts WHERE bucket >= day::timestamp AT TIME ZONE 'UTC'
                AND bucket < (day + 1)::timestamp AT TIME ZONE 'UTC';
        EXCEPTION WHEN lock_not_available THEN
            RAISE NOTICE 'retention: % is in use, dropping it later', part;
        END;
    END LOOP;
    -- Streams not written for as long: a client that comes back after that starts afresh.
    BEGIN
        DELETE FROM {s}.streams WHERE updated < now() - interval '{retention_days} days';
    EXCEPTION WHEN lock_not_available THEN
        RAISE NOTICE 'retention: streams are in use, forgetting old ones later';
    END;"""
    return f"""
BEGIN;
SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}';
DO $$
DECLARE
    day date;
    part text;
    version text;
BEGIN
    IF NOT pg_try_advisory_xact_lock({_lock_key(s)}) THEN
        RAISE NOTICE 'maintenance of schema {s}: another logsvc is doing it';
        RETURN;
    END IF;
    IF to_regclass('{s}.meta') IS NOT NULL THEN  -- (a subquery on a missing table would not parse)
        version := (SELECT value FROM {s}.meta WHERE key = 'schema_version');
    END IF;
    IF version IS DISTINCT FROM '{SCHEMA_VERSION}' THEN
        RAISE NOTICE 'maintenance of schema {s}: not at version {SCHEMA_VERSION}, left to its own release';
        RETURN;
    END IF;
    FOREACH day IN ARRAY ARRAY[{array}]::date[] LOOP  -- yesterday .. PARTITION_DAYS_AHEAD
        BEGIN
            PERFORM {s}.ensure_partition(day);
        EXCEPTION WHEN lock_not_available THEN
            RAISE NOTICE 'partition for % not created now (records is busy), next time', day;
        END;
    END LOOP;{retention}
END $$;
COMMIT;
"""


def partitions_sql(schema: str, today: _dt.date) -> str:
    """SQL creating the partitions from yesterday to ``PARTITION_DAYS_AHEAD`` days ahead (by the leader)."""
    return maintenance_sql(schema, today)


def shipped_sql(schema: str, journal_id: str) -> str:
    s = check_identifier(schema)
    return f"SELECT seq FROM {s}.shipped WHERE journal_id = '{_hex(journal_id)}'"


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel a committed batch of ``schema`` is announced on.

    PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1); we cut first, so NOTIFY
    and LISTEN agree without a notice. Two long schema names sharing 56 characters would
    share a channel: a listener then wakes for the other's batches too, which is harmless.
    """
    return f"{check_identifier(schema)}_records"[:63]


def batch_sql(
    schema: str,
    journal_id: str,
    from_seq: int,
    to_seq: int,
    row_format: int = ROW_FORMAT,
    counts_sql: str = "",
) -> str:
    """One simple query: move the position, name the journal, notify, count, COPY. One transaction.

    ``counts_sql`` is ``rollup.upsert_sql`` of the rows the COPY carries (the histogram's
    counts, kept in the same transaction as the rows).

    The NOTIFY is part of that transaction: PostgreSQL delivers it when (and only if) the
    batch commits, so a listener that wakes finds the rows visible. The COPY names the
    columns of ``row_format``, the layout the rows were written in (``copyfmt.COPY_COLUMNS``).

    Raises:
        StoreError: reason ``"row_format"`` for a layout this release does not know (a journal
            written by a newer logsvc).
    """
    s = check_identifier(schema)
    names = COPY_COLUMNS.get(row_format)
    if names is None:
        raise StoreError(
            f"the journal holds rows in format {row_format}, which this logsvc does not know "
            f"(it ships formats {sorted(COPY_COLUMNS)}): run the logsvc release that wrote them",
            reason="row_format",
        )
    jid = _hex(journal_id)
    return (
        f"SELECT {s}.advance_shipped('{jid}', {int(from_seq)}, {int(to_seq)}); "
        f"SET LOCAL {JOURNAL_SETTING} = '{jid}'; "
        f"NOTIFY {notify_channel(s)}; {counts_sql}"
        f"COPY {s}.records ({', '.join(names)}) FROM STDIN"
    )


def retention_sql(schema: str, days: int, today: _dt.date) -> str:
    """SQL dropping the daily partitions whose every row is more than ``days`` days old.

    A partition ``records_YYYYMMDD`` holds ``[day, day + 1)`` UTC, so it goes when
    ``day < today - days``: with ``days=7`` on 2026-01-20, 2026-01-12 and older are dropped
    and 2026-01-13 is kept. Whole partitions only, never a DELETE; ``records_default`` (rows
    from clients with wrong clocks) is never dropped, nor is any table not named like a
    daily partition.

    ``DROP`` of a partition takes an exclusive lock on ``records``; a long query holding it
    would make ingest queue behind the drop. So each drop waits at most ``DDL_LOCK_TIMEOUT``
    for its lock and is otherwise skipped with a notice, to be retried at the next maintenance.
    It runs under the schema's advisory lock (``maintenance_sql``, with the partitions): two
    instances never drop at once, and a partition already dropped is not an error.

    Streams of the acknowledged protocol not written for ``days`` days are forgotten too.
    """
    return maintenance_sql(schema, today, days, partitions=False)


def _hex(value: str) -> str:
    # Journal ids are uuid4 hex (records.journal is a uuid); anything else is a bug, never quoted into SQL.
    if not re.fullmatch(r"[0-9a-f]{32}", value):
        raise ValueError(f"journal id {value!r} is not hex")
    return value
