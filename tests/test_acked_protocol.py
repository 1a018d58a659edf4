"""The acknowledged protocol against a real service and a real PostgreSQL (docs/protocol.md).

Spoken by ``tests/acked_raw.py`` (written from the specification, not the client library).
Each test counts what went in and what is in ``records``: exactly once is measured.
"""

from __future__ import annotations

import logging
import logging.handlers
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.acked_raw import PREAMBLE, RECORDS, RawClient, frame, hello, record_pickle, records
from tests.faults.helpers import metric
from tests.faults.test_hostile_live import pki, tls_port  # noqa: F401 (pki is a fixture)
from tests.helpers import Service, run_until, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def svc(tmp_path: Path, dsn: str, schema: str) -> Iterator[Service]:
    s = Service(tmp_path / "a", dsn, schema).start()
    yield s
    s.kill()


def stream_rows(s: Service, stream: str) -> list[int]:
    return [r["stream_seq"] for r in s.rows("stream_seq", "stream = %s", [uuid.UUID(stream)])]


def wait_stream(s: Service, stream: str, n: int) -> list[int]:
    wait_for(lambda: len(stream_rows(s, stream)) >= n, 30, f"{n} rows of stream {stream}")
    return sorted(stream_rows(s, stream))


def test_records_are_acknowledged_and_stored_once_with_their_stream(svc: Service) -> None:
    c = RawClient(svc.port)
    welcome = c.open()
    assert welcome["acked"] == 0 and welcome["max_frame_bytes"] >= 1 << 20 and welcome["window"] > 0
    c.send_records(1, [f"m{i}" for i in range(1, 101)])
    assert c.wait_ack(100) == 100
    c.send_records(101, [f"m{i}" for i in range(101, 151)])
    assert c.wait_ack(150) == 150
    assert wait_stream(svc, c.stream, 150) == list(range(1, 151))
    got = svc.rows("message, stream_seq, logger", "stream = %s", [uuid.UUID(c.stream)])
    assert all(r["message"] == f"m{r['stream_seq']}" and r["logger"] == "acked.test" for r in got)
    c.close()


def test_a_resend_after_reconnect_is_not_stored_twice(svc: Service) -> None:
    c = RawClient(svc.port)
    c.open()
    c.send_records(1, [f"m{i}" for i in range(1, 101)])
    c.wait_ack(100)
    c.close()
    # The client did not hear the ACK (say): it resends 51..100 and goes on to 150.
    c2 = RawClient(svc.port, c.stream)
    assert c2.open()["acked"] == 100
    c2.send_records(51, [f"m{i}" for i in range(51, 151)])
    c2.wait_ack(150)
    assert wait_stream(svc, c.stream, 150) == list(range(1, 151))
    assert metric(svc, "logsvc_acked_duplicates_total", where="server") == 50
    c2.close()


