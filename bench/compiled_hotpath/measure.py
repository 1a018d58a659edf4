"""µs of CPU per record: the Python hot path against the C prototype, in process (issue 13).

Usage: python bench/compiled_hotpath/measure.py [--records N] [--repeats R] [--json]

Build first: ``python bench/compiled_hotpath/build.py``. The frames are ``bench/hotpath_micro.py``'s
(``flood_frames``), fed in 64 KiB chunks as a socket read hands them over. Every stage runs
over all of them, ``--repeats`` times alternating with the others; this process's CPU time
(``time.process_time``), median and minimum per record. Stages:

* from ``bench/hotpath_micro.py``, unchanged: ``decode`` (Decoder over the chunks, framing +
  ``PickleFormat.parse``), ``encode`` (``RowEncoder.encode`` of the decoded records),
  ``pipeline`` (decode + ``JournalWriter.write`` + flush per chunk: rows appended to a journal
  in a temp dir, ``--fsync never``) and ``floor`` (the pipeline with parse and encode replaced
  by constants);
* ``c_rows``: the C prototype alone: each chunk into a ``ReceiveBuffer``, ``rows()`` over its
  bytes (one ``bytes`` a row, into a list), ``skip`` what it consumed: the counterpart of
  ``decode`` + ``encode``;
* ``c_pipeline``: ``c_rows`` + ``JournalWriter.write`` of the rows (an encoder that returns
  its input) + flush per chunk: the counterpart of ``pipeline`` with the writer as it is;
* ``c_pipeline_bulk``: the C function appends straight into the writer's open block and stops
  where the writer would seal it (a subclass here, ``_CWriter.write_frames``), + flush: what a
  writer method made for it would cost.

A frame the C path hands back goes through the Python path (``PickleFormat`` +
``RowEncoder``); how many did is printed (the benchmark's frames: none).

``--layout-misses N`` measures instead the worst case of the C path's key-layout cache: N
frames that each carry an ``extra`` key of their own, so every frame builds its layout with
Python calls; per frame, C ``row()`` against ``PickleFormat.parse`` + ``RowEncoder.encode``.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from logsvc.bench.records import flood_frames
from logsvc.journal.segment import Journal
from logsvc.journal.writer import JournalWriter
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.record import RecordDict
from logsvc.store.copyfmt import RowEncoder
from logsvc.wire import PickleFormat
from logsvc.wire.buffer import ReceiveBuffer
from logsvc.wire.framing import MAX_FRAME_BYTES

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build  # noqa: E402

hotpath_micro = build.load_file(HERE.parent / "hotpath_micro.py")

PEER = "127.0.0.1:40000"
KIND = "pickle"


class _PassEncoder(RowEncoder):
    """The writer's encoder when the records handed to it are rows already."""

    def encode(self, rec: Any, seq: int, peer: str, received_ts: str) -> bytes:
        return rec  # type: ignore[no-any-return]


class _Fallback:
    """The Python path for a frame the C path hands back; counts them."""

    def __init__(self) -> None:
        self.fmt = PickleFormat()
        self.enc = RowEncoder()
        self.frames = 0

    def row(self, data: bytes, pos: int, seq: int, ts: str) -> tuple[bytes, int]:
        """The row of the frame whose header is at ``pos``, and the position after it."""
        n = int.from_bytes(data[pos : pos + 4], "big")
        self.frames += 1
        rec: RecordDict = self.fmt.parse(data[pos + 4 : pos + 4 + n])
        return self.enc.encode(rec, seq, PEER, ts), pos + 4 + n


def c_rows_of(mod: ModuleType, data: bytes, seq: int, ts: str, fb: _Fallback, out: list[bytes]) -> int:
    """Rows of every complete frame of ``data`` into ``out``; returns the bytes consumed."""
    rows = mod.rows
    pos = 0
    for _ in range(len(data) + 1):  # bounded: each round consumes a frame or stops
        pos, nrows, _nbytes, _rep, status = rows(data, pos, seq, PEER, ts, MAX_FRAME_BYTES, out, 1 << 62)
        seq += nrows
        if status != 1:
            if status == 3:
                raise RuntimeError("a frame header the framer refuses (not in this benchmark)")
            break
        row, pos = fb.row(data, pos, seq, ts)
        out.append(row)
        seq += 1
    return pos


class _CWriter(JournalWriter):
    """``JournalWriter`` with a method for the C path: rows straight into the open block."""

    def write_frames(self, mod: ModuleType, data: bytes, peer: str, received: float, fb: _Fallback) -> int:
        """Rows of every complete frame of ``data`` into the blocks; returns the bytes consumed."""
        ts = self._encoder.timestamp(received)
        rows = mod.rows
        blk = self._open
        pos = total = 0
        for _ in range(len(data) + 1):  # bounded: each round consumes a frame or stops
            budget = self._block_bytes - blk.nbytes
            pos, n, nbytes, _rep, status = rows(
                data, pos, self.next_seq, peer, ts, MAX_FRAME_BYTES, blk.rows, budget
            )
            if status == 1:
                row, pos = fb.row(data, pos, self.next_seq + n, ts)
                blk.rows.append(row)
                n += 1
                nbytes += len(row)
            blk.nbytes += nbytes
            blk.kinds[KIND] += n
            self.next_seq += n
            total += n
            if blk.nbytes >= self._block_bytes:
                self._seal()
                blk = self._open
                if not self._appends_blocked:
                    self._flush_sealed()
            if status == 3:
                raise RuntimeError("a frame header the framer refuses (not in this benchmark)")
            if status == 0:
                break
        if total:
            self._metrics.records_read[KIND] += total
        return pos


