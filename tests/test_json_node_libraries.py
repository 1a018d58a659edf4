"""The real Node logging libraries (pino, bunyan, winston), as their users set them up.

Each logs debug to its most severe level, an exception, a child logger with structured fields
and unicode; stdout is exactly what the library wrote, and stderr has one JSON line per record
with what the call meant. Every stored column is checked as in ``tests/test_json_libraries.py``.

The packages are installed with npm into a cache outside the repo (``$LOGSVC_NODE_MODULES``,
default ``~/.cache/logsvc/node-test``); ``.ci/run`` fills it. Without node, npm or the npm
registry, the tests are skipped and say why.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_json_libraries import Expect, check, stored

PACKAGES = ("pino@9", "bunyan@1", "winston@3")
LEVELS = {
    "debug": (10, "DEBUG"),
    "info": (20, "INFO"),
    "warn": (30, "WARNING"),
    "error": (40, "ERROR"),
    "fatal": (50, "CRITICAL"),
}

EMIT_JS = r"""
// Logs the issue-15 script with one Node logging library; prints what the library wrote on
// stdout and, on stderr, one JSON line per record saying what the call meant.
const lib = process.argv[2];
const meant = (level, msg, fields, stack) =>
  process.stderr.write(JSON.stringify({ level, msg, fields: fields || {}, stack: stack || null }) + "\n");
const UNICODE = "naïve café ✓ 日本語 🚀 \u2028 end";
const FIELDS = { user_id: 7, tags: ["a", "ü"], order: { id: 42, total: 9.5 } };
let err;
try { null.boom(); } catch (e) { err = e; }

if (lib === "pino") {
  const logger = require("pino")({ level: "debug" });
  for (const level of ["debug", "info", "warn", "error", "fatal"]) {
    logger[level]("message at " + level); meant(level, "message at " + level);
  }
  logger.error(err, "it failed: ü");
  meant("error", "it failed: ü", { err: { type: err.name, message: err.message } }, err.stack);
  logger.child({ component: "child" }).info(FIELDS, "from the child");
  meant("info", "from the child", { component: "child", ...FIELDS });
  logger.warn(UNICODE); meant("warn", UNICODE);
} else if (lib === "bunyan") {
  const logger = require("bunyan").createLogger({ name: "app", level: "debug" });
  for (const level of ["debug", "info", "warn", "error", "fatal"]) {
    logger[level]("message at " + level); meant(level, "message at " + level);
  }
  logger.error(err, "it failed: ü");
  meant("error", "it failed: ü", { err: { name: err.name, message: err.message } }, err.stack);
  logger.child({ component: "child" }).info(FIELDS, "from the child");
  meant("info", "from the child", { component: "child", ...FIELDS });
  logger.warn(UNICODE); meant("warn", UNICODE);
} else if (lib === "winston") {
  const winston = require("winston");
  const logger = winston.createLogger({
    level: "debug",
    // The README's json() format, with the errors and timestamp formats its docs add to it.
    format: winston.format.combine(
      winston.format.errors({ stack: true }), winston.format.timestamp(), winston.format.json()
    ),
    transports: [new winston.transports.Console()],
  });
  for (const level of ["debug", "info", "warn", "error"]) {
    logger[level]("message at " + level); meant(level, "message at " + level);
  }
  logger.error(err); meant("error", err.message, {}, err.stack);
  logger.child({ component: "child" }).info("from the child", FIELDS);
  meant("info", "from the child", { component: "child", ...FIELDS });
  logger.warn(UNICODE); meant("warn", UNICODE);
}
"""


def node_modules() -> Path:
    """The cache holding pino, bunyan and winston (installed on first use); skips if it cannot."""
    found = _install()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@functools.cache
def _install() -> Path | str:
    # Once per session: a registry that cannot be reached costs one timeout, not three.
    root = Path(os.environ.get("LOGSVC_NODE_MODULES") or Path.home() / ".cache" / "logsvc" / "node-test")
    modules = root / "node_modules"
    if all((modules / p.split("@")[0] / "package.json").exists() for p in PACKAGES):
        return modules
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node or npm is not installed: the pino, bunyan and winston tests need them"
    root.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root), *PACKAGES],
            capture_output=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "npm install of pino, bunyan and winston took over 300 s (no registry?)"
    if done.returncode != 0:
        return f"npm install of {' '.join(PACKAGES)} failed: {done.stderr.decode()[-300:]}"
    return modules


def run_node(library: str, tmp_path: Path) -> tuple[list[bytes], list[Expect]]:
    modules = node_modules()
    script = tmp_path / "emit.js"
    script.write_text(EMIT_JS)
    before = time.time()
    done = subprocess.run(
        ["node", str(script), library],
        capture_output=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(modules)},
        stdin=subprocess.DEVNULL,
    )
    after = time.time()
    assert done.returncode == 0, done.stderr.decode()
    lines = [line for line in done.stdout.split(b"\n") if line]
    meant = [json.loads(line) for line in done.stderr.split(b"\n") if line]
    pid = json.loads(lines[0])["pid"] if library != "winston" else None
    expected = []
    for m in meant:
        levelno, levelname = LEVELS[m["level"]]
        extra: dict[str, Any] = dict(m["fields"])
        columns: dict[str, Any] = {}
        logger = None
        if library in ("pino", "bunyan"):
            extra["hostname"] = socket.gethostname()
            columns["process"] = pid
        if library == "bunyan":
            extra["v"] = 0
            logger = "app"
        expected.append(
            Expect((before - 0.001, after), levelno, levelname, logger, m["msg"], m["stack"], extra, columns)
        )
    # pino writes through sonic-boom, which may put its first line after later ones: pair
    # each line with what was meant by its message (unique in the script), not by position.
    by_message = {e.message: e for e in expected}
    assert len(by_message) == len(expected) == len(lines)
    return lines, [by_message[json.loads(line).get("msg", json.loads(line).get("message"))] for line in lines]


@pytest.mark.parametrize("library", ["pino", "bunyan", "winston"])
def test_every_field_of_every_record(library: str, tmp_path: Path) -> None:
    lines, expected = run_node(library, tmp_path)
    assert len(lines) == len(expected) >= 7
    for line, exp in zip(lines, expected, strict=True):
        check(stored(line), exp)