def test_a_stream_in_use_is_refused_and_free_again_once_closed(svc: Service) -> None:
    c = RawClient(svc.port)
    c.open()
    thief = RawClient(svc.port, c.stream)
    thief.send(PREAMBLE + hello(c.stream))
    err = thief.read_error()
    assert err["error"] == "stream_busy"
    # The owner is unaffected; once it closes, the stream may be used again.
    c.send_records(1, ["a"])
    c.wait_ack(1)
    c.close()
    acked: list[int] = []

    def reopened() -> bool:
        again = RawClient(svc.port, c.stream)
        try:
            acked.append(again.open()["acked"])
            return True
        except AssertionError:  # an ERROR frame: still busy (the close not seen yet)
            return False
        finally:
            again.close()

    wait_for(reopened, 10, "the stream to be free")
    assert acked == [1]
    # A stream id is a bearer name: whoever presents it next continues the stream.
    heir = RawClient(svc.port, c.stream)
    assert heir.open()["acked"] == 1
    heir.send_records(2, ["continued"])
    heir.wait_ack(2)
    heir.close()
    assert wait_stream(svc, c.stream, 2) == [1, 2]
    assert stream_messages(svc, c.stream) == {1: "a", 2: "continued"}


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x89LOGSVX\n", "bad_preamble"),
        (PREAMBLE + frame(0x01, b"not json"), "bad_hello"),
        (PREAMBLE + frame(0x01, b'{"protocol": 2, "stream": "' + b"a" * 32 + b'"}'), "unsupported_protocol"),
        (PREAMBLE + frame(0x01, b'{"protocol": 1, "stream": "../etc"}'), "bad_hello"),
        (PREAMBLE + records(1, [b"x"]), "bad_hello"),  # RECORDS before HELLO
        (PREAMBLE + hello("b" * 32) + frame(0x07, b""), "bad_frame"),
        (PREAMBLE + hello("c" * 32) + struct.pack(">IB", 1 << 30, RECORDS), "frame_too_large"),
        (PREAMBLE + hello("d" * 32) + records(5, [b"x"]) + records(5, [b"y"]), "seq_order"),
        (PREAMBLE + hello("e" * 32) + records(0, [b"x"]), "seq_order"),
        (
            PREAMBLE + hello("f" * 32) + frame(RECORDS, struct.pack(">QI", 1, 1000) + b"\0\0\0\1x"),
            "bad_frame",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_hostile_input_gets_a_clear_refusal_and_others_go_on(svc: Service, data: bytes, code: str) -> None:
    bad = RawClient(svc.port)
    bad.send(data)
    assert bad.read_error()["error"] == code
    with pytest.raises((ConnectionError, OSError)):
        bad.read_frame(timeout=5)
    # Everyone else is served: an acknowledged client and a stock SocketHandler.
    good = RawClient(svc.port)
    good.open()
    good.send_records(1, ["fine"])
    good.wait_ack(1)
    h = logging.handlers.SocketHandler("127.0.0.1", svc.port)
    h.handle(logging.makeLogRecord({"msg": "stock", "name": "stock.client"}))
    h.close()
    svc.wait_rows(1, "message", "logger = 'stock.client'")
    assert wait_stream(svc, good.stream, 1) == [1]
    good.close()


def test_a_forbidden_pickle_closes_the_connection_and_keeps_the_records_before_it(svc: Service) -> None:
    c = RawClient(svc.port)
    c.open()
    hostile = b"cos\nsystem\n(S'true'\ntR."  # os.system("true"), as a pickle
    c.send(records(1, [record_pickle("before"), hostile, record_pickle("after")]))
    assert c.read_error()["error"] == "forbidden"
    assert wait_stream(svc, c.stream, 1) == [1]
    assert [r["message"] for r in svc.rows("message", "stream = %s", [uuid.UUID(c.stream)])] == ["before"]


def test_an_undecodable_record_is_counted_acknowledged_and_not_resent_forever(svc: Service) -> None:
    c = RawClient(svc.port)
    c.open()
    c.send(records(1, [record_pickle("one"), b"\x80\x04garbage", record_pickle("three")]))
    assert c.wait_ack(3) == 3
    assert wait_stream(svc, c.stream, 2) == [1, 3]
    c.close()


def test_two_instances_on_one_database_store_a_failed_over_stream_once(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    a = Service(tmp_path / "a", dsn, schema).start()
    b = Service(tmp_path / "b", dsn, schema).start()
    try:
        stream = uuid.uuid4().hex
        ca = RawClient(a.port, stream)
        ca.open()
        ca.send_records(1, [f"m{i}" for i in range(1, 61)])
        ca.wait_ack(60)
        ca.close()
        # Failed over mid-window: B gets 41..120 (41..60 were had by A already), then the
        # client resends 1..120 to B again, as after a restart from an old spool.
        cb = RawClient(b.port, stream)
        assert cb.open()["acked"] == 0  # B knows nothing of it: the client keeps its own
        cb.send_records(41, [f"m{i}" for i in range(41, 121)])
        cb.wait_ack(120)
        cb.close()
        cb2 = RawClient(b.port, stream)
        assert cb2.open()["acked"] == 120
        cb2.send_records(121, [f"m{i}" for i in range(121, 131)])
        cb2.wait_ack(130)
        cb2.close()
        assert wait_stream(a, stream, 130) == list(range(1, 131))
        with psycopg.connect(dsn) as conn:
            (seqs,) = conn.execute(
                f"SELECT seqs::text FROM {schema}.streams WHERE id = %s", [uuid.UUID(stream)]
            ).fetchone() or (None,)
        assert seqs == "{[1,131)}"
        # 41..60 reached PostgreSQL from both journals: whichever came second left them out.
        dups = [metric(s, "logsvc_acked_duplicates_total", where="postgresql") for s in (a, b)]
        assert sum(dups) == 20, dups
        # The histogram's counts are of the rows kept, not of the rows sent (store.rollup).
        with psycopg.connect(dsn) as conn:
            row = conn.execute(f"SELECT sum(n) FROM {schema}.counts").fetchone()
            stored = conn.execute(f"SELECT count(*) FROM {schema}.records").fetchone()
        assert row is not None and stored is not None and row[0] == stored[0] == 130
    finally:
        a.kill()
        b.kill()


def test_after_a_kill_the_restarted_service_knows_what_its_journal_holds(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    s = Service(tmp_path / "a", dsn, schema).start()
    try:
        c = RawClient(s.port)
        c.open()
        c.send_records(1, [f"m{i}" for i in range(1, 201)])
        c.wait_ack(200)
        c.close()
        s.kill()
        s.start()
        c2 = RawClient(s.port, c.stream)
        assert c2.open()["acked"] == 200
        c2.send_records(150, [f"m{i}" for i in range(150, 211)])  # an overlap, as after a lost ACK
        c2.wait_ack(210)
        assert wait_stream(s, c.stream, 210) == list(range(1, 211))
        c2.close()
    finally:
        s.kill()


def _log_through(handler: logging.Handler, n: int, run: str) -> None:
    logger = logging.getLogger(f"acked.{run}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for i in range(n):
            logger.info("%s record %d", run, i, extra={"run": run})
    finally:
        handler.close()  # waits for the acknowledgements
        logger.removeHandler(handler)
    assert handler.stats()["spool_records"] == 0  # type: ignore[attr-defined]


def test_the_handler_over_tls_and_a_unix_socket(
    tmp_path: Path,
    dsn: str,
    schema: str,
    pki: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    import ssl

    import logsvc_client

    path = tmp_path / "logsvc.sock"
    tls = [
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
    ]
    s = Service(tmp_path / "a", dsn, schema, "--listen", f"unix:{path}", *tls).start()
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        _log_through(logsvc_client.Handler("127.0.0.1", tls_port(s), ssl_context=ctx), 500, "tls")
        _log_through(logsvc_client.Handler(unix_path=str(path)), 500, "unix")
        for run in ("tls", "unix"):
            got = s.wait_rows(500, "stream, stream_seq", "extra->>'run' = %s", [run])
            assert sorted(r["stream_seq"] for r in got) == list(range(1, 501))
            assert len({r["stream"] for r in got}) == 1
    finally:
        s.kill()


@pytest.mark.parametrize("first", [b"", b"\x89", b"\x89LO", b"\x00\x00"])
def test_a_connection_closed_within_its_first_four_bytes_is_closed_cleanly(
    svc: Service, first: bytes
) -> None:
    # The first four bytes decide the protocol; a client that closes before (a port probe,
    # a health check) must close cleanly: no error per event, no connection left open.
    import socket

    for _ in range(3):
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            s.sendall(first)
    # (The scrape's own HTTP connection is the one left open.)
    wait_for(lambda: metric(svc, "logsvc_connections_open") <= 1, 10, "every connection closed")
    assert "Unhandled error" not in svc.log()
    good = RawClient(svc.port)
    good.open()
    good.send_records(1, ["after the probes"])
    good.wait_ack(1)
    good.close()


# -- an ACK follows an fdatasync ---------------------------------------------------------------


def test_an_ack_is_sent_only_after_an_fdatasync_covering_its_records(
    tmp_path: Path, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve's own pieces in process (Server), so the journal's fdatasync and the session's
    # writes can be watched in the order they happen. --fsync interval with an interval of an
    # hour: any fdatasync seen is one made for the acknowledgements. A SIGKILL test cannot
    # show this (the page cache survives the process), and an ACK sent after the append but
    # before the sync would pass every other test.
    import threading

    from logsvc import config
    from logsvc.ingest import acked as ingest_acked
    from logsvc.journal import segment
    from logsvc.server import Server

    settings = config.Settings(
        listen=[("127.0.0.1", 0)],
        metrics=None,
        dsn=dsn,
        data_dir=tmp_path / "data",
        schema=schema,
        fsync="interval",
        fsync_interval=3600.0,
    )
    server = Server(settings, dsn)
    events: list[tuple[str, int]] = []
    real_fdatasync, real_append = segment._fdatasync, segment.Journal.append
    real_send = ingest_acked.AckedSession._send

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        events.append(("fdatasync", server.journal.next_seq - 1))  # every seq appended so far

    def append(journal: segment.Journal, *args: object, **kwargs: object) -> object:
        out = real_append(journal, *args, **kwargs)  # type: ignore[arg-type]
        events.append(("append", journal.next_seq - 1))
        return out

    def send(session: ingest_acked.AckedSession, data: bytes) -> None:
        if data[4] == 0x82:  # ACK
            events.append(("ack", struct.unpack_from(">Q", data, 5)[0]))
        real_send(session, data)

    monkeypatch.setattr(segment, "_fdatasync", fdatasync)
    monkeypatch.setattr(segment.Journal, "append", append)
    monkeypatch.setattr(ingest_acked.AckedSession, "_send", send)
    server.start()
    try:
        assert server.intake is not None
        port = server.intake.listeners[0].sock.getsockname()[1]
        first_journal_seq = server.journal.next_seq  # nothing else writes: stream seq s is this + s - 1
        acks: list[int] = []
        failed: list[BaseException] = []

        def client() -> None:
            try:
                c = RawClient(port)
                c.open()
                for first, last in ((1, 100), (101, 300), (301, 301)):
                    c.send_records(first, [f"m{i}" for i in range(first, last + 1)])
                    acks.append(c.wait_ack(last))
                c.close()
            except BaseException as exc:  # reported by the test thread
                failed.append(exc)

        t = threading.Thread(target=client, daemon=True)
        t.start()
        run_until(server.reactor, lambda: not t.is_alive(), 30)
        assert not failed, failed
        assert acks == [100, 300, 301]
        sent = [(i, seq) for i, (what, seq) in enumerate(events) if what == "ack"]
        assert sent and sent[-1][1] == 301, events
        for i, stream_seq in sent:
            needed = first_journal_seq + stream_seq - 1
            synced = max((seq for what, seq in events[:i] if what == "fdatasync"), default=0)
            assert synced >= needed, f"ACK {stream_seq} sent before an fdatasync covered it: {events}"
        appends = [i for i, (what, seq) in enumerate(events) if what == "append"]
        assert appends and appends[0] < sent[0][0]
        # Every fdatasync of this run was made for acknowledgements (the interval is an hour);
        # the counter may also count a sync that found nothing left to write.
        fdatasyncs = sum(1 for what, _ in events if what == "fdatasync")
        assert 1 <= fdatasyncs <= server.metrics.journal_syncs_for_acks
    finally:
        server._close_all()


# -- seqs far ahead, replays, and one stream id on two connections -----------------------------
# What the server does with each is in docs/protocol.md ("Hostile or confused clients").


def stream_messages(s: Service, stream: str) -> dict[int, str]:
    got = s.rows("stream_seq, message", "stream = %s", [uuid.UUID(stream)])
    return {r["stream_seq"]: r["message"] for r in got}


def stored_seqs(dsn: str, schema: str, stream: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT seqs::text FROM {schema}.streams WHERE id = %s", [uuid.UUID(stream)]
        ).fetchone()
    return None if row is None else str(row[0])


def duplicates(where: str, *services: Service) -> float:
    return sum(metric(s, "logsvc_acked_duplicates_total", where=where) for s in services)


def bystander(s: Service, n: int = 20) -> RawClient:
    """Another client's stream, written before the case under test: it must stay as it is."""
    c = RawClient(s.port)
    c.open()
    c.send_records(1, [f"bystander {i}" for i in range(1, n + 1)])
    c.wait_ack(n)
    return c


def assert_bystander(s: Service, c: RawClient, n: int = 20) -> None:
    assert stream_messages(s, c.stream) == {i: f"bystander {i}" for i in range(1, n + 1)}
    # ... and still served: its connection took a record after the case.
    c.send_records(n + 1, [f"bystander {n + 1}"])
    c.wait_ack(n + 1)
    wait_stream(s, c.stream, n + 1)


def test_seqs_far_ahead_are_a_gap_and_the_highest_seq_is_refused(svc: Service, dsn: str, schema: str) -> None:
    from logsvc.wire.acked import MAX_SEQ

    other = bystander(svc)
    c = RawClient(svc.port)
    c.open()
    c.send_records(1, [f"m{i}" for i in range(1, 6)])
    c.wait_ack(5)
    # A gap of millions (a client that dropped them under drop_oldest), then the top of the
    # seq space: accepted, counted as a gap, each stored once.
    far = 5 + 3_000_000
    c.send(records(far, [record_pickle(f"m{far}"), record_pickle(f"m{far + 1}")]))
    c.wait_ack(far + 1)
    c.send(records(MAX_SEQ - 1, [record_pickle(f"m{MAX_SEQ - 1}"), record_pickle(f"m{MAX_SEQ}")]))
    assert c.wait_ack(MAX_SEQ) == MAX_SEQ
    # One past the top: PostgreSQL's int8multirange could not hold it ([seq, seq + 1) overflows).
    c.send(records(MAX_SEQ + 1, [record_pickle("over the top")]))
    assert c.read_error()["error"] == "seq_order"
    want = [1, 2, 3, 4, 5, far, far + 1, MAX_SEQ - 1, MAX_SEQ]
    assert wait_stream(svc, c.stream, len(want)) == want
    assert stream_messages(svc, c.stream) == {s: f"m{s}" for s in want}
    assert stored_seqs(dsn, schema, c.stream) == f"{{[1,6),[{far},{far + 2}),[{MAX_SEQ - 1},{MAX_SEQ + 1})}}"
    gaps = (far - 6) + (MAX_SEQ - 1 - (far + 2))
    assert metric(svc, "logsvc_acked_seq_gaps_total") == float(gaps)  # (a float on /metrics)
    # The stream now stands at the top: anything lower that comes for it again is taken for
    # a record already had (acknowledged, not stored), as docs/protocol.md says.
    again = RawClient(svc.port, c.stream)
    assert again.open()["acked"] == MAX_SEQ
    again.send_records(6, ["late"])  # (WELCOME already covers it: no ACK is owed)
    wait_for(lambda: duplicates("server", svc) == 1, 10, "the late record taken for a duplicate")
    again.close()
    assert_bystander(svc, other)
    assert sorted(stream_rows(svc, c.stream)) == want
    assert "late" not in stream_messages(svc, c.stream).values()


def test_a_replay_of_durable_seqs_changes_nothing_stored(tmp_path: Path, dsn: str, schema: str) -> None:
    a = Service(tmp_path / "a", dsn, schema).start()
    b = Service(tmp_path / "b", dsn, schema).start()
    try:
        other = bystander(a)
        stream = uuid.uuid4().hex
        c = RawClient(a.port, stream)
        c.open()
        c.send_records(1, [f"first {i}" for i in range(1, 51)])
        c.wait_ack(50)
        # On the same connection a replay is out of order: refused.
        c.send_records(1, [f"replay {i}" for i in range(1, 11)])
        assert c.read_error()["error"] == "seq_order"
        c.close()
        # On a new connection to the same instance: acknowledged, not written again.
        c2 = RawClient(a.port, stream)
        assert c2.open()["acked"] == 50
        c2.send_records(1, [f"replay {i}" if i <= 50 else f"second {i}" for i in range(1, 61)])
        assert c2.wait_ack(60) == 60
        c2.close()
        assert duplicates("server", a) == 50
        assert wait_stream(a, stream, 60) == list(range(1, 61))
        # On another instance, which knows nothing of the stream: it journals the replay and
        # PostgreSQL leaves it out.
        c3 = RawClient(b.port, stream)
        assert c3.open()["acked"] == 0
        c3.send_records(1, [f"replay {i}" if i <= 60 else f"third {i}" for i in range(1, 71)])
        assert c3.wait_ack(70) == 70
        c3.close()
        assert wait_stream(a, stream, 70) == list(range(1, 71))
        wait_for(lambda: duplicates("postgresql", b) == 60, 30, "B's duplicates left out")
        want = {i: ("first" if i <= 50 else "second" if i <= 60 else "third") + f" {i}" for i in range(1, 71)}
        assert stream_messages(a, stream) == want
        assert stored_seqs(dsn, schema, stream) == "{[1,71)}"
        assert_bystander(a, other)
    finally:
        a.kill()
        b.kill()


def test_one_stream_id_on_two_instances_at_once_is_stored_once_per_seq(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    # Two live writers of one stream, one on each instance (two processes given one stream
    # id; logsvc_client's spool lock prevents it on one host). Neither instance can tell:
    # each seq is stored once, whichever writer's record committed first; the other's is
    # acknowledged and counted as a duplicate. Other streams are untouched.
    a = Service(tmp_path / "a", dsn, schema).start()
    b = Service(tmp_path / "b", dsn, schema).start()
    try:
        other = bystander(a)
        stream = uuid.uuid4().hex
        ca, cb = RawClient(a.port, stream), RawClient(b.port, stream)
        assert ca.open()["acked"] == 0 and cb.open()["acked"] == 0
        ca.send_records(1, [f"A {i}" for i in range(1, 51)])
        cb.send_records(1, [f"B {i}" for i in range(1, 61)])
        assert ca.wait_ack(50) == 50 and cb.wait_ack(60) == 60
        assert wait_stream(a, stream, 60) == list(range(1, 61))
        wait_for(lambda: duplicates("postgresql", a, b) == 50, 30, "50 duplicates left out")
        got = stream_messages(a, stream)
        assert all(got[i] in (f"A {i}", f"B {i}") for i in range(1, 51)), got
        assert all(got[i] == f"B {i}" for i in range(51, 61)), got
        assert stored_seqs(dsn, schema, stream) == "{[1,61)}"
        ca.close()
        cb.close()
        assert_bystander(a, other)
    finally:
        a.kill()
        b.kill()
