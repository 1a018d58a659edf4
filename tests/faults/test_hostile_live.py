"""Hostile and broken clients against a live ``logsvc serve`` while stock clients keep sending.

Each test runs well-behaved stock ``SocketHandler`` clients next to the attack and checks that
every one of their records is stored exactly once, that the attacker's connection is closed
(or refused) and that the refusal is reported by reason. Only loopback addresses are used.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import pickle
import random
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.faults.conftest import ReliabilityRow
from tests.faults.helpers import (
    ClientPlan,
    ServiceReads,
    TaggedClients,
    metric,
    metrics_port,
    records_read,
    scrape,
    tally,
)
from tests.helpers import Service, counts, wait_for

pytestmark = [pytest.mark.slow]

GOOD_PROCS = 2
GOOD_COUNT = 2000


def frame(msg: str = "hostile test", **extra: object) -> bytes:
    rec = logging.LogRecord("hostile", logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return logging.handlers.SocketHandler("127.0.0.1", 1).makePickle(rec)


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True once the server has closed ``sock`` (EOF or RST), False if still open after ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.fixture
def good_clients(reliability_row: ReliabilityRow) -> Callable[[Service], Callable[..., None]]:
    """Start tagged stock clients; the returned check joins them, tallies, reports the row.

    ``check(extra_rows, fault=..., done=...)``: every good record stored once, nothing
    unexpected, exactly ``extra_rows`` rows from the attacker (those it sent validly), and
    every record the service says it read stored.
    """

    def start(svc: Service) -> Callable[..., None]:
        plan = ClientPlan(run="good", max_count=GOOD_COUNT, pause=0.0005)
        clients = TaggedClients(svc.port, GOOD_PROCS, plan).start()

        def check(
            extra_rows: int | Callable[[], int] = 0,
            *,
            fault: str,
            done: str,
            figures: dict[str, float | int | str] | None = None,
        ) -> None:
            try:
                clients.join(timeout=120)
            finally:
                clients.kill()
            if callable(extra_rows):
                extra_rows = extra_rows()
            want = GOOD_PROCS * GOOD_COUNT + extra_rows
            wait_for(lambda: counts(svc.dsn, svc.schema)[0] >= want, 60, "the good clients' records")
            t = tally(svc.dsn, svc.schema, "good", clients.sent)
            row = reliability_row(
                fault=fault,
                done=f"{done}; meanwhile {GOOD_PROCS} stock clients send {GOOD_COUNT:,} records each",
                tally=t,
                peak_rss_mb=svc.sample_peak_rss() / 1024,
                figures=figures,
            )
            assert (t.sent, t.lost, t.duplicated, t.unexpected) == (GOOD_PROCS * GOOD_COUNT, 0, 0, 0), t
            assert t.other_rows == extra_rows
            assert t.seq_duplicates == 0
            assert row["lost_by_logsvc"] == 0, row

        return check

    return start


def good_senders(svc: Service) -> int:
    """How many good clients have a record stored (so are connected)."""
    if counts(svc.dsn, svc.schema)[0] == 0:
        return 0
    with psycopg.connect(svc.dsn, autocommit=True) as c:
        row = c.execute(
            f"SELECT count(DISTINCT extra->>'client') FROM {svc.schema}.records WHERE extra->>'run' = 'good'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def service(
    tmp_path: Path, dsn: str, schema: str, service_reads: ServiceReads
) -> Iterator[Callable[..., Service]]:
    # These tests count and cap the service's connections: it is scraped for what it read only
    # when the row is made, on a connection of its own, not followed on one held open.
    service_reads.follow = False
    started: list[Service] = []

    def make(*args: str) -> Service:
        svc = Service(tmp_path / "data", dsn, schema, *args).start()
        started.append(svc)
        wait_for(lambda: "Connected to PostgreSQL" in svc.log(), 30, "the database connection")
        return svc

    yield make
    for svc in started:
        svc.kill()


def test_a_4_gib_length_header_closes_only_that_connection(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    svc = service()
    check = good_clients(svc)
    with socket.create_connection(("127.0.0.1", svc.port)) as s:
        s.sendall(b"\xff\xff\xff\xff" + b"x" * 1000)
        assert closed_by_server(s, 10)
    check(fault="4 GiB length header", done="one connection sends a header of 0xffffffff and 1,000 bytes")
    assert "bad frame (oversized)" in svc.log()


def test_slowloris_one_byte_at_a_time_is_closed_after_the_frame_timeout(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    svc = service("--frame-timeout", "1s")
    check = good_clients(svc)
    data = frame()
    with socket.create_connection(("127.0.0.1", svc.port)) as s:
        started = time.monotonic()
        closed = False
        for i in range(len(data)):  # bounded: one frame's bytes, ~40 s at most
            try:
                s.sendall(data[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(s, 0.1):
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed, "the slow client was never closed"
    assert 0.9 <= elapsed <= 10, elapsed
    check(
        fault="slowloris",
        done="one connection trickles a frame a byte per 0.1 s; --frame-timeout 1s",
        figures={"closed_after_s": round(elapsed, 2)},
    )
    assert "slow" in svc.log()


def test_thousands_of_silent_connections_are_closed_after_the_idle_timeout(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    svc = service("--idle-timeout", "1s")
    check = good_clients(svc)
    silent = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(2000)]
    try:
        deadline = time.monotonic() + 30
        still_open = list(silent)
        while still_open and time.monotonic() < deadline:
            still_open = [s for s in still_open if not closed_by_server(s, 0.01)]
        assert not still_open, f"{len(still_open)} silent connections were never closed"
        check(
            fault="connections that never send",
            done="2,000 connections open and silent; --idle-timeout 1s",
            figures={"silent_connections_closed": len(silent)},
        )
        rss = svc.sample_peak_rss() / 1024
    finally:
        for s in silent:
            s.close()
    assert "2000 idle" in svc.log() or "idle" in svc.log()
    assert rss < 200, rss


def test_a_half_closed_client_has_every_record_stored_then_sees_eof(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    svc = service()
    check = good_clients(svc)
    with socket.create_connection(("127.0.0.1", svc.port)) as s:
        s.sendall(b"".join(frame(f"half {i}", run="half") for i in range(100)))
        s.shutdown(socket.SHUT_WR)
        assert closed_by_server(s, 10)
    check(100, fault="half-closed client", done="100 frames then shutdown(SHUT_WR), the socket kept open")


def test_a_client_that_sends_and_never_reads_does_not_block_the_loop(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    # logsvc never writes to pickle clients, so a client that never reads cannot fill a
    # send buffer; what it sends must still all be stored.
    svc = service()
    check = good_clients(svc)
    s = socket.create_connection(("127.0.0.1", svc.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.sendall(b"".join(frame(f"deaf {i}", run="deaf") for i in range(5000)))
        check(
            5000, fault="client that never reads", done="5,000 frames with a 4 KiB receive buffer, never read"
        )
    finally:
        s.close()


def test_allow_closes_clients_from_elsewhere_at_accept(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    # 127.0.0.1 is allowed; 127.0.0.2 (also loopback, but another address) is not.
    svc = service("--allow", "127.0.0.1/32")
    check = good_clients(svc)
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", svc.port))
    try:
        s.sendall(frame("from elsewhere"))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_by_server(s, 10)
    s.close()
    check(fault="--allow", done="a client from 127.0.0.2 with --allow 127.0.0.1/32")
    assert "not in --allow" in svc.log()


def test_max_connections_refuses_the_one_too_many_clearly(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    svc = service("--max-connections", str(GOOD_PROCS + 5))
    check = good_clients(svc)
    # The good clients connect at their first record: wait until both have one stored.
    wait_for(lambda: good_senders(svc) == GOOD_PROCS, 60, "both good clients to connect")
    held = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(5)]
    extra = socket.create_connection(("127.0.0.1", svc.port))
    try:
        assert closed_by_server(extra, 10)
        assert not any(closed_by_server(s, 0.05) for s in held)
        check(fault="--max-connections", done="--max-connections 7; 7 open, the 8th refused")
    finally:
        extra.close()
        for s in held:
            s.close()
    assert "--max-connections 7 reached" in svc.log()


def test_ten_thousand_concurrent_connections_each_send_a_record(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = 10_000
    if hard < n + 200:
        pytest.skip(f"the open-file hard limit {hard} cannot hold {n} client sockets in the test process")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    svc = service("--max-connections", str(n + GOOD_PROCS + 10))
    check = good_clients(svc)
    socks: list[socket.socket] = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", svc.port))
            s.sendall(frame(f"many {i}", run="many"))
            socks.append(s)
        check(n, fault="10,000 connections", done=f"{n:,} concurrent connections, one record each")
        rss = svc.sample_peak_rss() / 1024
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert rss < 400, rss


# -- TLS and Unix-domain listeners ---------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=logsvc test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    return d


def tls_port(svc: Service) -> int:
    import re

    m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(TLS", svc.log())
    assert m, svc.log()
    return int(m.group(1))


def tls_client_main(port: int, ca: str, cert: str | None, key: str | None, count: int) -> None:
    """The docs' TLS SocketHandler: a subclass whose makeSocket wraps the socket."""
    import ssl

    class TLSSocketHandler(logging.handlers.SocketHandler):
        def makeSocket(self, timeout: float = 1) -> socket.socket:
            ctx = ssl.create_default_context(cafile=ca)
            if cert and key:
                ctx.load_cert_chain(cert, key)
            sock = super().makeSocket(timeout)
            return ctx.wrap_socket(sock, server_hostname=self.host)

    logger = logging.getLogger("tls")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(TLSSocketHandler("127.0.0.1", port))
    for n in range(count):
        logger.info("tls record %d", n, extra={"run": "tls", "n": n})
    logging.shutdown()


