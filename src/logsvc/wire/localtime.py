"""Times written without a zone, read in the zone the caller chose: one rule for every format.

Sans-IO: no clock and no configuration. The zone is a constructor argument of the formats
(``JsonFormat(tz=...)``, ``SyslogFormat(tz=...)``, ``parse_ingest(..., tz=...)``), which the
server takes from ``--assume-timezone``; the default everywhere is UTC.

Theory of operation. A local time can be nonexistent (a spring-forward transition skips an
hour: New York had no 02:30 on 2018-03-11) or ambiguous (a fall-back transition repeats one:
01:30 happened twice on 2018-11-04). Such a time has two readings, one with the UTC offset in
force before the transition and one with the offset after it. We take the later instant of
the two, which is PostgreSQL's rule (docs, "B.2. Handling of Invalid or Ambiguous
Timestamps"): the skipped 02:30 is read with the offset before the jump, so it is stored as
03:30 EDT; the repeated 01:30 with the offset after it, 01:30 EST. So a row holds what
``'2018-11-04 01:30'::timestamptz`` gives a session whose TimeZone is that zone, and a
record's time never depends on which other records arrived around it. (Python's own default,
``fold=0``, takes the earlier reading of a repeated time; the two agree on skipped ones.)

Nothing here can tell which reading a sender meant: a sender that knows should write an offset
(RFC 5424 requires one; ISO 8601 allows one), and an offset always wins over the assumed zone.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt

__all__ = ["UTC", "local_epoch"]

UTC = _dt.UTC


def local_epoch(naive: _dt.datetime, tz: _dt.tzinfo) -> float:
    """Seconds since the epoch of the zone-less ``naive`` read in ``tz`` (see the module docstring).

    Raises:
        ValueError, OverflowError: the time cannot be placed (a year out of ``datetime``'s range
            once the offset is applied); callers treat it as a time that does not parse.
    """
    if tz is UTC:
        return naive.replace(tzinfo=UTC).timestamp()
    # Two readings, equal unless ``naive`` falls in a gap or a fold; the later one wins.
    first = naive.replace(tzinfo=tz, fold=0).timestamp()
    second = naive.replace(tzinfo=tz, fold=1).timestamp()
    return first if first >= second else second
