"""µs per record of each stage of the pickle hot path, in process (issue 13).

Usage: python bench/hotpath_micro.py [--records N] [--repeats R] [--json]

The records are ``logsvc bench flood``'s own frames (``flood_frames``: real SocketHandler
frames of a LogRecord with ``trace_id``, ``run`` and ``i`` in ``extra``). Each stage runs
alone over all of them, ``--repeats`` times alternating with the others, so load from other
processes falls on every stage alike; the median and the minimum are printed, of this
process's CPU time (not wall time: on a shared machine a process waits for a core, and that
wait is not the code's cost). The stages:

* ``framing``: ``LengthPrefixFramer.maybe_extract`` over a ``ReceiveBuffer`` fed 64 KiB
  chunks (what a socket read hands over), frames only;
* ``plain_check``: the ``_PLAIN_RECORD`` regex alone, the safety check of a plain frame;
* ``loads``: the C ``pickle.loads`` alone (unsafe on its own: for comparison);
* ``parse``: ``PickleFormat.parse``, one call per frame (plain_check + loads + key check);
* ``decode``: ``Decoder.feed`` + the records of each chunk (framing + parse + bookkeeping),
  as ``StreamConnection`` drives it;
* ``encode``: ``RowEncoder.encode`` of the decoded records;
* ``write``: ``JournalWriter.write`` of the decoded records (encode + blocks), then one
  ``flush`` per 64 KiB of frames (the journal appends to a temp dir, ``--fsync never``);
* ``pipeline``: decode + write + flush per chunk, the whole in-process path of a read;
* ``floor``: ``pipeline`` with a format that returns one prepared dict and an encoder that
  returns one prepared row: what is left if parsing and encoding cost nothing (the bound a
  compiled decode + encode could approach).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from logsvc.bench.records import flood_frames
from logsvc.journal.segment import Journal
from logsvc.journal.writer import JournalWriter
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.record import RecordDict
from logsvc.store.copyfmt import RowEncoder
from logsvc.wire import NEED_DATA, Decoder, LengthPrefixFramer, PickleFormat
from logsvc.wire import pickle_format as _pf
from logsvc.wire.buffer import ReceiveBuffer

CHUNK = 64 * 1024


def _chunks(stream: bytes) -> list[memoryview]:
    view = memoryview(stream)
    return [view[off : off + CHUNK] for off in range(0, len(stream), CHUNK)]


def _bodies(stream: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(stream):
        n = int.from_bytes(stream[off : off + 4], "big")
        out.append(stream[off + 4 : off + 4 + n])
        off += 4 + n
    return out


def _records(dec: Decoder) -> Iterator[RecordDict]:
    # What StreamConnection._records does in the revision on PYTHONPATH (this script also
    # runs against older trees, for A/B): Decoder.records if there is one, else next_record.
    batch = getattr(dec, "records", None)
    if batch is not None:
        return batch(_ignore)  # type: ignore[no-any-return]
    return _one_by_one(dec)


def _ignore(exc: Exception) -> None:
    pass


def _one_by_one(dec: Decoder) -> Iterator[RecordDict]:
    nxt = dec.next_record
    while (rec := nxt()) is not NEED_DATA:
        yield rec


def stages(stream: bytes, tmp: Path) -> dict[str, Callable[[], int]]:
    chunks = _chunks(stream)
    bodies = _bodies(stream)
    fmt = PickleFormat()
    recs = [fmt.parse(b) for b in bodies]

    def framing() -> int:
        buf, framer, n = ReceiveBuffer(), LengthPrefixFramer(), 0
        for c in chunks:
            buf.feed(c)
            while framer.maybe_extract(buf) is not None:
                n += 1
        return n

    def plain_check() -> int:
        m = _pf._PLAIN_RECORD
        return sum(m(b) is not None for b in bodies)

    def loads() -> int:
        f = _pf._loads
        for b in bodies:
            f(b)
        return len(bodies)

    def parse() -> int:
        p = PickleFormat().parse
        for b in bodies:
            p(b)
        return len(bodies)

    common = pipeline_stages(chunks, len(stream), recs, LengthPrefixFramer, PickleFormat, "pickle", tmp)
    return {
        "framing": framing,
        "plain_check": plain_check,
        "loads": loads,
        "parse": parse,
        **common,
    }


def pipeline_stages(
    chunks: list[memoryview],
    stream_len: int,
    recs: list[RecordDict],
    new_framer: Callable[[], Any],
    new_format: Callable[[], Any],
    kind: str,
    tmp: Path,
    decoders: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, Callable[[], int]]:
    """The stages every stream format shares: decode, encode, write, pipeline and floor.

    ``decoders``: more ``decode`` stages, by name, each with its own framer factory.
    """
    peer = "127.0.0.1:40000"
    runs = [0]

    def decode_with(framer: Any) -> int:
        dec, n = Decoder(framer, new_format()), 0
        for c in chunks:
            dec.feed(c)
            for _ in _records(dec):
                n += 1
        return n

    def encode() -> int:
        enc = RowEncoder()
        e, ts = enc.encode, enc.timestamp(time.time())
        for i, r in enumerate(recs):
            e(r, i, peer, ts)
        return len(recs)

    row = RowEncoder().encode(recs[0], 1, peer, RowEncoder().timestamp(time.time()))

    class _NullFormat:
        def parse(self, frame: bytes) -> RecordDict:
            return recs[0]

    class _NullEncoder(RowEncoder):
        def encode(self, rec: RecordDict, seq: int, peer: str, received_ts: str) -> bytes:
            return row

    def new_writer(encoder: RowEncoder | None = None) -> JournalWriter:
        runs[0] += 1
        journal = Journal(tmp / f"j{runs[0]}", fsync="never")
        journal.open()
        return JournalWriter(Reactor(), journal, encoder or RowEncoder(), Metrics())

    per_chunk = max(1, len(recs) * CHUNK // stream_len)

    def write() -> int:
        w = new_writer()
        n = 0
        for off in range(0, len(recs), per_chunk):
            n += w.write(iter(recs[off : off + per_chunk]), kind, peer, time.time())
            w.flush()
        return n

    def reads(w: JournalWriter, dec: Decoder) -> int:
        n = 0
        for c in chunks:
            dec.feed(c)
            n += w.write(_records(dec), kind, peer, time.time())
            w.flush()
        return n

    extra = {name: (lambda f=f: decode_with(f())) for name, f in (decoders or {}).items()}
    return {
        **extra,
        "decode": lambda: decode_with(new_framer()),
        "encode": encode,
        "write": write,
        "pipeline": lambda: reads(new_writer(), Decoder(new_framer(), new_format())),
        "floor": lambda: reads(new_writer(_NullEncoder()), Decoder(new_framer(), _NullFormat())),
    }


def timed(
    st: dict[str, Callable[[], int]], repeats: int, check: Callable[[str, int], bool]
) -> dict[str, dict[str, float]]:
    """Run every stage ``repeats`` times, alternating; µs of this process's CPU per record.

    ``check(stage, n)`` says whether a stage handled as many records as it should.
    """
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, fn in st.items():
            t0 = time.process_time()
            n = fn()
            dt = time.process_time() - t0
            assert check(name, n), (name, n)
            times.setdefault(name, []).append(dt * 1e6 / n)
    return {
        name: {"median_us": round(statistics.median(v), 3), "min_us": round(min(v), 3)}
        for name, v in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    a = ap.parse_args(argv)
    stream = flood_frames("hotpath", 0, a.records)
    with tempfile.TemporaryDirectory(prefix="hotpath-") as tmp:
        # The last record (``last=True``: protocol 1 writes True as text) is not plain.
        result = timed(
            stages(stream, Path(tmp)),
            a.repeats,
            lambda name, n: n == a.records or (name == "plain_check" and n == a.records - 1),
        )
    if a.json:
        print(json.dumps({"records": a.records, "repeats": a.repeats, "stages": result}))
    else:
        print_stages(f"{a.records} records, {a.repeats} alternating repeats; µs per record", result)
    return 0


def print_stages(title: str, result: dict[str, dict[str, float]], width: int = 12, digits: int = 2) -> None:
    """The table of ``timed``'s result: a stage a line, median and min µs per record."""
    print(title)
    print(f"{'stage':<{width}} {'median':>8} {'min':>8}")
    for name, r in result.items():
        print(f"{name:<{width}} {r['median_us']:>8.{digits}f} {r['min_us']:>8.{digits}f}")


if __name__ == "__main__":
    sys.exit(main())
