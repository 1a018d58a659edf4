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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logsvc.bench.records import flood_records
from logsvc.record import RecordDict
from logsvc.wire import JsonFormat, LengthPrefixFramer, LineFramer, PickleFormat
from logsvc.wire.buffer import ReceiveBuffer
from logsvc.wire.syslog import SyslogFormat, SyslogFramer

sys.path.insert(0, str(Path(__file__).parent))
import hotpath_micro  # the stages every stream format shares, and the timing


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
    chunks = hotpath_micro._chunks(stream)
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

    decoders: dict[str, Callable[[], Any]] = {"decode_batched": _BatchLineFramer} if fmt == "json" else {}
    common = hotpath_micro.pipeline_stages(
        chunks, len(stream), recs, new_framer, new_format, kind, tmp, decoders
    )
    return {"framing": framing, "parse": parse, **common}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--format", choices=("json", "syslog", "pickle"), default="json")
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated stages (default: all)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="formats-micro-") as tmp:
        st = stages(a.format, a.records, Path(tmp))
        if a.only:
            st = {k: v for k, v in st.items() if k in a.only.split(",")}
        result = hotpath_micro.timed(st, a.repeats, lambda name, n: n == a.records)
    if a.json:
        print(json.dumps({"format": a.format, "records": a.records, "repeats": a.repeats, "stages": result}))
    else:
        hotpath_micro.print_stages(
            f"{a.format}: {a.records} records, {a.repeats} alternating repeats; µs of CPU per record", result
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
