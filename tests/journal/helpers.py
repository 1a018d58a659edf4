"""Helpers shared by the journal tests."""

from __future__ import annotations

from hypothesis import settings

_HYPOTHESIS_DEFAULT_EXAMPLES = 100


def examples(n: int) -> int:
    """``n`` examples in a default run, scaled by the active hypothesis profile ("thorough": 20x).

    The same rule as ``tests/wire/helpers.py``: a property's own count times how many times
    hypothesis's default the profile asks for.
    """
    return n * max(1, settings().max_examples // _HYPOTHESIS_DEFAULT_EXAMPLES)
