"""A journal with a corrupt block in the middle and a torn tail: reported, and the rest shipped once.

A first service is pointed at a closed loopback port instead of PostgreSQL, so everything the
stock clients send stays in its journal (small segments, so there are many). It is stopped,
and the journal is damaged the two ways a disk and a crash damage it: bytes flipped in the
middle of a segment (the block there fails its CRC), and the end of the last segment cut off
(an unfinished write). The block layout is read with ``logsvc.journal.scan`` beforehand, so
the test knows exactly which seqs each damage destroys.

A second service on the same data directory, with the real PostgreSQL, must log the corrupt
range (path, byte range, records lost) and the torn tail, then ship every intact record
exactly once, and no row that is not one of the records the clients sent.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import psycopg

from logsvc.journal import BlockInfo, scan
from tests.faults.conftest import ReliabilityRow
from tests.faults.helpers import (
    ClientPlan,
    FinalCounts,
    TaggedClients,
    corrupt_lines,
    final_counts,
    tally,
    torn_tail_bytes,
    torn_tail_records,
)
from tests.helpers import Service, counts, wait_for

CLIENTS = 3
PER_CLIENT = 2000
RUN = "corrupt"
FLIPPED_BYTES = 8
CUT_BYTES = 100
# Nothing listens on port 1 of the loopback: every connection attempt is refused at once.
NO_POSTGRESQL = "host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=2"


def _blocks(path: Path) -> list[BlockInfo]:
    result = scan(path.read_bytes())
    assert not result.bad and not result.torn_tail_bytes, f"{path} was damaged before the test did it"
    return list(result.blocks)


def test_a_flipped_block_and_a_torn_tail_are_reported_and_every_intact_record_shipped_once(
    tmp_path: Path, dsn: str, schema: str, reliability_row: ReliabilityRow
) -> None:
    data = tmp_path / "data"
    first = Service(
        data,
        NO_POSTGRESQL,
        schema,
        "--journal-segment-bytes",
        "64KiB",
        "--journal-max-bytes",
        "64MiB",
        "--shutdown-timeout",
        "0.2s",
    )
    first.start()
    clients = TaggedClients(first.port, CLIENTS, ClientPlan(run=RUN, max_count=PER_CLIENT, pause=0.0005))
    try:
        clients.start()
        clients.join(timeout=120)
        assert first.stop() == 0  # nothing can be shipped: the shutdown times out, journal kept
    finally:
        clients.kill()
        first.kill()
    sent = clients.sent
    m = re.search(r"Shutdown timeout: (\d+) records not yet in PostgreSQL", first.log())
    assert m and int(m.group(1)) == sum(sent), first.log()[-3000:]

    segments = sorted((data / "journal").glob("*.seg"))
    assert len(segments) >= 3, segments
    layout = {path: _blocks(path) for path in segments}
    journaled = {seq for blocks in layout.values() for b in blocks for seq in range(b.first_seq, b.next_seq)}
    assert len(journaled) == sum(sent)

    # 1. Flip bytes in the middle of a middle segment (inside the payload of the block found
    #    there, so exactly one block fails its CRC).
    victim = segments[len(segments) // 2]
    raw = bytearray(victim.read_bytes())
    hit = next(b for b in layout[victim] if b.offset <= len(raw) // 2 < b.end)
    assert hit.payload_len > FLIPPED_BYTES
    at = hit.payload_offset + (hit.payload_len - FLIPPED_BYTES) // 2
    for k in range(at, at + FLIPPED_BYTES):
        raw[k] ^= 0xFF
    victim.write_bytes(bytes(raw))
    corrupt_seqs = set(range(hit.first_seq, hit.next_seq))

    # 2. Cut the end off the last segment: its last block becomes an unfinished write.
    last = segments[-1]
    tail = layout[last][-1]
    assert tail.end == last.stat().st_size and tail.end - tail.offset > CUT_BYTES
    with open(last, "r+b") as f:
        f.truncate(tail.end - CUT_BYTES)
    torn_seqs = set(range(tail.first_seq, tail.next_seq))
    intact = journaled - corrupt_seqs - torn_seqs

    second = Service(data, dsn, schema)
    started = time.monotonic()
    second.start()
    startup_s = time.monotonic() - started
    try:
        wait_for(lambda: counts(dsn, schema)[0] >= len(intact), 60, "every intact record")
        assert second.stop() == 0
    finally:
        second.kill()

    t = tally(dsn, schema, RUN, sent)
    log = second.log()
    reported = corrupt_lines(log)
    reported_lost = sum(lost for *_, lost in reported)
    torn = torn_tail_bytes(log)
    row = reliability_row(
        fault="Journal corruption",
        done=(
            f"{sum(sent):,} records journaled with PostgreSQL unreachable ({len(segments)} segments of "
            f"64 KiB); {FLIPPED_BYTES} bytes flipped mid-segment and {CUT_BYTES} bytes cut off the last "
            "segment; restarted with PostgreSQL"
        ),
        tally=t,
        peak_rss_mb=max(first.peak_rss_mb, second.peak_rss_mb),
        figures={
            "corrupt_block_records": len(corrupt_seqs),
            "reported_records_lost": reported_lost,
            "torn_tail_records": len(torn_seqs),
            "torn_tail_bytes_reported": sum(torn),
            "restart_to_listening_s": round(startup_s, 2),
        },
        destroyed=len(corrupt_seqs) + len(torn_seqs),
    )
    # The corrupt range: the right file, bytes covering the flipped ones, the right count.
    assert len(reported) == 1, reported
    path, start, end, lost = reported[0]
    assert Path(path) == victim
    assert (start, end) == (hit.offset, hit.end)
    assert lost == len(corrupt_seqs)
    # The torn tail: what was left of the last block after the cut.
    assert torn == [tail.end - tail.offset - CUT_BYTES]
    # Every intact record arrived once, and nothing else did.
    with psycopg.connect(dsn) as c:
        stored_seqs = [int(s) for (s,) in c.execute(f"SELECT seq FROM {schema}.records").fetchall()]
    assert sorted(stored_seqs) == sorted(intact)
    assert (t.duplicated, t.seq_duplicates, t.unexpected, t.other_rows) == (0, 0, 0, 0)
    assert t.rows == t.distinct == len(intact)
    # What is missing is exactly what the damage destroyed: the reported corrupt range plus
    # the torn block, whose records the log counts from its surviving header.
    assert torn_tail_records(log) == [len(torn_seqs)]
    assert t.lost == sum(sent) - t.rows == reported_lost + len(torn_seqs)
    assert final_counts(log) == FinalCounts(read=0, journaled=0, stored=len(intact))
    # Both processes: the first read every record, the second none; the test destroyed the rest.
    assert row["lost_by_logsvc"] == 0 and row["read"] == sum(sent)
