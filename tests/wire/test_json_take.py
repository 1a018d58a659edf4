"""``json_format._take`` (the ECS and loguru path reader) against the recursive reading it replaced."""

# Copyright (c) logsvc developers

from __future__ import annotations

import copy
import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from logsvc.wire.json_format import _MISSING, _ecs, _ecs_general, _take
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


_ecs_keys = st.sampled_from(
    ["log", "level", "logger", "origin", "file", "line", "function", "process", "pid", "error",
     "stack_trace", "log.level", "log.logger", "levelno", "name", "message", "x"]
)  # fmt: skip
_ecs_json = st.recursive(
    st.none() | st.integers(-5, 60) | st.sampled_from(["info", "WARN", "bogus", "10", ""]),
    lambda inner: st.dictionaries(_ecs_keys, inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=examples(1000), deadline=None)
@given(st.dictionaries(_ecs_keys, _ecs_json, max_size=5))
def test_the_short_way_of_the_ecs_reading_ends_where_the_general_one_does(rec: dict[str, Any]) -> None:
    # Filebeat's documents (a nested "log" with level and logger, nothing else ECS reads) take
    # _ecs's short way; whatever the document, the result is the general reading's.
    mine, theirs = copy.deepcopy(rec), copy.deepcopy(rec)
    _ecs(mine, datetime.UTC)
    _ecs_general(theirs)
    assert mine == theirs
    assert list(mine) == list(theirs)  # the same keys in the same order: extra's JSON alike


def test_a_filebeat_document_takes_the_short_way_to_its_columns() -> None:
    rec: dict[str, Any] = {"log": {"level": "warn", "logger": "app.db", "file": {"path": "/x"}}, "m": 1}
    _ecs(rec, datetime.UTC)
    assert rec == {
        "log": {"file": {"path": "/x"}},
        "m": 1,
        "levelno": 30,
        "levelname": "WARNING",
        "name": "app.db",
    }
