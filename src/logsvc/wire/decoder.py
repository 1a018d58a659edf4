"""Decoder: framer + format, driven h11-style by ``feed`` / ``next_record``.

Sans-IO: the caller owns the socket. ``feed(data)`` only stores bytes (``b""`` means EOF);
``next_record()`` does all the parsing and returns a record or ``NEED_DATA``. The decoder is
composed of a framer (how a stream is cut into frames) and a format (what one frame means), as
vector's ``decoder.rs`` composes a ``Framer`` and a ``Deserializer``.

States (h11 rule: after any error the decoder stays in ERROR and raises again)::

    OPEN --feed(b"")--> CLOSED          next_record(): records, then NEED_DATA forever,
      |                   |                           or ProtocolError("truncated")
      +---ProtocolError---+--> ERROR    next_record(): raises ProtocolError again

At EOF, bytes that are not a whole frame are ``truncated`` unless the framer has a
``maybe_extract_at_eof`` method (``EofFramer``): delimiter-based framers (lines, syslog without
octet counts) treat a last unterminated message as a frame, as vector's ``decode_eof`` does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator
from typing import Final, Protocol

from logsvc.errors import ProtocolError, RecordRejected
from logsvc.record import RecordDict
from logsvc.wire.buffer import ReceiveBuffer

__all__ = ["NEED_DATA", "Decoder", "EofFramer", "Format", "Framer", "NeedData"]


class NeedData(enum.Enum):
    """Sentinel type: ``next_record`` needs more bytes (or has seen a clean EOF)."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class Framer(Protocol):
    def maybe_extract(self, buf: ReceiveBuffer) -> bytes | None: ...


class BatchFramer(Framer, Protocol):
    """A framer that can cut every complete frame at once (optional method, see ``records``)."""

    def extract_all(self, buf: ReceiveBuffer) -> list[bytes]: ...


class EofFramer(Framer, Protocol):
    """A framer that can cut one last frame from what is left at EOF (optional method)."""

    def maybe_extract_at_eof(self, buf: ReceiveBuffer) -> bytes | None: ...


class Format(Protocol):
    def parse(self, frame: bytes) -> RecordDict: ...


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"  # EOF seen; buffered bytes may still hold whole frames
    ERROR = "error"