def run_tls_client(port: int, pki: Path, *, with_cert: bool, count: int) -> None:
    import multiprocessing

    cert = str(pki / "client.pem") if with_cert else None
    key = str(pki / "client.key") if with_cert else None
    p = multiprocessing.get_context("fork").Process(
        target=tls_client_main, args=(port, str(pki / "ca.pem"), cert, key, count)
    )
    p.start()
    p.join(60)
    assert p.exitcode == 0


def run_rows(svc: Service, run: str) -> int:
    with psycopg.connect(svc.dsn, autocommit=True) as c:
        if c.execute("SELECT to_regclass(%s)", [f"{svc.schema}.records"]).fetchone() == (None,):
            return 0
        row = c.execute(
            f"SELECT count(*) FROM {svc.schema}.records WHERE extra->>'run' = %s", [run]
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_tls_listener_takes_a_stock_handler_subclass_and_refuses_plain_text(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]], pki: Path
) -> None:
    svc = service("--listen-tls", "127.0.0.1:0", "--tls-cert", str(pki / "server.pem"),
                  "--tls-key", str(pki / "server.key"))  # fmt: skip
    check = good_clients(svc)
    port = tls_port(svc)
    run_tls_client(port, pki, with_cert=False, count=3000)
    wait_for(lambda: run_rows(svc, "tls") >= 3000, 60, "the TLS client's records")
    # A plain SocketHandler frame sent to the TLS port is not a handshake.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(frame("plain text to a TLS port"))
        assert closed_by_server(s, 10)
    check(
        3000,
        fault="TLS listener",
        done="a TLS SocketHandler subclass sends 3,000 records; a plain-text client on the TLS port",
    )
    assert run_rows(svc, "tls") == 3000
    assert "TLS failed" in svc.log()


