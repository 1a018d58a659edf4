"""The open-file limit against --max-connections, and --allow's address matching."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from logsvc.ingest.intake import _allowed
from logsvc.server import RESERVED_FDS, _check_nofile_limit


def test_a_limit_that_fits_keeps_max_connections_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="logsvc.server"):
        assert _check_nofile_limit(20_000, 10_000) == 10_000
    assert not caplog.records


def test_a_limit_too_low_caps_the_clients_and_says_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="logsvc.server"):
        assert _check_nofile_limit(1024, 10_000) == 1024 - RESERVED_FDS
    (rec,) = caplog.records
    text = rec.getMessage()
    assert "open-file limit is 1024" in text and "--max-connections 10000" in text
    assert "ulimit -Hn" in text and "LimitNOFILE" in text


def test_allow_matches_networks_and_ipv4_mapped_addresses() -> None:
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert _allowed("10.1.2.3", nets)
    assert _allowed("::ffff:10.1.2.3", nets)
    assert _allowed("::1", nets)
    assert not _allowed("127.0.0.1", nets)
    assert not _allowed("not an address", nets)
