"""The histogram's buckets on a fixed grid, and a cache of the settled ones (pure, no I/O).

Theory of operation
-------------------
Bucket ``k`` of step ``s`` seconds covers ``[k*s, (k+1)*s)`` seconds since the epoch: the
grid does not move with the requested range. The page asks for "the last hour" again every
ten seconds; on a fixed grid 58 of its 60 buckets are the ones it had, and only the edges
change. (The first bucket may start before ``since`` and the last end after ``until``; they
count only the records inside the range.)

A bucket is *settled* once it ends ``SETTLE_S`` before now and lies wholly inside the
requested range. When computing a histogram took longer than ``CACHE_AFTER_S`` (a big or
busy table: a small one is simply recomputed, exactly, every time), its settled buckets are
kept, per query and step, for ``TTL_S``. The next request for the same query and step then
scans only the buckets it does not have. The price, stated in the docs: a record whose
``created`` is more than ``SETTLE_S`` old when it is stored (a client that buffered, a clock
behind) shows in a cached bucket only once that entry expires, at most ``TTL_S`` later. The
search, the tail and the context are never cached.

Bounds: ``MAX_ENTRIES`` queries (least recently used dropped first), each at most
``MAX_BUCKETS_PER_ENTRY`` buckets.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import math
from collections import OrderedDict
from dataclasses import dataclass, field

SETTLE_S = 60.0
TTL_S = 60.0
CACHE_AFTER_S = 0.2
MAX_ENTRIES = 32
MAX_BUCKETS_PER_ENTRY = 2000
LEVELS = 5  # DEBUG, INFO, WARNING, ERROR, CRITICAL
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)

Counts = list[int]


def grid(since: _dt.datetime, until: _dt.datetime, buckets: int) -> tuple[int, int, int]:
    """``(step_s, k0, k1)``: the step for about ``buckets`` buckets and the first and last index."""
    span = (until - since).total_seconds()
    step = max(1, math.ceil(span / buckets))
    k0 = math.floor((since - _EPOCH).total_seconds() / step)
    k1 = math.ceil((until - _EPOCH).total_seconds() / step) - 1
    return step, k0, max(k0, k1)


def start_of(k: int, step: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(seconds=k * step)


def ranges(ks: list[int]) -> list[tuple[int, int]]:
    """Sorted bucket indexes as inclusive runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for k in ks:
        if out and out[-1][1] == k - 1:
            out[-1] = (out[-1][0], k)
        else:
            out.append((k, k))
    return out


@dataclass(slots=True)
class _Entry:
    expires: float
    buckets: dict[int, Counts] = field(default_factory=dict)


class HistogramCache:
    """Settled buckets per (query, step), see the module docstring."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self.hits = 0  # buckets answered from the cache, for tests and figures

    @staticmethod
    def settled(
        k0: int, k1: int, step: int, since: _dt.datetime, until: _dt.datetime, now: _dt.datetime
    ) -> range:
        """The indexes in ``[k0, k1]`` that may be cached: wholly in the range, ended long enough ago."""
        first = k0 if start_of(k0, step) >= since else k0 + 1
        edge = min(until, now - _dt.timedelta(seconds=SETTLE_S))
        last = math.floor((edge - _EPOCH).total_seconds() / step) - 1  # the last bucket ending by edge
        return range(first, max(first, min(k1, last) + 1))

    def known(self, key: tuple[str, int], ks: range, clock: float) -> dict[int, Counts]:
        """The cached buckets among ``ks`` (nothing once the entry has expired)."""
        entry = self._entries.get(key)
        if entry is None:
            return {}
        if entry.expires <= clock:
            del self._entries[key]
            return {}
        self._entries.move_to_end(key)
        found = {k: entry.buckets[k] for k in ks if k in entry.buckets}
        self.hits += len(found)
        return found

    def keep(self, key: tuple[str, int], buckets: dict[int, Counts], clock: float, took: float) -> None:
        """Remember settled ``buckets`` when computing them was costly (or the query is cached already)."""
        entry = self._entries.get(key)
        if entry is None or entry.expires <= clock:
            if took < CACHE_AFTER_S or not buckets:
                return
            entry = self._entries[key] = _Entry(clock + TTL_S)
        for k, counts in buckets.items():
            if len(entry.buckets) >= MAX_BUCKETS_PER_ENTRY:
                break
            entry.buckets[k] = counts
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
