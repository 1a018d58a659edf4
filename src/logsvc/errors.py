"""The one error family of logsvc.

Every error carries a stable ``reason`` string: it is the label of the metric that counts it
(``frames_rejected_total{reason="oversized"}``) and the word an operator greps for in the log.
Reasons are short snake_case nouns and never change once released.

This module must not import anything from the rest of the package.
"""

from __future__ import annotations

from pathlib import Path


class LogsvcError(Exception):
    """Base class of every error logsvc raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ProtocolError(LogsvcError):
    """The peer sent bytes we cannot accept.

    The connection that sent them is closed and counted under ``reason``; every other
    connection keeps going. Decoders raise only this (never ``struct.error``,
    ``pickle.UnpicklingError`` or anything else) for any input whatsoever.
    """

    reason = "malformed"


class RecordRejected(LogsvcError):
    """One record (a JSON line, a syslog message, a datagram) cannot be accepted.

    Unlike ``ProtocolError`` the stream is still in step: the bad record is counted under
    ``reason`` and skipped, and the connection's following records are read as usual. Only
    formats whose framing survives a bad record (one line, one datagram) raise this.
    """

    reason = "bad_record"


class JournalCorrupt(LogsvcError):
    """A journal block failed its checksum or its framing; see ``reason``.

    When ``Journal.read`` finds a block damaged after start-up, the error also says which one:
    ``first_seq`` and ``records_lost`` (the seqs the reader asked for that the block held, from
    the journal's index), and ``path`` and ``offset`` (where the block sits). The journal has
    already dropped the block from its index, so its seqs are a gap, as if the damage had been
    found at open: the caller logs and counts it and reads again. Elsewhere these are unset
    (None, and 0 records).
    """

    reason = "corrupt"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        first_seq: int | None = None,
        records_lost: int = 0,
        path: Path | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.first_seq = first_seq
        self.records_lost = records_lost
        self.path = path
        self.offset = offset


class JournalSeqMismatch(LogsvcError):
    """An append stated a first seq other than the journal's ``next_seq``; nothing was written.

    The rows' COPY text already carries their seqs, stamped by the caller before the append,
    so the two numbers must agree (STYLE.md convention 18). ``expected_first_seq`` is what the
    caller stated, ``next_seq`` what the journal would have given.
    """

    reason = "seq_mismatch"

    def __init__(self, message: str, *, expected_first_seq: int, next_seq: int) -> None:
        super().__init__(message)
        self.expected_first_seq = expected_first_seq
        self.next_seq = next_seq


class StoreError(LogsvcError):
    """PostgreSQL refused or lost a batch; see ``reason``."""

    reason = "store"


class ConfigError(LogsvcError):
    """A setting is missing or malformed. The message is written for the person who set it."""

    reason = "config"
