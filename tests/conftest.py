"""Fixtures shared by every test: a real PostgreSQL and a schema of the test's own.

The database comes from ``--test-dsn``, default ``$LOGSVC_TEST_DSN`` (CI points it at the
machine's PostgreSQL). When neither is set, one embedded PostgreSQL is started for the whole
session in a temporary directory and deleted afterwards, so ``make test`` passes on a machine
with no PostgreSQL at all. Each test gets a fresh schema and never sees another test's rows.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings

# Hypothesis profiles (issue 10: a property that was right let a framer bug through CI because
# random examples happened to miss it). "default" is hypothesis's own, plus the blob that
# reproduces a failure (@reproduce_failure) printed with it. "thorough" has 20 times the
# examples and no deadline; the wire properties scale their own counts by it
# (tests/wire/helpers.py examples()), and tests/wire/test_thorough.py runs the framer
# properties at this count in every run. Select it with pytest's --hypothesis-profile=thorough
# (hypothesis's plugin) or HYPOTHESIS_PROFILE=thorough (the name hypothesis's docs use); the
# flag wins. Run `pytest tests/wire --hypothesis-profile=thorough` before every stop.
hypothesis_settings.register_profile("default", print_blob=True)
hypothesis_settings.register_profile("thorough", max_examples=20 * 100, deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--test-dsn",
        default=os.environ.get("LOGSVC_TEST_DSN"),
        help="PostgreSQL to test against (default: $LOGSVC_TEST_DSN, else an embedded server)",
    )


@pytest.fixture(scope="session")
def dsn(request: pytest.FixtureRequest) -> str:
    given: str | None = request.config.getoption("--test-dsn")
    if given:
        return given
    from logsvc import embedded

    # Not under tmp_path: run as root, the package runs PostgreSQL as the user "pgserver" and
    # opens up the directory's parents for it, and any pytest starting meanwhile on the machine
    # resets /tmp/pytest-of-root to 0700, after which pg_ctl cannot stop the server cleanly.
    # The server stops (and deletes its files) at exit; registered first, our rmtree of the
    # emptied parent runs after that (atexit is last in, first out).
    tmp = tempfile.mkdtemp(prefix="logsvc-test-pg-")
    atexit.register(shutil.rmtree, tmp, True)
    return embedded.start(Path(tmp), cleanup="delete")


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    """A schema name no other test uses; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
