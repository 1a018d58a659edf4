"""logsvc_client.Handler against a fake server speaking docs/protocol.md (tests/client/fake_server).

What the client alone must do: every record arrives once per stream through reconnects,
restarts and switches; emit() never waits for the network; the spool policies count what
they drop; close() is bounded and says what is left. The real service's exactly-once into
PostgreSQL is test_e2e's (and the lead's fault tests).
"""

from __future__ import annotations

import logging
import logging.config
import multiprocessing
import os
import pickle
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import logsvc_client
from tests.client.fake_server import FakeServer, Store, self_signed
from tests.helpers import wait_for


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer().start()
    yield s
    s.stop()
    assert s.violations == []


@pytest.fixture
def handlers() -> Iterator[list[logsvc_client.Handler]]:
    made: list[logsvc_client.Handler] = []
    yield made
    for h in made:
        h.close()


def handler_for(made: list[logsvc_client.Handler], port: int, **kw: object) -> logsvc_client.Handler:
    kw.setdefault("backoff_max", 0.2)
    kw.setdefault("close_timeout", 2.0)
    h = logsvc_client.Handler("127.0.0.1", port, **kw)  # type: ignore[arg-type]
    made.append(h)
    return h


def emit(h: logsvc_client.Handler, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        h.handle(logging.LogRecord("t", logging.INFO, "p", 1, "m %d", (i,), None))


def messages(store: Store) -> list[str]:
    return [pickle.loads(p)["msg"] for p in store.payloads()]


def test_every_record_arrives_once_in_order_and_flush_waits_for_acks(
    server: FakeServer, handlers: list[logsvc_client.Handler]
) -> None:
    h = handler_for(handlers, server.port)
    emit(h, 5000)
    h.flush()
    assert messages(server.store) == [f"m {i}" for i in range(5000)]
    st = h.stats()
    assert st["spool_records"] == 0 and st["acked"] == 5000 and st["sent"] == 5000
    assert st["resent"] == 0 and st["dropped"] == {} and st["reconnects"] == 0
    assert 0 < st["ack_latency_s"]["count"] <= 5000 and 0 < st["ack_latency_s"]["p99"] < 5  # sampled
    assert server.store.duplicates == 0 and server.hellos[0]["stream"] == st["stream"]


def test_dropped_connections_lose_nothing(server: FakeServer, handlers: list[logsvc_client.Handler]) -> None:
    h = handler_for(handlers, server.port, window=300)
    for k in range(10):
        emit(h, 1000, k * 1000)
        # Cut a live connection (a fast sender may have everything acknowledged already:
        # the cut then hits it idle, which it must survive just the same).
        wait_for(lambda: server.connections() >= 1, 10, "a connection to cut")
        server.drop_connections()
    h.flush(10)
    assert sorted(messages(server.store), key=lambda m: int(m[2:])) == [f"m {i}" for i in range(10_000)]
    assert h.stats()["spool_records"] == 0
    assert len(server.hellos) >= 2  # it came back after the cuts


def test_records_of_an_outage_are_sent_after_it(handlers: list[logsvc_client.Handler]) -> None:
    server = FakeServer().start()
    port = server.port
    server.stop()
    h = handler_for(handlers, port)
    emit(h, 300)  # nothing listens
    wait_for(lambda: h.stats()["connect_failures"] >= 2, 10, "failed connection attempts")
    assert h.stats()["spool_records"] == 300
    server2 = FakeServer(server.store)
    server2.port = port
    server2.start()
    try:
        h.flush(10)
        assert messages(server2.store) == [f"m {i}" for i in range(300)]
    finally:
        server2.stop()


def test_a_server_that_forgot_gets_only_the_unacknowledged(
    handlers: list[logsvc_client.Handler],
) -> None:
    server = FakeServer(remember=False).start()
    try:
        h = handler_for(handlers, server.port)
        emit(h, 100)
        h.flush()
        server.hold_acks = True
        emit(h, 50, 100)
        wait_for(lambda: server.store.count() == 150, 10, "150 records at the server")
        server.drop_connections()
        server.hold_acks = False
        h.flush(10)
        # WELCOME said acked=0, but the client knows 1..100 are acknowledged: only 101..150 again.
        assert server.store.duplicates == 50 and h.stats()["resent"] == 50
    finally:
        server.stop()


def test_switch_to_another_instance_mid_stream(handlers: list[logsvc_client.Handler]) -> None:
    store = Store()  # one database behind two instances
    a, b = FakeServer(store).start(), FakeServer(store).start()
    try:
        h = handler_for(handlers, a.port)
        emit(h, 1000)
        a.hold_acks = True
        emit(h, 1000, 1000)
        h.switch_to("127.0.0.1", b.port)
        emit(h, 1000, 2000)
        h.flush(10)
        assert sorted(messages(store), key=lambda m: int(m[2:])) == [f"m {i}" for i in range(3000)]
        assert h.stats()["server"] == f"127.0.0.1:{b.port}" and b.hellos
    finally:
        a.stop()
        b.stop()


def test_failover_list_is_tried_in_turn(handlers: list[logsvc_client.Handler]) -> None:
    dead = FakeServer().start()
    dead_port = dead.port
    dead.stop()
    live = FakeServer().start()
    try:
        h = handler_for(handlers, dead_port, failover=[f"127.0.0.1:{live.port}"])
        emit(h, 100)
        h.flush(10)
        assert live.store.count() == 100
    finally:
        live.stop()


def test_block_policy_waits_the_bound_then_drops_new_and_says_so_once(
    server: FakeServer, handlers: list[logsvc_client.Handler], capfd: pytest.CaptureFixture[str]
) -> None:
    server.hold_acks = True
    h = handler_for(handlers, server.port, spool_max_records=100, block_timeout=0.2)
    emit(h, 100)
    t0 = time.monotonic()
    emit(h, 1, 100)  # waits block_timeout, then dropped
    waited = time.monotonic() - t0
    t1 = time.monotonic()
    emit(h, 50, 101)  # the same episode: dropped at once
    assert 0.15 < waited < 2 and time.monotonic() - t1 < 1  # not 50 x block_timeout
    assert h.stats()["dropped"] == {"spool_full": 51}
    server.hold_acks = False
    h.flush(10)
    emit(h, 10, 200)  # room again: the episode is over
    h.flush(10)
    assert server.store.count() == 110
    err = capfd.readouterr().err
    assert err.count("the spool is full") == 1 and "full_policy='block'" in err


def test_drop_oldest_policy_keeps_the_newest(
    server: FakeServer, handlers: list[logsvc_client.Handler], capfd: pytest.CaptureFixture[str]
) -> None:
    server.stop()  # nothing listens while the spool overflows
    h = handler_for(handlers, server.port, spool_max_records=100, full_policy="drop_oldest")
    t0 = time.monotonic()
    emit(h, 300)
    assert time.monotonic() - t0 < 1
    assert h.stats()["dropped"] == {"drop_oldest": 200}
    server.start()
    h.flush(10)
    assert messages(server.store) == [f"m {i}" for i in range(200, 300)]
    assert capfd.readouterr().err.count("the spool is full") == 1


def test_dropping_records_already_sent_leaves_the_sender_idle(
    server: FakeServer, handlers: list[logsvc_client.Handler]
) -> None:
    server.hold_acks = True
    h = handler_for(handlers, server.port, spool_max_records=100, full_policy="drop_oldest")
    emit(h, 100)
    wait_for(lambda: server.store.count() == 100, 10, "100 records sent")
    emit(h, 100, 100)  # drops all 100 sent ones: the spool holds only unsent records now
    wait_for(lambda: server.store.count() == 200, 10, "the newer 100 sent")
    cpu = time.process_time()
    time.sleep(1.5)  # past the sender's linger: it must sleep, not spin
    assert time.process_time() - cpu < 0.5
    server.hold_acks = False
    wait_for(lambda: h.stats()["spool_records"] == 0, 10, "the acknowledgements")
    assert h.stats()["dropped"] == {"drop_oldest": 100} and server.store.count() == 200


def test_an_error_frame_is_told_once_and_retried(
    server: FakeServer, handlers: list[logsvc_client.Handler], capfd: pytest.CaptureFixture[str]
) -> None:
    server.refuse_with = "stream_busy"
    h = handler_for(handlers, server.port)
    emit(h, 10)
    wait_for(lambda: h.stats()["errors"].get("stream_busy", 0) >= 3, 10, "three refusals")
    server.refuse_with = None
    h.flush(10)
    assert server.store.count() == 10
    assert capfd.readouterr().err.count("stream_busy") == 1


def test_garbage_from_the_server_is_a_reconnect_not_a_crash(
    server: FakeServer, handlers: list[logsvc_client.Handler]
) -> None:
    server.garbage = b"\xff" * 64
    h = handler_for(handlers, server.port)
    emit(h, 10)
    wait_for(lambda: h.stats()["connect_failures"] >= 2, 10, "refused connections")
    server.garbage = None
    h.flush(10)
    assert server.store.count() == 10 and h._sender.alive()


def test_close_is_bounded_and_says_what_is_left(
    handlers: list[logsvc_client.Handler], capfd: pytest.CaptureFixture[str]
) -> None:
    h = handler_for(handlers, 1, close_timeout=0.5)  # port 1: refused
    emit(h, 7)
    t0 = time.monotonic()
    h.close()
    assert time.monotonic() - t0 < 3
    err = capfd.readouterr().err
    assert "closing with 7 records" in err and "they are lost (no spool_dir)" in err
    emit(h, 1)  # after close: counted, not an error
    assert h.stats()["dropped"] == {"closed": 1}


def test_a_disk_spool_resends_after_a_restart_of_the_application(
    server: FakeServer,
    handlers: list[logsvc_client.Handler],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    h = handler_for(handlers, server.port, spool_dir=tmp_path, close_timeout=0.3)
    emit(h, 100)
    h.flush()
    server.hold_acks = True
    emit(h, 100, 100)
    h.close()
    assert f"they stay in {tmp_path}" in capfd.readouterr().err
    server.hold_acks = False
    h2 = handler_for(handlers, server.port, spool_dir=tmp_path)
    assert h2.stats()["spool_records"] == 100
    emit(h2, 100, 200)
    h2.flush(10)
    assert messages(server.store) == [f"m {i}" for i in range(300)]  # one stream, seq order
    assert len(server.store.records) == 1


def test_an_application_killed_with_sigkill_loses_nothing_with_a_disk_spool(
    server: FakeServer, handlers: list[logsvc_client.Handler], tmp_path: Path
) -> None:
    code = (
        "import logging, sys, time, logsvc_client\n"
        f"h = logsvc_client.Handler('127.0.0.1', {server.port}, spool_dir={str(tmp_path)!r})\n"
        "for i in range(5000):\n"
        "    h.handle(logging.LogRecord('t', 20, 'p', 1, 'm %d', (i,), None))\n"
        "print('emitted', flush=True)\n"
        "time.sleep(60)\n"
    )
    server.hold_acks = True  # some records reach the server, none is acknowledged
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "emitted\n"
    finally:
        child.kill()  # SIGKILL: no close(), no flush, no atexit
        child.wait(10)
    server.hold_acks = False
    h = handler_for(handlers, server.port, spool_dir=tmp_path)
    h.flush(20)
    assert messages(server.store) == [f"m {i}" for i in range(5000)]
    # The server's WELCOME said what it had: nothing it had was sent twice.
    assert server.store.duplicates == 0 and len(server.store.records) == 1


def test_a_spool_behind_the_server_numbers_new_records_past_it(
    server: FakeServer, handlers: list[logsvc_client.Handler], tmp_path: Path
) -> None:
    h = handler_for(handlers, server.port, spool_dir=tmp_path)
    stream = h.stats()["stream"]
    h.close()
    server.store.take(stream, 500_000, b"stored by an earlier copy of this spool directory")
    h = handler_for(handlers, server.port, spool_dir=tmp_path)
    assert h.wait_connected(10)
    emit(h, 10)
    h.flush(10)
    got = server.store.records[stream]
    assert len(got) == 11 and min(s for s in got if s != 500_000) > 500_000


def _child_logs(port: int, n: int) -> None:
    # The handler was made by the parent before the fork.
    for h in logging.getLogger("forked").handlers:
        assert isinstance(h, logsvc_client.Handler)
        assert h.stats()["spool_records"] == 0  # not the parent's queue
        emit(h, n, 10_000)
        h.flush(10)
        os._exit(0 if h.stats()["acked"] == n else 3)


def test_a_forked_child_gets_its_own_sender_and_stream(
    server: FakeServer, handlers: list[logsvc_client.Handler]
) -> None:
    h = handler_for(handlers, server.port)
    server.hold_acks = True
    emit(h, 20)
    logger = logging.getLogger("forked")
    logger.addHandler(h)
    try:
        p = multiprocessing.get_context("fork").Process(target=_child_logs, args=(server.port, 30))
        server.hold_acks = False
        p.start()
        p.join(30)
        assert p.exitcode == 0
    finally:
        logger.removeHandler(h)
    h.flush(10)
    assert server.store.count() == 50 and len(server.store.records) == 2


def _sleep_child(seconds: float) -> None:
    time.sleep(seconds)


def test_a_forked_child_does_not_hold_the_parents_connection_open(
    server: FakeServer, handlers: list[logsvc_client.Handler]
) -> None:
    h = handler_for(handlers, server.port)
    emit(h, 10)
    h.flush()
    p = multiprocessing.get_context("fork").Process(target=_sleep_child, args=(30,))
    p.start()
    try:
        # The parent leaves its connection: the server must see it end, or it would refuse
        # the parent's stream as busy on the next one (the child's copy kept it open).
        h.switch_to("127.0.0.1", server.port)
        emit(h, 10, 10)
        h.flush(10)
        wait_for(lambda: server.connections() == 1, 10, "the old connection to end")
        assert len(server.hellos) == 2 and server.store.count() == 20
    finally:
        p.kill()
        p.join(10)


def test_emit_re_entered_from_stderr_is_counted_not_a_deadlock(
    handlers: list[logsvc_client.Handler], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = handler_for(handlers, 1, spool_max_records=1, block_timeout=0)  # port 1: nothing acks
    logger = logging.getLogger("stderr-into-logging")
    logger.propagate = False
    logger.addHandler(h)

    class IntoLogging:
        def write(self, text: str) -> None:
            logger.error("stderr: %s", text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", IntoLogging())
    try:
        emit(h, 1)
        logger.error("fills the spool")  # full: the notice goes to stderr, i.e. into emit()
    finally:
        logger.removeHandler(h)
        monkeypatch.undo()
    # The record, the notice's record, and maybe the sender's note on the refused connection
    # (it writes to stderr too): each dropped and counted, none waited on.
    dropped = h.stats()["dropped"]
    assert dropped["spool_full"] >= 2 and set(dropped) <= {"spool_full", "recursion"}


def test_unix_socket(tmp_path: Path, handlers: list[logsvc_client.Handler]) -> None:
    path = str(tmp_path / "s.sock")
    server = FakeServer(unix_path=path).start()
    try:
        h = logsvc_client.Handler(unix_path=path, close_timeout=2)
        handlers.append(h)
        emit(h, 100)
        h.flush(10)
        assert server.store.count() == 100
    finally:
        server.stop()


def test_tls(tmp_path: Path, handlers: list[logsvc_client.Handler]) -> None:
    cert, key = self_signed(tmp_path)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    server = FakeServer(ssl_context=sctx).start()
    try:
        h = handler_for(handlers, server.port, ssl_context=ssl.create_default_context(cafile=str(cert)))
        emit(h, 2000)
        h.flush(10)
        assert server.store.count() == 2000
    finally:
        server.stop()


def test_dictconfig_one_line_switch(server: FakeServer) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"svc": {"class": "logsvc_client.Handler", "host": "127.0.0.1", "port": server.port}},
            "loggers": {"dictconfigured": {"level": "INFO", "handlers": ["svc"], "propagate": False}},
        }
    )
    logger = logging.getLogger("dictconfigured")
    (h,) = logger.handlers
    try:
        logger.info("one %s", "two", extra={"run": "x"})
        assert isinstance(h, logsvc_client.Handler)
        h.flush()
        (d,) = [pickle.loads(p) for p in server.store.payloads()]
        assert d["msg"] == "one two" and d["run"] == "x" and d["name"] == "dictconfigured"
    finally:
        logger.removeHandler(h)
        h.close()


def test_interpreter_exit_flushes(server: FakeServer) -> None:
    code = (
        "import logging, logsvc_client\n"
        f"h = logsvc_client.Handler('127.0.0.1', {server.port})\n"
        "log = logging.getLogger('x'); log.addHandler(h); log.propagate = False\n"
        "for i in range(2000): log.warning('r %d', i)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    assert server.store.count() == 2000


def test_bad_options_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="full_policy must be one of"):
        logsvc_client.Handler(full_policy="wait")
    with pytest.raises(ValueError, match="fsync must be one of"):
        logsvc_client.Handler(fsync="sometimes")
    with pytest.raises(ValueError, match="failover address"):
        logsvc_client.Handler(failover=["nowhere"])


def test_emit_never_waits_for_the_network(server: FakeServer, handlers: list[logsvc_client.Handler]) -> None:
    """emit() latency while the sender streams to a server (printed; bound generous for CI)."""
    h = handler_for(handlers, server.port)
    logger = logging.getLogger("emitbench")
    logger.propagate = False
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    times: list[int] = []
    clock = time.perf_counter_ns
    try:
        for i in range(20_000):
            t0 = clock()
            logger.info("request %d took %.3f s", i, 0.25, extra={"trace_id": i, "run": "bench"})
            times.append(clock() - t0)
        h.flush(20)
    finally:
        logger.removeHandler(h)
    times.sort()
    p50, p99 = times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000
    print(f"\nlogger.info() via logsvc_client.Handler: p50 {p50:.1f} us, p99 {p99:.1f} us, "
          f"mean {statistics.fmean(times) / 1000:.1f} us over {len(times)} records")  # fmt: skip
    assert server.store.count() == 20_000
    assert p99 < 2000  # 50 us is the target on an idle machine; CI shares its cores
