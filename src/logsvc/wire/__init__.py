"""Sans-IO decoding of log records from bytes: framing, formats and the decoder that joins them.

Nothing under ``logsvc.wire`` imports ``socket``, ``select``, ``time``, ``logging`` or
``psycopg``: input is bytes, output is a ``RecordDict`` or a ``ProtocolError``.
"""

from __future__ import annotations

from logsvc.wire.buffer import ReceiveBuffer
from logsvc.wire.decoder import NEED_DATA, Decoder, Format, Framer, NeedData
from logsvc.wire.framing import MAX_FRAME_BYTES, LengthPrefixFramer
from logsvc.wire.pickle_format import PickleFormat, Placeholder, RestrictedUnpickler

__all__ = [
    "MAX_FRAME_BYTES",
    "NEED_DATA",
    "Decoder",
    "Format",
    "Framer",
    "LengthPrefixFramer",
    "NeedData",
    "PickleFormat",
    "Placeholder",
    "ReceiveBuffer",
    "RestrictedUnpickler",
]
