"""Times without a zone read in the assumed one: DST gaps and folds, checked against PostgreSQL.

``wire.localtime`` promises PostgreSQL's reading of a local time ("B.2. Handling of Invalid or
Ambiguous Timestamps"), so the test asks the real server: ``timestamp AT TIME ZONE zone`` for
the same naive times, most of them drawn from the days clocks change.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logsvc.wire.localtime import local_epoch

from .helpers import examples

NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("zone", "naive", "expected"),
    [
        # PostgreSQL's own examples: a skipped 02:30 is 03:30 EDT, a repeated 01:30 is 01:30 EST.
        (NEW_YORK, datetime(2018, 3, 11, 2, 30), utc(2018, 3, 11, 7, 30)),
        (NEW_YORK, datetime(2018, 11, 4, 1, 30), utc(2018, 11, 4, 6, 30)),
        (NEW_YORK, datetime(2018, 11, 4, 0, 59), utc(2018, 11, 4, 4, 59)),  # just before: EDT
        (NEW_YORK, datetime(2018, 7, 1, 12, 0), utc(2018, 7, 1, 16, 0)),
        # Lord Howe moves by 30 minutes; its repeated 01:45 is the later, +10:30 one.
        (ZoneInfo("Australia/Lord_Howe"), datetime(2018, 4, 1, 1, 45), utc(2018, 3, 31, 15, 15)),
        # Samoa skipped 2011-12-30 altogether: read with the offset before the jump (-10).
        (ZoneInfo("Pacific/Apia"), datetime(2011, 12, 30, 12, 0), utc(2011, 12, 30, 22, 0)),
        (UTC, datetime(2018, 3, 11, 2, 30), utc(2018, 3, 11, 2, 30)),
    ],
)
def test_gaps_and_folds_are_read_the_way_postgresql_reads_them(
    zone: tzinfo, naive: datetime, expected: float
) -> None:
    assert local_epoch(naive, zone) == expected


_ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Australia/Sydney", "Pacific/Apia"]
# Days on which these zones changed their clocks (2018), and Samoa's skipped day.
_CHANGE_DAYS = [
    date(2018, 3, 11),
    date(2018, 11, 4),
    date(2018, 3, 25),
    date(2018, 10, 28),
    date(2018, 4, 1),
    date(2018, 10, 7),
    date(2011, 12, 30),
    date(2011, 12, 29),
    date(2012, 4, 1),
]
_NEAR_CHANGES = st.builds(
    lambda day, when, shift: datetime.combine(day, when) + timedelta(days=shift),
    st.sampled_from(_CHANGE_DAYS),
    st.times(),
    st.integers(-1, 1),
)
# Up to 2022: the server's zone database and this machine's then agree on every rule.
_ANY = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2022, 12, 31))


@settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.sampled_from(_ZONES), _NEAR_CHANGES | _ANY), min_size=1, max_size=40))
def test_local_epoch_agrees_with_postgresql(dsn: str, cases: list[tuple[str, datetime]]) -> None:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM (t AT TIME ZONE z))::float8"
            " FROM unnest(%s::timestamp[], %s::text[]) WITH ORDINALITY AS u(t, z, i) ORDER BY i",
            [[naive for _, naive in cases], [zone for zone, _ in cases]],
        ).fetchall()
    for (zone, naive), (expected,) in zip(cases, rows, strict=True):
        assert local_epoch(naive, ZoneInfo(zone)) == pytest.approx(expected, abs=1e-6), (zone, naive)


def test_a_fixed_offset_zone_has_no_gaps_or_folds() -> None:
    from datetime import timezone

    plus_two = timezone(timedelta(hours=2))
    assert local_epoch(datetime(2018, 3, 25, 2, 30), plus_two) == utc(2018, 3, 25, 0, 30)
    assert local_epoch(datetime.combine(date(2018, 1, 1), time()), UTC) == utc(2018, 1, 1)