def test_tls_client_ca_requires_a_client_certificate(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]], pki: Path
) -> None:
    svc = service("--listen-tls", "127.0.0.1:0", "--tls-cert", str(pki / "server.pem"),
                  "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem"))  # fmt: skip
    check = good_clients(svc)
    port = tls_port(svc)
    run_tls_client(port, pki, with_cert=False, count=50)  # refused: stock handlers drop quietly
    run_tls_client(port, pki, with_cert=True, count=500)
    wait_for(lambda: run_rows(svc, "tls") >= 500, 60, "the certified client's records")
    check(
        500,
        fault="TLS client certificates",
        done="--tls-client-ca: one client without a certificate, one with",
    )
    assert run_rows(svc, "tls") == 500
    assert "TLS failed" in svc.log()


def test_unix_socket_listener_with_its_file_mode_as_access_control(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]], tmp_path: Path
) -> None:
    path = tmp_path / "logsvc.sock"
    svc = service("--listen", f"unix:{path}", "--unix-mode", "600")
    check = good_clients(svc)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    logger = logging.getLogger("unix-client")
    logger.propagate = False
    handler = logging.handlers.SocketHandler(str(path), None)
    logger.addHandler(handler)
    try:
        for n in range(1000):
            logger.warning("over a unix socket %d", n, extra={"run": "unix"})
    finally:
        handler.close()
        logger.removeHandler(handler)
    wait_for(lambda: run_rows(svc, "unix") >= 1000, 60, "the unix client's records")
    check(
        1000,
        fault="Unix-domain socket",
        done="SocketHandler(path, None) sends 1,000 records; --unix-mode 600",
    )
    with psycopg.connect(svc.dsn, autocommit=True) as c:
        peers = c.execute(
            f"SELECT DISTINCT peer FROM {svc.schema}.records WHERE extra->>'run' = 'unix'"
        ).fetchall()
    assert peers == [(f"unix:pid={os.getpid()},uid={os.getuid()}",)]
    assert svc.stop() == 0
    assert not path.exists(), "the socket file is removed at exit"


