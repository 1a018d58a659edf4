"""The compiled hot-path prototype (bench/compiled_hotpath, issue 13) against the Python path.

Skipped unless the prototype is built (``python bench/compiled_hotpath/build.py``): it is a
measurement, not part of the package, so CI does not build it. When built, its rows must equal
``PickleFormat.parse`` + ``RowEncoder.encode`` byte for byte, or the frame must be handed back.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from logsvc.bench.records import flood_frames

_DIR = Path(__file__).resolve().parent.parent / "bench" / "compiled_hotpath"


def _load_equality() -> ModuleType | None:
    path = _DIR / "equality.py"
    if not (_DIR / "_build").is_dir() or not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("compiled_hotpath_equality", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


_EQ = _load_equality()
_C = _EQ.build.load() if _EQ is not None else None
if _EQ is None or _C is None:
    pytest.skip("prototype not built: python bench/compiled_hotpath/build.py", allow_module_level=True)


def test_benchmark_frames_are_equal_and_never_handed_back() -> None:
    assert _EQ is not None and _C is not None
    chk = _EQ.Checker(_C)
    stream = flood_frames("proto", 3, 3000)
    chk.check_all(_EQ.bodies_of(stream))
    assert chk.diffs == []
    assert chk.tally["equal"] == 3000
    assert _EQ.check_rows_api(_C, stream, chk)


def test_edge_cases_are_equal_or_handed_back() -> None:
    assert _EQ is not None
    chk = _EQ.Checker(_C)
    chk.check_all(_EQ.edge_bodies())
    assert chk.diffs == []
    assert chk.tally["equal"] > 50


def test_generated_records_are_equal_or_handed_back() -> None:
    assert _EQ is not None
    chk = _EQ.Checker(_C)
    assert _EQ.run_hypothesis(chk, 400, 1) is None
    assert chk.tally["equal"] > 100
