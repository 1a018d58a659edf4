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
a connection, and it is counted as dropped by the client.

What the service itself lost is measured from its own account, never from the clients':
``ServiceReads`` follows every ``serve`` process of a test and keeps, for each, how many
records it says it read (``logsvc_records_read_total`` on its /metrics, summed over
listeners). The row then sets that against the rows PostgreSQL holds (``conftest.py``).
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import logging.config
import logging.handlers
import multiprocessing
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Service, counts, join_clients, kill_clients, wait_for

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
        join_clients(self.procs, timeout)

    def kill(self) -> None:
        """For cleanup: end any client still running (only the processes we started)."""
        kill_clients(self.procs)


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


# The service's own account, from its log lines (server.py and store/sink.py). The last line
# of a drained shutdown has said "read=R journaled=J stored=S" since the journal writer
# (f9b7312); before, "received=N stored=S", N counted at the journal append.
_FINAL = re.compile(
    r"Everything is in PostgreSQL \((?:read=(\d+) journaled=(\d+)|received=(\d+)) stored=(\d+)"
)
_CONNECTED = re.compile(r"Connected to PostgreSQL: schema=\S+ shipped_seq=(\d+) unshipped=(\d+)\.")
_OPENED = re.compile(r"Journal \S+ opened: journal_id=\w+ next_seq=(\d+) segments=(\d+)")
_CORRUPT = re.compile(r"Journal: corrupt range (\S+) bytes (\d+)-(\d+) skipped, (\d+) records lost\.")
_TORN = re.compile(r"Journal: truncated a torn tail of (\d+) bytes \((\d+) records lost")


@dataclass(frozen=True, slots=True)
class FinalCounts:
    """The counts of the service's last line after a drained shutdown (-1 each if there is none).

    No line means the service did not drain (the test's own assertions say so); a row that
    reports these then shows -1 rather than nothing.
    """

    read: int  # decoded from clients and handed to the journal writer
    journaled: int
    stored: int


def final_counts(log: str) -> FinalCounts:
    """What the service said it read, journaled and stored in its last line (see ``FinalCounts``)."""
    found = _FINAL.findall(log)
    if not found:
        return FinalCounts(-1, -1, -1)
    read, journaled, received, stored = found[-1]
    if received:  # the line before f9b7312: one count, taken at the journal append
        return FinalCounts(int(received), int(received), int(stored))
    return FinalCounts(int(read), int(journaled), int(stored))


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


# -- what the service says it read -----------------------------------------------------------

# Records decoded from clients and handed to the journal writer, by listener. Before the
# journal writer (f9b7312) the same count was exported as records_received; the first of
# these names the page has is read.
READ_FAMILIES = ("logsvc_records_read", "logsvc_records_received")
# How often a followed service is scraped. The kill itself is sent right after an answer
# (ServiceReads.kill), so this bounds only how stale the count of a process that died some
# other way can be.
SCRAPE_INTERVAL_S = 0.025
# A follower gives up on its own after this long, whatever happens.
FOLLOW_MAX_S = 900.0
_METRICS_LISTENING = re.compile(r"Listening on 127\.0\.0\.1:(\d+) \(HTTP: /metrics")


def metrics_port(svc: Service) -> int | None:
    """The port of this run's ``--metrics`` listener (from its start-up log); None without one."""
    m = _METRICS_LISTENING.search(svc.log())
    return int(m.group(1)) if m else None


def scrape(port: int, timeout: float = 10.0) -> str:
    """One GET /metrics on a connection of its own, closed after."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def metric(svc: Service, name: str, **labels: str) -> float:
    """The first sample of the service's /metrics with this name and these labels; 0 if none."""
    port = metrics_port(svc)
    assert port is not None, "no metrics listener in the log"
    for family in text_string_to_metric_families(scrape(port)):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def records_read(page: str) -> int:
    """Records the service says it read, summed over its listeners, from a /metrics page."""
    families = {f.name: f for f in text_string_to_metric_families(page)}
    for name in READ_FAMILIES:
        if name in families:
            return round(sum(s.value for s in families[name].samples if s.name == f"{name}_total"))
    raise AssertionError(f"/metrics has none of {', '.join(READ_FAMILIES)}")


@dataclass(slots=True)
class Lifetime:
    """One ``serve`` process of a test, and the records it said it read."""

    pid: int
    port: int | None  # its --metrics port; None: it has none, and what it read is unknown
    page: bytes | None = None  # the last /metrics page it answered (parsed when needed)
    answered_at: float = 0.0  # time.monotonic() of that answer
    scrapes: int = 0
    ended: str = "running"  # or "exited" (stop), "killed" (SIGKILL)
    kill_after_ms: float | None = None  # from the last answer to the SIGKILL
    exit_read: int = -1  # "read=" of its last log line after a drained shutdown: exact
    journal_floor: int = 0  # records its journal holds, counted by the test after a kill

    @property
    def scraped(self) -> int | None:
        """Records read at the last answered scrape."""
        return None if self.page is None else records_read(self.page.decode())

    @property
    def read(self) -> int | None:
        """What it read: exact unless killed, then a lower bound (see ``exact``); None if unknown."""
        known = [n for n in (self.scraped, self.exit_read, self.journal_floor) if n is not None and n >= 0]
        if self.page is None and self.exit_read < 0:
            return None  # no count of its own; a journal floor alone is not one
        return max(known)

    @property
    def exact(self) -> bool:
        """False for a killed process: what it read after its last answer is not counted.

        Those records are not all lost: the ones it journaled in that interval are in
        ``journal_floor``, which ``read`` takes if it is larger. What a killed process read
        and never journaled after its last answer is the part no count can show.
        """
        return self.ended != "killed"

    def describe(self) -> dict[str, Any]:
        """For the row's JSON: how its count was taken."""
        how = "exit line" if self.exit_read >= 0 else "last scrape"
        if self.ended == "killed" and self.journal_floor > (self.scraped or 0):
            how = "journal (more than the last scrape)"
        return {
            "pid": self.pid,
            "ended": self.ended,
            "read": self.read,
            "how": how,
            "scraped": self.scraped,
            "scrapes": self.scrapes,
            "kill_after_ms": self.kill_after_ms,
        }


