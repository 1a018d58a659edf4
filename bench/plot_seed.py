"""Plot the emit -> stored latency of a ``logsvc bench seed --json`` run.

Usage: python bench/plot_seed.py RESULT.json [OUT.png]

Reads the histogram ``bench seed`` stores in its result (20 ms buckets, the last one open)
and draws it with the p50 / p99 / max lines. Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    src = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".png")
    result = json.loads(src.read_text())
    extra = result["extra"]
    hist: list[int] = extra["latency_histogram_20ms"]
    xs = [i * 20 for i in range(len(hist))]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar(xs, hist, width=18, align="edge", color="tab:blue", label="records per 20 ms")
    for key, style in (("latency_p50_s", "--"), ("latency_p99_s", "-."), ("latency_max_s", ":")):
        ms = extra[key] * 1000
        ax.axvline(ms, color="black", linestyle=style, label=f"{key.split('_')[1]} {ms:.0f} ms")
    ax.set_xlabel("emit -> stored latency (ms; last bar: that and more)")
    ax.set_ylabel("records")
    ax.set_title(
        f"bench seed: {result['sent']:,} records, {extra['procs']} processes, "
        f"{extra['stored_records_per_s']:,} records/s stored, "
        f"lost {result['lost']}, dup {result['duplicated']}",
        fontsize=9,
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
