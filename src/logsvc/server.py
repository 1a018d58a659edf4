"""``logsvc serve``: the pieces wired on one reactor, signals, timers and the shutdown order.

Theory of operation
-------------------
::

    ingest.Intake            journal.JournalWriter              store.PgSink
    listeners, connections --records--> seqs, blocks, --blocks--> batches --COPY--> PostgreSQL
    (EPOLLET, budgets)                  journal.Journal          (one transaction with the
          ^                             intake state             journal position)
          '-- park / resume ------------'  OPEN / FULL / FAILING

* ``ingest`` reads and decodes; the journal writer numbers, encodes, blocks and appends
  every record, and owns whether records may come in; the sink reads blocks back and ships
  them. Each invariant has one owner: this module only builds the pieces and connects their
  callbacks. ``ops`` reads a ``Figures`` snapshot made here.
* Timers: the journal's fsync (``--fsync interval``), the stats line, the connection sweep.
* SIGTERM/SIGINT: the shutdown deadline is armed first; then the listeners close, every
  client's already-sent bytes are read and journaled, everything is shipped, and the process
  exits 0. At the deadline, or at a second signal, it exits saying exactly what stays: records
  in the journal (shipped at the next start) and records read but never journaled (lost).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import gc
import logging
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

from logsvc import loop as _loop
from logsvc import ops
from logsvc.config import Settings
from logsvc.console import Console
from logsvc.console import build as build_console
from logsvc.ingest.app import HttpApp
from logsvc.ingest.intake import Intake
from logsvc.journal import Journal
from logsvc.journal.streams import StreamPositions
from logsvc.journal.writer import JournalWriter
from logsvc.metrics import Metrics
from logsvc.store.copyfmt import RowEncoder
from logsvc.store.sink import PgSink

log = logging.getLogger("logsvc.server")

# On shutdown, bytes still read from one client before it is closed.
SHUTDOWN_READ_BYTES = 16 << 20
# Descriptors the service needs besides its clients: journal segments, PostgreSQL, epoll,
# listeners, the embedded server's pipes, logging.
RESERVED_FDS = 64


# The cyclic garbage collector's first generation threshold while serving (CPython's default:
# 700). The hot path makes many short-lived containers (a dict per record, the items of a
# _bulk answer) that reference counting frees; at 700 the collector ran every few dozen records
# and promoted a request's live items to older generations, whose collections scan them again.
# Service CPU a record 15.9 -> 15.3 us (_bulk) and 15.7 -> 15.2 us (OTLP), four alternating
# rounds (bench/results/ab-gc-threshold-20261129.txt). Cyclic garbage waits for at most this
# many allocations.
GC_THRESHOLD = (50_000, 20, 100)


def tune_gc() -> None:
    """Freeze what start-up made (modules, settings: never garbage) and raise the thresholds."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


