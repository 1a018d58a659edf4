"""What the fault tests share: tagged stock clients, a tally of what PostgreSQL kept, log parsing.

Loss and duplicates are measured, never assumed. Every record a client logs carries
``extra={"run": RUN, "client": I, "n": N}``, with ``N`` counting up from 0 in each client,
and each client publishes how many records it has logged so far. ``tally`` then compares the
set of ``(client, n)`` stored for the run with what was logged: lost is what is missing,
duplicated is every copy past the first, unexpected is any stored row that no client logged
(wrong run, an ``n`` never logged, or a message that does not match its tags).

The clients are the stock ``logging.handlers.SocketHandler``, configured by ``dictConfig``
as an application would. Two of its habits shape what they lose:

* it drops a record whenever it has no connection, and while disconnected it retries only
  after ``retryStart`` seconds, doubling up to ``retryMax`` (1 s and 30 s by default; the
  tests lower them, which changes how much is dropped but not what is measured);
* its socket keeps the 1 s timeout ``create_connection`` was given, so a ``sendall`` that
  the service does not read for a second raises; the handler then closes the connection
  and drops that record (possibly with part of its frame already sent).

After each emit a client checks ``handler.sock``: if it is None, that record did not go into
a connection, and it is counted as dropped by the client. What is lost beyond that was accepted
by the kernel and never reached the journal (in flight when the service was killed).
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.config
import logging.handlers
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

LOGGER = "faults"
MESSAGE = "[%06d] log message %08d"


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """How each tagged client behaves; the defaults send until stopped."""

    run: str
    max_count: int = 1_000_000
    max_seconds: float = 120.0  # a client gives up on its own after this, whatever happens
    pause: float = 0.0  # seconds between records
    retry_start: float = 1.0  # SocketHandler's own defaults
    retry_max: float = 30.0


def _client_main(
    port: int,
    index: int,
    plan: ClientPlan,
    stop: Any,
    sent: Any,
    dropped: Any,
) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "svc": {"class": "logging.handlers.SocketHandler", "host": "127.0.0.1", "port": port},
            },
            "loggers": {LOGGER: {"level": "DEBUG", "handlers": ["svc"], "propagate": False}},
        }
    )
    logger = logging.getLogger(LOGGER)
    handler = logger.handlers[0]
    assert isinstance(handler, logging.handlers.SocketHandler)
    handler.retryStart = plan.retry_start
    handler.retryMax = plan.retry_max
    pid = os.getpid()
    deadline = time.monotonic() + plan.max_seconds
    n = 0
    while n < plan.max_count and time.monotonic() < deadline:
        if n % 16 == 0 and stop.is_set():
            break
        logger.info(MESSAGE, pid, n, extra={"run": plan.run, "client": index, "n": n, "trace_id": index})
        n += 1
        sent[index] = n
        if handler.sock is None:
            dropped[index] += 1
        if plan.pause:
            time.sleep(plan.pause)
    logging.shutdown()


class TaggedClients:
    """``procs`` forked processes, each a stock SocketHandler client logging tagged records."""

    def __init__(self, port: int, procs: int, plan: ClientPlan) -> None:
        ctx = multiprocessing.get_context("fork")
        self.plan = plan
        self._stop = ctx.Event()
        # One writer per slot (its client), so no lock is needed.
        self._sent: Any = ctx.RawArray("q", procs)
        self._dropped: Any = ctx.RawArray("q", procs)
        self.procs: list[multiprocessing.process.BaseProcess] = [
            ctx.Process(target=_client_main, args=(port, i, plan, self._stop, self._sent, self._dropped))
            for i in range(procs)
        ]

    def start(self) -> TaggedClients:
        for p in self.procs:
            p.start()
        return self

    @property
    def sent(self) -> list[int]:
        """Records each client has logged so far (its next ``n``)."""
        return list(self._sent)

    @property
    def dropped(self) -> list[int]:
        """Records each client's handler had no connection for, so far."""
        return list(self._dropped)

    def total_sent(self) -> int:
        return sum(self._sent)

    def stop(self, timeout: float = 60.0) -> None:
        """Ask every client to stop, then join them (killing any that do not finish in time)."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
        alive = [p for p in self.procs if p.is_alive()]
        for p in alive:
            p.kill()
            p.join(10)
        assert not alive, f"{len(alive)} client processes did not finish within {timeout:g} s"
        assert all(p.exitcode == 0 for p in self.procs), [p.exitcode for p in self.procs]

    def kill(self) -> None:
        """For cleanup: end any client still running (only the processes we started)."""
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(10)


@dataclass(frozen=True, slots=True)
class Tally:
    """What PostgreSQL holds for one run, compared with what its clients logged."""

    sent: int
    rows: int  # rows of this run
    distinct: int  # distinct (client, n) among them
    lost: int  # logged, not stored
    duplicated: int  # rows - distinct
    unexpected: int  # rows no client logged, or whose message disagrees with its tags
    other_rows: int  # rows in the table that are not this run's at all
    seq_duplicates: int  # rows sharing a journal seq with another row
    missing: dict[int, list[int]] = field(repr=False)  # client -> the n it logged, not stored
    seqs: dict[tuple[int, int], int] = field(repr=False)  # (client, n) -> seq (lowest)

    def ns(self, client: int) -> list[int]:
        """The n stored for ``client``, ascending."""
        return sorted(n for c, n in self.seqs if c == client)


def tally(dsn: str, schema: str, run: str, sent: Sequence[int]) -> Tally:
    """Compare every row of ``schema.records`` with what the clients of ``run`` logged."""
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            f"SELECT extra->>'run', extra->>'client', extra->>'n', seq, message, process "
            f"FROM {schema}.records"
        ).fetchall()
    copies: Counter[tuple[int, int]] = Counter()
    seqs: dict[tuple[int, int], int] = {}
    seq_count: Counter[int] = Counter()
    unexpected = other = 0
    for r_run, r_client, r_n, seq, message, process in rows:
        seq_count[seq] += 1
        if r_run != run:
            other += 1
            continue
        try:
            key = (int(r_client), int(r_n))
        except (TypeError, ValueError):
            unexpected += 1
            continue
        client, n = key
        if not (0 <= client < len(sent) and 0 <= n < sent[client]) or message != MESSAGE % (process, n):
            unexpected += 1
            continue
        copies[key] += 1
        seqs[key] = min(seq, seqs.get(key, seq))
    missing = {i: [n for n in range(count) if (i, n) not in copies] for i, count in enumerate(sent)}
    run_rows = len(rows) - other
    return Tally(
        sent=sum(sent),
        rows=run_rows,
        distinct=len(copies),
        lost=sum(len(m) for m in missing.values()),
        duplicated=sum(copies.values()) - len(copies),
        unexpected=unexpected,
        other_rows=other,
        seq_duplicates=sum(k - 1 for k in seq_count.values()),
        missing=missing,
        seqs=seqs,
    )


def stored_count(conn: psycopg.Connection[Any], schema: str) -> int:
    """Rows in ``schema.records`` on an open autocommit connection; 0 before the table exists."""
    if conn.execute("SELECT to_regclass(%s)", [f"{schema}.records"]).fetchone() == (None,):
        return 0
    row = conn.execute(f"SELECT count(*) FROM {schema}.records").fetchone()
    assert row is not None
    return int(row[0])


# The service's own account, from its log lines (server.py and store/sink.py).
_FINAL = re.compile(r"Everything is in PostgreSQL \(received=(\d+) stored=(\d+)")
_CONNECTED = re.compile(r"Connected to PostgreSQL: schema=\S+ shipped_seq=(\d+) unshipped=(\d+)\.")
_OPENED = re.compile(r"Journal \S+ opened: journal_id=\w+ next_seq=(\d+) segments=(\d+)")
_CORRUPT = re.compile(r"Journal: corrupt range (\S+) bytes (\d+)-(\d+) skipped, (\d+) records lost\.")
_TORN = re.compile(r"Journal: truncated a torn tail of (\d+) bytes \((\d+) records lost")


def final_counts(log: str) -> tuple[int, int]:
    """(received, stored) from the service's last line after a drained shutdown; (-1, -1) if none.

    No line means the service did not drain (the test's own assertions say so); the row it
    reports then shows -1 rather than nothing.
    """
    found = _FINAL.findall(log)
    if not found:
        return -1, -1
    received, stored = found[-1]
    return int(received), int(stored)


def connected_lines(log: str) -> list[tuple[int, int]]:
    """(shipped_seq, unshipped) of every 'Connected to PostgreSQL' line, in order."""
    return [(int(a), int(b)) for a, b in _CONNECTED.findall(log)]


def opened_next_seq(log: str) -> int:
    """``next_seq`` the journal reported when it was opened (recovered)."""
    m = _OPENED.search(log)
    assert m, f"no 'Journal ... opened' line in the log:\n{log[-3000:]}"
    return int(m.group(1))


def corrupt_lines(log: str) -> list[tuple[str, int, int, int]]:
    """(path, start, end, records lost) of every corrupt range the journal reported."""
    return [(p, int(a), int(b), int(n)) for p, a, b, n in _CORRUPT.findall(log)]


def torn_tail_bytes(log: str) -> list[int]:
    return [int(b) for b, _ in _TORN.findall(log)]


def torn_tail_records(log: str) -> list[int]:
    """Records lost in each torn tail, as the service reported them."""
    return [int(n) for _, n in _TORN.findall(log)]


def logged_at(log: str, needle: str) -> dt.datetime | None:
    """When the first log line containing ``needle`` was written (its asctime), or None."""
    for line in log.splitlines():
        if needle in line:
            try:
                return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            except ValueError:
                return None
    return None
