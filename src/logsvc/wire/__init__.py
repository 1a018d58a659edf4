"""Sans-IO decoding of log records from bytes: framing, formats and the decoder that joins them.

Nothing under ``logsvc.wire`` imports ``socket``, ``select``, ``time``, ``logging`` or
``psycopg``: input is bytes, output is a ``RecordDict``, a ``ProtocolError`` (the stream is lost)
or a ``RecordRejected`` (one record is lost, the stream is still in step).

Pairs: ``LengthPrefixFramer`` + ``PickleFormat`` (``SocketHandler``), ``LineFramer`` +
``JsonFormat`` (JSON lines), ``SyslogFramer`` + ``SyslogFormat`` (syslog over TCP),
``LineFramer(delimiter=b"\\0")`` + ``JsonFormat(shape="gelf")`` (GELF over TCP). Datagrams
need no framer: ``PickleDatagramFormat`` (``DatagramHandler``) and ``SyslogFormat`` parse one
each; ``GelfDatagramFormat`` reassembles GELF chunks first.
"""

from __future__ import annotations

from logsvc.wire.buffer import ReceiveBuffer
from logsvc.wire.datagram import PickleDatagramFormat
from logsvc.wire.decoder import NEED_DATA, Decoder, EofFramer, Format, Framer, NeedData
from logsvc.wire.framing import MAX_FRAME_BYTES, LengthPrefixFramer
from logsvc.wire.gelf import GelfDatagramFormat
from logsvc.wire.json_format import JsonFormat
from logsvc.wire.lines import MAX_LINE_BYTES, LineFramer
from logsvc.wire.pickle_format import PickleFormat, Placeholder, RestrictedUnpickler
from logsvc.wire.syslog import MAX_SYSLOG_MESSAGE_BYTES, SyslogFormat, SyslogFramer

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_LINE_BYTES",
    "MAX_SYSLOG_MESSAGE_BYTES",
    "NEED_DATA",
    "Decoder",
    "EofFramer",
    "Format",
    "Framer",
    "GelfDatagramFormat",
    "JsonFormat",
    "LengthPrefixFramer",
    "LineFramer",
    "NeedData",
    "PickleDatagramFormat",
    "PickleFormat",
    "Placeholder",
    "ReceiveBuffer",
    "RestrictedUnpickler",
    "SyslogFormat",
    "SyslogFramer",
]
