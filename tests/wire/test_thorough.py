"""The framer properties again, at the ``thorough`` profile's example count, in every run.

Issue 10: the syslog chunking property was right, and CI passed anyway for as long as random
examples missed the stream that broke it. The properties most likely to hide such a case are
the ones that cut streams into chunks, because the bug class they look for (a framing decision
taken on a partial prefix) needs a rare cut and a rare stream together. So these few run here
with ``THOROUGH`` times their own example count whatever the profile, inside ``make test``; the
other wire properties get that many only under ``--hypothesis-profile=thorough`` (see
``tests/conftest.py``).

Each test here is the property function of its module (``.hypothesis.inner_test``, hypothesis's
documented handle on the undecorated function) with that module's strategies, so there is one
copy of each property. Under the thorough profile the originals already run this many examples
and these are skipped. ``-m "not slow"`` skips them for a quick loop.

Cost, measured on the shared 2-core development machine: 73 s for the first six (38 000
examples in all), which is what this module adds to ``make test``; the seventh (issue 14: lines
that start with digits beside octet-counted syslog) 10 s more. Under the thorough profile every
wire property runs 20 times its count: ``pytest tests/wire --hypothesis-profile=thorough``
took 7 minutes there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import test_decoder, test_json_format, test_lines, test_syslog
from .helpers import profile_factor

THOROUGH = profile_factor("thorough")

Property = Callable[..., None]


def _thorough(test: Any, n: int, *strategies: st.SearchStrategy[Any]) -> Property:
    # ``test`` is a hypothesis test, ``n`` the count its own @settings passes to examples():
    # this runs exactly what --hypothesis-profile=thorough runs for it.
    prop: Property = test.hypothesis.inner_test
    run = settings(
        max_examples=n * THOROUGH,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(*strategies)(prop))
    skip = pytest.mark.skipif(
        profile_factor() >= THOROUGH, reason="the active profile runs the original this long already"
    )
    marked: Property = pytest.mark.slow(skip(run))
    return marked


test_syslog_streams_thorough = _thorough(
    test_syslog.test_arbitrary_streams_yield_records_rejections_or_one_protocol_error,
    300,
    *test_syslog.STREAMS,
)
test_line_framer_model_thorough = _thorough(
    test_lines.test_framer_matches_the_model, 500, *test_lines.MODEL_CASES
)
test_line_framer_bytes_thorough = _thorough(
    test_lines.test_arbitrary_bytes_never_lose_sync, 300, *test_lines.BYTES_CASES
)
test_pickle_stream_mutated_thorough = _thorough(
    test_decoder.test_mutated_real_frames_yield_records_or_protocol_error, 300, *test_decoder.MUTATED_CASES
)
test_pickle_stream_bytes_thorough = _thorough(
    test_decoder.test_arbitrary_bytes_yield_records_or_protocol_error, 300, *test_decoder.BYTES_CASES
)
test_json_lines_stream_thorough = _thorough(
    test_json_format.test_arbitrary_streams_never_raise_protocol_error, 200, *test_json_format.STREAM_CASES
)
test_syslog_digit_lines_thorough = _thorough(
    test_syslog.test_digit_lines_and_octet_counted_messages_frame_as_sent, 300, *test_syslog.FRAMING_CASES
)