def test_malicious_pickles_on_live_connections_never_run_and_are_counted(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    svc = service()
    check = good_clients(svc)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    touch = f"touch {marker}".encode()
    payloads = {f"REDUCE protocol {p}": pickle.dumps({"msg": Evil()}, protocol=p) for p in range(6)}
    payloads |= {
        "INST": b"(S'" + touch + b"'\nios\nsystem\n.",
        "OBJ": b"(cos\nsystem\nS'" + touch + b"'\no.",
        "STACK_GLOBAL": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(touch)]) + touch + b"\x85R.",
        "NEWOBJ": b"\x80\x02cos\nsystem\n)\x81.",
        "BUILD": b"\x80\x02cos\nsystem\n}b.",
        "PERSID": b"P" + touch + b"\n.",
        "BINPERSID": b"\x80\x02X" + struct.pack("<I", len(touch)) + touch + b"Q.",
        "EXT1": b"\x80\x02\x82\x01.",
    }
    for body in payloads.values():
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            s.sendall(frame("valid first") + struct.pack(">L", len(body)) + body)
            assert closed_by_server(s, 10)
    # A frame refused for what it names closes its connection: logsvc_frames_rejected_total
    # since f9b7312, one family with the skipped records (logsvc_records_rejected_total) before.
    rejected = sum(
        metric(svc, name, listener="pickle", reason="forbidden")
        for name in ("logsvc_frames_rejected_total", "logsvc_records_rejected_total")
    )
    check(
        len(payloads),  # each valid frame before the bad one is kept
        fault="malicious pickles",
        done=f"{len(payloads)} connections each send a valid frame, then one calling os.system via "
        + ", ".join(payloads),
        figures={"refused_as_forbidden": rejected},
    )
    assert not marker.exists()
    assert rejected == len(payloads)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One random mutation of a real frame stream: flip, insert, delete, cut, splice, header edit."""
    b = bytearray(data)
    op = rng.randrange(6)
    if op == 0 and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = rng.randbytes(rng.randint(1, 64))
    elif op == 2 and len(b) > 1:
        pos = rng.randrange(len(b))
        del b[pos : pos + rng.randint(1, 64)]
    elif op == 3:
        del b[rng.randrange(len(b) + 1) :]
    elif op == 4:
        b += rng.randbytes(rng.randint(1, 512))
    else:
        b[0:4] = struct.pack(">L", rng.choice([0, 1, len(b), rng.getrandbits(32)]))
    return bytes(b)


def test_fuzzed_frames_over_live_connections_leave_the_service_serving(
    service: Callable[..., Service], good_clients: Callable[[Service], Callable[..., None]]
) -> None:
    svc = service("--frame-timeout", "2s")
    check = good_clients(svc)
    rng = random.Random(20261128)
    seeds = [frame(f"seed {i}", n=i, when=time.time()) for i in range(8)]
    tried = 0
    deadline = time.monotonic() + 45
    while tried < 3000 and time.monotonic() < deadline:  # bounded in count and time
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            for _ in range(10):
                data = _mutate(rng, b"".join(rng.sample(seeds, 2)))
                tried += 1
                try:
                    s.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    break

    # A mutation can leave a frame valid: those records are stored as the attacker's rows.
    # Once every connection is closed (the good clients have finished), the service has
    # read and journaled all there will be; its own count says how many that is.
    def attacker_rows() -> int:
        # The scrape itself is one open (HTTP) connection.
        wait_for(lambda: metric(svc, "logsvc_connections_open") <= 1, 60, "every connection to close")
        port = metrics_port(svc)
        assert port is not None
        return records_read(scrape(port)) - GOOD_PROCS * GOOD_COUNT

    check(
        attacker_rows,
        fault="fuzzed frames, live",
        done=f"{tried:,} mutated real frames (flips, inserts, cuts, splices, header edits) over "
        f"{tried // 10:,} connections",
        figures={"inputs_tried": tried},
    )
    assert svc.proc is not None and svc.proc.poll() is None
    assert tried >= 500
