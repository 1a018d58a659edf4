"""Syslog: TCP framing (RFC 6587) and message parsing (RFC 5424, RFC 3164 and what senders send).

Sans-IO: bytes in, frames or record dicts out. No sockets, no clock: RFC 3164 timestamps have
no year, so the caller tells the format what time it is (``SyslogFormat.now``), once per read;
nor zone, so the caller says which zone to read them in (``SyslogFormat(tz=...)``, from
``--assume-timezone``), once.

Framing (``SyslogFramer``, RFC 6587 section 3.4). Each message on a TCP stream is framed one of
two ways, and senders may mix them, so the first byte of each message decides::

    octet counting       MSG-LEN SP SYSLOG-MSG      MSG-LEN = NONZERO-DIGIT *DIGIT, in bytes
                         "137 <155>1 2026-...Z vm myapp - ID47 [...] hello"
    non-transparent      SYSLOG-MSG TRAILER         TRAILER = LF, or NUL (RFC 6587 3.4.2: "ASCII
                         "<14>myapp: hello\\x00"      NUL (%d00) being a prominent example")

- A message is octet-counted when it starts with digits followed by one space and ``<`` (the
  SYSLOG-MSG of RFC 6587 is an RFC 5424 message, which starts with its PRI). Anything else,
  digits included, is a non-transparent message: a line with no ``<PRI>`` that starts with a
  digit ("2026-11-29 12:00:00 started", "404 not found") is a line, as rsyslog and syslog-ng
  store lines with no PRI, not a count. The decision waits for those bytes (the digits, the
  space, the ``<``): it depends on the stream, never on how it was cut. A run of digits longer
  than ``max_message_bytes`` is a line (over the cap, so discarded as one). A count over the
  cap, or with a leading zero, is a ``ProtocolError``: we cannot find the next message
  without reading this one, so the stream cannot be kept in step.
- Any other message runs to its trailer; one ``CR`` before the trailer is dropped. An oversized
  one is discarded up to its trailer and reported once as ``RecordRejected("oversized")``, with
  bounded memory, exactly as ``LineFramer`` does.
- LF, CR and NUL between messages are skipped (``"\\r\\n"`` trailers, an LF after an
  octet-counted message).
- At EOF, a last non-transparent message without a trailer is still a message (digits that
  never got their `` <`` included); an incomplete octet-counted one is ``truncated``.

Trailers: by default both LF and NUL end a non-transparent message. Python's
``logging.handlers.SysLogHandler`` over TCP sends ``b"<PRI>" + msg + b"\\x00"`` with no count and
no LF, so a message with a traceback in it (the default ``Formatter`` appends one) is cut at
each newline; ``SyslogFramer(trailers=b"\\x00")`` keeps such messages whole for a listener that
only Python senders use.

Parsing (``SyslogFormat.parse``)::

    RFC 5424  <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [SP [BOM] MSG]
              <165>1 2003-10-11T22:14:15.003Z host evntslog - ID47 [ex@32473 iut="3"] text
    RFC 3164  <PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG
              <34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8
    stdlib    <PRI>MSG, or <PRI>IDENT MSG        (SysLogHandler: no timestamp, no hostname,
              <14>myapp: hello\\x00                 NUL-terminated unless append_nul = False)

- ``<PRI>`` is 1-3 digits, at most 191. A message without a valid one is not dropped: it is
  stored as user.notice (13), its whole text read as below, as rsyslog and syslog-ng do.
  Whitespace and NUL around the message are ignored (Vector trims; rsyslog skips leading
  whitespace). Only an empty message is rejected, as ``malformed``. Everything after the PRI
  is decoded as UTF-8, invalid bytes replaced by U+FFFD.
- A VERSION (``1``, or any ``2``..``999`` followed by an RFC 3339 TIMESTAMP or ``-``, as
  go-syslog's tests use) means RFC 5424; a VERSION other than 1 is kept in
  ``extra["syslog_version"]``. Once the six header fields are there, the header is kept
  whatever follows: a malformed SD-ELEMENT is dropped alone (Vector's syslog source does the
  same), its text kept in ``extra["sd_invalid"]``; an element that never closes starts the
  MSG; text where STRUCTURED-DATA should be is the MSG. An unquoted PARAM-VALUE
  (``[Originator@6876 sub=Vimsvc.ha-eventmgr]``, as VMware ESXi sends) is read as syslog-ng
  reads it. APP-NAME, PROCID and MSGID longer than RFC 5424's 48, 128 and 32 characters are
  cut to those lengths, as syslog-ng does. Fewer than six fields: read the RFC 3164 way, which
  accepts any text, so no message is lost for its syntax.
- RFC 3164: the timestamp and the hostname are optional, as real senders omit them. The
  timestamp is ``Mmm dd hh:mm:ss`` with the variants rsyslog and syslog-ng accept: month in
  any case (``AUG``), day padded or not, a year before or after the time (``Mar 7 2008
  19:06:53``, ``Apr 15 21:28:13 2007``; a year is 19xx/20xx), a fraction, a colon after the
  time, spaces after the PRI; or RFC 3339 (rsyslog's high-precision forwarding), or ISO 8601
  with a space for the ``T``. A TAG is a word without spaces, colons or brackets, then
  ``[PID]`` optionally, then ``:`` and a space. After a timestamp, the next word is the
  HOSTNAME if it can be one (letters, digits, ``.-_:@/``), and then a TAG may come without its
  colon (``host tag msg``), as both read it. Without a timestamp there is no HOSTNAME and a
  TAG needs its colon, so a stdlib message ``"Error: disk full"`` without ident reads as TAG
  ``Error`` (rsyslog reads it the same way) while ``"disk full"`` is all message.
  Structured data right after a TAG (``app:  [origin software="rsyslogd"] start``, rsyslog's
  forwarding format) is read when every element is whole and has a quoted parameter, so
  ``[INFO] started`` stays text.
- Where we read otherwise than those parsers, ``tests/wire/test_syslog_corpus.py`` lists the
  case and why: a year after the time, which rsyslog takes for a hostname; a first word without
  a timestamp, which rsyslog takes for a hostname; one word after the time, which syslog-ng
  takes for the program (rsyslog and we: the hostname); escapes in SD values, which go-syslog
  keeps; Cisco's and AIX's prefixes; and where syslog-ng refuses a whole message for an
  over-long or badly quoted SD name or value, we keep it.
- RFC 3164 time: no year (unless written), no zone. The zone is the format's ``tz`` (UTC
  unless the server was given ``--assume-timezone``); a time a DST change skips or repeats is
  read as ``wire.localtime`` says (the later instant, PostgreSQL's rule). An RFC 5424 or RFC
  3339 timestamp without an offset, which RFC 5424 forbids, is read in ``tz`` too. The year is
  the latest that puts the time no more than 7 days after ``now`` (so Dec 31 received on Jan 1
  is last year's, Jan 1 from a clock running ahead on Dec 31 is next year's, and a replayed
  log is in the past, never months ahead; Vector only handles the first case). With ``now``
  unset there is no ``created`` (the store uses the receive time) and the original text is
  kept in ``extra["syslog_timestamp"]``.

Mapping to the record (``severity`` and ``facility`` are the two halves of PRI)::

    levelno/levelname   severity 0-2 emerg/alert/crit -> 50 CRITICAL, 3 err -> 40 ERROR,
                        4 warning -> 30 WARNING, 5 notice, 6 info -> 20 INFO, 7 debug -> 10 DEBUG
    name                APP-NAME (5424), TAG (3164)
    process             PROCID / [PID] when it is a number, else extra "procid"
    created             TIMESTAMP (see above); unparsable: extra "syslog_timestamp"
    msg                 MSG (a leading BOM removed)
    extra               syslog_severity ("err"), syslog_facility ("local3"), hostname, msgid,
                        sd: {SD-ID: {PARAM-NAME: value}} (a repeated PARAM-NAME: a list of values),
                        sd_invalid: [malformed SD-ELEMENT text], syslog_version (when not 1)
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import datetime as _dt
import re

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.buffer import ReceiveBuffer
from logsvc.wire.localtime import local_epoch

__all__ = ["FACILITY_NAMES", "MAX_SYSLOG_MESSAGE_BYTES", "SEVERITY_NAMES", "SyslogFormat", "SyslogFramer"]

# The largest syslog message we accept: 64 KiB, syslog-ng's default log-msg-size. RFC 5424
# section 6.1 only requires receivers to take 480 bytes and asks for 2048; RFC 5425 section
# 4.3.1 asks TLS receivers for 8192; rsyslog's maxMessageSize defaults to 8 KiB. A UDP datagram
# cannot be larger than 65507 bytes anyway.
MAX_SYSLOG_MESSAGE_BYTES = 64 * 1024

SEVERITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
# As <syslog.h> and logging.handlers.SysLogHandler.facility_names name them.
FACILITY_NAMES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    *(f"local{i}" for i in range(8)),
)
_SEVERITY_LEVELS = (
    (50, "CRITICAL"),
    (50, "CRITICAL"),
    (50, "CRITICAL"),
    (40, "ERROR"),
    (30, "WARNING"),
    (20, "INFO"),
    (20, "INFO"),
    (10, "DEBUG"),
)
# PRI -> (levelno, levelname, severity name, facility name): one lookup per message.
_PRI = tuple((*_SEVERITY_LEVELS[p & 7], SEVERITY_NAMES[p & 7], FACILITY_NAMES[p >> 3]) for p in range(192))

_SEPARATORS = b"\n\r\x00"
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_UTC = _dt.UTC
_fromisoformat = _dt.datetime.fromisoformat
_MIN_EPOCH = -62135596800.0  # years 1..9999, as store/copyfmt.py
_MAX_EPOCH = 253402300799.0
# How far after ``now`` an RFC 3164 time may be and still be this year's: the sender's clock
# may run ahead, and its local time, if its zone is not the one we assume (UTC by default),
# can be up to 26 hours ahead of ours (UTC+14 against UTC-12).
_FUTURE_GRACE = 7 * 86400
_INT64 = 1 << 63

# TAG, optional [PID], then ":" and a space (or the end). The TAG length is not RFC 3164's 32:
# Python logger names ("sqlalchemy.engine.Engine") are used as idents and run longer.
_TAG = re.compile(r"([^\s:\[\]]{1,128})(?:\[([^\s\[\]]{1,32})\])?:(?: |$)").match
# After a timestamp and a hostname, a TAG may come without its colon ("host tag msg"), as
# rsyslog and syslog-ng read it (rsyslog's parse1 tests: "<167>AUG 10 22:18:24 host tag This msg").
_BARE_TAG = re.compile(r"([^\s:\[\]]{1,128})(?:\[([^\s\[\]]{1,32})\])?(?: |$)").match
# A word that can be a HOSTNAME (names, IPv4, IPv6); anything else after the timestamp is the
# TAG ("<175>Oct 16 23:47:31 #001 MSWinEventLog ...": rsyslog reads "#001" as the tag).
_HOSTNAME = re.compile(r"[A-Za-z0-9._:@/-]+\Z").match
# The RFC 3164 timestamp and the variants rsyslog and syslog-ng accept: the month in any case
# ("AUG"), the day padded or not ("Mar  7", "Mar 7", "Mar 07"), a year before the time
# ("Mar 7 2008 19:06:53") or after it ("Apr 15 21:28:13 2007"), a fraction, a colon after the
# time ("19:06:53:"). A year is 19xx or 20xx, so a 4-digit hostname is rarely taken for one.
_BSD_STAMP = re.compile(
    r"([A-Za-z]{3}) +([0-9]{1,2}) +(?:((?:19|20)[0-9]{2}) +)?([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?: ((?:19|20)[0-9]{2})(?= |$))?:?(?= |$)"
).match
# RFC 5424 VERSION = NONZERO-DIGIT 0*2DIGIT, then a space.
_VERSION = re.compile(r"[1-9][0-9]{0,2} ").match
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T").match
# What a message may be wrapped in: whitespace and NUL at either end (Vector trims the line;
# rsyslog skips leading whitespace before the PRI).
_TRIM = b" \t\n\r\x0b\x0c\x00"
# A message without a valid <PRI>: user.notice, as rsyslog and syslog-ng store it (RFC 3164
# section 4.3.3 says so for a relay).
_NO_PRI = 13
# RFC 5424 section 6 field lengths: APP-NAME 48, PROCID 128, MSGID 32. Longer ones are cut to
# these, as syslog-ng does; the rest of the message is kept.
MAX_APP_NAME = 48
MAX_PROCID = 128
MAX_MSGID = 32
# SD-ID and PARAM-NAME are 32 characters in RFC 5424; we look up to 255 ahead (syslog-ng's
# limit on its ".SDATA.id.name" keys), no further, so a hostile message costs linear time.
_MAX_SD_NAME = 255
# The common SD-ELEMENT, whole, in one C pass: an SD-ID, then PARAM-NAME="PARAM-VALUE" pairs
# whose values hold no backslash, then "]". The classes are _parse_element's (a name is 1 to
# _MAX_SD_NAME characters, none of space, "]", "=", '"'; a quoted value runs to the next '"'),
# so where this matches, that loop would read the same element; anything else (an escape, an
# unquoted value, a bad element) is left to the loop. Each class excludes the character that
# ends it, so a failed match backtracks linearly.
_SD_NAME = f'[^ \\]="]{{1,{_MAX_SD_NAME}}}'
_SD_ELEMENT = re.compile(rf'\[({_SD_NAME})((?: {_SD_NAME}="[^"\\]*")*)\]').match
_SD_PARAMS = re.compile(rf' ({_SD_NAME})="([^"\\]*)"').findall


# SyslogFramer's reading of the current message's first bytes.
_UNDECIDED, _OCTETS, _LINE = 0, 1, 2


class SyslogFramer:
    """Cuts a syslog TCP stream into messages, octet-counted or not, per RFC 6587.

    Like ``LineFramer`` it keeps a search offset and a discarding state, so one instance
    belongs to one buffer (one ``Decoder``).

    Attributes:
        max_message_bytes: the largest message accepted, count or trailer excluded.
        trailers: the bytes that end a non-transparent message (default LF and NUL). Once a
            stream's first non-transparent message has ended with NUL, only NUL does.
    """

    __slots__ = (
        "_decided",
        "_digits",
        "_discarding",
        "_framing",
        "_max_digits",
        "_scanned",
        "_trailers",
        "max_message_bytes",
        "trailers",
    )

    def __init__(
        self, max_message_bytes: int = MAX_SYSLOG_MESSAGE_BYTES, *, trailers: bytes = b"\n\x00"
    ) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        if not trailers or any(bytes([b]) not in _SEPARATORS for b in trailers):
            raise ValueError("trailers must be one or more of LF, CR and NUL")
        self.max_message_bytes = max_message_bytes
        self.trailers = trailers
        self._trailers = tuple(bytes([b]) for b in trailers)
        self._max_digits = len(str(max_message_bytes))
        self._scanned = 0  # bytes of the current non-transparent message known to hold no trailer
        self._discarding = False  # inside an oversized non-transparent message
        self._decided = False  # the first non-transparent message has chosen the trailers
        # The current message's framing once its first bytes have said (_OCTETS or _LINE;
        # _UNDECIDED before), and how many digits at its head have been looked at: a long run
        # of digits arriving a byte at a time is scanned once, not once per byte.
        self._framing = _UNDECIDED
        self._digits = 0

    def _framing_of(self, data: bytearray, start: int, end_data: int, eof: bool) -> int:
        # A message starting with a digit: octet-counted if DIGITS SP "<", else a line;
        # _UNDECIDED while the bytes that tell have not all arrived (never at EOF).
        if self._framing != _UNDECIDED:
            return self._framing
        j = start + self._digits
        while j < end_data and 0x30 <= data[j] <= 0x39:
            j += 1
        self._digits = j - start
        if self._digits > self.max_message_bytes:
            framing = _LINE  # over the cap whatever follows: decided without waiting for it
        elif j + 1 < end_data:
            framing = _OCTETS if data[j] == 0x20 and data[j + 1] == 0x3C else _LINE
        elif j < end_data and data[j] != 0x20:
            framing = _LINE
        elif eof:
            framing = _LINE  # no "<" will come
        else:
            return _UNDECIDED
        self._framing = framing
        return framing

    def _next_message(self) -> None:
        # The current message is done with (returned, refused or being discarded).
        self._scanned = 0
        self._framing = _UNDECIDED
        self._digits = 0

    def _find_trailer(self, data: bytearray, start: int) -> int:
        first = -1
        for t in self._trailers:
            i = data.find(t, start) if first < 0 else data.find(t, start, first)
            if i >= 0:
                first = i
        return first

    def _decide(self, trailer: int) -> None:
        # The trailer that ends the stream's first non-transparent message decides. A sender
        # that ends it with NUL (Python's SysLogHandler over TCP) may put newlines inside later
        # ones (a traceback): from then on only NUL ends a message. (A multi-line *first*
        # message is still cut at its newlines.) Both ways a message can end call this: found
        # whole, or discarded as oversized before its trailer arrived. When only the first did,
        # how the stream was cut decided the trailers (issue 10: hypothesis found a stream
        # whose first message, oversized, was cut before its LF, so a NUL later chose
        # "NUL only" and the last message was no longer split at its LF).
        self._decided = True
        if trailer == 0 and len(self._trailers) > 1:
            self._trailers = (b"\x00",)

    def maybe_extract(self, buf: ReceiveBuffer) -> bytes | None:
        """Consume and return the next message, or None if no whole message is buffered.

        Args:
            buf: the connection's receive buffer.

        Returns:
            The message (SYSLOG-MSG, without count or trailer), or None.

        Raises:
            ProtocolError: ``oversized`` if an octet count exceeds ``max_message_bytes``,
                ``malformed`` if a message starts with a digit but no valid count follows. The
                stream cannot be kept in step after either.
            RecordRejected: ``oversized`` once per non-transparent message longer than
                ``max_message_bytes``; it is discarded up to its trailer and the next call goes on.
        """
        # ReceiveBuffer has no find(): read its bytearray directly (see lines.py).
        data = buf._data
        while True:
            start = buf._start
            end_data = len(data)
            if start >= end_data:
                return None
            if self._discarding:
                i = self._find_trailer(data, start)
                if i < 0:
                    buf.skip(end_data - start)
                    return None
                if not self._decided:
                    self._decide(data[i])
                buf.skip(i + 1 - start)
                self._discarding = False
                continue
            first = data[start]
            if first in _SEPARATORS:
                i = start + 1
                while i < end_data and data[i] in _SEPARATORS:
                    i += 1
                buf.skip(i - start)
                continue
            if 0x30 <= first <= 0x39:
                framing = self._framing_of(data, start, end_data, eof=False)
                if framing == _UNDECIDED:
                    return None
                if framing == _OCTETS:
                    return self._octet_counted(buf, data, start, end_data)
            i = self._find_trailer(data, start + self._scanned)
            if i < 0:
                n = end_data - start
                if n > self.max_message_bytes + 1:  # + 1: room for a CR before the trailer
                    self._next_message()
                    self._discarding = True
                    buf.skip(n)
                    raise RecordRejected(
                        f"Syslog message longer than {self.max_message_bytes} bytes; discarded.",
                        reason="oversized",
                    )
                self._scanned = n
                return None
            self._next_message()
            if not self._decided:
                self._decide(data[i])
            end = i - 1 if data[i - 1] == 0x0D else i  # i > start: data[start] is no trailer
            if end - start > self.max_message_bytes:
                buf.skip(i + 1 - start)
                raise RecordRejected(
                    f"Syslog message of {end - start} bytes exceeds the cap of "
                    f"{self.max_message_bytes} bytes.",
                    reason="oversized",
                )
            msg = bytes(data[start:end])
            buf.skip(i + 1 - start)
            if msg:
                return msg

    def _octet_counted(self, buf: ReceiveBuffer, data: bytearray, start: int, end_data: int) -> bytes | None:
        # _framing_of has seen DIGITS SP "<" at start: the count is refused (over the cap, a
        # leading zero) as soon as that is known, before any of the body is waited for.
        j = start + self._digits
        head = data[start:j]
        if data[start] == 0x30:
            raise ProtocolError("Syslog octet count has a leading zero.", reason="malformed")
        if len(head) > self._max_digits or int(head) > self.max_message_bytes:
            raise ProtocolError(
                f"Syslog octet count {bytes(head[:20]).decode()}... exceeds the cap of "
                f"{self.max_message_bytes} bytes.",
                reason="oversized",
            )
        stop = j + 1 + int(head)
        if stop > end_data:
            return None
        msg = bytes(data[j + 1 : stop])
        buf.skip(stop - start)
        self._next_message()
        return msg

    def maybe_extract_at_eof(self, buf: ReceiveBuffer) -> bytes | None:
        """At EOF: a non-transparent message without its trailer is the last message.

        Call only after ``maybe_extract`` returned None. An incomplete octet-counted message
        is left in the buffer (the ``Decoder`` reports it as ``truncated``).

        Raises:
            RecordRejected: ``oversized`` if the last message is one byte over the cap.
        """
        first = buf.peek(1)
        if first is None:
            return None
        if first.isdigit() and self._framing_of(buf._data, buf._start, len(buf._data), eof=True) == _OCTETS:
            return None
        msg = bytes(buf)
        buf.skip(len(msg))
        self._next_message()
        if msg.endswith(b"\r"):
            msg = msg[:-1]
        if len(msg) > self.max_message_bytes:
            raise RecordRejected(
                f"Last syslog message of {len(msg)} bytes exceeds the cap of {self.max_message_bytes} bytes.",
                reason="oversized",
            )
        return msg or None


class SyslogFormat:
    """Parses one syslog message (RFC 5424 or RFC 3164) into a record dict.

    The same instance serves TCP frames (``Decoder(SyslogFramer(), SyslogFormat())``) and UDP
    datagrams (``parse`` per datagram).

    Attributes:
        now: seconds since the epoch, "now" for RFC 3164 timestamps (which have no year), or
            None. The caller sets it (e.g. once per read, from the receive time); this module
            has no clock.
        tz: the zone of timestamps written without one: RFC 3164's always, RFC 5424's and
            RFC 3339's when the offset is missing (``--assume-timezone``; default UTC).
    """

    __slots__ = ("now", "tz")

    def __init__(self, now: float | None = None, *, tz: _dt.tzinfo = _UTC) -> None:
        self.now = now
        self.tz = tz

    def parse(self, frame: bytes, now: float | None = None) -> RecordDict:
        """Turn one syslog message into a record dict.

        Args:
            frame: one message: a TCP frame or a whole UDP datagram. Whitespace and NUL around
                it are ignored.
            now: overrides ``self.now`` for this message.

        Returns:
            A record dict (see the module docstring for the fields).

        Raises:
            RecordRejected: ``malformed`` if the message is empty (or only whitespace). Never
                anything else: a message without a valid ``<PRI>`` is user.notice (13).
        """
        if frame and (frame[0] in _TRIM or frame[-1] in _TRIM):
            frame = frame.strip(_TRIM)
        if not frame:
            raise RecordRejected("Empty syslog message.", reason="malformed")
        pri = _NO_PRI
        start = 0
        if frame[0] == 0x3C:
            close = frame.find(b">", 1, 5)
            if close >= 2:
                digits = frame[1:close]
                if digits.isdigit() and digits.isascii() and int(digits) <= 191:
                    pri = int(digits)
                    start = close + 1
        levelno, levelname, severity, facility = _PRI[pri]
        rec: RecordDict = {
            "levelno": levelno,
            "levelname": levelname,
            "syslog_severity": severity,
            "syslog_facility": facility,
        }
        text = frame[start:].decode("utf-8", "replace")
        if text[:1].isdigit() and _parse_5424(text, rec, self.tz):
            return rec
        _parse_3164(text, rec, self.now if now is None else now, self.tz)
        return rec


def _parse_5424(text: str, rec: RecordDict, tz: _dt.tzinfo) -> bool:
    # Fills rec and returns True, or returns False (rec untouched) if this is not RFC 5424.
    if _VERSION(text) is None:
        return False
    parts = text.split(" ", 6)
    if len(parts) < 7:
        return False
    version, ts, hostname, app, procid, msgid, rest = parts
    if version != "1" and ts != "-" and _ISO_DATE(ts) is None:
        # VERSION 2..999 is read as RFC 5424 (rsyslog and syslog-ng do; no such RFC exists
        # yet), but only with a real TIMESTAMP: "<14>2 apples were ..." is RFC 3164 text.
        return False
    if rest == "-":
        sd = None
        msg = ""
    elif rest[:2] == "- ":
        sd = None
        msg = rest[2:]
    elif rest[:1] == "[":
        sd, msg = _parse_sd(rest, rec)
    else:
        # No STRUCTURED-DATA field at all: the header is still good (lenient, as Vector's
        # syslog_loose), and the rest is the message.
        sd = None
        msg = rest
    if msg[:1] == "\ufeff":
        msg = msg[1:]
    rec["msg"] = msg
    if version != "1":
        rec["syslog_version"] = int(version)
    if ts != "-":
        created = _iso_epoch(ts, tz)
        if created is None:
            rec["syslog_timestamp"] = ts
        else:
            rec["created"] = created
    if hostname != "-":
        rec["hostname"] = hostname
    if app != "-":
        rec["name"] = app[:MAX_APP_NAME]
    if procid != "-":
        _set_procid(rec, procid[:MAX_PROCID])
    if msgid != "-":
        rec["msgid"] = msgid[:MAX_MSGID]
    if sd:
        rec["sd"] = sd
    return True


_SD = dict[str, dict[str, str | list[str]]]


def _add_param(params: dict[str, str | list[str]], name: str, value: str | list[str]) -> None:
    # A repeated PARAM-NAME (in one element, or in two elements with the same SD-ID) keeps
    # every value, in order, as a list.
    # Lists grow in place: a message repeating one name 20,000 times costs linear time.
    old = params.get(name)
    if old is None:
        params[name] = value
    elif isinstance(old, list):
        if isinstance(value, list):
            old.extend(value)
        else:
            old.append(value)
    else:
        params[name] = [old, *value] if isinstance(value, list) else [old, value]


def _merge_params(sd: _SD, sd_id: str, params: dict[str, str | list[str]]) -> None:
    # One element's parameters into sd[sd_id]: a name repeated across elements with the same
    # SD-ID keeps every value.
    into = sd.setdefault(sd_id, {})
    for name, values in params.items():
        _add_param(into, name, values)


def _parse_element(s: str, i: int, sd: _SD, strict: bool) -> int:
    # SD-ELEMENT = "[" SD-ID *(SP PARAM-NAME "=" %d34 PARAM-VALUE %d34) "]", at s[i] == "[".
    # In PARAM-VALUE, '"', '\' and ']' are escaped with '\'; a '\' before anything else is an
    # ordinary character (RFC 5424 section 6.3.3). Unless strict, a value may also be unquoted
    # up to the next space or "]", as VMware ESXi sends it and syslog-ng reads it
    # ([Originator@6876 sub=Vimsvc.ha-eventmgr ...]). Adds the element to sd and returns the
    # index after its "]", or returns -1 and leaves sd alone. Names are looked for only
    # _MAX_SD_NAME characters ahead, so a hostile message costs linear time.
    m = _SD_ELEMENT(s, i)
    if m is not None:
        sd_id, body = m.groups()
        if not body:
            if strict:
                return -1
            sd.setdefault(sd_id, {})
            return m.end()
        pairs = _SD_PARAMS(body)
        fresh: dict[str, str | list[str]] = dict(pairs)
        if sd_id not in sd and len(fresh) == len(pairs):  # no name repeated: the loop's result
            sd[sd_id] = fresh
        else:  # a name repeated in the element (its values become a list), or a second element
            grouped: dict[str, str | list[str]] = {}
            for name, value in pairs:
                _add_param(grouped, name, value)
            _merge_params(sd, sd_id, grouped)
        return m.end()
    n = len(s)
    j = s.find(" ", i + 1, i + 2 + _MAX_SD_NAME)
    bracket = s.find("]", i + 1, i + 2 + _MAX_SD_NAME if j < 0 else j)
    if bracket >= 0:
        j = bracket
    elif j < 0:
        return -1
    sd_id = s[i + 1 : j]
    if not sd_id or "=" in sd_id or '"' in sd_id:
        return -1
    params: dict[str, str | list[str]] = {}
    i = j
    while True:
        if i >= n:
            return -1
        c = s[i]
        if c == "]":
            i += 1
            break
        if c != " ":
            return -1
        i += 1
        eq = s.find("=", i, i + 1 + _MAX_SD_NAME)
        if eq <= i:
            return -1
        name = s[i:eq]
        if " " in name or "]" in name or '"' in name:
            return -1
        if s[eq + 1 : eq + 2] == '"':
            k = eq + 2
            chunks: list[str] = []
            while True:
                quote = s.find('"', k)
                if quote < 0:
                    return -1
                bs = s.find("\\", k, quote)
                if bs < 0:
                    chunks.append(s[k:quote])
                    k = quote + 1
                    break
                nxt = s[bs + 1 : bs + 2]
                if nxt in ('"', "\\", "]"):
                    chunks.append(s[k:bs])
                    chunks.append(nxt)
                    k = bs + 2
                else:
                    chunks.append(s[k : bs + 1])
                    k = bs + 1
            value = "".join(chunks)
        elif strict:
            return -1
        else:
            k = eq + 1
            while k < n and s[k] != " " and s[k] != "]":
                k += 1
            if k == eq + 1:
                return -1  # "x=]": Vector drops the element, and so do we
            value = s[eq + 1 : k]
        _add_param(params, name, value)
        i = k
    if strict and not params:
        return -1
    _merge_params(sd, sd_id, params)
    return i


def _bad_element_end(s: str, i: int) -> int:
    # Where a malformed element at s[i] ends: after the first "]" that a "[", a space or the
    # end follows; -1 if there is none.
    n = len(s)
    k = s.find("]", i + 1)
    while k >= 0:
        if k + 1 == n or s[k + 1] in " [":
            return k + 1
        k = s.find("]", k + 1)
    return -1


def _parse_sd(s: str, rec: RecordDict) -> tuple[_SD, str]:
    # STRUCTURED-DATA [SP MSG], s[0] == "[". A malformed element is dropped, the others and
    # the header are kept (Vector's syslog source does the same: "handles_incorrect_sd_element");
    # its text goes to extra "sd_invalid" so nothing is lost. An element that never closes
    # is the start of the message.
    sd: _SD = {}
    n = len(s)
    i = 0
    while i < n and s[i] == "[":
        end = _parse_element(s, i, sd, strict=False)
        if end < 0:
            end = _bad_element_end(s, i)
            if end < 0:
                break
            invalid = rec.setdefault("sd_invalid", [])
            assert isinstance(invalid, list)
            invalid.append(s[i:end])
        i = end
    if i == n:
        return sd, ""
    if s[i] == " ":
        return sd, s[i + 1 :]
    return sd, s[i:]


def _parse_sd_after_tag(s: str) -> tuple[_SD, str] | None:
    # rsyslog's forwarding formats put RFC 5424 structured data after an RFC 3164 TAG
    # ("liblogging-stdlog:  [origin software=\"rsyslogd\" ...] start"; Vector's
    # "rsyslog_omfwd_tcp_default" test). Only whole, strictly valid elements with at least one
    # quoted parameter count, so "[INFO] started" or "[ 0.000000] Linux" stay message text.
    sd: _SD = {}
    n = len(s)
    i = 0
    while i < n and s[i] == "[":
        i = _parse_element(s, i, sd, strict=True)
        if i < 0:
            return None
    if i == n:
        return sd, ""
    if s[i] == " ":
        return sd, s[i + 1 :]
    return None


def _parse_3164(text: str, rec: RecordDict, now: float | None, tz: _dt.tzinfo) -> None:
    # Spaces after the PRI are skipped ("<38> Mar  7 ...", rsyslog's date1 test; "<15> openvpn[2499]:
    # ...", syslog-ng's test_msgparse.c).
    head = text.lstrip(" ")
    rest = head
    stamped = False
    m = _BSD_STAMP(head)
    if m is not None and m.group(1).title() in _MONTHS:
        stamped = True
        created = _bsd_epoch(m, now, tz)
        if created is None:
            rec["syslog_timestamp"] = m.group(0)
        else:
            rec["created"] = created
        rest = head[m.end() + 1 :].lstrip(" ")
    elif len(head) >= 19 and head[4] == "-" and head[10] in "T " and head[:4].isdigit():
        # RFC 3339 (rsyslog's high-precision forwarding), or ISO 8601 with a space.
        sp = head.find(" ", 11 if head[10] == " " else 0)
        stamp = head if sp < 0 else head[:sp]
        created = _iso_epoch(stamp, tz)
        if created is not None:
            stamped = True
            rec["created"] = created
            rest = "" if sp < 0 else head[sp + 1 :]
    t = _TAG(rest)
    if t is None and stamped:
        # After a timestamp: HOSTNAME if the word can be one, then a TAG, with or without its
        # colon (rsyslog and syslog-ng both read "host tag msg" so).
        sp = rest.find(" ")
        word = rest if sp < 0 else rest[:sp]
        if word and _HOSTNAME(word) is not None:
            rec["hostname"] = word
            rest = "" if sp < 0 else rest[sp + 1 :]
            t = _TAG(rest) or _BARE_TAG(rest)
        else:
            t = _BARE_TAG(rest)
    if t is not None:
        rec["name"] = t.group(1)
        pid = t.group(2)
        if pid is not None:
            _set_procid(rec, pid)
        rest = rest[t.end() :]
        if rest[:2] == " [" or rest[:1] == "[":
            parsed = _parse_sd_after_tag(rest.lstrip(" "))
            if parsed is not None:
                rec["sd"], rest = parsed
    rec["msg"] = rest


def _bsd_epoch(m: re.Match[str], now: float | None, tz: _dt.tzinfo) -> float | None:
    # RFC 3164 time, in tz. With a year in the stamp, that year; without one, the latest year
    # that puts it at most _FUTURE_GRACE after now (the year of now is taken in tz too: at
    # 23:00 UTC on Dec 31 it is already next year in Tokyo).
    mon, day, year1, hh, mm, ss, frac, year2 = m.groups()
    usec = int(frac[:6].ljust(6, "0")) if frac else 0
    fields = (_MONTHS[mon.title()], int(day), int(hh), int(mm), int(ss), usec)
    year = year1 or year2
    if year is not None:
        try:
            return local_epoch(_dt.datetime(int(year), *fields), tz)
        except (ValueError, OverflowError):
            return None
    if now is None:
        return None
    try:
        this_year = _dt.datetime.fromtimestamp(now, tz).year
    except (ValueError, OverflowError, OSError):
        return None
    latest = now + _FUTURE_GRACE
    for y in range(this_year + 1, this_year - 5, -1):  # back to the last Feb 29
        try:
            t = local_epoch(_dt.datetime(y, *fields), tz)
        except (ValueError, OverflowError):
            continue  # Feb 29 in a common year; or Apr 31, hour 25: none will do
        if t <= latest:
            return t
    return None


def _iso_epoch(ts: str, tz: _dt.tzinfo) -> float | None:
    try:
        d = _fromisoformat(ts)
        t = d.timestamp() if d.tzinfo is not None else local_epoch(d, tz)
    except (ValueError, OverflowError):
        return None
    return t if _MIN_EPOCH < t < _MAX_EPOCH else None


def _set_procid(rec: RecordDict, procid: str) -> None:
    if procid.isascii() and procid.isdigit() and len(procid) < 19:
        rec["process"] = int(procid)
    else:
        rec["procid"] = procid
