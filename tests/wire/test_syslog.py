"""Syslog: RFC 6587 framing, RFC 5424 / RFC 3164 parsing, and the real senders on this machine.

The real senders are CPython's ``logging.handlers.SysLogHandler`` and util-linux ``logger``,
each talking to a socket this test opens on 127.0.0.1 (never another address), with timeouts.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire import MAX_SYSLOG_MESSAGE_BYTES, NEED_DATA, Decoder, SyslogFormat, SyslogFramer
from logsvc.wire.buffer import ReceiveBuffer
from logsvc.wire.syslog import FACILITY_NAMES, SEVERITY_NAMES
from tests.wire.helpers import collect

from .helpers import FEEDERS, examples, feed_with_trailing, make_record

Item = RecordDict | str | ProtocolError  # a record, "!reason" for a RecordRejected, or the error

NOW = datetime(2025, 11, 28, 12, 0, tzinfo=UTC).timestamp()


class RawFormat:
    def parse(self, frame: bytes) -> RecordDict:
        return {"msg": frame}


def run(
    chunks: list[bytes],
    framer: SyslogFramer | None = None,
    fmt: RawFormat | SyslogFormat | None = None,
) -> list[Item]:
    """Feed ``chunks`` then EOF; collect records, "!reason" rejections and a final ProtocolError."""
    return collect(Decoder(framer or SyslogFramer(), fmt or RawFormat()), chunks)


def frames(chunks: list[bytes], max_message_bytes: int = MAX_SYSLOG_MESSAGE_BYTES, **kw: Any) -> list[Any]:
    """Like run() with the raw format: frames as bytes, rejections as "!reason", errors as "ERR:reason"."""
    out: list[Any] = []
    for item in run(chunks, SyslogFramer(max_message_bytes, **kw)):
        if isinstance(item, ProtocolError):
            out.append("ERR:" + item.reason)
        elif isinstance(item, dict):
            out.append(item["msg"])
        else:
            out.append(item)
    return out


def three_ways(data: bytes, max_message_bytes: int = MAX_SYSLOG_MESSAGE_BYTES, **kw: Any) -> list[Any]:
    whole = frames([data], max_message_bytes, **kw)
    assert frames([data[i : i + 1] for i in range(len(data))], max_message_bytes, **kw) == whole
    assert frames([data[i : i + 5] for i in range(0, len(data), 5)], max_message_bytes, **kw) == whole
    return whole


def octet(msg: bytes) -> bytes:
    return b"%d %s" % (len(msg), msg)


def parse(msg: bytes, now: float | None = NOW) -> RecordDict:
    return SyslogFormat(now=now).parse(msg)


def malformed(msg: bytes) -> str:
    with pytest.raises(RecordRejected) as info:
        SyslogFormat().parse(msg)
    return info.value.reason


# --- framing -----------------------------------------------------------------------------------

M1 = b'<165>1 2003-10-11T22:14:15.003Z host app - ID47 [ex@32473 iut="3"] one\ntwo'
M2 = b"<14>1 - - - - - - octet counted"


def test_octet_counted_and_non_transparent_messages_mixed() -> None:
    data = octet(M1) + b"<14>lf\n" + b"<14>nul\x00" + octet(M2) + b"\r\n" + b"<14>crlf\r\n" + octet(M1)
    assert three_ways(data) == [M1, b"<14>lf", b"<14>nul", M2, b"<14>crlf", M1]


def test_helpers_feeders() -> None:
    data = octet(M1) + b"<14>a\n"
    for feeder in FEEDERS[:2]:  # whole, bytewise
        dec = Decoder(SyslogFramer(), RawFormat())
        assert [r["msg"] for r in feeder(dec, data)] == [M1, b"<14>a"]
    # NUL between messages is skipped, so the partial next frame is a count, not "\x00\x00".
    for trailing in (b"12", b"12 <1", b"<14>partial"):
        dec = Decoder(SyslogFramer(), RawFormat())
        assert [r["msg"] for r in feed_with_trailing(dec, data, trailing)] == [M1, b"<14>a"]


def test_separators_between_messages_are_skipped() -> None:
    assert three_ways(b"\n\r\n\x00\x00" + octet(M2) + b"\n\n<14>x\n\r\n\x00") == [M2, b"<14>x"]


def test_octet_count_over_the_cap_is_refused_before_the_body() -> None:
    assert frames([b"10 <"], 100) == ["ERR:truncated"]  # a count: its body never came
    assert frames([b"101 <"], 100) == ["ERR:oversized"]
    assert frames([b"100 <" + b"x" * 99], 100) == [b"<" + b"x" * 99]
    dec = Decoder(SyslogFramer(100), RawFormat())
    dec.feed(b"1000 <")
    with pytest.raises(ProtocolError) as info:
        dec.next_record()
    assert info.value.reason == "oversized"
    assert dec.buffered_bytes == 0


def test_octet_count_of_ten_to_the_thirty() -> None:
    data = b"%d <14>x" % 10**30
    assert three_ways(data) == ["ERR:oversized"]


@pytest.mark.parametrize("data", [b"0 <14>x", b"012 <14>x"])
def test_octet_counts_with_a_leading_zero_are_malformed(data: bytes) -> None:
    assert three_ways(data) == ["ERR:malformed"]


@pytest.mark.parametrize(
    ("data", "messages"),
    [
        # Issue 14: a message with no <PRI> that starts with a digit was taken for an octet
        # count (and cut the connection). A count is DIGITS SP "<"; anything else is a line.
        (b"2026-11-29 12:00:00 started\n", [b"2026-11-29 12:00:00 started"]),
        (b"404 not found\n<14>next\n", [b"404 not found", b"<14>next"]),
        (b"0 x", [b"0 x"]),
        (b"12a", [b"12a"]),
        (b"12\n<14>x", [b"12", b"<14>x"]),
        (b"3\x00abc", [b"3", b"abc"]),
        (b"1" * 7, [b"1" * 7]),
        (b"12  <14>two spaces\n", [b"12  <14>two spaces"]),
        (b"5 <14>a" + b"17 no PRI, a count?\n" + b"5 <14>b", [b"<14>a", b"17 no PRI, a count?", b"<14>b"]),
        (b"42", [b"42"]),  # at EOF: digits that never got their " <" are the last line
        (b"42 ", [b"42 "]),
    ],
)
def test_a_line_starting_with_digits_is_not_an_octet_count(data: bytes, messages: list[bytes]) -> None:
    assert three_ways(data) == messages


def test_a_run_of_digits_over_the_cap_is_an_oversized_line() -> None:
    data = b"9" * 30 + b"\n<14>after\n"
    assert three_ways(data, 20) == ["!oversized", b"<14>after"]
    # More digits than the cap is a line whatever follows (decided before the rest arrives);
    # fewer, and " <" after them, is a count over the cap.
    assert three_ways(b"9" * 30 + b" <14>x", 20) == ["!oversized"]
    assert three_ways(b"9" * 20 + b" <14>x", 20) == ["ERR:oversized"]


def test_a_long_run_of_digits_fed_bytewise_is_scanned_once() -> None:
    # 60,000 digits a byte at a time: each call looks at the new byte, not the whole run.
    framer = SyslogFramer()
    buf = ReceiveBuffer()
    started = time.process_time()
    for _ in range(60_000):
        buf.feed(b"7")
        assert framer.maybe_extract(buf) is None
    buf.feed(b"\n")
    assert framer.maybe_extract(buf) == b"7" * 60_000
    assert time.process_time() - started < 5  # quadratic rescanning takes minutes


def test_partial_messages_at_eof() -> None:
    assert three_ways(b"<14>last without trailer") == [b"<14>last without trailer"]
    assert three_ways(b"<14>a\n<14>last\r") == [b"<14>a", b"<14>last"]
    assert three_ways(octet(M2)[:-1]) == ["ERR:truncated"]
    assert three_ways(b"42 <") == ["ERR:truncated"]


def test_oversized_non_transparent_message_is_discarded_in_step() -> None:
    data = b"<14>ok\n<14>" + b"x" * 50 + b"\n" + octet(b"<14>y") + b"<14>" + b"z" * 50 + b"\x00<14>end"
    assert three_ways(data, 10) == [b"<14>ok", "!oversized", b"<14>y", "!oversized", b"<14>end"]


def test_oversized_non_transparent_message_memory_is_bounded() -> None:
    dec = Decoder(SyslogFramer(1024), RawFormat())
    rejected = 0
    for _ in range(100):
        dec.feed(b"<" + b"q" * 65535)
        try:
            assert dec.next_record() is NEED_DATA
        except RecordRejected:
            rejected += 1
        assert dec.buffered_bytes == 0
    assert rejected == 1
    dec.feed(b"\n<14>ok\n")
    assert dec.next_record() == {"msg": b"<14>ok"}


def test_nul_only_trailer_keeps_newlines_inside_messages() -> None:
    data = b"<11>boom\nTraceback (most recent call last):\n  x\x00<14>next\x00"
    assert three_ways(data, trailers=b"\x00") == [
        b"<11>boom\nTraceback (most recent call last):\n  x",
        b"<14>next",
    ]
    assert three_ways(data) == [b"<11>boom", b"Traceback (most recent call last):", b"  x", b"<14>next"]


def test_framer_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        SyslogFramer(0)
    with pytest.raises(ValueError):
        SyslogFramer(trailers=b"")
    with pytest.raises(ValueError):
        SyslogFramer(trailers=b";")
    assert SyslogFramer().max_message_bytes == MAX_SYSLOG_MESSAGE_BYTES == 64 * 1024


def test_framer_alone_on_a_receive_buffer() -> None:
    framer = SyslogFramer()
    buf = ReceiveBuffer()
    buf.feed(b"5 <14>a5 <1")
    assert framer.maybe_extract(buf) == b"<14>a"
    assert framer.maybe_extract(buf) is None
    assert bytes(buf) == b"5 <1"
    assert framer.maybe_extract_at_eof(buf) is None  # an octet-counted rest is truncated
    buf.feed(b"4>b<14>c")
    assert framer.maybe_extract(buf) == b"<14>b"
    assert framer.maybe_extract(buf) is None
    assert framer.maybe_extract_at_eof(buf) == b"<14>c"


# --- RFC 5424 ----------------------------------------------------------------------------------


def test_rfc5424_example_1_with_bom() -> None:
    rec = parse(
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8"
    )
    assert rec == {
        "levelno": 50,
        "levelname": "CRITICAL",
        "syslog_severity": "crit",
        "syslog_facility": "auth",
        "created": datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC).timestamp(),
        "hostname": "mymachine.example.com",
        "name": "su",
        "msgid": "ID47",
        "msg": "'su root' failed for lonvick on /dev/pts/8",
    }


def test_rfc5424_example_2_offset_and_procid() -> None:
    rec = parse(
        b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts."
    )
    tz = timezone(timedelta(hours=-7))
    assert rec["created"] == datetime(2003, 8, 24, 5, 14, 15, 3, tzinfo=tz).timestamp()
    assert (rec["levelno"], rec["syslog_severity"], rec["syslog_facility"]) == (20, "notice", "local4")
    assert (rec["hostname"], rec["name"], rec["process"]) == ("192.0.2.1", "myproc", 8710)
    assert rec["msg"] == "%% It's time to make the do-nuts."
    assert "msgid" not in rec and "sd" not in rec


def test_rfc5424_examples_3_and_4_structured_data() -> None:
    head = b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    sd = b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
    rec = parse(head + sd + b" \xef\xbb\xbfAn application event log entry...")
    assert rec["sd"] == {"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}}
    assert rec["msg"] == "An application event log entry..."
    rec = parse(head + sd + b'[examplePriority@32473 class="high"]')
    assert rec["sd"]["examplePriority@32473"] == {"class": "high"}
    assert rec["msg"] == ""


def test_structured_data_escapes() -> None:
    rec = parse(b'<14>1 - - - - - [x@1 q="a\\"b" b="c\\\\d" r="e\\]f" o="g\\nh" u="\xc3\xa9" e=""] m')
    assert rec["sd"] == {"x@1": {"q": 'a"b', "b": "c\\d", "r": "e]f", "o": "g\\nh", "u": "é", "e": ""}}
    assert rec["msg"] == "m"


def test_structured_data_repeated_params_and_ids() -> None:
    rec = parse(b'<14>1 - - - - - [origin ip="192.0.2.1" ip="192.0.2.2"][a x="1"][a y="2"]')
    assert rec["sd"] == {"origin": {"ip": ["192.0.2.1", "192.0.2.2"]}, "a": {"x": "1", "y": "2"}}
    rec = parse(b'<14>1 - - - - - [o ip="1" ip="2" ip="3"]')
    assert rec["sd"] == {"o": {"ip": ["1", "2", "3"]}}


def test_nil_values_everywhere() -> None:
    assert parse(b"<14>1 - - - - - -") == {
        "levelno": 20,
        "levelname": "INFO",
        "syslog_severity": "info",
        "syslog_facility": "user",
        "msg": "",
    }


def test_non_numeric_procid_and_bad_timestamp_go_to_extra() -> None:
    rec = parse(b"<14>1 2024-13-45T99:00:00Z h app worker-3 - - x")
    assert rec["syslog_timestamp"] == "2024-13-45T99:00:00Z"
    assert "created" not in rec
    assert rec["procid"] == "worker-3" and "process" not in rec


@pytest.mark.parametrize(
    ("rest", "sd", "invalid", "msg"),
    [
        (b'[broken sd="x" no close', None, None, '[broken sd="x" no close'),
        (b"[]", None, ["[]"], ""),
        (b'[id x="1"]garbage', {"id": {"x": "1"}}, None, "garbage"),
        (b"-garbage", None, None, "-garbage"),
        (b"[id x=1] m", {"id": {"x": "1"}}, None, "m"),  # unquoted: syslog-ng reads VMware's so
        (b'[id x="1" y] m', None, ['[id x="1" y]'], "m"),
        (b'[ok a="1"][bad x][ok b="2"] m', {"ok": {"a": "1", "b": "2"}}, ["[bad x]"], "m"),
    ],
)
def test_broken_structured_data_keeps_the_header_and_drops_only_the_bad_element(
    rest: bytes, sd: dict[str, Any] | None, invalid: list[str] | None, msg: str
) -> None:
    rec = parse(b"<14>1 2024-01-01T00:00:00Z host app - - " + rest)
    assert (rec["hostname"], rec["name"], rec["msg"]) == ("host", "app", msg)
    assert rec["created"] == datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    assert rec.get("sd") == sd
    assert rec.get("sd_invalid") == invalid


def test_rfc5424_version_other_than_1() -> None:
    rec = parse(b"<14>2 2024-01-01T00:00:00Z host app 42 ID7 - m")
    assert (rec["hostname"], rec["name"], rec["process"], rec["msgid"]) == ("host", "app", 42, "ID7")
    assert rec["syslog_version"] == 2 and rec["msg"] == "m"
    assert "syslog_version" not in parse(b"<14>1 2024-01-01T00:00:00Z host app 42 ID7 - m")
    # A number then words is RFC 3164 text, not a version.
    rec = parse(b"<14>2 apples fell off the tree today, said the farmer")
    assert rec["msg"] == "2 apples fell off the tree today, said the farmer" and "hostname" not in rec


def test_rfc5424_field_lengths_are_cut_as_syslog_ng_does() -> None:
    rec = parse(b"<14>1 - host " + b"a" * 60 + b" " + b"p" * 200 + b" " + b"m" * 40 + b" - x")
    assert rec["name"] == "a" * 48 and rec["procid"] == "p" * 128 and rec["msgid"] == "m" * 32
    assert rec["msg"] == "x"


# --- RFC 3164 and what real senders send -------------------------------------------------------


def test_rfc3164_example_su() -> None:
    rec = parse(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8")
    assert rec == {
        "levelno": 50,
        "levelname": "CRITICAL",
        "syslog_severity": "crit",
        "syslog_facility": "auth",
        "created": datetime(2025, 10, 11, 22, 14, 15, tzinfo=UTC).timestamp(),
        "hostname": "mymachine",
        "name": "su",
        "msg": "'su root' failed for lonvick on /dev/pts/8",
    }


def test_rfc3164_examples_without_tag_keep_all_text() -> None:
    # A word after the hostname is the TAG, colon or not, as rsyslog and syslog-ng read it.
    rec = parse(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!")
    assert (rec["hostname"], rec["name"], rec["msg"]) == ("10.0.0.99", "Use", "the BFG!")
    assert rec["created"] == datetime(2025, 2, 5, 17, 32, 18, tzinfo=UTC).timestamp()
    rec = parse(b"<165>Aug 24 05:34:00 CST 1987 mymachine myproc[10]: %% It's time. %% Jam=OK")
    assert rec["msg"].endswith("myproc[10]: %% It's time. %% Jam=OK")
    rec = parse(
        b"<0>1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 sched[0]: That's All Folks!"
    )
    assert (
        rec["msg"]
        == "1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 sched[0]: That's All Folks!"
    )
    assert rec["levelname"] == "CRITICAL" and rec["syslog_severity"] == "emerg"


def test_rfc3164_tag_without_hostname_and_pid() -> None:
    rec = parse(b"<30>Nov  8 01:02:03 sshd[1234]: Accepted publickey")
    assert (rec["name"], rec["process"], rec["msg"]) == ("sshd", 1234, "Accepted publickey")
    assert "hostname" not in rec
    rec = parse(b"<30>Nov  8 01:02:03 host kernel: [ 0.000000] Linux version")
    assert (rec["hostname"], rec["name"], rec["msg"]) == ("host", "kernel", "[ 0.000000] Linux version")
    assert rec["created"] == datetime(2025, 11, 8, 1, 2, 3, tzinfo=UTC).timestamp()


def test_rfc3164_fraction_and_rfc3339_timestamp() -> None:
    rec = parse(b"<30>Nov  8 01:02:03.250 host app: x")
    assert rec["created"] == datetime(2025, 11, 8, 1, 2, 3, 250000, tzinfo=UTC).timestamp()
    rec = parse(b"<34>2003-10-11T22:14:15.003Z mymachine su: hi")  # rsyslog's high-precision format
    assert rec["created"] == datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC).timestamp()
    assert (rec["hostname"], rec["name"], rec["msg"]) == ("mymachine", "su", "hi")


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (b"AUG 10 22:18:24", datetime(2025, 8, 10, 22, 18, 24)),  # upper-case month (rsyslog)
        (b"aug 10 22:18:24", datetime(2025, 8, 10, 22, 18, 24)),
        (b"Mar 7 19:06:53", datetime(2025, 3, 7, 19, 6, 53)),  # day not padded
        (b"Mar 07 19:06:53", datetime(2025, 3, 7, 19, 6, 53)),
        (b"Mar 7 2008 19:06:53", datetime(2008, 3, 7, 19, 6, 53)),  # year before the time
        (b"Apr 15 21:28:13 2007", datetime(2007, 4, 15, 21, 28, 13)),  # year after the time
        (b"Mar  7 19:06:53:", datetime(2025, 3, 7, 19, 6, 53)),  # colon after the time
        (b"Mar 7 2008 19:06:53:", datetime(2008, 3, 7, 19, 6, 53)),
        (b" Mar  7 19:06:53", datetime(2025, 3, 7, 19, 6, 53)),  # a space after the PRI
        (b"2026-11-28 06:00:00", datetime(2026, 11, 28, 6)),  # ISO date, space, time
        (b"2026-11-28 06:00:00.5+01:00", datetime(2026, 11, 28, 5, 0, 0, 500000)),
    ],
)
def test_rfc3164_header_variants_rsyslog_and_syslog_ng_accept(stamp: bytes, expected: datetime) -> None:
    rec = parse(b"<14>" + stamp + b" host app: msg")
    assert rec["created"] == expected.replace(tzinfo=UTC).timestamp()
    assert (rec["hostname"], rec["name"], rec["msg"]) == ("host", "app", "msg")


def test_rfc3164_a_four_digit_hostname_outside_19xx_20xx_is_a_hostname() -> None:
    rec = parse(b"<14>Apr 15 21:28:13 3000 app: msg")
    assert (rec["hostname"], rec["name"]) == ("3000", "app")
    assert rec["created"] == datetime(2025, 4, 15, 21, 28, 13, tzinfo=UTC).timestamp()


def test_rfc3164_tag_without_colon_and_hostnames() -> None:
    rec = parse(b"<14>Oct 11 22:14:15 host tag[77] the message")
    assert (rec["hostname"], rec["name"], rec["process"], rec["msg"]) == ("host", "tag", 77, "the message")
    rec = parse(b"<14>Oct 11 22:14:15 2001:db8::1 app: v6")  # an IPv6 hostname, not a year
    assert (rec["hostname"], rec["name"], rec["msg"]) == ("2001:db8::1", "app", "v6")
    rec = parse(b"<14>Oct 11 22:14:15 host [audit] user=x")  # no word can be the TAG
    assert (rec["hostname"], rec["msg"]) == ("host", "[audit] user=x") and "name" not in rec
    # Without a timestamp a TAG still needs its colon (SysLogHandler sends "<14>text").
    rec = parse(b"<14>disk full on /var")
    assert "name" not in rec and rec["msg"] == "disk full on /var"


def test_structured_data_after_an_rfc3164_tag() -> None:
    rec = parse(b'<190>Feb 13 21:31:56 host app:  [origin software="rsyslogd" x-pid="1"][m a="b"] start')
    assert rec["sd"] == {"origin": {"software": "rsyslogd", "x-pid": "1"}, "m": {"a": "b"}}
    assert (rec["name"], rec["msg"]) == ("app", "start")
    # Only whole, quoted, non-empty elements: brackets in ordinary text stay text.
    for text in ("[INFO] started", "[ 0.000000] Linux", "[x a=b] unquoted", '[x a="b"]tail', '[x a="b"'):
        rec = parse(b"<14>Feb 13 21:31:56 host app: " + text.encode())
        assert rec["msg"] == text and "sd" not in rec


@pytest.mark.parametrize(
    "rest",
    [
        b"[a b]" * 20_000,
        b"[a b=" * 20_000,
        b'[a b="' * 20_000,
        b"[" + b"a" * 100_000,
        b"[a " + b"b" * 100_000 + b"=x]",
        b"]" * 100_000,
        b"[a x=1]" * 15_000,
    ],
)
def test_hostile_structured_data_costs_linear_time(rest: bytes) -> None:
    # A quadratic scan of 100 kB takes tens of seconds; linear ones take milliseconds. The
    # bound is loose for slow machines, tight enough to catch a quadratic one.
    import time

    fmt = SyslogFormat(NOW)
    t0 = time.perf_counter()
    rec = fmt.parse(b"<14>1 - h a - - " + rest)
    rec3164 = fmt.parse(b"<14>Feb 13 21:31:56 host app: " + rest)
    assert time.perf_counter() - t0 < 2.0
    assert rec["hostname"] == "h" and rec3164["name"] == "app"


@pytest.mark.parametrize(
    ("now", "stamp", "expected"),
    [
        (datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC), b"Dec 31 23:59:50", datetime(2024, 12, 31, 23, 59, 50)),
        (datetime(2024, 12, 31, 23, 59, tzinfo=UTC), b"Jan  1 00:00:10", datetime(2025, 1, 1, 0, 0, 10)),
        (datetime(2025, 11, 28, tzinfo=UTC), b"Feb 10 08:00:00", datetime(2025, 2, 10, 8)),  # past
        (datetime(2025, 11, 28, tzinfo=UTC), b"Dec  2 08:00:00", datetime(2025, 12, 2, 8)),  # skew
        (datetime(2025, 11, 28, tzinfo=UTC), b"Dec 28 08:00:00", datetime(2024, 12, 28, 8)),
        (datetime(2025, 3, 1, tzinfo=UTC), b"Feb 29 12:00:00", datetime(2024, 2, 29, 12)),
    ],
)
def test_rfc3164_year_is_inferred_from_now(now: datetime, stamp: bytes, expected: datetime) -> None:
    rec = parse(b"<14>" + stamp + b" host app: m", now=now.timestamp())
    assert rec["created"] == expected.replace(tzinfo=UTC).timestamp()


TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


def test_rfc3164_time_is_read_in_the_assumed_zone() -> None:
    msg = b"<14>Nov 28 09:00:00 host app: m"
    assert (
        SyslogFormat(NOW, tz=TOKYO).parse(msg)["created"] == datetime(2025, 11, 28, 0, tzinfo=UTC).timestamp()
    )
    assert SyslogFormat(NOW).parse(msg)["created"] == datetime(2025, 11, 28, 9, tzinfo=UTC).timestamp()
    assert SyslogFormat(NOW).tz is UTC


def test_rfc3164_year_is_inferred_in_the_assumed_zone() -> None:
    # 23:30 UTC on Dec 31 is already Jan 1 in Tokyo: "Jan  1 08:00:00" there is this new year.
    now = datetime(2024, 12, 31, 23, 30, tzinfo=UTC).timestamp()
    rec = SyslogFormat(now, tz=TOKYO).parse(b"<14>Jan  1 08:00:00 host app: m")
    assert rec["created"] == datetime(2025, 1, 1, 8, tzinfo=TOKYO).timestamp()


def test_rfc3164_times_a_dst_change_skips_or_repeats_are_read_as_postgresql_does() -> None:
    now = datetime(2018, 11, 20, tzinfo=UTC).timestamp()
    fmt = SyslogFormat(now, tz=NEW_YORK)
    repeated = fmt.parse(b"<14>Nov  4 01:30:00 host app: m")["created"]
    assert repeated == datetime(2018, 11, 4, 6, 30, tzinfo=UTC).timestamp()  # 01:30 EST, the later
    skipped = fmt.parse(b"<14>Mar 11 02:30:00 host app: m")["created"]
    assert skipped == datetime(2018, 3, 11, 7, 30, tzinfo=UTC).timestamp()  # as 03:30 EDT


def test_an_offset_wins_over_the_assumed_zone_and_a_missing_one_takes_it() -> None:
    fmt = SyslogFormat(NOW, tz=TOKYO)
    with_offset = fmt.parse(b"<14>1 2003-10-11T22:14:15.003Z host app - - - m")["created"]
    assert with_offset == datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC).timestamp()
    naive_5424 = fmt.parse(b"<14>1 2003-10-11T22:14:15 host app - - - m")["created"]
    assert naive_5424 == datetime(2003, 10, 11, 22, 14, 15, tzinfo=TOKYO).timestamp()
    naive_3339 = fmt.parse(b"<34>2003-10-11T22:14:15 mymachine su: hi")["created"]
    assert naive_3339 == datetime(2003, 10, 11, 22, 14, 15, tzinfo=TOKYO).timestamp()


def test_rfc3164_without_now_keeps_the_timestamp_text() -> None:
    rec = parse(b"<14>Oct 11 22:14:15 host app: m", now=None)
    assert "created" not in rec
    assert rec["syslog_timestamp"] == "Oct 11 22:14:15"
    fmt = SyslogFormat()
    assert "created" in fmt.parse(b"<14>Oct 11 22:14:15 host app: m", now=NOW)
    fmt.now = NOW
    assert "created" in fmt.parse(b"<14>Oct 11 22:14:15 host app: m")


@pytest.mark.parametrize("stamp", [b"Feb 30 12:00:00", b"Oct 11 25:14:15", b"Oct  0 22:14:15"])
def test_rfc3164_impossible_dates_are_kept_as_text(stamp: bytes) -> None:
    rec = parse(b"<14>" + stamp + b" host app: m")
    assert rec["syslog_timestamp"] == stamp.decode() and "created" not in rec
    assert rec["name"] == "app"


def test_tags() -> None:
    assert parse(b"<14>app.module: hello")["name"] == "app.module"
    assert parse(b"<14>myapp[worker-1]: x")["procid"] == "worker-1"
    assert parse(b"<14>myapp:")["msg"] == ""
    rec = parse(b"<14>see http://example.com/ now")
    assert "name" not in rec and rec["msg"] == "see http://example.com/ now"
    rec = parse(b"<14>http://example.com/")
    assert "name" not in rec and rec["msg"] == "http://example.com/"


@pytest.mark.parametrize("severity", range(8))
def test_severity_mapping(severity: int) -> None:
    rec = parse(b"<%d>x" % (8 * 17 + severity))
    expected = [50, 50, 50, 40, 30, 20, 20, 10][severity]
    assert rec["levelno"] == expected
    assert rec["levelname"] == logging.getLevelName(expected)
    assert rec["syslog_severity"] == SEVERITY_NAMES[severity]
    assert rec["syslog_facility"] == "local1"


def test_facility_names_match_the_stdlib() -> None:
    names = logging.handlers.SysLogHandler.facility_names
    for i, name in enumerate(FACILITY_NAMES):
        assert names[name] == i
    assert parse(b"<0>x")["syslog_facility"] == "kern"
    assert parse(b"<191>x")["syslog_facility"] == "local7"


@pytest.mark.parametrize(
    "msg", [b"garbage", b"14>x", b"<>x", b"<192>x", b"<1234>x", b"<1a>x", b"<-1>x", b"< 1>x"]
)
def test_no_valid_pri_is_user_notice_and_the_whole_text_is_kept(msg: bytes) -> None:
    rec = parse(msg)
    assert (rec["syslog_facility"], rec["syslog_severity"], rec["levelno"]) == ("user", "notice", 20)
    assert rec["msg"] == msg.decode()


@pytest.mark.parametrize("msg", [b"", b" ", b"\x00\n", b"\r\n\t "])
def test_an_empty_message_is_malformed(msg: bytes) -> None:
    assert malformed(msg) == "malformed"


def test_whitespace_around_the_message_is_ignored() -> None:
    rec = parse(b"\n  \x00<14>app: hi \t\r\n")
    assert (rec["name"], rec["msg"], rec["syslog_severity"]) == ("app", "hi", "info")


def test_invalid_utf8_and_nuls_do_not_crash() -> None:
    rec = parse(b"<14>app: caf\xe9 \xff\xfe\x00mid\x00")
    assert rec["msg"] == "caf\ufffd \ufffd\ufffd\x00mid"
    rec = parse(b'<14>1 - h\xff app - - [id p="\xff"] \xed\xa0\x80')  # an encoded surrogate
    assert rec["hostname"] == "h\ufffd" and rec["sd"] == {"id": {"p": "\ufffd"}}
    assert rec["msg"] == "\ufffd\ufffd\ufffd"


def test_huge_message() -> None:
    body = b"x" * (1 << 20)
    assert parse(b"<14>app: " + body)["msg"] == body.decode()
    assert parse(b"<14>1 - - - - - [" + b"a" * 100_000)["msg"].startswith("[aaa")


def test_trailing_newlines_and_nul_are_ignored() -> None:
    assert parse(b"<14>app: hi\r\n\x00")["msg"] == "hi"


# --- Python's SysLogHandler, for real ---------------------------------------------------------


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(10)
    yield sock
    sock.close()


def read_all(listener: socket.socket) -> bytes:
    conn, _ = listener.accept()
    conn.settimeout(10)
    data = b""
    with conn:
        while chunk := conn.recv(65536):
            data += chunk
    return data


def _exc_record() -> logging.LogRecord:
    record = make_record("failed", level=logging.ERROR)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    return record


def test_stdlib_sysloghandler_udp(udp_socket: socket.socket) -> None:
    handler = logging.handlers.SysLogHandler(("127.0.0.1", udp_socket.getsockname()[1]))
    try:
        handler.emit(make_record("plain"))
        handler.ident = "myapp: "
        handler.setFormatter(logging.Formatter("%(name)s[%(process)d]: %(message)s"))
        handler.emit(make_record("with ident", level=logging.WARNING))
        handler.ident = ""
        handler.facility = handler.LOG_LOCAL3
        handler.emit(make_record("formatted", level=logging.DEBUG))
        handler.setFormatter(logging.Formatter())
        handler.emit(_exc_record())
        handler.append_nul = False
        handler.emit(make_record("no nul", level=logging.CRITICAL))
    finally:
        handler.close()
    grams = [udp_socket.recv(65536) for _ in range(5)]
    assert grams[0] == b"<14>plain\x00"  # what CPython sends: <PRI>, the message, a NUL
    recs = [SyslogFormat().parse(g) for g in grams]
    assert (recs[0]["msg"], recs[0]["levelno"]) == ("plain", 20)
    assert "name" not in recs[0] and "created" not in recs[0]
    assert (recs[1]["name"], recs[1]["levelname"]) == ("myapp", "WARNING")
    assert recs[1]["msg"].startswith("app.module[")
    assert (recs[2]["name"], recs[2]["levelname"], recs[2]["syslog_facility"]) == (
        "app.module",
        "DEBUG",
        "local3",
    )
    assert recs[2]["process"] > 0 and recs[2]["msg"] == "formatted"
    assert recs[3]["levelname"] == "ERROR"
    assert recs[3]["msg"].startswith("failed\nTraceback (most recent call last):")
    assert recs[3]["msg"].endswith("ValueError: boom")
    assert (recs[4]["msg"], recs[4]["levelname"]) == ("no nul", "CRITICAL")


def test_stdlib_sysloghandler_tcp(tcp_listener: socket.socket) -> None:
    port = tcp_listener.getsockname()[1]
    handler = logging.handlers.SysLogHandler(("127.0.0.1", port), socktype=socket.SOCK_STREAM)
    try:
        handler.ident = "svc: "
        for i in range(3):
            handler.emit(make_record(f"m{i}"))
        handler.emit(_exc_record())
        handler.emit(make_record("after"))
    finally:
        handler.close()
    data = read_all(tcp_listener)
    assert data.startswith(b"<14>svc: m0\x00<14>svc: m1\x00")  # no count, no LF: NUL-terminated

    # NUL-only trailers: every message whole, the traceback included.
    recs = run([data], SyslogFramer(trailers=b"\x00"), SyslogFormat())
    assert [r["msg"] for r in recs if isinstance(r, dict)][:3] == ["m0", "m1", "m2"]
    assert isinstance(recs[3], dict) and "ValueError: boom" in recs[3]["msg"]
    assert isinstance(recs[4], dict) and recs[4]["msg"] == "after" and len(recs) == 5

    # Default trailers (LF or NUL): the first message ended with NUL, so from then on only NUL
    # does, and the traceback arrives whole too.
    recs = run([data], SyslogFramer(), SyslogFormat())
    assert [r["msg"].splitlines()[0] for r in recs if isinstance(r, dict)] == [
        "m0",
        "m1",
        "m2",
        "failed",
        "after",
    ]
    assert "ValueError: boom" in recs[3]["msg"]  # type: ignore[index]
    assert not any(isinstance(r, (str, ProtocolError)) for r in recs)


# --- util-linux logger, for real ---------------------------------------------------------------

LOGGER = shutil.which("logger")
needs_logger = pytest.mark.skipif(LOGGER is None, reason="util-linux logger is not installed")


def run_logger(args: list[str], port: int) -> None:
    assert LOGGER is not None
    cmd = [LOGGER, "-n", "127.0.0.1", "-P", str(port), "-t", "myapp", "-p", "local3.err", *args]
    subprocess.run(cmd, check=True, timeout=10, capture_output=True)


@needs_logger
@pytest.mark.slow
@pytest.mark.parametrize("style", ["--rfc5424", "--rfc3164"])
def test_logger_udp(udp_socket: socket.socket, style: str) -> None:
    run_logger(["-d", style, "--id=4242", "hello wörld"], udp_socket.getsockname()[1])
    gram = udp_socket.recv(65536)
    rec = SyslogFormat(now=datetime.now(UTC).timestamp()).parse(gram)
    assert (rec["name"], rec["process"], rec["msg"]) == ("myapp", 4242, "hello wörld")
    assert (rec["levelname"], rec["syslog_severity"], rec["syslog_facility"]) == ("ERROR", "err", "local3")
    assert rec["hostname"] and socket.gethostname().startswith(rec["hostname"])  # logger cuts at "."
    assert abs(rec["created"] - datetime.now(UTC).timestamp()) < 24 * 3600  # 3164: local time as UTC
    if style == "--rfc5424":
        assert rec["sd"]["timeQuality"]["tzKnown"] == "1"


@needs_logger
@pytest.mark.slow
def test_logger_tcp_non_transparent_and_octet_counted(tcp_listener: socket.socket) -> None:
    port = tcp_listener.getsockname()[1]
    streams = []
    for args in (
        ["-T", "--rfc5424", "plain tcp"],
        ["-T", "--rfc3164", "old style"],
        [
            "-T",
            "--rfc5424",
            "--octet-count",
            "--msgid",
            "ID47",
            "--sd-id",
            "zoo@123",
            "--sd-param",
            'tiger="hungry\\"x\\]y"',
            "counted",
        ],
    ):
        run_logger(args, port)
        streams.append(read_all(tcp_listener))
    assert streams[0].endswith(b"plain tcp\n")  # logger -T: LF framing
    assert streams[2][:1].isdigit()  # --octet-count: "LEN <PRI>1 ..."
    recs = [run([s], SyslogFramer(), SyslogFormat(now=datetime.now(UTC).timestamp())) for s in streams]
    assert [len(r) for r in recs] == [1, 1, 1]
    plain, old, counted = (r[0] for r in recs)
    assert isinstance(plain, dict) and isinstance(old, dict) and isinstance(counted, dict)
    assert (plain["name"], plain["msg"], plain["levelno"]) == ("myapp", "plain tcp", 40)
    assert (old["name"], old["msg"]) == ("myapp", "old style")
    assert counted["msgid"] == "ID47"
    assert counted["sd"]["zoo@123"] == {"tiger": 'hungry"x]y'}
    assert counted["msg"] == "counted"
    # And byte by byte, all three streams on one connection.
    data = b"".join(streams)
    one_by_one = run([data[i : i + 1] for i in range(len(data))], SyslogFramer(), SyslogFormat(now=NOW))
    assert [r["msg"] for r in one_by_one if isinstance(r, dict)] == ["plain tcp", "old style", "counted"]


# --- properties --------------------------------------------------------------------------------

_token = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20).filter(
    lambda s: s != "-"
)
_sd_name = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='= ]"'), min_size=1, max_size=10
)
_sd_value = st.text(st.characters(codec="utf-8"), max_size=12)
_msg = st.text(st.characters(codec="utf-8"), max_size=40).filter(
    lambda s: not s.startswith("\ufeff") and s == s.rstrip(" \t\n\r\x0b\x0c\x00")
)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@settings(max_examples=examples(300), deadline=None)
@given(
    st.integers(0, 191),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)),
    _token,
    _token,
    _token | st.integers(0, 2**31).map(str),
    _token,
    st.dictionaries(_sd_name, st.dictionaries(_sd_name, _sd_value, max_size=3), max_size=3),
    _msg,
)
def test_rfc5424_round_trip(
    pri: int,
    when: datetime,
    hostname: str,
    app: str,
    procid: str,
    msgid: str,
    sd: dict[str, dict[str, str]],
    msg: str,
) -> None:
    sd_text = "".join(
        "[" + sd_id + "".join(f' {k}="{_escape(v)}"' for k, v in params.items()) + "]"
        for sd_id, params in sd.items()
    )
    line = f"<{pri}>1 {when.isoformat()} {hostname} {app} {procid} {msgid} {sd_text or '-'} {msg}"
    rec = SyslogFormat().parse(line.encode())
    assert rec["created"] == when.timestamp()
    assert (rec["hostname"], rec["name"], rec["msgid"], rec["msg"]) == (hostname, app, msgid, msg)
    if procid.isdigit() and len(procid) < 19:
        assert rec["process"] == int(procid)
    else:
        assert rec["procid"] == procid
    assert rec.get("sd", {}) == sd
    assert rec["syslog_severity"] == SEVERITY_NAMES[pri & 7]
    assert rec["syslog_facility"] == FACILITY_NAMES[pri >> 3]


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_messages_give_a_dict_or_malformed(msg: bytes) -> None:
    try:
        rec = SyslogFormat(now=NOW).parse(b"<13>" + msg)
    except RecordRejected as exc:  # only an empty message is rejected
        assert exc.reason == "malformed" and not msg.strip(b" \t\n\r\x0b\x0c\x00")
        return
    assert type(rec["msg"]) is str
    try:
        SyslogFormat(now=NOW).parse(msg)
    except RecordRejected as exc:
        assert exc.reason == "malformed"


_PIECES = [octet(M1), octet(M2), b"<14>a\n", b"<14>b\x00", b"\r\n", b"12", b"0", b" ", b"x" * 40, b"<1", b"9"]


# Issue 10: found on a fresh clone. Cut at 10, the first (oversized) message was discarded
# before its LF arrived, and the discarding path did not let that LF decide the stream's
# trailers; the NUL after "two<14>b" then did, and the last message was no longer cut at its LF.
_CHUNKING_EXAMPLE = [b" ", octet(M1), b"<14>b\x00", b" ", octet(M1)]


# pieces, cut points, cap (tests/wire/test_thorough.py runs this property again, longer).
STREAMS = (
    st.lists(st.sampled_from(_PIECES) | st.binary(max_size=6), max_size=20),
    st.lists(st.integers(0, 2000), max_size=6),
    st.integers(8, 200),
)


@settings(max_examples=examples(300), deadline=None)
@given(*STREAMS)
@example(_CHUNKING_EXAMPLE, [10], 8)
def test_arbitrary_streams_yield_records_rejections_or_one_protocol_error(
    pieces: list[bytes], cuts: list[int], cap: int
) -> None:
    data = b"".join(pieces)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]
    result = run(chunks, SyslogFramer(cap), SyslogFormat(now=NOW))
    for item in result[:-1]:
        assert isinstance(item, dict | str)
    # Chunking never changes the outcome.
    assert _summary(result) == _summary(run([data], SyslogFramer(cap), SyslogFormat(now=NOW)))


def _summary(items: list[Item]) -> list[Any]:
    return [("ERR", i.reason) if isinstance(i, ProtocolError) else i for i in items]


def test_a_nul_terminated_stream_keeps_later_multi_line_messages_whole() -> None:
    # Python's SysLogHandler over TCP: "<PRI>msg\x00" each; logger.exception adds newlines.
    stream = b"<11>app: first\x00<11>app: Traceback (most recent call last):\n  File x\nValueError: y\x00"
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        out = run(chunks)
        assert [x["msg"] if isinstance(x, dict) else x for x in out] == [
            b"<11>app: first",
            b"<11>app: Traceback (most recent call last):\n  File x\nValueError: y",
        ]


def test_a_newline_terminated_stream_still_splits_at_newlines() -> None:
    out = run([b"<11>a: one\n<11>a: two\n"])
    assert [x["msg"] if isinstance(x, dict) else x for x in out] == [b"<11>a: one", b"<11>a: two"]


def test_an_oversized_first_message_discarded_before_its_lf_still_decides_the_trailers() -> None:
    # The issue 10 example, cut where it was found and every other way: the LF that ends the
    # oversized first message decides "LF and NUL", so the last message is cut at its LF too.
    data = b"".join(_CHUNKING_EXAMPLE)
    expected = ["!oversized", b"two<14>b", "!oversized", b"two"]
    assert frames([data], 8) == expected
    assert frames([data[:10], data[10:]], 8) == expected
    assert three_ways(data, 8) == expected


def test_an_oversized_first_message_discarded_before_its_nul_chooses_nul_only() -> None:
    data = b"<14>" + b"x" * 20 + b"\x00<14>a\nb\x00"
    assert three_ways(data, 8) == ["!oversized", b"<14>a\nb"]
    assert frames([data[:12], data[12:]], 8) == ["!oversized", b"<14>a\nb"]


# --- framing: lines that start with digits beside octet-counted messages (issue 14) ----------

_COUNT = re.compile(rb"[0-9]+ <")
# A line with no <PRI>: often digits first (a date, a status code, a count), then anything but
# a trailer or CR; one that reads as a count prefix (DIGITS SP "<") is an octet count instead.
_LINES = st.builds(
    lambda digits, sep, rest: digits + sep + rest,
    st.text("0123456789", max_size=8).map(str.encode),
    st.sampled_from([b"", b" ", b"  ", b"-", b":", b"a", b" <", b"\t"]),
    st.binary(max_size=12).map(lambda b: b.translate(None, b"\n\r\x00")),
)
_OCTET_MESSAGES = st.binary(max_size=12).map(lambda b: b"<" + b)
FRAMING_CASES = (
    st.lists(st.tuples(st.booleans(), _LINES | _OCTET_MESSAGES), max_size=8),
    st.lists(st.integers(0, 400), max_size=6),
)


@settings(max_examples=examples(300), deadline=None)
@given(*FRAMING_CASES)
def test_digit_lines_and_octet_counted_messages_frame_as_sent(
    messages: list[tuple[bool, bytes]], cuts: list[int]
) -> None:
    # Each message is sent octet-counted (True, when it starts with "<" as a SYSLOG-MSG does)
    # or as a line; however the stream is cut, the framer gives back exactly what was sent.
    sent, data = [], b""
    for counted, msg in messages:
        if counted and msg[:1] == b"<":
            data += octet(msg)
        elif not msg or _COUNT.match(msg) or any(t in msg for t in (b"\n", b"\r", b"\x00")):
            continue  # not a line: empty, a count prefix, or a trailer inside
        else:
            data += msg + b"\n"
        sent.append(msg)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]
    assert frames(chunks) == sent
