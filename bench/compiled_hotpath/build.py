"""Compile the prototype C hot path (``hotpath_proto.c``) into ``bench/compiled_hotpath/_build/``.

Usage: python bench/compiled_hotpath/build.py [--cc gcc] [--quiet]

A prototype for measuring (issue 13), not part of the package: nothing in ``pyproject.toml``
or ``src/`` builds or imports it. The system C compiler is called directly against this
interpreter's headers (``sysconfig``), so no setuptools and no network. ``_build/`` is
gitignored. ``load()`` imports the built module, or returns None if it is not built.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "hotpath_proto.c"
BUILD_DIR = HERE / "_build"
MODULE = "_hotpath_proto"
# -ffp-contract=off: no fused multiply-add, so the microseconds of a timestamp are computed
# with the same two roundings as Python's ``(created - sec) * 1e6 + 0.5``.
CFLAGS = ["-O2", "-fPIC", "-shared", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"]


def target() -> Path:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return BUILD_DIR / f"{MODULE}{suffix}"


def build(cc: str = "gcc", quiet: bool = False) -> Path:
    """Compile the module; return the path of the shared object."""
    BUILD_DIR.mkdir(exist_ok=True)
    out = target()
    include = sysconfig.get_paths()["include"]
    cmd = [cc, *CFLAGS, f"-I{include}", str(SOURCE), "-o", str(out), "-lm"]
    if not quiet:
        print(" ".join(cmd))
    subprocess.run(cmd, check=True, timeout=300)
    return out


def load() -> ModuleType | None:
    """The built module, configured with logsvc's STANDARD_ATTRS and orjson; None if not built."""
    path = target()
    if not path.exists() or path.stat().st_mtime < SOURCE.stat().st_mtime:
        return None
    loader = importlib.machinery.ExtensionFileLoader(MODULE, str(path))
    spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
    if spec is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    import orjson

    from logsvc.record import STANDARD_ATTRS

    mod.configure(STANDARD_ATTRS, orjson.dumps)
    return mod


def load_file(path: Path) -> ModuleType:
    """Import a script by its path (``bench/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="gcc")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    path = build(a.cc, a.quiet)
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
