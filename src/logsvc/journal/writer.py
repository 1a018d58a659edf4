"""The journal writer: the one owner of seqs, blocks, durability and the intake state.

Theory of operation
-------------------
Every transport (stream connections, datagrams, HTTP bodies) hands the records it decoded
to :meth:`JournalWriter.write`. Nothing else numbers a record, builds a block, writes the
journal or decides whether records may come in::

    transport --records--> write(): each record encoded once, with the next seq (RowEncoder)
                                |
                        the open block: rows, counts by listener, durable-waiters
                                |  sealed at BLOCK_BYTES, and at the end of each loop turn
                                v
                        sealed blocks, in seq order --flush()--> Journal.append(payload, count,
                                |                                     expected_first_seq)
                                v
                        appended: waiters told, counts moved to "journaled", the sink notified

The invariants, and where each is held:

* **Seqs.** ``next_seq`` is the journal's ``next_seq`` plus the rows not yet appended. A row
  carries its seq in its COPY text, stamped here; the journal checks at every append that the
  block starts where it expects (``JournalSeqMismatch`` otherwise), so the two can never
  drift apart unseen. If the journal must skip ahead (PostgreSQL holds seqs the journal lost),
  :meth:`skip_to` renumbers the rows still in memory before anything is appended.
* **Block size.** A block is sealed once its rows reach ``BLOCK_BYTES``. The encoder bounds a
  row (``copyfmt.MAX_ROW_BYTES``), so no block comes near the format's 64 MiB limit, whatever
  one request holds: a 16 MiB HTTP body of tiny lines becomes 16 blocks, not one.
* **Durability.** A block counts as written once ``Journal.append`` returned (with
  ``--fsync always``, after its fdatasync). :meth:`when_durable` callbacks (HTTP answers,
  acknowledgements) run then, and only then; with ``ok=False`` if the service stops first.
* **Intake state** (``IntakeState``): OPEN, FULL (the unshipped journal reached
  ``--journal-max-bytes``: PostgreSQL is behind) or FAILING (the journal cannot be written,
  or the sink cannot read it back). Transports check :attr:`accepting` before they read;
  when it is false they :meth:`park` a callback and stop, and every parked callback is
  scheduled once the state is OPEN again. Nothing read is dropped in any state.
* **Failures are a state.** Any exception from an append, ``OSError`` (disk full) or not (a
  bug), makes the writer FAILING with the reason, logged once, counted, and retried every
  ``RETRY_S`` with the same blocks; it never escapes into the loop, so there is no traceback
  per turn. Recovery is automatic and logged once.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import enum
import errno
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from logsvc import loop as _loop
from logsvc.journal.segment import Journal
from logsvc.metrics import Metrics
from logsvc.record import RecordDict
from logsvc.store.copyfmt import ROW_FORMAT, RowEncoder, with_stream
from logsvc.store.rollup import BlockTallies, Tally

log = logging.getLogger("logsvc.journal")

# Rows are cut into a block once they reach this many bytes. 1 MiB: one writev and one
# CRC of it take ~0.3 ms here, and a turn's worth of records rarely exceeds it, so under
# load a block is what one loop turn decoded (group commit). The encoder caps a row, so a
# block stays far below the format's MAX_BLOCK_PAYLOAD (64 MiB) whatever a request holds.
BLOCK_BYTES = 1 << 20
# After a failed append (disk full, I/O error), how often the same blocks are tried again.
RETRY_S = 1.0

Durable = Callable[[bool], None]
# How the log says that a fault source has cleared.
_RECOVERED = {
    "journal_write": "Journal writes",
    "journal_read": "Journal reads",
    "journal_skip": "Journal numbering",
}


class IntakeState(enum.Enum):
    """Whether transports may read records now."""

    OPEN = "open"
    FULL = "full"  # the unshipped journal is at --journal-max-bytes: PostgreSQL is behind
    FAILING = "failing"  # the journal cannot be written, or the sink cannot read it back


@dataclass(slots=True)
class _Block:
    first_seq: int
    rows: list[bytes] = field(default_factory=list)
    nbytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # rows by listener kind
    waiters: list[Durable] = field(default_factory=list)
    synced_waiters: list[Durable] = field(default_factory=list)  # told after an fdatasync
    tally: Tally | None = None  # the rows by created second and level, taken at the seal
    streams: bool = False  # holds rows of the acknowledged protocol's streams (write_stream)


class JournalWriter:
    """Number, encode, block and append every record; own the intake state. See the module doc.

    Args:
        reactor: the loop (retry timers, resuming parked transports).
        journal: an open ``Journal``.
        encoder: the one ``RowEncoder``.
        metrics: where the counts go.
        confirmed_seq: returns the last seq PostgreSQL confirmed (for the FULL check).
        on_appended: called after each block is appended (the sink ships from there).
        block_bytes: seal a block once its rows reach this many bytes.
    """

    def __init__(
        self,
        reactor: _loop.Reactor,
        journal: Journal,
        encoder: RowEncoder,
        metrics: Metrics,
        *,
        confirmed_seq: Callable[[], int] = lambda: 0,
        on_appended: Callable[[], None] | None = None,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        self._reactor = reactor
        self._journal = journal
        self._encoder = encoder
        self._metrics = metrics
        self._confirmed_seq = confirmed_seq
        self.on_appended = on_appended
        self._block_bytes = block_bytes
        self.next_seq = journal.next_seq
        self._open = _Block(self.next_seq)
        self._sealed: deque[_Block] = deque()
        self._full = False
        self._ignore_full = False  # shutting down: read what clients sent even if full
        self._faults: dict[str, str] = {}  # source ("journal_write", "journal_read") -> why
        self._fault_since: dict[str, float] = {}
        self._retry: _loop.Timer | None = None
        self._skip_target = 0  # a skip_to that failed, retried before anything is appended
        self._parked: dict[object, Callable[[], None]] = {}
        self._unsynced: list[Durable] = []  # told once the next fdatasync has succeeded
        # The appended blocks' tallies, until the sink has stored them (store.rollup).
        self.tallies = BlockTallies()
        self.state = IntakeState.OPEN
        self._closed = False

    # -- the hot path ----------------------------------------------------------------------

    def write(self, records: Iterable[RecordDict], kind: str, peer: str, received: float) -> int:
        """Encode ``records`` with the next seqs into the open block; return how many.

        ``records`` may raise (a decoder's ``ProtocolError``): the records before it are kept
        and the exception propagates to the transport. A record the encoder fails on (a bug)
        is counted as rejected with reason ``"encode_error"``, logged, and skipped.
        """
        enc = self._encoder.encode
        ts = self._encoder.timestamp(received)
        blk = self._open
        rows = blk.rows
        seq = self.next_seq
        nbytes = blk.nbytes
        limit = self._block_bytes
        n = 0  # rows added to the current open block by this call
        total = 0
        try:
            for rec in records:
                try:
                    row = enc(rec, seq, peer, ts)
                except Exception as exc:
                    self._encode_failed(kind, exc)
                    continue
                rows.append(row)
                seq += 1
                n += 1
                nbytes += len(row)
                if nbytes >= limit:
                    blk.nbytes = nbytes
                    blk.kinds[kind] += n
                    total += n
                    self.next_seq = seq
                    self._seal()
                    blk = self._open
                    rows = blk.rows
                    nbytes = n = 0
                    if not self._appends_blocked:
                        self._flush_sealed()
        finally:
            blk.nbytes = nbytes
            if n:
                blk.kinds[kind] += n
                total += n
            self.next_seq = seq
            if total:
                self._metrics.records_read[kind] += total
        return total

    def write_stream(
        self, records: Sequence[tuple[int, RecordDict]], stream: bytes, kind: str, peer: str, received: float
    ) -> int:
        """``write`` for the acknowledged protocol: each record with its stream seq.

        ``stream`` is the stream id (32 lower-case hex digits); every row carries it and the
        record's stream seq (``records.stream``, ``stream_seq``), by which PostgreSQL keeps
        each record of a stream once (``store.streams``). Blocks and seqs as ``write``.
        """
        enc = self._encoder.encode
        ts = self._encoder.timestamp(received)
        blk = self._open
        n = 0
        # Each row goes into the open block as it is encoded (as in write()), so the encoder's
        # tally taken at a seal is that block's rows exactly. ``records`` is a list here.
        for stream_seq, rec in records:
            try:
                row = with_stream(enc(rec, self.next_seq, peer, ts), stream, stream_seq)
            except Exception as exc:
                self._encode_failed(kind, exc)
                continue
            blk.rows.append(row)
            blk.streams = True
            blk.nbytes += len(row)
            blk.kinds[kind] += 1
            self.next_seq += 1
            n += 1
            if blk.nbytes >= self._block_bytes:
                self._seal()
                blk = self._open
                if not self._appends_blocked:
                    self._flush_sealed()
        if n:
            self._metrics.records_read[kind] += n
        return n

    def when_durable(self, callback: Durable, *, synced: bool = False) -> None:
        """Call ``callback(True)`` once every record written so far is in the journal.

        With ``synced``, only once it is also on disk: the writer makes one fdatasync per
        flush for all such callbacks (acknowledgements), whatever ``--fsync`` says (except
        ``never``, where nothing is ever synced). ``callback(False)`` if the writer is closed
        before that (the service stopped with the journal failing). With nothing pending, it
        is called on the next loop turn (for ``synced``, after a sync if one is owed).
        """
        if self._open.rows:
            blk = self._open
        elif self._sealed:
            blk = self._sealed[-1]
        elif synced:
            # Appended already, maybe not synced yet (journal.sync() is a no-op if it was).
            self._unsynced.append(callback)
            self._reactor.call_soon(self._sync_waiting)
            return
        else:
            self._reactor.call_soon(lambda: callback(True))
            return
        (blk.synced_waiters if synced else blk.waiters).append(callback)

    # -- flushing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Seal the open block and append every sealed one (the reactor's before-poll hook)."""
        if self._open.rows:
            self._seal()
        if self._sealed and not self._appends_blocked:
            self._flush_sealed()

    def _seal(self) -> None:
        blk = self._open
        blk.tally = self._encoder.take_tally()
        self._sealed.append(blk)
        self._open = _Block(self.next_seq)

    def _flush_sealed(self) -> bool:
        journal = self._journal
        m = self._metrics
        while self._sealed:
            blk = self._sealed[0]
            before = journal.next_seq
            try:
                journal.append(
                    b"".join(blk.rows), len(blk.rows), expected_first_seq=blk.first_seq, row_format=ROW_FORMAT
                )
            except OSError as exc:
                if journal.next_seq == before:
                    self._write_failed(exc)
                    return False
                # Written, but the fdatasync after it (--fsync always) failed: the block is in
                # the page cache and the journal's index. Counted as appended, never twice.
                m.journal_write_errors += 1
                log.error("Journal fsync failed after an append: %s; continuing.", exc)
            except Exception as exc:
                # A seq mismatch or a block the format refuses: a bug, and a state, not a
                # traceback per turn. The blocks stay; nothing read is dropped.
                self._write_failed(exc)
                return False
            self._sealed.popleft()
            if blk.tally is not None:
                self.tallies.put(blk.first_seq, len(blk.rows), blk.tally, streams=blk.streams)
            m.journal_blocks += 1
            m.records_journaled.update(blk.kinds)
            for waiter in blk.waiters:
                waiter(True)
            self._unsynced.extend(blk.synced_waiters)
            if self.on_appended is not None:
                self.on_appended()
        if not self._sync_for_waiters():
            return False
        if "journal_write" in self._faults:
            self.clear_fault("journal_write")
        self.check_room()
        return True

    def _sync_waiting(self) -> None:
        self._sync_for_waiters()

    def _sync_for_waiters(self) -> bool:
        # One fdatasync for every acknowledgement waiting on appended blocks (group commit).
        if not self._unsynced:
            return True
        try:
            self._journal.sync()
        except Exception as exc:
            # Appended but not known to be on disk: nobody is told yet; retried with the blocks.
            self._write_failed(exc)
            return False
        self._metrics.journal_syncs_for_acks += 1
        waiters, self._unsynced = self._unsynced, []
        for waiter in waiters:
            waiter(True)
        return True

    def _write_failed(self, exc: BaseException) -> None:
        self._metrics.journal_write_errors += 1
        if "journal_write" not in self._faults:
            why = f"Cannot write the journal: {exc}"
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                where = self._journal.directory
                why = f"Cannot write the journal (the disk is full): {exc}; free space under {where}"
            self.fault(
                "journal_write",
                why,
                exc_info=None if isinstance(exc, OSError) else exc,
            )
        if self._retry is None or not self._retry.active:
            self._retry = self._reactor.call_later(RETRY_S, self._retry_flush)

    def _retry_flush(self) -> None:
        self._retry = None
        if self._closed:
            return
        if self._skip_target:
            self.skip_to(self._skip_target)
            return
        if self._open.rows:
            self._seal()
        self._flush_sealed()

    @property
    def _appends_blocked(self) -> bool:
        # A failed append is retried by its timer; a failed skip must succeed before any append.
        return "journal_write" in self._faults or "journal_skip" in self._faults

    def _encode_failed(self, kind: str, exc: BaseException) -> None:
        m = self._metrics
        first = m.records_rejected[kind, "encode_error"] == 0
        m.records_rejected[kind, "encode_error"] += 1
        if first:
            log.error("A %s record could not be encoded; it is counted and skipped.", kind, exc_info=exc)

    # -- seqs ------------------------------------------------------------------------------

    def skip_to(self, seq: int) -> None:
        """Make every seq handed out from now on at least ``seq`` (the journal's too).

        For the sink: PostgreSQL holds seqs of this journal up to ``seq - 1`` that the journal
        no longer has (its tail was lost after it was shipped). Rows still in memory were
        numbered below that; they are renumbered from ``seq`` before they are appended, so
        none of them is mistaken for a record PostgreSQL already has.
        """
        if seq <= self._journal.next_seq:
            return
        # Not flushed first: appended now, these rows would be skipped as already shipped.
        if self._open.rows:
            self._seal()
        try:
            self._journal.skip_to(seq)
        except Exception as exc:
            # Nothing may be appended below seq: appends wait (FAILING) and this is retried.
            self._skip_target = seq
            self.fault(
                "journal_skip",
                f"Cannot move the journal past seq {seq - 1}, which PostgreSQL already holds: {exc}",
                exc_info=None if isinstance(exc, OSError) else exc,
            )
            if self._retry is None or not self._retry.active:
                self._retry = self._reactor.call_later(RETRY_S, self._retry_flush)
            return
        finally:
            self._renumber(self._journal.next_seq)
        self._skip_target = 0
        if "journal_skip" in self._faults:
            self.clear_fault("journal_skip")
            self._flush_sealed()

    def _renumber(self, nxt: int) -> None:
        # The rows not yet appended, from nxt on (their seq is the row's first field).
        for blk in self._sealed:
            if blk.first_seq == nxt:
                nxt += len(blk.rows)
                continue
            blk.first_seq = nxt
            renumbered = []
            for row in blk.rows:
                renumbered.append(b"%d%s" % (nxt, row[row.index(b"\t") :]))
                nxt += 1
            blk.rows[:] = renumbered
            blk.nbytes = sum(map(len, renumbered))
        self.next_seq = nxt
        self._open = _Block(nxt, waiters=self._open.waiters, synced_waiters=self._open.synced_waiters)

    @property
    def journal_id(self) -> str:
        return self._journal.journal_id

    # -- the intake state ------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """True while transports may read records (the state is OPEN)."""
        return self.state is IntakeState.OPEN

    @property
    def reason(self) -> str:
        """Why the state is not OPEN, for /readyz and the log ("" when OPEN)."""
        if self._faults:
            return "; ".join(self._faults.values())
        if self.state is IntakeState.FULL:
            return (
                f"the journal is full ({self._journal.unshipped_bytes(self._confirmed_seq())} unshipped "
                f"bytes, --journal-max-bytes {self._journal.max_bytes}): PostgreSQL is behind"
            )
        return ""

    @property
    def pending_records(self) -> int:
        """Records read but not yet in the journal (counted, never derived from seqs)."""
        return len(self._open.rows) + sum(len(b.rows) for b in self._sealed)

    def park(self, key: object, callback: Callable[[], None]) -> None:
        """Run ``callback`` (once) when the state is next OPEN; one callback per ``key``."""
        self._parked[key] = callback

    def unpark(self, key: object) -> None:
        self._parked.pop(key, None)

    def check_room(self) -> None:
        """Re-evaluate FULL: after an append, and when the sink released shipped segments."""
        full = self._journal.over_limit(self._confirmed_seq())
        if full == self._full:
            return
        self._full = full
        if full:
            self._metrics.backpressure_episodes += 1
            log.warning(
                "Journal is full (%d unshipped bytes >= journal_max_bytes %d); PostgreSQL is behind. "
                "Pausing reads from clients until it catches up; nothing read is dropped.",
                self._journal.unshipped_bytes(self._confirmed_seq()),
                self._journal.max_bytes,
            )
        else:
            log.info(
                "Journal has room again (%d unshipped bytes); resuming %d paused readers.",
                self._journal.unshipped_bytes(self._confirmed_seq()),
                len(self._parked),
            )
        self._update_state()

    def ignore_full(self) -> None:
        """Shutting down: read what clients already sent even if the journal is full."""
        self._ignore_full = True
        self._update_state()

    def fault(self, source: str, why: str, *, exc_info: BaseException | None = None) -> None:
        """Enter FAILING for ``source`` (e.g. ``"journal_read"`` from the sink), logged once."""
        if source in self._faults:
            self._faults[source] = why
            return
        self._faults[source] = why
        self._fault_since[source] = time.monotonic()
        self._metrics.intake_failures[source] += 1
        log.error(
            "FAILING (%s): %s. Pausing reads from all clients; the %d records read and not yet "
            "journaled are kept in memory, nothing is dropped; retrying every %.0f s. /readyz "
            "answers 503 until this clears.",
            source,
            why,
            self.pending_records,
            RETRY_S,
            exc_info=exc_info,
        )
        self._update_state()

    def clear_fault(self, source: str) -> None:
        if self._faults.pop(source, None) is None:
            return
        since = self._fault_since.pop(source, time.monotonic())
        log.warning(
            "%s work again after %.1f s; resuming %d paused readers.",
            _RECOVERED.get(source, source),
            time.monotonic() - since,
            len(self._parked),
        )
        self._update_state()

    def _update_state(self) -> None:
        if self._faults:
            state = IntakeState.FAILING
        elif self._full and not self._ignore_full:
            state = IntakeState.FULL
        else:
            state = IntakeState.OPEN
        if state is self.state:
            return
        self.state = state
        if state is IntakeState.OPEN:
            parked, self._parked = self._parked, {}
            for callback in parked.values():
                self._reactor.call_soon(callback)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> int:
        """Flush what can be flushed; tell the remaining waiters no. Returns records left unwritten."""
        self.flush()
        self._closed = True
        self._reactor.cancel(self._retry)
        left = self.pending_records
        self._sync_for_waiters()
        for waiter in self._unsynced:
            waiter(False)
        self._unsynced.clear()
        for blk in (*self._sealed, self._open):
            for waiter in (*blk.waiters, *blk.synced_waiters):
                waiter(False)
            blk.waiters.clear()
            blk.synced_waiters.clear()
        self._parked.clear()
        return left
