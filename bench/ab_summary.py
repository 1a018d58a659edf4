"""Medians of ``bench/ab_formats.sh`` output: records/s and service CPU per record, per side and format.

Usage: python bench/ab_summary.py FILE
"""

from __future__ import annotations

import json
import statistics
import sys


def main() -> None:
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    loads: list[float] = []
    for line in open(sys.argv[1], encoding="utf-8"):
        parts = line.split(" ", 4)
        if len(parts) < 5 or not parts[4].startswith("{"):
            continue
        _, side, fmt, load = parts[:4]
        r = json.loads(parts[4])
        loads.append(float(load))
        run = {"rate": r["records_per_s"], "cpu": r["cpu_us_per_record"]}
        runs.setdefault((fmt, side), []).append(run | {"lost": r["lost"], "dup": r["duplicated"]})
    print(f"load average at run start: {min(loads):.2f} .. {max(loads):.2f}")
    print("| format | side | records/s per run | median | CPU us/record (median) | lost / dup |")
    print("|---|---|---|---|---|---|")
    for (fmt, side), rs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1] != "old")):
        rates = " · ".join(f"{x['rate']:,.0f}" for x in rs)
        print(
            f"| {fmt} | {side} | {rates} | {statistics.median(x['rate'] for x in rs):,.0f} | "
            f"{statistics.median(x['cpu'] for x in rs):.1f} | "
            f"{sum(int(x['lost']) for x in rs)} / {sum(int(x['dup']) for x in rs)} |"
        )


if __name__ == "__main__":
    main()
