"""Issue 13's lead, checked: one restricted unpickler per batch against ``PickleFormat.parse``.

Usage: python bench/batch_unpickler.py [N]

The lead: one ``RestrictedUnpickler`` over an ``io.BufferedReader`` of the concatenated frame
bodies, the reader's position checked at every frame boundary and the memo cleared between
frames, decodes in 4-7 µs a record against 9-12 µs for one unpickler per frame. Timed here
over ``logsvc bench flood``'s frames (CPU time, minimum of 5), against what the service
does today for the same frames (``PickleFormat.parse``: ``_PLAIN_RECORD`` then the C
``pickle.loads``):

* ``batch_unpickler``: the lead as stated, without the opcode scan (unsafe: for scale);
* ``batch_with_scan``: the lead with ``_scan`` per frame, which must stay (memo growth,
  hashing and EXT opcodes are checked there, not by the unpickler);
* ``parse``: ``PickleFormat.parse`` per frame, the current path.

The batch reuse is also only valid for protocol < 4 frames (MEMOIZE numbering; see
``PickleFormat.parse``).
"""

from __future__ import annotations

import io
import sys
import time
import timeit

from logsvc.bench.records import flood_records
from logsvc.wire import pickle_format as _pf


def main(n: int) -> None:
    bodies = [f[4:] for f in flood_records("pickle", "batch", 0, n)]
    blob = b"".join(bodies)
    ends, off = [], 0
    for b in bodies:
        off += len(b)
        ends.append(off)

    def batch_unpickler() -> None:
        reader = io.BufferedReader(io.BytesIO(blob), buffer_size=1 << 16)
        u = _pf.RestrictedUnpickler(reader)
        for end in ends:
            u.load()
            if reader.tell() != end:
                raise ValueError("frame boundary")
            u.memo.clear()

    def batch_with_scan() -> None:
        reader = io.BufferedReader(io.BytesIO(blob), buffer_size=1 << 16)
        u = _pf.RestrictedUnpickler(reader)
        scan = _pf._scan
        for body, end in zip(bodies, ends, strict=True):
            scan(body)
            u.load()
            if reader.tell() != end:
                raise ValueError("frame boundary")
            u.memo.clear()

    def parse() -> None:
        p = _pf.PickleFormat().parse
        for body in bodies:
            p(body)

    for fn in (batch_unpickler, batch_with_scan, parse):
        best = min(timeit.repeat(fn, number=3, repeat=5, timer=time.process_time))
        print(f"{fn.__name__:<16} {best / 3 / n * 1e6:6.2f} µs/record")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