def c_stages(mod: ModuleType, stream: bytes, tmp: Path, fb: _Fallback) -> dict[str, Callable[[], int]]:
    chunks = hotpath_micro._chunks(stream)
    runs = [0]

    def journal() -> Journal:
        runs[0] += 1
        j = Journal(tmp / f"c{runs[0]}", fsync="never")
        j.open()
        return j

    def c_rows() -> int:
        buf, enc, n = ReceiveBuffer(), RowEncoder(), 0
        seq = 1
        for c in chunks:
            buf.feed(c)
            ts = enc.timestamp(time.time())
            out: list[bytes] = []
            buf.skip(c_rows_of(mod, buf.peek(len(buf)) or b"", seq, ts, fb, out))
            seq += len(out)
            n += len(out)
        return n

    def c_pipeline() -> int:
        w = JournalWriter(Reactor(), journal(), _PassEncoder(), Metrics())
        buf, enc, n = ReceiveBuffer(), RowEncoder(), 0
        for c in chunks:
            buf.feed(c)
            received = time.time()
            out: list[bytes] = []
            buf.skip(c_rows_of(mod, buf.peek(len(buf)) or b"", w.next_seq, enc.timestamp(received), fb, out))
            rows: Any = iter(out)  # rows where the writer expects records: _PassEncoder
            n += w.write(rows, KIND, PEER, received)
            w.flush()
        return n

    def c_pipeline_bulk() -> int:
        w = _CWriter(Reactor(), journal(), RowEncoder(), Metrics())
        buf = ReceiveBuffer()
        before = w.next_seq
        for c in chunks:
            buf.feed(c)
            buf.skip(w.write_frames(mod, buf.peek(len(buf)) or b"", PEER, time.time(), fb))
            w.flush()
        return w.next_seq - before

    return {"c_rows": c_rows, "c_pipeline": c_pipeline, "c_pipeline_bulk": c_pipeline_bulk}


def layout_misses(mod: ModuleType, count: int, repeats: int) -> dict[str, float]:
    """µs per frame when every frame has a key layout of its own (the cache never hits)."""
    handler = logging.handlers.SocketHandler("localhost", 0)
    bodies = []
    for i in range(count):
        rec = logging.LogRecord(
            "bench.flood", 20, "/srv/app/bench.py", 42, f"message {i:08d}", None, None, "f"
        )
        rec.trace_id = 1
        setattr(rec, f"k{i}", i)
        bodies.append(handler.makePickle(rec)[4:])
    enc, fmt = RowEncoder(), PickleFormat()
    ts = enc.timestamp(time.time())
    times: dict[str, list[float]] = {"c_row_layout_miss": [], "python_parse_encode": []}
    for _ in range(repeats):
        t0 = time.process_time()
        for i, b in enumerate(bodies):
            mod.row(b, i, PEER, ts)
        times["c_row_layout_miss"].append((time.process_time() - t0) * 1e6 / count)
        t0 = time.process_time()
        for i, b in enumerate(bodies):
            enc.encode(fmt.parse(b), i, PEER, ts)
        times["python_parse_encode"].append((time.process_time() - t0) * 1e6 / count)
    return {name: round(statistics.median(v), 3) for name, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    ap.add_argument("--layout-misses", type=int, default=0, metavar="N", help="see the module doc")
    a = ap.parse_args(argv)
    mod = build.load()
    if mod is None:
        print("not built (or older than hotpath_proto.c): python bench/compiled_hotpath/build.py")
        return 2
    if a.layout_misses:
        mod.reset_counts()
        res = layout_misses(mod, a.layout_misses, a.repeats)
        print(f"{a.layout_misses} frames, a key layout each, {a.repeats} alternating repeats; µs CPU/frame")
        print(json.dumps(res), "C counters:", {k: v for k, v in mod.fallbacks().items() if v})
        return 0
    stream = flood_frames("hotpath", 0, a.records)
    fb = _Fallback()
    mod.reset_counts()
    with tempfile.TemporaryDirectory(prefix="compiled-hotpath-") as tmp:
        micro = hotpath_micro.stages(stream, Path(tmp))
        st = {name: micro[name] for name in ("decode", "encode", "pipeline", "floor")}
        st.update(c_stages(mod, stream, Path(tmp), fb))
        result = hotpath_micro.timed(st, a.repeats, lambda name, n: n == a.records)
    counters = {k: v for k, v in mod.fallbacks().items() if v}
    if a.json:
        print(json.dumps({"records": a.records, "repeats": a.repeats, "stages": result,
                          "python_fallback_frames": fb.frames, "c_counters": counters}))  # fmt: skip
    else:
        hotpath_micro.print_stages(
            f"{a.records} records, {a.repeats} alternating repeats; µs of CPU per record", result, 16, 3
        )
        print(f"frames handed back to the Python path: {fb.frames}; C counters: {counters}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