class _Follower:
    """Scrapes one process's /metrics, every ``SCRAPE_INTERVAL_S`` on one kept-alive connection.

    A kept-alive connection is served until the process exits, also after SIGTERM has closed
    the listeners, so its last answer comes after the shutdown has read what clients sent.
    """

    def __init__(self, lifetime: Lifetime, proc: subprocess.Popen[bytes]) -> None:
        self.lifetime = lifetime
        self.proc = proc
        self.lock = threading.Lock()  # one request at a time; held by a kill from scrape to signal
        self._conn: http.client.HTTPConnection | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def follow(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"scrape-{self.lifetime.pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + FOLLOW_MAX_S
        while not self._done.is_set() and time.monotonic() < deadline and self.proc.poll() is None:
            with self.lock:
                self.scrape_locked(keep=True)
            self._done.wait(SCRAPE_INTERVAL_S)

    def scrape_locked(self, keep: bool) -> bool:
        """One GET /metrics (the caller holds ``lock``); True if it was answered."""
        lt = self.lifetime
        if lt.port is None:
            return False
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", lt.port, timeout=10)
        try:
            self._conn.request("GET", "/metrics")
            resp = self._conn.getresponse()
            page = resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
        if ok:
            lt.answered_at = time.monotonic()
            lt.page = page
            lt.scrapes += 1
        if not ok or not keep:
            self._conn.close()
            self._conn = None
        return ok

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(15)
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class ServiceReads:
    """What every ``serve`` process of a test said it read, summed over their lifetimes.

    ``conftest.py`` hooks ``Service.start``, ``stop`` and ``kill`` of every fault test into
    ``started``, ``stop`` and ``kill`` here. Each process is followed from its start (unless
    ``follow`` is False: then it is scraped only when the row is made, on a connection of its
    own, for tests that count the service's connections). A SIGKILL is sent right after an
    answer; a stopped process's count is its "read=" exit line, or else its last answer.
    """

    def __init__(self) -> None:
        self.follow = True
        self.lifetimes: list[Lifetime] = []
        self._running: dict[int, _Follower] = {}  # id(Service) -> its current process

    def started(self, svc: Service) -> None:
        assert svc.proc is not None
        lt = Lifetime(pid=svc.proc.pid, port=metrics_port(svc))
        self.lifetimes.append(lt)
        follower = _Follower(lt, svc.proc)
        self._running[id(svc)] = follower
        if self.follow:
            follower.follow()

    def stop(self, svc: Service, stop: Any, killed: bool) -> int:
        """Run ``stop()`` (the real ``Service.stop``), then close the follower and read the exit line."""
        follower = self._running.pop(id(svc), None)
        try:
            status: int = stop()
        finally:
            if follower is not None:
                follower.close()
                lt = follower.lifetime
                lt.ended = "killed" if killed else "exited"
                lt.exit_read = final_counts(svc.log()).read
        return status

    def kill(self, svc: Service, kill: Any) -> None:
        """SIGKILL (``kill()``, the real ``Service.kill``) right after the process answers a scrape."""
        follower = self._running.pop(id(svc), None)
        if follower is None or svc.proc is None or svc.proc.poll() is not None:
            kill()
            return
        lt = follower.lifetime
        with follower.lock:
            answered = follower.scrape_locked(keep=False)
            sent_at = time.monotonic()
            kill()
        if answered or lt.page is not None:
            lt.kill_after_ms = round((sent_at - lt.answered_at) * 1000, 2)
        lt.ended = "killed"
        follower.close()

    def total(self) -> tuple[int | None, bool]:
        """(records read over every lifetime, exact); (None, False) if any lifetime has no count.

        A process still running is scraped now, so the figure is current when the row is made.
        """
        for follower in self._running.values():
            if follower.proc.poll() is None:
                with follower.lock:
                    follower.scrape_locked(keep=self.follow)
        reads = [lt.read for lt in self.lifetimes]
        if not reads or None in reads:
            return None, False
        return sum(r for r in reads if r is not None), all(lt.exact for lt in self.lifetimes)

    def close(self) -> None:
        for follower in self._running.values():
            follower.close()
        self._running.clear()


def finish_load(
    svc: Service, clients: TaggedClients, dsn: str, schema: str, after_s: float = 2.0
) -> tuple[list[int], int]:
    """Keep the load on ``after_s`` more seconds, stop the clients, wait until every record they
    did not drop themselves is stored, and stop the service (exit 0).

    Returns what each client sent and how many the stock clients dropped themselves.
    """
    time.sleep(after_s)
    clients.stop()
    sent = clients.sent
    dropped = sum(clients.dropped)
    wait_for(lambda: counts(dsn, schema)[0] >= sum(sent) - dropped, 120, "the backlog to be shipped")
    assert svc.stop() == 0
    return sent, dropped
