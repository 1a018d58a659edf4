"""Syslog structured data: the one-regex reading of a common SD-ELEMENT against the loop (issue 13).

``syslog._parse_element`` reads an element whose values are quoted and hold no backslash with
one regex (``_SD_ELEMENT``) and leaves everything else to its character loop. The two must agree
wherever the regex matches: these tests parse the same text with the regex and with it switched
off, and require the same structured data, the same end and the same message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import example, given, settings
from hypothesis import strategies as st

from logsvc.record import RecordDict
from logsvc.wire import syslog
from logsvc.wire.syslog import SyslogFormat

from .helpers import examples

NOW = 1764331200.0  # 2025-11-28 12:00 UTC


@contextmanager
def _loop_only() -> Iterator[None]:
    # The regex switched off: every element goes through the loop. (Not a pytest fixture:
    # hypothesis runs many examples per test, each needs both readings.)
    real = syslog._SD_ELEMENT
    syslog._SD_ELEMENT = lambda s, i: None  # type: ignore[assignment]
    try:
        yield
    finally:
        syslog._SD_ELEMENT = real


def _read(text: str, strict: bool) -> tuple[int, syslog._SD]:
    sd: syslog._SD = {}
    return syslog._parse_element(text, 0, sd, strict), sd


# Characters that matter to the grammar, and a few that do not.
_SD_CHARS = st.sampled_from(list(' ="]\\[ab@1\t\u00e9\n'))
_NAME = st.text(_SD_CHARS, min_size=0, max_size=6) | st.sampled_from(["x" * 255, "x" * 256, "origin"])
_VALUE = st.text(_SD_CHARS, max_size=8)


@st.composite
def _elements(draw: st.DrawFn) -> str:
    sd_id = draw(_NAME)
    params = draw(st.lists(st.tuples(_NAME, _VALUE, st.sampled_from(['"', "", '"x'])), max_size=4))
    body = "".join(
        f' {name}="{value}{close}' if close != "" else f" {name}={value}" for name, value, close in params
    )
    tail = draw(st.sampled_from(["]", "", "] ", "]x", "][a]", '] [a b="c"]', " ]"]))
    return f"[{sd_id}{body}{tail}"


@settings(max_examples=examples(1000), deadline=None)
@given(_elements(), st.booleans())
@example('[a b="1" b="2"]', False)
@example('[a b="1" b="2"]', True)
@example("[a]", True)
@example("[a]", False)
@example('[a b="x]y"]', False)
@example('[a b="x\\"y"]', False)
@example("[" + "x" * 255 + ' b="1"]', False)
@example("[" + "x" * 256 + ' b="1"]', False)
@example("[a " + "n" * 256 + '="1"]', False)
def test_element_regex_reads_as_the_loop(text: str, strict: bool) -> None:
    fast = _read(text, strict)
    with _loop_only():
        slow = _read(text, strict)
    assert fast == slow


def _parse(msg: bytes) -> RecordDict:
    return SyslogFormat(NOW).parse(msg)


@settings(max_examples=examples(500), deadline=None)
@given(st.lists(_elements(), min_size=1, max_size=3), st.sampled_from(["", " hello", "hello", " [x] y"]))
@example(['[a b="1"]', '[a b="2"]'], " m")
@example(['[a b="1"]', '[a c="2" c="3"]'], "")
@example(['[a b="1"', '[a c="2"]'], " m")
def test_message_with_regex_reads_as_without(elements: list[str], tail: str) -> None:
    msg = f"<134>1 2026-11-29T12:00:00Z host app 42 ID1 {''.join(elements)}{tail}".encode()
    fast = _parse(msg)
    with _loop_only():
        slow = _parse(msg)
    assert fast == slow


def test_bench_flood_message_takes_the_regex() -> None:
    # The message ``bench flood --format syslog`` sends (the hot path this was written for)
    # is read by the regex, and reads as the loop reads it.
    msg = b'<134>1 2026-11-29T12:00:00.5Z vm bench.flood 7 - [bench@32473 run="r" i="0:1" trace_id="0"] m 1'
    assert syslog._SD_ELEMENT(msg.decode(), msg.index(b"[")) is not None
    for rec in (_parse(msg), _loop_parse(msg)):
        assert rec["sd"] == {"bench@32473": {"run": "r", "i": "0:1", "trace_id": "0"}}
        assert rec["msg"] == "m 1"


def _loop_parse(msg: bytes) -> RecordDict:
    with _loop_only():
        return _parse(msg)