class Server:
    """One ``serve``: build with the settings and a libpq DSN, ``start()``, then ``run()``."""

    def __init__(self, settings: Settings, conninfo: str) -> None:
        self.settings = settings
        self.conninfo = conninfo
        self.metrics = Metrics()
        self.reactor = _loop.Reactor()
        self.journal = Journal(
            Path(settings.data_dir) / "journal",
            segment_bytes=settings.journal_segment_bytes,
            fsync=settings.fsync,
            max_bytes=settings.journal_max_bytes,
        )
        self.encoder = RowEncoder()
        self.started = time.monotonic()
        self.stopping = False
        self._done = False
        # Built by start(), once the journal is open (the writer numbers from it).
        self.writer: JournalWriter | None = None
        self.sink: PgSink | None = None
        self.intake: Intake | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Recover the journal, bind the listeners, start connecting to PostgreSQL."""
        st = self.settings
        max_connections = _check_nofile_limit(_raise_nofile_limit(), st.max_connections)
        self._open_journal()
        r = self.reactor
        m = self.metrics
        writer = self.writer = JournalWriter(
            r, self.journal, self.encoder, m, confirmed_seq=lambda: sink.confirmed_seq
        )
        sink = self.sink = PgSink(
            r,
            self.journal,
            m,
            conninfo=self.conninfo,
            schema_name=st.schema,
            max_records=st.batch_max_records,
            max_bytes=st.batch_max_bytes,
            max_age=st.batch_max_age,
            retention_days=st.retention,
            extra_index_keys=tuple(k for k in st.index_extra if k),
            on_released=writer.check_room,
            dead_letter_dir=Path(st.data_dir) / "deadletter",
            skip_to=writer.skip_to,
            on_read_fault=self._read_fault,
            pg_timeout=st.pg_timeout,
            on_connection_lost=self._embedded_supervisor(),
            tallies=writer.tallies,
        )
        writer.on_appended = sink.notify_appended
        registry = ops.make_registry(m, self.figures)
        console = None
        if st.metrics is not None:  # the web console, on the operator port (logsvc.console)
            host, token, timeout = st.metrics[0], st.console_token, st.pg_timeout
            console = build_console(r, self.conninfo, st.schema, host=host, token=token, pg_timeout=timeout)
        app = HttpApp(
            writer, m, registry, self.figures, lambda: self.stopping, r, st.assume_timezone,
            console=None if console is None else console.handle, console_claims=Console.claims,
        )  # fmt: skip
        streams = StreamPositions()
        streams.load(self.journal)
        self.intake = Intake(r, writer, m, st, app.for_listener, max_connections, streams)
        self.intake.bind_all()
        r.add_before_poll(writer.flush)
        r.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        r.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        if st.fsync == "interval":
            r.call_later(st.fsync_interval, self._fsync_tick)
        if st.stats_interval > 0:
            r.call_later(st.stats_interval, self._stats_tick)
        if st.idle_timeout > 0 or st.frame_timeout > 0:
            r.call_later(self.intake.sweep_interval(), self._sweep)
        sink.start()

    def _embedded_supervisor(self) -> Callable[[], bool] | None:
        """Without --dsn: restart the embedded PostgreSQL when it dies (its check runs on failures)."""
        if self.settings.dsn:
            return None
        from logsvc import embedded

        try:
            return embedded.Supervisor(Path(self.settings.data_dir), self.metrics).check
        except ValueError:
            return None  # not started by this process (tests build a Server with their own DSN)

    def _open_journal(self) -> None:
        report = self.journal.open()
        log.info(
            "Journal %s opened: journal_id=%s next_seq=%d segments=%d size=%d bytes.",
            self.journal.directory,
            self.journal.journal_id,
            self.journal.next_seq,
            report.segments,
            self.journal.size_bytes,
        )
        if report.torn_tail_bytes_truncated:
            n = report.torn_tail_records
            log.warning(
                "Journal: truncated a torn tail of %d bytes (%s).",
                report.torn_tail_bytes_truncated,
                f"{n} records lost" if n else "records lost unknown: its header was torn too",
            )
        if report.seq_jump:
            log.warning(
                "Journal: the last stop was not clean; numbering jumps by %d to seq %d, past every "
                "seq reserved before it (seq.reserved), so none that may have been shipped is "
                "handed out again. The gap holds no records.",
                report.seq_jump,
                self.journal.next_seq,
            )
        for path, start, end, lost in report.corrupt:
            log.error(
                "Journal: corrupt range %s bytes %d-%d skipped, %d records lost.", path, start, end, lost
            )
            self.metrics.journal_records_lost += lost

    def run(self) -> int:
        """Serve until stopped; return the exit status."""
        tune_gc()
        try:
            self.reactor.run()
        finally:
            self._close_all()
        return 0

    def _read_fault(self, why: str | None) -> None:
        assert self.writer is not None
        if why is None:
            self.writer.clear_fault("journal_read")
        else:
            self.writer.fault("journal_read", why)

    def figures(self) -> ops.Figures:
        """The gauges of this moment, for /metrics and /readyz (reads only)."""
        assert self.writer is not None and self.sink is not None and self.intake is not None
        r, w, sink, enc = self.reactor, self.writer, self.sink, self.encoder.stats
        return ops.Figures(
            uptime_seconds=time.monotonic() - self.started,
            intake_state=w.state.value,
            intake_reason=w.reason,
            pg_connected=self.metrics.pg_connected,
            pg_error=sink.last_error,
            journal_bytes=self.journal.size_bytes,
            journal_max_bytes=self.journal.max_bytes,
            unshipped_records=sink.unshipped,
            lag_seconds=sink.lag_seconds(),
            pending_records=w.pending_records,
            connections_open=self.intake.open_connections,
            udp_datagrams_dropped=self.intake.udp_drops(),
            loop_iterations=r.iterations,
            loop_busy_seconds=r.busy_seconds,
            loop_max_turn_seconds=r.recent_max_busy(),
            loop_handler_errors=r.handler_errors,
            encode_replaced_chars=enc.replaced_chars,
            encode_coerced_fields=enc.bad_fields,
            encode_truncated_fields=enc.truncated_fields,
            acked_streams=len(self.intake.streams) if self.intake is not None else 0,
        )

    # -- timers ----------------------------------------------------------------------------

    def _fsync_tick(self) -> None:
        try:
            self.journal.sync()
        except OSError as exc:
            self.metrics.journal_write_errors += 1
            log.error("Journal fsync failed: %s; retrying at the next interval.", exc)
        self.reactor.call_later(self.settings.fsync_interval, self._fsync_tick)

    def _sweep(self) -> None:
        assert self.intake is not None
        self.intake.sweep()
        self.reactor.call_later(self.intake.sweep_interval(), self._sweep)

    def _stats_tick(self) -> None:
        assert self.sink is not None
        st = self.encoder.stats
        log.info(
            "Stats: %s unshipped=%d journal_bytes=%d placeholders=%d replaced_chars=%d coerced_fields=%d.",
            self.metrics.summary(),
            self.sink.unshipped,
            self.journal.size_bytes,
            self.metrics.placeholders,
            st.replaced_chars,
            st.bad_fields,
        )
        self.reactor.call_later(self.settings.stats_interval, self._stats_tick)

    # -- stopping --------------------------------------------------------------------------

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._done:
            return
        if self.stopping:
            log.warning("%s again: exiting now; %s.", name, self._what_stays())
            self._done = True
            self.reactor.stop()
            return
        log.info(
            "%s: stopping. No new connections; draining clients and shipping to PostgreSQL (at most %.0f s).",
            name,
            self.settings.shutdown_timeout,
        )
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        """Stop taking clients, journal what they sent, ship it all, then stop the loop."""
        # The deadline first: whatever fails below, the process still exits on time.
        self.reactor.call_later(self.settings.shutdown_timeout, self._shutdown_timed_out)
        self.stopping = True
        assert self.intake is not None and self.writer is not None and self.sink is not None
        writer, sink = self.writer, self.sink
        try:
            self.intake.close_listeners()
            # Read what each client already sent, then close it (unless the journal is failing:
            # reading would only pile up records in memory that may never land).
            writer.ignore_full()
            self.intake.drain(SHUTDOWN_READ_BYTES)
            writer.flush()
        finally:
            self._sync_quietly()
            # Once everything read is in the journal (now, or after the writer's retries).
            writer.when_durable(lambda ok: sink.drain(self._drained) if ok else None)

    def _what_stays(self) -> str:
        assert self.writer is not None and self.sink is not None
        lost = self.writer.pending_records
        text = f"{self.sink.unshipped} records not yet in PostgreSQL stay in the journal for the next start"
        if lost:
            text += (
                f"; {lost} records read from clients could not be written to the journal and are lost "
                f"({self.writer.reason or 'not flushed'})"
            )
        return text

    def _sync_quietly(self) -> None:
        try:
            self.journal.sync()
        except OSError as exc:
            log.error("Journal fsync failed: %s.", exc)

    def _drained(self) -> None:
        self._done = True
        log.info("Everything is in PostgreSQL (%s). Bye.", self.metrics.summary())
        self.reactor.stop()

    def _shutdown_timed_out(self) -> None:
        if self._done:
            return
        self._done = True
        log.warning("Shutdown timeout: %s.", self._what_stays())
        self.reactor.stop()

    def _close_all(self) -> None:
        # Each step on its own: one failing must not leave the journal unsynced or unlocked.
        steps = []
        if self.intake is not None:
            steps.append(self.intake.close)
        if self.writer is not None:
            steps.append(self._close_writer)
        if self.sink is not None:
            steps.append(self.sink.close)
        steps += [self._sync_quietly, self.journal.close, self.reactor.close]
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("Error while shutting down (%s); going on with the rest.", step)

    def _close_writer(self) -> None:
        assert self.writer is not None
        left = self.writer.close()
        if left:
            log.error(
                "%d records read from clients could not be written to the journal and are lost (%s).",
                left,
                self.writer.reason or "not flushed",
            )


def _raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every connection is a descriptor).

    Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("Could not raise the open-file limit from %d to %d.", soft, target)
    return soft


def _check_nofile_limit(soft: int, max_connections: int) -> int:
    """The number of clients that fit under the open-file limit; says so if it is too low."""
    if soft == resource.RLIM_INFINITY or soft >= max_connections + RESERVED_FDS:
        return max_connections
    fit = max(1, soft - RESERVED_FDS)
    log.warning(
        "The open-file limit is %d (raised to the hard limit), too low for --max-connections %d: "
        "at most %d clients will be accepted. Raise the hard limit (ulimit -Hn; systemd: "
        "LimitNOFILE=) or lower --max-connections.",
        soft,
        max_connections,
        fit,
    )
    return fit
