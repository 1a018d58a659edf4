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

- A message starting with ``1``-``9`` is octet-counted. The count is checked against
  ``max_message_bytes`` digit by digit, before any of the body is waited for; a count over the
  cap (or a count that is not a number) is a ``ProtocolError``: we cannot find the next message
  without reading this one, so the stream cannot be kept in step.
- Any other message runs to its trailer; one ``CR`` before the trailer is dropped. An oversized
  one is discarded up to its trailer and reported once as ``RecordRejected("oversized")``, with
  bounded memory, exactly as ``LineFramer`` does.
- LF, CR and NUL between messages are skipped (``"\\r\\n"`` trailers, an LF after an
  octet-counted message).
- At EOF, a last non-transparent message without a trailer is still a message; an incomplete
  octet-counted one is ``truncated``.

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

- ``<PRI>`` (1-3 digits, at most 191) is required; without it the message is rejected as
  ``malformed``. Everything after it is decoded as UTF-8, invalid bytes replaced by U+FFFD.
- ``1 `` after the PRI means RFC 5424. If its header or structured data do not parse, the
  message is read again the RFC 3164 way, which accepts any text, so no message with a valid
  PRI is lost for its syntax.
- RFC 3164: the timestamp (``Mmm dd hh:mm:ss``, optional fraction, or an RFC 3339 timestamp as
  rsyslog's high-precision forwarding writes) and the hostname are optional, as real senders
  omit them. A TAG is a word without spaces, colons or brackets, then ``[PID]`` optionally, then
  ``:`` and a space. A word after the timestamp that is not a TAG is the HOSTNAME. So a stdlib
  message ``"Error: disk full"`` without ident reads as TAG ``Error``: RFC 3164 is ambiguous
  there and rsyslog reads it the same way.
- RFC 3164 time: no year, no zone. The zone is the format's ``tz`` (UTC unless the server was
  given ``--assume-timezone``); a time a DST change skips or repeats is read as
  ``wire.localtime`` says (the later instant, PostgreSQL's rule). An RFC 5424 or RFC 3339
  timestamp without an offset, which RFC 5424 forbids, is read in ``tz`` too. The year is the
  latest that puts the time no more than 7 days after ``now`` (so Dec 31 received on Jan 1 is
  last year's,
  Jan 1 from a clock running ahead on Dec 31 is next year's, and a replayed log is in the
  past, never months ahead; Vector only handles the first case). With ``now`` unset
  there is no ``created`` (the store uses the receive time) and the original text is kept in
  ``extra["syslog_timestamp"]``.

Mapping to the record (``severity`` and ``facility`` are the two halves of PRI)::

    levelno/levelname   severity 0-2 emerg/alert/crit -> 50 CRITICAL, 3 err -> 40 ERROR,
                        4 warning -> 30 WARNING, 5 notice, 6 info -> 20 INFO, 7 debug -> 10 DEBUG
    name                APP-NAME (5424), TAG (3164)
    process             PROCID / [PID] when it is a number, else extra "procid"
    created             TIMESTAMP (see above); unparsable: extra "syslog_timestamp"
    msg                 MSG (a leading BOM removed)
    extra               syslog_severity ("err"), syslog_facility ("local3"), hostname, msgid,
                        sd: {SD-ID: {PARAM-NAME: value}} (a repeated PARAM-NAME: a list of values)
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
        "_discarding",
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
                return self._octet_counted(buf, data, start, end_data)
            i = self._find_trailer(data, start + self._scanned)
            if i < 0:
                n = end_data - start
                if n > self.max_message_bytes + 1:  # + 1: room for a CR before the trailer
                    self._scanned = 0
                    self._discarding = True
                    buf.skip(n)
                    raise RecordRejected(
                        f"Syslog message longer than {self.max_message_bytes} bytes; discarded.",
                        reason="oversized",
                    )
                self._scanned = n
                return None
            self._scanned = 0
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
        # The digits first, the byte after them second: a count over the cap is "oversized"
        # whether the bytes after it have arrived yet or not (hypothesis found the other order
        # giving "malformed" or "oversized" depending on how the stream was cut).
        limit = min(start + self._max_digits + 1, end_data)
        j = start
        while j < limit and 0x30 <= data[j] <= 0x39:
            j += 1
        head = data[start:j]
        if data[start] == 0x30:
            raise ProtocolError("Syslog octet count has a leading zero.", reason="malformed")
        if len(head) > self._max_digits or int(head) > self.max_message_bytes:
            raise ProtocolError(
                f"Syslog octet count {bytes(head[:20]).decode()}... exceeds the cap of "
                f"{self.max_message_bytes} bytes.",
                reason="oversized",
            )
        if j >= end_data:
            return None  # the count is not complete yet
        if data[j] != 0x20:
            raise ProtocolError(
                f"Syslog octet count {bytes(data[start : j + 1][:20])!r} is not followed by a space.",
                reason="malformed",
            )
        stop = j + 1 + int(head)
        if stop > end_data:
            return None
        msg = bytes(data[j + 1 : stop])
        buf.skip(stop - start)
        return msg

    def maybe_extract_at_eof(self, buf: ReceiveBuffer) -> bytes | None:
        """At EOF: a non-transparent message without its trailer is the last message.

        Call only after ``maybe_extract`` returned None. An incomplete octet-counted message
        is left in the buffer (the ``Decoder`` reports it as ``truncated``).

        Raises:
            RecordRejected: ``oversized`` if the last message is one byte over the cap.
        """
        first = buf.peek(1)
        if first is None or first.isdigit():
            return None
        msg = bytes(buf)
        buf.skip(len(msg))
        self._scanned = 0
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
            frame: one message: a TCP frame or a whole UDP datagram. Trailing LF, CR and NUL are
                ignored.
            now: overrides ``self.now`` for this message.

        Returns:
            A record dict (see the module docstring for the fields).

        Raises:
            RecordRejected: ``malformed`` if the message does not start with a valid ``<PRI>``.
                Never anything else.
        """
        if frame and frame[-1] in _SEPARATORS:
            frame = frame.rstrip(_SEPARATORS)
        close = frame.find(b">", 1, 5)
        if close < 2 or frame[0] != 0x3C:
            raise RecordRejected("Syslog message has no <PRI>.", reason="malformed")
        digits = frame[1:close]
        if not (digits.isdigit() and digits.isascii()) or int(digits) > 191:
            raise RecordRejected(f"Syslog PRI {digits[:3]!r} is not 0..191.", reason="malformed")
        levelno, levelname, severity, facility = _PRI[int(digits)]
        rec: RecordDict = {
            "levelno": levelno,
            "levelname": levelname,
            "syslog_severity": severity,
            "syslog_facility": facility,
        }
        text = frame[close + 1 :].decode("utf-8", "replace")
        if text[:2] == "1 " and _parse_5424(text, rec, self.tz):
            return rec
        _parse_3164(text, rec, self.now if now is None else now, self.tz)
        return rec


def _parse_5424(text: str, rec: RecordDict, tz: _dt.tzinfo) -> bool:
    # Fills rec and returns True, or returns False (rec untouched) if this is not RFC 5424.
    parts = text.split(" ", 6)
    if len(parts) < 7:
        return False
    _, ts, hostname, app, procid, msgid, rest = parts
    if rest == "-":
        sd = None
        msg = ""
    elif rest[:2] == "- ":
        sd = None
        msg = rest[2:]
    elif rest[:1] == "[":
        parsed = _parse_sd(rest)
        if parsed is None:
            return False
        sd, msg = parsed
    else:
        return False
    if msg[:1] == "\ufeff":
        msg = msg[1:]
    rec["msg"] = msg
    if ts != "-":
        created = _iso_epoch(ts, tz)
        if created is None:
            rec["syslog_timestamp"] = ts
        else:
            rec["created"] = created
    if hostname != "-":
        rec["hostname"] = hostname
    if app != "-":
        rec["name"] = app
    if procid != "-":
        _set_procid(rec, procid)
    if msgid != "-":
        rec["msgid"] = msgid
    if sd is not None:
        rec["sd"] = sd
    return True


def _parse_sd(s: str) -> tuple[dict[str, dict[str, str | list[str]]], str] | None:
    # STRUCTURED-DATA = 1*SD-ELEMENT; SD-ELEMENT = "[" SD-ID *(SP PARAM-NAME "=" %d34
    # PARAM-VALUE %d34) "]". In PARAM-VALUE, '"', '\' and ']' are escaped with '\'; a '\'
    # before anything else is an ordinary character (RFC 5424 section 6.3.3). Returns the
    # elements and the MSG, or None if the syntax is broken.
    sd: dict[str, dict[str, str | list[str]]] = {}
    n = len(s)
    i = 0
    while i < n and s[i] == "[":
        j = s.find(" ", i + 1)
        bracket = s.find("]", i + 1, None if j < 0 else j)
        if bracket >= 0:
            j = bracket
        elif j < 0:
            return None
        sd_id = s[i + 1 : j]
        if not sd_id or j >= n or "=" in sd_id or '"' in sd_id:
            return None
        params = sd.setdefault(sd_id, {})
        i = j
        while True:
            if i >= n:
                return None
            c = s[i]
            if c == "]":
                i += 1
                break
            if c != " ":
                return None
            i += 1
            eq = s.find("=", i)
            if eq <= i or s[eq + 1 : eq + 2] != '"':
                return None
            name = s[i:eq]
            if " " in name or "]" in name or '"' in name:
                return None
            k = eq + 2
            chunks: list[str] = []
            while True:
                quote = s.find('"', k)
                if quote < 0:
                    return None
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
            old = params.get(name)
            if old is None:
                params[name] = value
            elif isinstance(old, list):
                old.append(value)
            else:
                params[name] = [old, value]
            i = k
    if i == n:
        return sd, ""
    if s[i] == " ":
        return sd, s[i + 1 :]
    return None


def _parse_3164(text: str, rec: RecordDict, now: float | None, tz: _dt.tzinfo) -> None:
    rest = text
    stamped = False
    if len(text) >= 15 and text[3] == " " and text[:3] in _MONTHS:
        end = _bsd_stamp_end(text)
        if end:
            stamped = True
            created = _bsd_epoch(text, now, tz)
            if created is None:
                rec["syslog_timestamp"] = text[:end]
            else:
                rec["created"] = created
            rest = text[end + 1 :]
    elif len(text) >= 19 and text[4] == "-" and text[10] == "T" and text[:4].isdigit():
        sp = text.find(" ")
        stamp = text if sp < 0 else text[:sp]
        created = _iso_epoch(stamp, tz)
        if created is not None:
            stamped = True
            rec["created"] = created
            rest = "" if sp < 0 else text[sp + 1 :]
    m = _TAG(rest)
    if m is None and stamped:
        # Not a TAG, so the HOSTNAME, then maybe a TAG.
        sp = rest.find(" ")
        hostname = rest if sp < 0 else rest[:sp]
        if hostname:
            rec["hostname"] = hostname
        rest = "" if sp < 0 else rest[sp + 1 :]
        m = _TAG(rest)
    if m is not None:
        rec["name"] = m.group(1)
        pid = m.group(2)
        if pid is not None:
            _set_procid(rec, pid)
        rest = rest[m.end() :]
    rec["msg"] = rest


def _bsd_stamp_end(s: str) -> int:
    # "Mmm dd hh:mm:ss" (dd space-padded), an optional ".fraction", then a space or the end.
    # Returns its length, or 0 if s does not start with one. s[:3] is a month, s[3] a space.
    if s[6] != " " or s[9] != ":" or s[12] != ":":
        return 0
    digits = (s[5] if s[4] == " " else s[4:6]) + s[7:9] + s[10:12] + s[13:15]
    if not (digits.isascii() and digits.isdigit()):
        return 0
    end = 15
    if s[15:16] == ".":
        j = 16
        while j < len(s) and "0" <= s[j] <= "9":
            j += 1
        if j > 16:
            end = j
    if end < len(s) and s[end] != " ":
        return 0
    return end


def _bsd_epoch(s: str, now: float | None, tz: _dt.tzinfo) -> float | None:
    # RFC 3164 time, in tz, in the latest year that puts it at most _FUTURE_GRACE after now
    # (the year of now is taken in tz too: at 23:00 UTC on Dec 31 it is already next year in
    # Tokyo).
    if now is None:
        return None
    usec = 0
    if s[15:16] == ".":
        frac = s[16:22].split(" ", 1)[0]
        usec = int(frac.ljust(6, "0")) if frac.isdigit() else 0
    fields = (_MONTHS[s[:3]], int(s[4:6]), int(s[7:9]), int(s[10:12]), int(s[13:15]), usec)
    try:
        year = _dt.datetime.fromtimestamp(now, tz).year
    except (ValueError, OverflowError, OSError):
        return None
    latest = now + _FUTURE_GRACE
    for y in range(year + 1, year - 5, -1):  # back to the last Feb 29
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
