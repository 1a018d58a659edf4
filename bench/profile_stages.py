"""Split a cProfile of ``serve`` (bench/profile_service.sh) into the hot path's stages.

Usage: python bench/profile_stages.py PROFILE [PROFILE ...]

Stages, from cumulative times (cProfile adds a cost per call, so read the shares):
decode (the decoder generator or loop: framing, the plain-frame check, unpickling),
encode (``RowEncoder.encode``), write (``JournalWriter.write`` without those two: blocks,
seqs, journal appends), read (``StreamConnection.read`` without ``write``: recv and
bookkeeping), the rest of the loop's busy time (the sink's journal reads and COPY, timers),
and idle (``epoll.poll``). Start-up (imports, connecting) is left out.
"""

from __future__ import annotations

import pstats
import sys


def stages(path: str) -> dict[str, float]:
    st = pstats.Stats(path).stats  # type: ignore[attr-defined]
    cum: dict[str, float] = {}
    calls: dict[str, int] = {}
    for (file, _line, func), (_cc, nc, _tt, ct, _callers) in st.items():
        key = f"{file.rsplit('/src/logsvc/', 1)[-1]}:{func}"
        cum[key] = cum.get(key, 0.0) + ct
        calls[key] = calls.get(key, 0) + nc

    def c(*keys: str) -> float:
        return sum(cum.get(k, 0.0) for k in keys)

    loop = c("loop.py:run")
    idle = c("~:<method 'poll' of 'select.epoll' objects>")
    read = c("ingest/stream.py:read")
    write = c("journal/writer.py:write")
    decode = c("wire/decoder.py:records") or c("ingest/stream.py:_records")
    encode = c("store/copyfmt.py:encode")
    records = calls.get("store/copyfmt.py:encode", 0)
    out = {
        "decode": decode,
        "encode": encode,
        "write (rest)": write - decode - encode,
        "read (rest)": read - write,
        "rest of the loop": loop - idle - read,
        "busy total": loop - idle,
        "idle (epoll)": idle,
    }
    print(f"{path}: {records:,} records; s of profiled time, µs/record, share of busy")
    for name, v in out.items():
        share = f"{v / out['busy total'] * 100:5.1f} %" if name != "idle (epoll)" else ""
        print(f"  {name:<18} {v:7.2f} s {v / records * 1e6:7.2f} µs  {share}")
    return out


if __name__ == "__main__":
    for p in sys.argv[1:]:
        stages(p)
