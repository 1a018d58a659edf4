"""µs per record of each stage of the JSON lines and syslog ingest paths, in process (issue 13).

Usage: python bench/formats_micro_i13.py [--format json|syslog|pickle] [--records N]
       [--repeats R] [--only STAGE,...] [--json]

``bench/hotpath_micro.py`` for the other stream formats. The records are ``logsvc bench
flood``'s own (``flood_records``: a JSON line with time, level, logger, message and the tags;
an octet-counted RFC 5424 message with the tags as SD params), concatenated as a sender
writes them and cut in 64 KiB chunks, as a socket read hands them over. Each stage runs alone
over all of them, ``--repeats`` times alternating with the others; the median and minimum of
this process's CPU time per record are printed (CPU, not wall: on a shared machine the wait
for a core is not the code's cost). The stages:

* ``framing``: the format's framer (``LineFramer``, ``SyslogFramer``) over a ``ReceiveBuffer``;
* ``parse``: the format's ``parse``, one call per frame (``JsonFormat``: orjson plus the key
  mapping; ``SyslogFormat``: PRI, UTF-8, the RFC 5424 header, the SD element, the time);
* ``decode``: ``Decoder.feed`` + ``Decoder.records`` per chunk, as ``StreamConnection`` drives
  it (framing + parse + the decoder's per-frame calls);
* ``encode``: ``RowEncoder.encode`` of the decoded records (the COPY row);
* ``write``: ``JournalWriter.write`` (encode + blocks) + a journal flush per chunk's worth;
* ``pipeline``: decode + write + flush per chunk: the whole in-process path of a read;
* ``floor``: ``pipeline`` with a format returning one prepared dict and an encoder returning
  one prepared row (what is left if parsing and encoding cost nothing);
* ``decode_batched`` (json only): ``decode`` with a ``LineFramer`` given an ``extract_all``
  (defined here, for the measurement: ``bytes.split`` of the complete lines), i.e. what
  ``Decoder.records`` would save per line if ``wire/lines.py`` had one (as ``LengthPrefixFramer``
  has).

The sink (reading the journal back, COPY to PostgreSQL) is not here: see the service's
cProfile (``bench/profile_formats_i13.sh``).
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

from logsvc.bench.records import flood_records
from logsvc.journal.segment import Journal
from logsvc.journal.writer import JournalWriter
from logsvc.loop import Reactor
from logsvc.metrics import Metrics
from logsvc.record import RecordDict
from logsvc.store.copyfmt import RowEncoder
from logsvc.wire import Decoder, JsonFormat, LengthPrefixFramer, LineFramer, PickleFormat
from logsvc.wire.buffer import ReceiveBuffer
from logsvc.wire.syslog import SyslogFormat, SyslogFramer

CHUNK = 64 * 1024


def _chunks(stream: bytes) -> list[memoryview]:
    view = memoryview(stream)
    return [view[off : off + CHUNK] for off in range(0, len(stream), CHUNK)]


def _ignore(exc: Exception) -> None:
    pass


def _records(dec: Decoder) -> Iterator[RecordDict]:
    return dec.records(_ignore)


class _BatchLineFramer(LineFramer):
    # Only for the measurement: the complete lines at the head of the buffer in one split,
    # when nothing is special (no discarding, no line over the cap, no CR); else none.
    def extract_all(self, buf: ReceiveBuffer) -> list[bytes]:
        if self._discarding or self._scanned:
            return []
        data, start = buf._data, buf._start
        last = data.rfind(b"\n", start)
        if last < 0:
            return []
        block = bytes(data[start:last])
        if b"\r" in block:
            return []
        lines = [line for line in block.split(b"\n") if line]
        if any(len(line) > self.max_line_bytes for line in lines):
            return []
        buf.skip(last + 1 - start)
        return lines


def _pieces(fmt: str, now: float) -> tuple[Callable[[], Any], Callable[[], Any], str]:
    # (new framer, new format, the kind the journal counts)
    if fmt == "json":
        return LineFramer, JsonFormat, "json"
    if fmt == "syslog":
        return SyslogFramer, lambda: SyslogFormat(now), "syslog"
    return LengthPrefixFramer, PickleFormat, "pickle"


def stages(fmt: str, records: int, tmp: Path) -> dict[str, Callable[[], int]]:
    items = flood_records(fmt, "i13micro", 0, records)
    stream = b"".join(items)
    chunks = _chunks(stream)
    now = time.time()
    new_framer, new_format, kind = _pieces(fmt, now)
    bodies: list[bytes] = []
    buf, fr = ReceiveBuffer(), new_framer()
    for c in chunks:
        buf.feed(c)
        while (b := fr.maybe_extract(buf)) is not None:
            bodies.append(b)
    assert len(bodies) == records, len(bodies)
    parser = new_format()
    recs: list[RecordDict] = [parser.parse(b) for b in bodies]
    peer = "127.0.0.1:40000"
    runs = [0]

    def framing() -> int:
        buf, framer, n = ReceiveBuffer(), new_framer(), 0
        for c in chunks:
            buf.feed(c)
            while framer.maybe_extract(buf) is not None:
                n += 1
        return n

    def parse() -> int:
        p = new_format().parse
        for b in bodies:
            p(b)
        return len(bodies)

    def decode_with(framer: Any) -> int:
        dec, n = Decoder(framer, new_format()), 0
        for c in chunks:
            dec.feed(c)
            for _ in _records(dec):
                n += 1
        return n

    def decode() -> int:
        return decode_with(new_framer())

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

    per_chunk = max(1, len(recs) * CHUNK // len(stream))

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

    def pipeline() -> int:
        return reads(new_writer(), Decoder(new_framer(), new_format()))

    def floor() -> int:
        return reads(new_writer(_NullEncoder()), Decoder(new_framer(), _NullFormat()))

    def decode_batched() -> int:
        return decode_with(_BatchLineFramer())

    extra: dict[str, Callable[[], int]] = {}
    if fmt == "json":
        extra["decode_batched"] = decode_batched
    return {
        **extra,
        "framing": framing,
        "parse": parse,
        "decode": decode,
        "encode": encode,
        "write": write,
        "pipeline": pipeline,
        "floor": floor,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--format", choices=("json", "syslog", "pickle"), default="json")
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated stages (default: all)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    a = ap.parse_args(argv)
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="formats-micro-") as tmp:
        st = stages(a.format, a.records, Path(tmp))
        if a.only:
            st = {k: v for k, v in st.items() if k in a.only.split(",")}
        for _ in range(a.repeats):
            for name, fn in st.items():
                t0 = time.process_time()
                n = fn()
                dt = time.process_time() - t0
                assert n == a.records, (name, n)
                times.setdefault(name, []).append(dt * 1e6 / n)
    result = {
        name: {"median_us": round(statistics.median(v), 3), "min_us": round(min(v), 3)}
        for name, v in times.items()
    }
    if a.json:
        print(json.dumps({"format": a.format, "records": a.records, "repeats": a.repeats, "stages": result}))
    else:
        print(f"{a.format}: {a.records} records, {a.repeats} alternating repeats; µs of CPU per record")
        print(f"{'stage':<12} {'median':>8} {'min':>8}")
        for name, r in result.items():
            print(f"{name:<12} {r['median_us']:>8.2f} {r['min_us']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
