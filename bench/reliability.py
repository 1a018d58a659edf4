"""Run the fault suite and print what each fault cost: the table of docs/reliability.md.

Usage: python bench/reliability.py [--json] [--keep FILE] [-- PYTEST_ARGS...]
       python bench/reliability.py --rows FILE   (the tables of rows saved with --keep)

Runs ``pytest -m faults`` (every test in ``tests/faults``) with ``LOGSVC_RELIABILITY_OUT``
set to a temporary file. Each fault test appends one JSON line there (see
``tests/faults/conftest.py``): the fault, what was done, records sent, stored, lost and
duplicated, counted from the tags every client puts on its records; what the service said
it read, from its own /metrics and exit line, over every process of the test, and so what
it lost itself; the service's peak RSS (VmHWM, read just before it was stopped), and
figures of its own. The rows are then printed as a markdown table, or as JSON with
``--json``. A read count marked "≥" is a lower bound: a process of that test was SIGKILLed,
and what it read after its last /metrics answer is not counted. Tests that report no row
(the other tests in the folder) only count towards pass/fail.

The database is the tests' own: ``LOGSVC_TEST_DSN``, or an embedded PostgreSQL when unset.
The exit status is pytest's, so a failing fault test fails the script, and its row (if it
got that far) is still printed with its outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The order of docs/reliability.md; a fault not named here comes after these, in run order.
FAULT_ORDER = ("PostgreSQL outage", "SIGKILL and restart", "SIGTERM under load", "Journal corruption")
COLUMNS = (
    "fault",
    "what was done",
    "sent",
    "read by logsvc",
    "stored",
    "never accepted (stock client)",
    "destroyed by the fault",
    "lost by logsvc",
    "duplicated",
    "peak RSS (MiB)",
    "figures",
)


def run_suite(out: Path, pytest_args: list[str]) -> int:
    env = dict(os.environ, LOGSVC_RELIABILITY_OUT=str(out))
    cmd = [sys.executable, "-m", "pytest", "-m", "faults", "-q", "-p", "no:cacheprovider", *pytest_args]
    print("$ LOGSVC_RELIABILITY_OUT=" + str(out) + " " + " ".join(cmd[1:]), file=sys.stderr)
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows in ``path`` (one JSON object a line), in ``FAULT_ORDER``."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def rank(row: dict[str, Any]) -> int:
        fault = row.get("fault")
        return FAULT_ORDER.index(fault) if fault in FAULT_ORDER else len(FAULT_ORDER)

    return sorted(rows, key=rank)  # stable: unknown faults keep their run order


def _number(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _measured(v: Any, exact: bool) -> str:
    """A figure from the service's read count: "n/a" if it had none, "≥ n" if a lower bound."""
    if v is None:
        return "n/a"
    return _number(v) if exact else f"≥ {_number(v)}"


def _stored(r: dict[str, Any]) -> str:
    """The clients' rows, plus those of the test's other connections (an attacker's) if any."""
    other = r.get("stored_other", 0)
    return _number(r["stored"]) + (f" + {_number(other)} other" if other else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        figures = "; ".join(f"{k.replace('_', ' ')}: {_number(v)}" for k, v in r.get("figures", {}).items())
        fault = r["fault"] if r.get("outcome", "passed") == "passed" else f"{r['fault']} (**{r['outcome']}**)"
        exact = r.get("read_exact", True)
        cells = [
            fault,
            r["done"],
            _number(r["sent"]),
            _measured(r.get("read"), exact),
            _stored(r),
            _number(r.get("not_accepted", 0)),
            _number(r.get("destroyed", 0)),
            _measured(r.get("lost_by_logsvc"), exact),
            _number(r["duplicated"]),
            _number(r["peak_rss_mb"]),
            figures,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


ACKED = " (acknowledging handler)"  # tests/faults/test_acked.py names its faults so
ACKED_TESTS = "tests/faults/test_acked.py"


def side_by_side(rows: list[dict[str, Any]]) -> str:
    """The faults run with both handlers: what each lost and duplicated, in one table."""
    # A stock row from tests/faults/test_acked.py is the stock side of that file's acked row,
    # the same fault with the same load; it is preferred to a stock test of the same name.
    stock: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: str(r.get("test", "")).startswith(ACKED_TESTS)):
        if not r["fault"].endswith(ACKED):
            stock[r["fault"]] = r
    acked = [r for r in rows if r["fault"].endswith(ACKED)]
    head = (
        "| fault | stock `SocketHandler`: sent | stored | lost | duplicated "
        "| `logsvc_client.Handler`: sent | stored | lost | duplicated | what was done (acknowledging) |"
    )
    lines = [head, "|" + "---|" * 10]
    for a in acked:
        name = a["fault"].removesuffix(ACKED)
        s = stock.get(name)
        outcome = "" if a.get("outcome", "passed") == "passed" else f" (**{a['outcome']}**)"
        cells = [
            name + outcome,
            *(
                (_number(s["sent"]), _stored(s), _number(s["lost"]), _number(s["duplicated"]))
                if s
                else ("no stock run", "", "", "")
            ),
            _number(a["sent"]),
            _stored(a),
            _number(a["lost"]),
            _number(a["duplicated"]),
            a["done"],
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    ap.add_argument("--keep", type=Path, metavar="FILE", help="also copy the JSON lines to FILE")
    ap.add_argument(
        "--rows", type=Path, metavar="FILE", help="print the tables of rows saved with --keep; run nothing"
    )
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = ap.parse_args(argv)
    if args.rows:
        rows = read_rows(args.rows)
        print(markdown([r for r in rows if not r["fault"].endswith(ACKED)]))
        print()
        print(side_by_side(rows))
        return 0
    with tempfile.TemporaryDirectory(prefix="logsvc-reliability-") as tmp:
        out = Path(tmp) / "rows.jsonl"
        started = time.monotonic()
        status = run_suite(out, args.pytest_args)
        elapsed = time.monotonic() - started
        rows = read_rows(out)
        if args.keep:
            args.keep.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if args.json:
        print(json.dumps({"pytest_status": status, "seconds": round(elapsed, 1), "rows": rows}, indent=2))
    else:
        print()
        print(markdown([r for r in rows if not r["fault"].endswith(ACKED)]))
        print()
        print(side_by_side(rows))
        print()
        print(f"{len(rows)} rows; pytest exit status {status}; {elapsed:.0f} s.")
    return status


if __name__ == "__main__":
    sys.exit(main())
