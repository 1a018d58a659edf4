"""A/B of two versions of one wire format module, in one process, paired (issue 13).

Usage: python bench/parse_ab_i13.py --format json|syslog OLD.py NEW.py [--records N]
       [--rounds R] [--json]

Loads both files as separate modules (``wire/json_format.py`` or ``wire/syslog.py`` from two
trees, e.g. ``git show HEAD~1:src/logsvc/wire/syslog.py > /tmp/old_syslog.py``) and times
their ``parse`` over the same ``bench flood`` frames, old then new then new then old, ``--rounds``
times. Each round gives a ratio new/old of CPU time (``time.process_time``); their median is
the figure. On a shared machine the two sides of one round see the same load, so the ratio
moves far less than either time. Each side's results must be equal record for record.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from logsvc.bench.records import flood_records


def _load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and the like look themselves up there
    spec.loader.exec_module(mod)
    return mod


def _parser(mod: ModuleType, fmt: str, now: float) -> Callable[[bytes], Any]:
    if fmt == "json":
        return mod.JsonFormat().parse  # type: ignore[no-any-return]
    return mod.SyslogFormat(now).parse  # type: ignore[no-any-return]


def _bodies(fmt: str, records: int) -> list[bytes]:
    items = flood_records(fmt, "parse-ab", 0, records)
    if fmt == "json":
        return [i.rstrip(b"\n") for i in items]
    return [i.split(b" ", 1)[1] for i in items]  # the octet count off


def _cpu(parse: Callable[[bytes], Any], bodies: list[bytes]) -> float:
    t0 = time.process_time()
    for b in bodies:
        parse(b)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--format", choices=("json", "syslog"), required=True)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    now = time.time()
    bodies = _bodies(a.format, a.records)
    old = _parser(_load(a.old, "_i13_old"), a.format, now)
    new = _parser(_load(a.new, "_i13_new"), a.format, now)
    assert [old(b) for b in bodies] == [new(b) for b in bodies], "the two versions disagree"
    olds: list[float] = []
    news: list[float] = []
    ratios: list[float] = []
    for _ in range(a.rounds):
        o1 = _cpu(old, bodies)
        n1 = _cpu(new, bodies)
        n2 = _cpu(new, bodies)
        o2 = _cpu(old, bodies)
        olds += [o1, o2]
        news += [n1, n2]
        ratios.append((n1 + n2) / (o1 + o2))
    us = 1e6 / a.records
    result = {
        "format": a.format,
        "records": a.records,
        "rounds": a.rounds,
        "old_us_median": round(statistics.median(olds) * us, 3),
        "new_us_median": round(statistics.median(news) * us, 3),
        "old_us_min": round(min(olds) * us, 3),
        "new_us_min": round(min(news) * us, 3),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }
    if a.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:<16} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
