"""``pgproto.conninfo_with_timeouts``: what is added to a DSN, what is left as the user set it,
and that libpq takes the result over TCP and over a Unix-domain socket."""

from __future__ import annotations

import socket

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from logsvc.errors import StoreError
from logsvc.store import pgproto

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)  # linux/tcp.h


def test_timeouts_and_keepalives_are_added_to_a_dsn_that_sets_none() -> None:
    got = conninfo_to_dict(pgproto.conninfo_with_timeouts("host=db.example dbname=logs", 10, {}))
    assert got == {
        "host": "db.example",
        "dbname": "logs",
        "connect_timeout": "10",
        "keepalives": "1",
        "keepalives_idle": str(pgproto.KEEPALIVES_IDLE_S),
        "keepalives_interval": str(pgproto.KEEPALIVES_INTERVAL_S),
        "keepalives_count": str(pgproto.KEEPALIVES_COUNT),
        "tcp_user_timeout": "10000",
    }


def test_what_the_user_set_in_the_dsn_or_the_environment_wins() -> None:
    uri = "postgresql://u@db.example/logs?connect_timeout=3&keepalives_idle=60&tcp_user_timeout=0"
    got = conninfo_to_dict(pgproto.conninfo_with_timeouts(uri, 10, {}))
    assert (got["connect_timeout"], got["keepalives_idle"], got["tcp_user_timeout"]) == ("3", "60", "0")
    assert got["keepalives_count"] == str(pgproto.KEEPALIVES_COUNT)
    # libpq reads PGCONNECT_TIMEOUT when the DSN has no connect_timeout: adding one would hide it.
    got = conninfo_to_dict(pgproto.conninfo_with_timeouts("dbname=logs", 10, {"PGCONNECT_TIMEOUT": "4"}))
    assert "connect_timeout" not in got and got["tcp_user_timeout"] == "10000"
    # A DSN that sets everything comes back as it was given.
    full = (
        "dbname=logs keepalives=0 keepalives_idle=1 keepalives_interval=1 keepalives_count=1 "
        "connect_timeout=1 tcp_user_timeout=1"
    )
    assert pgproto.conninfo_with_timeouts(full, 10, {}) == full


def test_rounding_and_no_timeout() -> None:
    got = conninfo_to_dict(pgproto.conninfo_with_timeouts("dbname=x", 0.5, {}))
    # libpq counts connect_timeout in whole seconds and takes 1 as 2.
    assert (got["connect_timeout"], got["tcp_user_timeout"]) == ("2", "500")
    got = conninfo_to_dict(pgproto.conninfo_with_timeouts("dbname=x", 0, {}))
    assert "connect_timeout" not in got and "tcp_user_timeout" not in got and got["keepalives"] == "1"


def test_a_malformed_dsn_is_left_for_libpq_to_refuse_at_connect() -> None:
    bad = "host='unterminated"
    assert pgproto.conninfo_with_timeouts(bad, 10, {}) == bad
    with pytest.raises(StoreError) as info:
        pgproto.run_blocking(pgproto.connect(bad))
    assert info.value.reason == "connection" and "unterminated" in str(info.value)


def test_libpq_sets_the_socket_options_on_a_tcp_connection(dsn: str) -> None:
    if str(conninfo_to_dict(dsn).get("host", "")).startswith("/"):
        pytest.skip("the test database is on a Unix socket")
    conn = pgproto.run_blocking(pgproto.connect(pgproto.conninfo_with_timeouts(dsn, 7, {})))
    try:
        sock = socket.socket(fileno=socket.dup(conn.socket))
        with sock:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == pgproto.KEEPALIVES_IDLE_S
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == pgproto.KEEPALIVES_INTERVAL_S
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == pgproto.KEEPALIVES_COUNT
            assert sock.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT) == 7000
    finally:
        conn.finish()


def test_a_unix_socket_dsn_ignores_the_tcp_options(dsn: str) -> None:
    """The embedded server listens on a Unix socket only; libpq must not refuse the options."""
    d = conninfo_to_dict(dsn)
    if not str(d.get("host", "")).startswith("/"):
        # The same server through its own Unix socket, if it has one we may use.
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute("SHOW unix_socket_directories").fetchone()
        dirs = [x.strip() for x in (row[0] if row else "").split(",") if x.strip().startswith("/")]
        if not dirs:
            pytest.skip("the test server has no Unix socket")
        d = {**d, "host": dirs[0]}
        d.pop("hostaddr", None)
    local = " ".join(f"{k}={v}" for k, v in d.items())
    try:
        psycopg.connect(local).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"the Unix socket is not ours to use: {exc}")
    with psycopg.connect(pgproto.conninfo_with_timeouts(local, 10, {})) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        assert c.pgconn.host.startswith(b"/")
