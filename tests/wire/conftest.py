"""Fixtures the wire tests share: loopback sockets for real senders to write to."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 (any port), reads time out after 10 s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()