class Decoder:
    """Turns the bytes of one connection into records.

    Attributes:
        framer: cuts the stream into frames (e.g. ``LengthPrefixFramer``).
        format: turns one frame into a ``RecordDict`` (e.g. ``PickleFormat``).
    """

    __slots__ = ("_buf", "_error", "_pending", "_state", "format", "framer")

    def __init__(self, framer: Framer, format: Format) -> None:
        self.framer = framer
        self.format = format
        self._buf = ReceiveBuffer()
        self._state = _State.OPEN
        self._error: ProtocolError | None = None
        # Frames ``records`` cut from the buffer and its caller did not take (it stopped
        # early): they come first, in order, from the next ``records`` or ``next_record``.
        self._pending: list[bytes] = []

    @property
    def buffered_bytes(self) -> int:
        """Bytes held waiting for a complete frame (for the server's memory accounting)."""
        if self._pending:
            return len(self._buf) + sum(map(len, self._pending))
        return len(self._buf)

    @property
    def placeholders(self) -> int:
        """Running count of unpicklable objects the format replaced by a placeholder string."""
        return int(getattr(self.format, "placeholders", 0))

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Store received bytes; ``b""`` (any empty buffer) means the peer closed its side.

        Nothing is parsed here. Bytes fed in the ERROR state are dropped.

        Raises:
            RuntimeError: if called after EOF was fed: that is a bug in the caller, not
                something the peer can cause.
        """
        if self._state is _State.CLOSED:
            raise RuntimeError("Decoder.feed() called after EOF.")
        if self._state is _State.ERROR:
            return
        if len(data) == 0:
            self._state = _State.CLOSED
        else:
            self._buf.feed(data)

    def next_record(self) -> RecordDict | NeedData:
        """Parse and return the next record, or ``NEED_DATA``.

        Returns:
            A ``RecordDict``, or ``NEED_DATA`` if no complete frame is buffered. After a clean
            EOF (no partial frame left) it returns ``NEED_DATA`` forever; the caller knows it
            fed EOF.

        Raises:
            ProtocolError: on any bad input (``reason`` says which), including ``truncated``
                for a partial frame at EOF. The decoder then stays in the ERROR state and
                raises again on every call.
            RecordRejected: one frame was bad but the stream is still in step (a JSON line
                that is not an object, say); the frame is consumed and the next call goes on.
        """
        if self._state is _State.ERROR:
            assert self._error is not None
            raise ProtocolError(f"Decoder is in the error state: {self._error}", reason=self._error.reason)
        try:
            frame = self._pending.pop(0) if self._pending else self.framer.maybe_extract(self._buf)
            if frame is None:
                if self._state is _State.CLOSED and self._buf:
                    at_eof = getattr(self.framer, "maybe_extract_at_eof", None)
                    if at_eof is not None:
                        frame = at_eof(self._buf)
                    if frame is None:
                        if not self._buf:
                            return NEED_DATA  # the framer consumed a tail that held no frame
                        raise ProtocolError(
                            f"Connection closed with {len(self._buf)} bytes of an incomplete frame.",
                            reason="truncated",
                        )
                else:
                    return NEED_DATA
            return self.format.parse(frame)
        except RecordRejected:
            raise  # that one record is skipped; the stream is still in step
        except Exception as exc:
            err = self._failed(exc)
            if err is exc:
                raise
            raise err from exc

    def records(self, rejected: Callable[[RecordRejected], None]) -> Generator[RecordDict, None, None]:
        """Every record now complete: what ``next_record`` returns until ``NEED_DATA``.

        With a framer that has ``extract_all`` (``LengthPrefixFramer``) the complete frames
        are cut in one pass and parsed one by one as the caller iterates: the hot path of a
        stream connection, without four method calls per frame. Otherwise, and for whatever
        that pass leaves (a partial frame at EOF, a header to refuse), ``next_record``.

        Args:
            rejected: called with each ``RecordRejected`` (that frame is skipped, the stream
                goes on, as with ``next_record``).

        Raises:
            ProtocolError: as ``next_record``, after the records before the bad frame were
                yielded; the decoder is then in the ERROR state. If the caller stops
                iterating early, the frames cut and not yet parsed are kept for the next call.
        """
        extract_all = getattr(self.framer, "extract_all", None)
        if extract_all is not None:
            parse = self.format.parse
            while self._state is not _State.ERROR:
                frames: list[bytes]
                if self._pending:
                    frames, self._pending = self._pending, []
                else:
                    frames = extract_all(self._buf)
                    if not frames:
                        break
                it = iter(frames)
                try:
                    for frame in it:
                        try:
                            rec = parse(frame)
                        except RecordRejected as exc:
                            rejected(exc)
                            continue
                        except Exception as exc:
                            err = self._failed(exc)
                            if err is exc:
                                raise
                            raise err from exc
                        yield rec
                finally:
                    if self._error is None:  # (an error dropped every frame)
                        self._pending = list(it)  # [] unless the caller stopped early
        while True:
            try:
                rec_or_need = self.next_record()
            except RecordRejected as exc:
                rejected(exc)
                continue
            if rec_or_need is NEED_DATA:
                return
            yield rec_or_need

    def _failed(self, exc: Exception) -> ProtocolError:
        # The decoder's error state, entered; returns what to raise: ``exc`` itself if it is a
        # ProtocolError. Framers and formats promise ProtocolError only; if one breaks that
        # promise the peer still must not be able to raise anything else through us.
        err = (
            exc
            if isinstance(exc, ProtocolError)
            else ProtocolError(f"Internal decoder error: {exc!r}", reason="malformed")
        )
        self._fail(err)
        return err

    def _fail(self, exc: ProtocolError) -> None:
        self._state = _State.ERROR
        self._error = exc
        self._buf = ReceiveBuffer()  # release the memory; nothing more will be parsed
        self._pending = []
