"""The histogram's grid and its cache of settled buckets, without a database."""

from __future__ import annotations

import datetime as _dt

import pytest

from logsvc.console import histogram as hg

T = _dt.datetime(2026, 1, 20, 12, 0, 30, tzinfo=_dt.UTC)
H = _dt.timedelta(hours=1)


def test_the_grid_does_not_move_with_the_range() -> None:
    step, k0, k1 = hg.grid(T - H, T, 60)
    assert step == 60
    assert hg.start_of(k0, step) == _dt.datetime(2026, 1, 20, 11, 0, tzinfo=_dt.UTC)
    assert hg.start_of(k1, step) == _dt.datetime(2026, 1, 20, 12, 0, tzinfo=_dt.UTC)
    assert k1 - k0 + 1 == 61  # a partial bucket at each end
    later = hg.grid(T - H + _dt.timedelta(seconds=10), T + _dt.timedelta(seconds=10), 60)
    assert later == (step, k0, k1)  # ten seconds on: the same buckets
    assert hg.grid(T, T + _dt.timedelta(milliseconds=1), 60)[1:] == (hg.grid(T, T, 60)[1],) * 2


def test_ranges_are_runs_of_indexes() -> None:
    assert hg.ranges([]) == []
    assert hg.ranges([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]


def test_only_whole_buckets_that_ended_a_while_ago_are_settled() -> None:
    step, k0, k1 = hg.grid(T - H, T, 60)
    settled = hg.HistogramCache.settled(k0, k1, step, T - H, T, now=T)
    # Not the partial first bucket, not the last SETTLE_S (60 s) nor the partial last one.
    assert settled.start == k0 + 1
    assert hg.start_of(settled.stop, step) <= T - _dt.timedelta(seconds=hg.SETTLE_S)
    assert hg.start_of(settled.stop, step) + _dt.timedelta(seconds=step) > T - _dt.timedelta(
        seconds=hg.SETTLE_S
    )
    # A range that ended long ago: everything whole in it.
    old = T - 10 * H
    step2, a, b = hg.grid(old - H, old, 60)
    assert hg.HistogramCache.settled(a, b, step2, old - H, old, now=T) == range(a + 1, b)


def test_cache_keeps_costly_results_only_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = hg.HistogramCache()
    key = ("level>=error", 60)
    cache.keep(key, {1: [1, 0, 0, 0, 0]}, clock=100.0, took=0.01)  # cheap: not kept
    assert cache.known(key, range(0, 5), clock=100.0) == {}
    cache.keep(key, {1: [1, 0, 0, 0, 0], 2: [0, 0, 0, 0, 0]}, clock=100.0, took=0.5)
    assert cache.known(key, range(0, 5), clock=101.0) == {1: [1, 0, 0, 0, 0], 2: [0, 0, 0, 0, 0]}
    assert cache.known(("other", 60), range(0, 5), clock=101.0) == {}
    assert cache.known((key[0], 30), range(0, 5), clock=101.0) == {}  # another step, other buckets
    # Once cached, cheap additions join it (the scan was cheap because of the cache).
    cache.keep(key, {3: [0, 2, 0, 0, 0]}, clock=102.0, took=0.001)
    assert 3 in cache.known(key, range(0, 5), clock=102.0)
    # Expiry is from the entry's creation: late arrivals show within TTL_S.
    assert cache.known(key, range(0, 5), clock=100.0 + hg.TTL_S) == {}
    assert cache.hits == 5


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hg, "MAX_ENTRIES", 3)
    monkeypatch.setattr(hg, "MAX_BUCKETS_PER_ENTRY", 10)
    cache = hg.HistogramCache()
    for i in range(5):
        cache.keep((f"q{i}", 60), {k: [k, 0, 0, 0, 0] for k in range(100)}, clock=0.0, took=1.0)
    assert cache.known(("q0", 60), range(100), clock=1.0) == {}  # least recently used, dropped
    kept = cache.known(("q4", 60), range(100), clock=1.0)
    assert len(kept) == 10
