"""``/metrics`` is valid exposition, counters mean what their help says, a scrape changes nothing."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from logsvc.metrics import Metrics
from logsvc.ops import Figures, make_registry
from tests.helpers import Service, counts, wait_for

pytestmark = pytest.mark.slow


def _figures() -> Figures:
    return Figures(
        uptime_seconds=1.0,
        intake_state="open",
        intake_reason="",
        pg_connected=True,
        pg_error="",
        journal_bytes=10,
        journal_max_bytes=100,
        unshipped_records=0,
        lag_seconds=0.0,
        pending_records=0,
        connections_open=1,
        udp_datagrams_dropped=0,
        loop_iterations=5,
        loop_busy_seconds=0.1,
        loop_max_turn_seconds=0.01,
        loop_handler_errors=0,
        encode_replaced_chars=0,
        encode_coerced_fields=0,
        encode_truncated_fields=0,
    )


def samples(text: str) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample as (name, sorted labels, value), parsed by prometheus-client's own parser."""
    return [
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def assert_valid(text: str) -> None:
    got = samples(text)
    dup = [k for k, n in Counter((name, labels) for name, labels, _ in got).items() if n > 1]
    assert not dup, f"samples with the same name and labels: {dup}"
    # One HELP and one TYPE per family.
    for what in ("HELP", "TYPE"):
        names = re.findall(rf"^# {what} (\S+)", text, re.MULTILINE)
        assert len(names) == len(set(names)), f"a family declared twice ({what})"


def test_every_counter_once_even_when_a_reason_is_in_both_rejection_kinds() -> None:
    from prometheus_client import generate_latest

    m = Metrics()
    # The same (listener, reason) as a skipped record and as a frame that closed its
    # connection: these were once two samples of one family with identical labels.
    m.records_rejected["http", "not_json"] += 2
    m.frames_rejected["http", "not_json"] += 1
    m.records_read["pickle"] += 3
    m.records_journaled["pickle"] += 3
    m.http_requests["/ingest", 200] += 1
    m.dead_lettered_by_sqlstate["23514"] += 1
    m.intake_failures["journal_write"] += 1
    registry = make_registry(m, _figures)
    first = generate_latest(registry).decode()
    assert_valid(first)
    values = {(n, lab): v for n, lab, v in samples(first)}
    assert values["logsvc_records_rejected_total", (("listener", "http"), ("reason", "not_json"))] == 2
    assert values["logsvc_frames_rejected_total", (("listener", "http"), ("reason", "not_json"))] == 1
    assert values["logsvc_records_dead_lettered_by_sqlstate_total", (("sqlstate", "23514"),)] == 1
    assert values["logsvc_intake_state", (("state", "open"),)] == 1
    # A scrape reads; it changes nothing another scrape would see.
    second = generate_latest(registry).decode()
    strip = re.compile(r"^process_.*$", re.MULTILINE)  # CPU and memory of this very process move
    assert strip.sub("", first) == strip.sub("", second)


def test_a_live_service_exposes_valid_metrics_that_count_what_happened(
    tmp_path: Path, dsn: str, schema: str
) -> None:
    svc = Service(
        tmp_path / "data", dsn, schema, "--listen-json", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"
    ).start()
    try:
        log = svc.log()
        ports = {
            kind: int(p)
            for p, kind in re.findall(
                r"Listening on 127\.0\.0\.1:(\d+) \((JSON lines|HTTP: POST|HTTP: /metrics)", log
            )
        }
        json_port, http_port, metrics_port = ports["JSON lines"], ports["HTTP: POST"], ports["HTTP: /metrics"]
        with socket.create_connection(("127.0.0.1", json_port)) as s:
            s.sendall(b'{"message": "one"}\nnot json\n{"message": "two"}\n')
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/ingest",
            data=b"[not json",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(req, timeout=10)
        assert bad.value.code == 400
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/ingest",
            data=b'{"message":"three"}\nnope\n',
            headers={"Content-Type": "application/x-ndjson"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read()) == {"accepted": 1, "rejected": {"not_json": 1}}
        with socket.create_connection(("127.0.0.1", svc.port)) as s:  # a frame over the cap
            s.sendall(struct.pack(">L", 0xFFFFFFF0))
        wait_for(lambda: counts(dsn, schema)[0] == 3, 30, "three records stored")

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
                return str(resp.read().decode())

        def value(text: str, name: str, **labels: str) -> float:
            want = tuple(sorted(labels.items()))
            return sum(v for n, lab, v in samples(text) if n == name and all(x in lab for x in want))

        wait_for(lambda: value(scrape(), "logsvc_records_stored_total") == 3, 10, "the stored counter")
        text = scrape()
        assert_valid(text)
        assert value(text, "logsvc_records_read_total") == 3
        assert value(text, "logsvc_records_journaled_total", listener="json") == 2
        assert value(text, "logsvc_records_journaled_total", listener="http") == 1
        assert value(text, "logsvc_records_rejected_total", listener="json", reason="not_json") == 1
        assert value(text, "logsvc_records_rejected_total", listener="http", reason="not_json") == 1
        assert value(text, "logsvc_frames_rejected_total", listener="http", reason="not_json") == 1
        assert value(text, "logsvc_frames_rejected_total", listener="pickle", reason="oversized") == 1
        assert value(text, "logsvc_intake_state", state="open") == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=10) as resp:
            ready = json.loads(resp.read())
        assert ready["status"] == "ready" and ready["intake"] == "open" and ready["postgresql"] == "connected"
        started = time.monotonic()
        assert svc.stop() == 0
        assert time.monotonic() - started < 10
    finally:
        svc.kill()
