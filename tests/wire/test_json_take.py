"""``json_format._take`` (the ECS and loguru path reader) against the recursive reading it replaced."""

# Copyright (c) logsvc developers

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.wire.json_format import _MISSING, _take
from tests.wire.helpers import examples


def _take_recursive(obj: dict[str, Any], path: tuple[str, ...], dotted: bool = False) -> Any:
    # The reading before the loop (the previous json_format._take), kept as the reference.
    if dotted and len(path) > 1:
        key = ".".join(path)
        if key in obj:
            return obj.pop(key)
    head = obj.get(path[0], _MISSING)
    if len(path) == 1:
        return _MISSING if head is _MISSING else obj.pop(path[0])
    if type(head) is not dict:
        return _MISSING
    value = _take_recursive(head, path[1:])
    if not head:
        del obj[path[0]]
    return value


_keys = st.sampled_from(["a", "b", "c", "a.b", "a.b.c", "b.c"])
_json = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda inner: st.dictionaries(_keys, inner, max_size=4) | st.lists(inner, max_size=2),
    max_leaves=12,
)


@settings(max_examples=examples(500), deadline=None)
@given(
    st.dictionaries(_keys, _json, max_size=4),
    st.lists(st.sampled_from("abc"), min_size=1, max_size=3),
    st.booleans(),
)
def test_take_reads_and_prunes_as_the_recursive_reading(
    obj: dict[str, Any], path: list[str], dotted: bool
) -> None:
    mine, theirs = copy.deepcopy(obj), copy.deepcopy(obj)
    got = _take(mine, tuple(path), ".".join(path) if dotted and len(path) > 1 else None)
    assert got == _take_recursive(theirs, tuple(path), dotted)
    assert mine == theirs


def test_emptied_and_empty_objects_on_the_path_are_dropped() -> None:
    rec: dict[str, Any] = {"log": {"origin": {"file": {"line": 7}}, "level": "info"}, "x": {}}
    assert _take(rec, ("log", "origin", "file", "line")) == 7
    assert rec == {"log": {"level": "info"}, "x": {}}
    rec = {"log": {"origin": {}}}
    assert _take(rec, ("log", "origin", "function")) is _MISSING
    assert rec == {}
