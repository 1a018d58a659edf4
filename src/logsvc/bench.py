"""``logsvc bench``: load generators that count what PostgreSQL kept.

Three workloads, each usable against any running logsvc (or anything that speaks the
SocketHandler protocol and stores into a ``records`` table with an ``extra`` jsonb column):

* ``seed``  -- the original design's workload: a pool of client processes, each task sending
  ``randint(300, 800)`` records through the *stock* ``SocketHandler`` (configured with
  ``dictConfig``) with the seed's sleeps between them.
* ``flood`` -- C connections sending pre-encoded, real ``SocketHandler`` frames as fast as the
  service takes them; the clock runs until the last record is committed. ``--format`` sends
  the same records the way another kind of sender does instead (below).
* ``conns`` -- K connections held open at once, a fraction of them sending.

Every record carries ``extra={"run": RUN_ID, "i": UNIQUE, ...}``; the last record of each
sender also carries ``"last": true``. The run is complete when every sender's last record is
in PostgreSQL (records of one connection are committed in order), and then one count gives
**sent, stored, lost, duplicated**. The completion poll adapts its interval to the query's
cost (at most ~10% of one PostgreSQL core), so measuring does not slow what is measured.

``flood --format`` (the listener ``--port`` points at must speak it)::

    format      one record is                                   tags (run, i, last) are
    pickle      a SocketHandler frame (>L length + pickle)      LogRecord attributes -> extra
    json        a JSON line: time, level, logger, message       top-level keys -> extra
    syslog      an RFC 5424 message, octet-counted (RFC 6587)   SD params: extra.sd."bench@32473"
    http        a line of an NDJSON POST /ingest body, --http-batch lines a request, one
                keep-alive connection per sender, each 200 awaited (the protocol's backpressure)
    udp         a DatagramHandler datagram (>L length + pickle)  as pickle
    syslog-udp  an RFC 5424 message, one per datagram            as syslog

UDP has no backpressure: a service that falls behind loses datagrams in its kernel receive
buffer. So UDP senders are paced (``--rate``, records/s per sender; TCP formats are not, by
default) and a UDP run is complete when every sender's last record is stored *or* when no
new row has arrived for ``QUIET_S`` after the last sender finished; ``lost`` is then what
never arrived, and the service's own drop counter is read from ``--metrics-url``.

Latency (``seed``): ``stored - created`` per record, where ``created`` is the client's
``LogRecord.created`` and ``stored`` is PostgreSQL's ``now()`` in the batch's transaction.
That undercounts the commit latency by at most the batch's own COPY time, which is small
next to the batch age (see docs/benchmarks.md).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import ipaddress
import json
import logging
import logging.config
import logging.handlers
import multiprocessing
import os
import queue
import random
import resource
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as EventT
from typing import Any, Protocol

import orjson
import psycopg

from logsvc import config
from logsvc.errors import ConfigError, LogsvcError

_CLK_TCK = os.sysconf("SC_CLK_TCK")
SEND_CHUNK_BYTES = 256 * 1024

FORMATS = ("pickle", "json", "syslog", "http", "udp", "syslog-udp")
DATAGRAM_FORMATS = frozenset({"udp", "syslog-udp"})
# RFC 5424 structured data needs an SD-ID of the form name@<private enterprise number>;
# 32473 is the number RFC 5612 reserves for documentation (RFC 5424's own examples use it).
SD_ID = "bench@32473"
# Where each format's tags land in ``extra`` (syslog: extra["sd"][SD-ID][param], all strings).
_TAG_PATH: dict[str, tuple[str, ...]] = {"syslog": ("sd", SD_ID), "syslog-udp": ("sd", SD_ID)}
# A UDP run is over once no new row of it has been stored for this long after the last
# sender finished: a lost "last" datagram must not leave us waiting for --timeout. The
# service commits a batch at least every --batch-max-age (200 ms by default).
QUIET_S = 3.0
# Records/s per sender for UDP formats unless --rate says otherwise: the highest round rate
# at which 8 senders lost nothing, run after run, on loopback on the 2-core machine of
# docs/benchmarks.md ("Ingest rate per sender"; 1,500 lost a few hundred now and then). That
# is 8,000 records/s in all, about half of what the service takes there over TCP: the receive
# buffer (8 MiB there) must absorb every stall of the service, and on two shared cores the
# service is not always running.
DEFAULT_DATAGRAM_RATE = 1000
DEFAULT_HTTP_BATCH = 1000
DEFAULT_METRICS_URL = "http://127.0.0.1:5080/metrics"


# -- the service seen from outside --------------------------------------------------------


def _bound_inodes(port: int, udp: bool) -> set[str]:
    """Socket inodes of TCP listeners (state 0A) or bound, unconnected UDP sockets (07) on ``port``."""
    tables, state = (
        (("/proc/net/udp", "/proc/net/udp6"), "07") if udp else (("/proc/net/tcp", "/proc/net/tcp6"), "0A")
    )
    inodes: set[str] = set()
    for table in tables:
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == state and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    return inodes


def pid_listening_on(port: int, udp: bool = False) -> int | None:
    """The pid of the process with a listening TCP (or bound UDP) socket on ``port``, if visible."""
    inodes = _bound_inodes(port, udp)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return int(pid)
        except OSError:
            continue
    return None


def read_metric(url: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` on a Prometheus text page; None if unreadable."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError, http.client.HTTPException):
        return None  # URLError is an OSError; a malformed URL is a ValueError
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            try:
                return float(value)
            except ValueError:
                return None
    return None


@dataclass(slots=True)
class ProcessWatch:
    """CPU seconds and resident memory of the service, read from /proc."""

    pid: int | None
    cpu_start: float = 0.0
    peak_rss_kb: int = 0

    def cpu_seconds(self) -> float:
        if self.pid is None:
            return float("nan")
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime
        except OSError:
            return float("nan")

    def rss_kb(self) -> int:
        if self.pid is None:
            return 0
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def start(self) -> None:
        self.cpu_start = self.cpu_seconds()
        self.sample()

    def sample(self) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, self.rss_kb())


# -- counting what PostgreSQL kept ---------------------------------------------------------


def _nest(path: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


class Counter:
    """Counts a run's rows in ``{schema}.records``.

    Every query selects the run by jsonb containment (``extra @> '{"run": ID}'``), which a GIN
    index on ``extra`` could serve. The tags may sit below the top level of ``extra``
    (``path``: syslog structured data is ``extra["sd"][SD-ID]``); containment then nests the
    same object under that path, and the record id is read with ``extra #>> path || 'i'``.
    """

    def __init__(
        self, dsn: str, schema: str, run_id: str, path: tuple[str, ...] = (), last_value: object = True
    ) -> None:
        from logsvc.store.schema import check_identifier

        self.table = f"{check_identifier(schema)}.records"
        self.run = json.dumps(_nest(path, {"run": run_id}))
        self.last = json.dumps(_nest(path, {"run": run_id, "last": last_value}))
        self.i_path = [*path, "i"]
        try:
            self.conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise LogsvcError(f"cannot connect to PostgreSQL to count the run: {exc}") from None

    @classmethod
    def for_format(cls, dsn: str, schema: str, run_id: str, fmt: str) -> Counter:
        """A counter that finds the tags where ``flood --format fmt`` puts them."""
        path = _TAG_PATH.get(fmt, ())
        return cls(dsn, schema, run_id, path, "true" if path else True)

    def finished_senders(self) -> int:
        try:
            row = self.conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE extra @> %s::jsonb", [self.last]
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        return int(row[0]) if row else 0

    def progress(self) -> tuple[int, int]:
        """(rows of this run, senders whose last record is among them), in one scan."""
        try:
            row = self.conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE extra @> %s::jsonb) FROM {self.table} "
                "WHERE extra @> %s::jsonb",
                [self.last, self.run],
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0, 0
        assert row is not None
        return int(row[0]), int(row[1])

    def totals(self) -> tuple[int, int]:
        """(rows, distinct record ids) of this run."""
        row = self.conn.execute(
            f"SELECT count(*), count(DISTINCT extra #>> %s::text[]) FROM {self.table} "
            "WHERE extra @> %s::jsonb",
            [self.i_path, self.run],
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def latency(self) -> dict[str, float]:
        row = self.conn.execute(
            f"""SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d),
                       percentile_cont(0.99) WITHIN GROUP (ORDER BY d), max(d)
                FROM (SELECT extract(epoch FROM stored - created) AS d FROM {self.table}
                      WHERE extra @> %s::jsonb) t""",
            [self.run],
        ).fetchone()
        assert row is not None
        return {"p50_s": float(row[0] or 0), "p99_s": float(row[1] or 0), "max_s": float(row[2] or 0)}

    def latency_histogram(self, bucket_s: float = 0.02, buckets: int = 50) -> list[int]:
        """Records per ``bucket_s``-wide latency bucket; the last bucket holds the rest."""
        rows = self.conn.execute(
            f"""SELECT least(floor(extract(epoch FROM stored - created) / %s)::int, %s), count(*)
                FROM {self.table} WHERE extra @> %s::jsonb GROUP BY 1""",
            [bucket_s, buckets - 1, self.run],
        ).fetchall()
        hist = [0] * buckets
        for b, n in rows:
            hist[max(0, int(b))] += int(n)
        return hist

    def close(self) -> None:
        self.conn.close()


def wait_stored(
    counter: Counter,
    senders: int,
    timeout: float,
    watch: ProcessWatch,
    progress: Callable[[int], None],
) -> float | None:
    """Poll until every sender's last record is stored; return the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    interval = 0.05
    while True:
        t0 = time.monotonic()
        done = counter.finished_senders()
        now = time.monotonic()
        watch.sample()
        progress(done)
        if done >= senders:
            return now
        if now > deadline:
            return None
        # Keep the poll under ~10% of a PostgreSQL core, however large the table grows.
        interval = max(0.05, 10 * (now - t0))
        time.sleep(interval)


class SupportsProgress(Protocol):
    def progress(self) -> tuple[int, int]: ...


def wait_settled(
    counter: SupportsProgress,
    senders: int,
    timeout: float,
    watch: ProcessWatch,
    progress: Callable[[int], None],
    quiet_s: float = QUIET_S,
) -> tuple[float | None, str]:
    """For UDP: poll until every sender's last record is stored, or no new row came for ``quiet_s``.

    Returns:
        (the monotonic time the run's rows were last seen to grow, or every last record was
        seen; None on timeout), and how the run ended: ``last_records``, ``quiet`` or ``timeout``.
    """
    deadline = time.monotonic() + timeout
    rows_seen = -1
    changed = time.monotonic()
    while True:
        t0 = time.monotonic()
        rows, done = counter.progress()
        now = time.monotonic()
        watch.sample()
        progress(done)
        if done >= senders:
            return now, "last_records"
        if rows != rows_seen:
            rows_seen, changed = rows, now
        elif now - changed >= quiet_s:
            return changed, "quiet"
        if now > deadline:
            return None, "timeout"
        # As wait_stored, but often enough to notice the quiet period in time.
        time.sleep(min(max(0.05, 10 * (now - t0)), quiet_s / 4))


# -- results ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    mode: str
    run_id: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    records_per_s: float = 0.0
    service_pid: int | None = None
    service_cpu_s: float = float("nan")
    cpu_us_per_record: float = float("nan")
    service_peak_rss_mb: float = 0.0
    complete: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def finish(self, counter: Counter, watch: ProcessWatch) -> None:
        rows, distinct = counter.totals()
        self.stored = distinct
        self.duplicated = rows - distinct
        self.lost = self.sent - distinct
        self.service_cpu_s = watch.cpu_seconds() - watch.cpu_start
        if rows:
            self.cpu_us_per_record = self.service_cpu_s / rows * 1e6
        self.service_peak_rss_mb = round(watch.peak_rss_kb / 1024, 1)


def report(result: Result, as_json: bool) -> int:
    if as_json:
        # JSON has no NaN: figures that could not be read (no service pid) are null.
        fields = {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(result).items()}
        print(json.dumps(fields, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"logsvc bench {result.mode} (run {result.run_id})", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        rows: list[tuple[str, str]] = [
            ("sent", f"{result.sent:,}"),
            ("stored", f"{result.stored:,}"),
            ("lost", f"{result.lost:,}"),
            ("duplicated", f"{result.duplicated:,}"),
            ("seconds", f"{result.seconds:.2f}"),
            ("records/s (stored)", f"{result.records_per_s:,.0f}"),
            ("service CPU s", f"{result.service_cpu_s:.2f}"),
            ("service CPU µs/record", f"{result.cpu_us_per_record:.2f}"),
            ("service peak RSS MB", f"{result.service_peak_rss_mb:.1f}"),
        ]
        rows += [(k, _cell(v)) for k, v in result.extra.items()]
        for k, v in rows:
            table.add_row(k, v)
        Console().print(table)
        if not result.complete:
            Console(stderr=True).print("[red]Timed out before every sender's last record was stored.[/red]")
    return 0 if result.complete and result.lost == 0 and result.duplicated == 0 else 1


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def _progress(total: int, label: str, quiet: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A rich progress bar on stderr (nothing with --json)."""
    if quiet:
        return (lambda n: None), (lambda: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = prog.add_task(label, total=total)
    prog.start()
    return (lambda n: prog.update(task, completed=n)), prog.stop


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        target = min(want, hard) if hard != resource.RLIM_INFINITY else want
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < want:
            raise ConfigError(
                f"need {want} open files but the hard limit is {hard}; "
                "raise it (ulimit -Hn) or use fewer connections"
            )


# -- flood -----------------------------------------------------------------------------------


def flood_records(fmt: str, run_id: str, sender: int, count: int) -> list[bytes]:
    """``count`` records of one sender, each as ``fmt`` puts it on the wire; the last is marked.

    Every record carries the tags ``run``, ``i`` (unique in the run), ``trace_id`` (the
    sender) and, on the last, ``last``, where ``Counter.for_format(fmt)`` looks for them.

    Returns:
        One item per record: a SocketHandler frame (pickle, and udp, whose datagram is exactly
        that frame), a JSON line with its LF (json, http), an octet-counted RFC 5424 message
        (syslog) or the bare message (syslog-udp).
    """
    if fmt in ("pickle", "udp"):
        return _pickle_records(run_id, sender, count)
    if fmt in ("json", "http"):
        return _json_records(run_id, sender, count)
    if fmt in ("syslog", "syslog-udp"):
        messages = _syslog_records(run_id, sender, count)
        return [b"%d %s" % (len(m), m) for m in messages] if fmt == "syslog" else messages
    raise ValueError(f"unknown format {fmt!r}")


def flood_frames(run_id: str, sender: int, count: int) -> bytes:
    """``count`` real SocketHandler frames, pre-encoded; the last is marked."""
    return b"".join(_pickle_records(run_id, sender, count))


def _pickle_records(run_id: str, sender: int, count: int) -> list[bytes]:
    handler = logging.handlers.SocketHandler("localhost", 0)
    pid = os.getpid()
    frames = []
    for n in range(count):
        rec = logging.LogRecord(
            "bench.flood",
            logging.INFO,
            "/srv/app/bench.py",
            42,
            "[%06d] log message %08d",
            (pid, n),
            None,
            "flood",
        )
        rec.trace_id = sender
        rec.run = run_id
        rec.i = f"{sender}:{n}"
        if n == count - 1:
            rec.last = True
        frames.append(handler.makePickle(rec))
    return frames


def _utc_now_iso() -> str:
    # RFC 3339 with microseconds and "Z", as Vector, Fluent Bit and RFC 5424 senders write it.
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_records(run_id: str, sender: int, count: int) -> list[bytes]:
    # The keys a structured logger writes (time, level, logger, message), the tags beside them.
    pid = os.getpid()
    lines = []
    for n in range(count):
        rec: dict[str, Any] = {
            "time": _utc_now_iso(),
            "level": "INFO",
            "logger": "bench.flood",
            "message": f"[{pid:06d}] log message {n:08d}",
            "trace_id": sender,
            "run": run_id,
            "i": f"{sender}:{n}",
        }
        if n == count - 1:
            rec["last"] = True
        lines.append(orjson.dumps(rec) + b"\n")
    return lines


def _syslog_records(run_id: str, sender: int, count: int) -> list[bytes]:
    # <134> is local0.info (16 * 8 + 6). HOSTNAME is PRINTUSASCII without spaces (RFC 5424 6.2.4).
    host = socket.gethostname()
    if not host or not host.isascii() or not host.isprintable() or " " in host:
        host = "-"
    pid = os.getpid()
    messages = []
    for n in range(count):
        last = ' last="true"' if n == count - 1 else ""
        messages.append(
            f'<134>1 {_utc_now_iso()} {host} bench.flood {pid} - [{SD_ID} run="{run_id}" i="{sender}:{n}" '
            f'trace_id="{sender}"{last}] [{pid:06d}] log message {n:08d}'.encode()
        )
    return messages


@dataclass(frozen=True, slots=True)
class Load:
    """What every flood sender does (the sender processes inherit it through fork)."""

    fmt: str
    host: str
    port: int
    run_id: str
    rate: float | None = None  # records/s per sender; None: as fast as the service takes them
    http_batch: int = DEFAULT_HTTP_BATCH


class _Pacer:
    """Holds a sender to ``rate`` records/s from its creation on (``None``: no limit)."""

    __slots__ = ("rate", "t0")

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.t0 = time.monotonic()

    def wait(self, done: int) -> None:
        """Sleep until the record after the first ``done`` is due."""
        if self.rate is None:
            return
        delay = self.t0 + done / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _burst(rate: float | None) -> int:
    # Records sent back to back between two looks at the clock: 1 ms worth, so a paced
    # sender neither sleeps per record (~60 us each) nor sends in lumps a receiver would feel.
    return 1 if rate is None else max(1, int(rate / 1000))


def _flood_sender(load: Load, sender: int, count: int, ready: Any, go: EventT, results: Any) -> None:
    records = flood_records(load.fmt, load.run_id, sender, count)
    stats: dict[str, Any] = {"sender": sender, "errors": 0}
    # Encode and connect before the clock starts; only the sending is measured.
    if load.fmt == "http":
        send = _http_sender(load, records, stats)
    elif load.fmt in DATAGRAM_FORMATS:
        send = _datagram_sender(load, records, stats)
    else:
        send = _stream_sender(load, records)
    ready.put(sender)
    go.wait(120)
    send()
    stats["finished"] = time.monotonic()  # CLOCK_MONOTONIC is one clock for every process
    results.put(stats)


def _stream_sender(load: Load, records: list[bytes]) -> Callable[[], None]:
    sock = socket.create_connection((load.host, load.port))
    units: list[tuple[bytes | memoryview, int]]
    if load.rate is None:
        data = memoryview(b"".join(records))
        units = [(data[off : off + SEND_CHUNK_BYTES], 0) for off in range(0, len(data), SEND_CHUNK_BYTES)]
    else:
        b = _burst(load.rate)
        units = [(b"".join(records[k : k + b]), len(records[k : k + b])) for k in range(0, len(records), b)]

    def send() -> None:
        pacer = _Pacer(load.rate)
        done = 0  # records sent (counted only when paced)
        for data, n in units:
            pacer.wait(done)
            sock.sendall(data)
            done += n
        sock.close()

    return send


def _datagram_sender(load: Load, records: list[bytes], stats: dict[str, Any]) -> Callable[[], None]:
    family, kind, proto, _, addr = socket.getaddrinfo(load.host, load.port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.connect(addr)  # one sendto per record, as DatagramHandler and SysLogHandler(UDP) do

    def send() -> None:
        pacer = _Pacer(load.rate)
        burst = _burst(load.rate)
        errors = 0
        for k, datagram in enumerate(records):
            if k % burst == 0:
                pacer.wait(k)
            try:
                sock.send(datagram)
            except OSError:
                errors += 1  # ECONNREFUSED (an ICMP port unreachable came back), ENOBUFS
        sock.close()
        stats["errors"] = errors

    return send


_NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}


def _http_sender(load: Load, records: list[bytes], stats: dict[str, Any]) -> Callable[[], None]:
    b = load.http_batch
    bodies = [(b"".join(records[k : k + b]), len(records[k : k + b])) for k in range(0, len(records), b)]
    conn = http.client.HTTPConnection(load.host, load.port, timeout=60)
    conn.connect()

    def send() -> None:
        # One request at a time on one kept-alive connection: the service answers 200 only
        # once the body's records are in its journal, and that answer is the backpressure.
        pacer = _Pacer(load.rate)
        done = accepted = failed = 0
        statuses: dict[str, int] = {}
        for body, n in bodies:
            pacer.wait(done)
            done += n
            try:
                conn.request("POST", "/ingest", body, _NDJSON_HEADERS)
                resp = conn.getresponse()
                answer = resp.read()
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()  # the next request opens a new connection
                continue
            statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
            if resp.status == 200:
                try:
                    accepted += int(orjson.loads(answer)["accepted"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    pass
        conn.close()
        stats.update(
            http_requests=len(bodies), http_status=statuses, http_failed=failed, http_accepted=accepted
        )

    return send


def _start_senders(
    load: Load, counts: list[int]
) -> tuple[list[multiprocessing.process.BaseProcess], EventT, Any]:
    ctx = multiprocessing.get_context("fork")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    go = ctx.Event()
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=_flood_sender, args=(load, i, n, ready, go, results), daemon=True)
        for i, n in enumerate(counts)
    ]
    for p in procs:
        p.start()
    # Every sender encodes its frames and connects before the clock starts; one that dies
    # (nothing listening, say) must not leave us waiting.
    deadline = time.monotonic() + 600
    waiting = len(procs)
    while waiting:
        try:
            ready.get(timeout=1)
            waiting -= 1
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise LogsvcError(f"a sender could not start or connect to {load.host}:{load.port}") from None
    return procs, go, results


def _collect(
    procs: list[multiprocessing.process.BaseProcess], results: Any, timeout: float
) -> list[dict[str, Any]]:
    """Each sender's stats, read while they finish (a full queue pipe would hold up their exit)."""
    deadline = time.monotonic() + timeout
    stats: list[dict[str, Any]] = []
    while len(stats) < len(procs):
        try:
            stats.append(results.get(timeout=0.2))
        except queue.Empty:
            if time.monotonic() > deadline or not any(p.is_alive() for p in procs):
                break
    while len(stats) < len(procs):  # what a sender wrote just before we looked
        try:
            stats.append(results.get(timeout=0.05))
        except queue.Empty:
            break
    _join(procs, max(1.0, deadline - time.monotonic()))
    return stats


def _join(procs: list[multiprocessing.process.BaseProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


# The serve option that opens each format's listener, for error messages.
_LISTEN_FLAG = {
    "pickle": "--listen",
    "json": "--listen-json",
    "syslog": "--listen-syslog",
    "http": "--listen-http",
    "udp": "--listen-udp",
    "syslog-udp": "--listen-syslog-udp",
}


def _check_listening(host: str, port: int, fmt: str = "pickle") -> None:
    if fmt in DATAGRAM_FORMATS:
        # UDP has no handshake to try. On this machine, a bound socket is what we can check.
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if local and not _bound_inodes(port, udp=True):
            raise LogsvcError(
                f"nothing is bound to udp {host}:{port}; start `logsvc serve {_LISTEN_FLAG[fmt]} "
                f"{host}:{port}` or give --host/--port"
            )
        return
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        how = "`logsvc serve`" if fmt == "pickle" else f"`logsvc serve {_LISTEN_FLAG[fmt]} HOST:PORT`"
        raise LogsvcError(
            f"nothing answers on {host}:{port} ({exc.strerror or exc}); start {how} or give --host/--port"
        ) from None


def _attach(args: argparse.Namespace, run_id: str, fmt: str = "pickle") -> tuple[ProcessWatch, Counter]:
    """Check the service answers, find its pid, and open the counting connection."""
    _check_listening(args.host, args.port, fmt)
    settings = config.resolve(args)
    watch = ProcessWatch(args.service_pid or pid_listening_on(args.port, udp=fmt in DATAGRAM_FORMATS))
    return watch, Counter.for_format(config.conninfo(settings), settings.schema, run_id, fmt)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


_DROPPED_METRIC = "logsvc_udp_datagrams_dropped_total"


def run_flood(args: argparse.Namespace) -> int:
    fmt: str = args.format
    datagrams = fmt in DATAGRAM_FORMATS
    if args.rate is None:
        rate: float | None = float(DEFAULT_DATAGRAM_RATE) if datagrams else None
    elif args.rate < 0:
        raise ConfigError("--rate must be 0 (unlimited) or a positive number of records/s per sender")
    else:
        rate = args.rate or None
    if args.http_batch < 1:
        raise ConfigError("--http-batch must be at least 1")
    run_id = uuid.uuid4().hex[:12]
    counts = [c for c in _split(args.records, args.connections) if c]
    if args.null:
        if fmt != "pickle" or rate is not None:
            raise ConfigError(
                "--null counts SocketHandler frames as fast as they come: only with --format pickle"
            )
        return _flood_null(args, run_id, counts)
    watch, counter = _attach(args, run_id, fmt)
    result = Result("flood", run_id, sent=sum(counts), service_pid=watch.pid)
    dropped_before = read_metric(args.metrics_url, _DROPPED_METRIC) if datagrams else None
    load = Load(fmt, args.host, args.port, run_id, rate, args.http_batch)
    procs, go, results = _start_senders(load, counts)
    update, stop = _progress(len(counts), "senders finished", args.json)
    watch.start()
    start = time.monotonic()
    go.set()
    try:
        stats = _collect(procs, results, args.timeout)
        sent_at = max((s["finished"] for s in stats), default=time.monotonic())
        if datagrams or len(stats) < len(counts):
            # UDP, or a sender died: some last records may never come. Stop when rows stop.
            done, ending = wait_settled(counter, len(counts), args.timeout, watch, update)
        else:
            done = wait_stored(counter, len(counts), args.timeout, watch, update)
            ending = "last_records" if done is not None else "timeout"
    finally:
        stop()
    result.complete = done is not None
    end = done if done is not None else time.monotonic()
    result.seconds = end - start
    result.finish(counter, watch)
    result.records_per_s = result.stored / result.seconds if result.seconds else 0.0
    result.extra = {
        "format": fmt,
        "connections": len(counts),
        "rate_per_sender": rate,
        "send_seconds": round(sent_at - start, 3),
        "offered_records_per_s": round(result.sent / max(sent_at - start, 1e-9)),
        "completion": ending,
        "senders_failed": len(counts) - len(stats),
    }
    if datagrams:
        dropped_after = read_metric(args.metrics_url, _DROPPED_METRIC)
        result.extra["send_errors"] = sum(s["errors"] for s in stats)
        result.extra["service_udp_dropped"] = (
            None if dropped_before is None or dropped_after is None else round(dropped_after - dropped_before)
        )
    if fmt == "http":
        statuses: dict[str, int] = {}
        for s in stats:
            for code, n in s.get("http_status", {}).items():
                statuses[code] = statuses.get(code, 0) + n
        failed = sum(s.get("http_failed", 0) for s in stats)
        result.extra.update(
            http_batch=args.http_batch,
            http_requests=sum(s.get("http_requests", 0) for s in stats),
            http_non_200=failed + sum(n for code, n in statuses.items() if code != "200"),
            http_status=statuses,
            http_failed=failed,
            http_accepted=sum(s.get("http_accepted", 0) for s in stats),
        )
    counter.close()
    status = report(result, args.json)
    return status if not result.extra.get("http_non_200") else 1


def _null_receiver(port_q: Any, expected: int) -> None:
    """Accept connections and count frames, nothing else: how fast can the senders go?"""
    import selectors
    import struct

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    port_q.put(lsock.getsockname()[1])
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    bufs: dict[socket.socket, bytearray] = {}
    frames = 0
    header = struct.Struct(">L").unpack_from
    deadline = time.monotonic() + 600
    while frames < expected and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            s = key.fileobj
            if s is lsock:
                c, _ = lsock.accept()
                sel.register(c, selectors.EVENT_READ)
                bufs[c] = bytearray()
                continue
            assert isinstance(s, socket.socket)
            chunk = s.recv(1 << 20)
            if not chunk:
                sel.unregister(s)
                s.close()
                continue
            buf = bufs[s]
            buf += chunk
            pos = 0
            while len(buf) - pos >= 4:
                n = header(buf, pos)[0]
                if len(buf) - pos - 4 < n:
                    break
                pos += 4 + n
                frames += 1
            del buf[:pos]
    port_q.put(frames)


def _flood_null(args: argparse.Namespace, run_id: str, counts: list[int]) -> int:
    ctx = multiprocessing.get_context("fork")
    q: Any = ctx.Queue()
    recv = ctx.Process(target=_null_receiver, args=(q, sum(counts)), daemon=True)
    recv.start()
    port = q.get(timeout=30)
    procs, go, results = _start_senders(Load("pickle", "127.0.0.1", port, run_id), counts)
    start = time.monotonic()
    go.set()
    frames = q.get(timeout=args.timeout)
    seconds = time.monotonic() - start
    _collect(procs, results, 30)
    recv.join(10)
    result = Result(
        "flood-null",
        run_id,
        sent=sum(counts),
        stored=frames,
        lost=sum(counts) - frames,
        seconds=seconds,
        records_per_s=frames / seconds if seconds else 0.0,
    )
    result.extra = {"connections": len(counts), "note": "senders against a receiver that only counts frames"}
    return report(result, args.json)


# -- seed ------------------------------------------------------------------------------------

_SEED_SLEEPS = (0.01, 0.02, 0.03, 0.04, 0.03, 0.02, 0.01)  # the seed's own choice list
_seed_state: dict[str, Any] = {}


def _seed_setup(host: str, port: int, run_id: str, min_records: int, max_records: int, sleep: bool) -> None:
    # The seed's setup_logging: dictConfig with a SocketHandler, stock, nothing of ours.
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "service_logger": {
                    "level": "DEBUG",
                    "class": "logging.handlers.SocketHandler",
                    "host": host,
                    "port": port,
                }
            },
            "loggers": {"": {"level": "DEBUG", "handlers": ["service_logger"], "propagate": False}},
        }
    )
    _seed_state.update(run=run_id, lo=min_records, hi=max_records, sleep=sleep)


def _seed_task(idx: int) -> int:
    # The seed's run(idx), plus the run id and a unique id per record in `extra`.
    msg = "[%06d] log message %08d"
    pid = os.getpid()
    logger = logging.getLogger("bench.seed")
    run, sleep = _seed_state["run"], _seed_state["sleep"]
    cnt = count = random.randint(_seed_state["lo"], _seed_state["hi"])
    while True:
        logger.debug(msg, pid, cnt, extra={"trace_id": idx, "run": run, "i": f"{idx}:{cnt}"})
        cnt -= 1
        if sleep:
            time.sleep(random.choice(_SEED_SLEEPS))
        if cnt == 0:
            break
    logger.debug("[%06d] --------", pid, extra={"trace_id": idx, "run": run, "i": f"{idx}:end", "last": True})
    for h in logging.getLogger().handlers:
        h.flush()
    return count + 1


def run_seed(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:12]
    watch, counter = _attach(args, run_id)
    pid = watch.pid
    ctx = multiprocessing.get_context("fork")
    update, stop = _progress(args.tasks, "tasks finished", args.json)
    watch.start()
    start = time.monotonic()
    sent = 0
    try:
        with ctx.Pool(
            args.procs,
            _seed_setup,
            (args.host, args.port, run_id, args.min_records, args.max_records, not args.no_sleep),
        ) as pool:
            for i, n in enumerate(pool.imap_unordered(_seed_task, range(args.tasks))):
                sent += n
                update(i + 1)
                watch.sample()
            pool.close()
            pool.join()
        sent_at = time.monotonic()
        done = wait_stored(counter, args.tasks, args.timeout, watch, lambda n: None)
    finally:
        stop()
    result = Result("seed", run_id, sent=sent, service_pid=pid, complete=done is not None)
    end = done if done is not None else time.monotonic()
    result.seconds = end - start
    result.finish(counter, watch)
    result.records_per_s = result.stored / result.seconds if result.seconds else 0.0
    offered = sent / max(sent_at - start, 1e-9)
    result.extra = {
        "procs": args.procs,
        "tasks": args.tasks,
        "offered_records_per_s": round(offered),
        "stored_records_per_s": round(result.records_per_s),
    }
    result.extra.update({f"latency_{k}": round(v, 4) for k, v in counter.latency().items()})
    result.extra["latency_histogram_20ms"] = counter.latency_histogram()
    counter.close()
    return report(result, args.json)


# -- conns -----------------------------------------------------------------------------------


def run_conns(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:12]
    _raise_nofile(args.connections + 256)
    watch, counter = _attach(args, run_id)
    pid = watch.pid
    nsend = max(1, round(args.connections * args.senders)) if args.senders > 0 else 0
    socks: list[socket.socket] = []
    watch.start()
    start = time.monotonic()
    update, stop = _progress(args.connections, "connections open", args.json)
    try:
        for i in range(args.connections):
            socks.append(socket.create_connection((args.host, args.port), timeout=30))
            if i % 100 == 0:
                update(i + 1)
        update(args.connections)
        opened_at = time.monotonic()
        watch.sample()
        rss_idle = watch.rss_kb()
        for k in range(nsend):
            socks[k * len(socks) // nsend].sendall(flood_frames(run_id, k, args.records))
        done = wait_stored(counter, nsend, args.timeout, watch, lambda n: None)
        # Every connection, sending or not, must still be open: a read would block.
        still_open = 0
        for s in socks:
            s.setblocking(False)
            try:
                still_open += s.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
    finally:
        stop()
        for s in socks:
            s.close()
    result = Result("conns", run_id, sent=nsend * args.records, service_pid=pid, complete=done is not None)
    result.seconds = (done if done is not None else time.monotonic()) - start
    result.finish(counter, watch)
    result.records_per_s = result.stored / result.seconds if result.seconds else 0.0
    result.extra = {
        "connections": args.connections,
        "sending": nsend,
        "still_open": still_open,
        "connect_seconds": round(opened_at - start, 2),
        "service_rss_mb_all_open": round(rss_idle / 1024, 1),
    }
    counter.close()
    status = report(result, args.json)
    return status if still_open == args.connections else 1


# -- command line ----------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="load a running logsvc and count what it stored",
        description="Load a running logsvc (or anything speaking the SocketHandler protocol into a "
        "records table) and count what PostgreSQL kept: sent, stored, lost, duplicated.",
    )
    modes = bench.add_subparsers(dest="mode", metavar="MODE", required=True)

    def common(p: argparse.ArgumentParser, port_help: str = "the service's port (default: 5000)") -> None:
        p.add_argument("--host", default="127.0.0.1", help="the service's address (default: 127.0.0.1)")
        p.add_argument("--port", type=int, default=5000, help=port_help)
        config.add_arguments(p, only=config.DATABASE_OPTIONS)
        p.add_argument(
            "--service-pid",
            type=int,
            help="pid of the service, for CPU and memory figures (default: found from the listening port)",
        )
        p.add_argument("--timeout", type=float, default=600.0, help="give up waiting after this many seconds")
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    seed = modes.add_parser("seed", help="the seed's workload: a pool of stock SocketHandler clients")
    common(seed)
    seed.add_argument("--procs", type=int, default=200, help="client processes (default: 200)")
    seed.add_argument("--tasks", type=int, default=1000, help="tasks, each one logger run (default: 1000)")
    seed.add_argument(
        "--min-records", type=int, default=300, help="records per task, at least (default: 300)"
    )
    seed.add_argument("--max-records", type=int, default=800, help="records per task, at most (default: 800)")
    seed.add_argument(
        "--no-sleep", action="store_true", help="drop the seed's 10-40 ms pauses between records"
    )
    seed.set_defaults(func=run_seed)

    flood = modes.add_parser("flood", help="pre-encoded frames as fast as the service takes them")
    common(
        flood,
        "the port of the service's listener for --format (default: 5000, serve's --listen, for pickle; "
        "for the other formats give the port of --listen-json, --listen-syslog, --listen-http, "
        "--listen-udp or --listen-syslog-udp)",
    )
    flood.add_argument(
        "--format",
        choices=FORMATS,
        default="pickle",
        help="what the senders speak: pickle (SocketHandler frames, the default), json (JSON lines), "
        "syslog (RFC 5424, octet-counted, over TCP), http (POST /ingest with NDJSON bodies), "
        "udp (DatagramHandler datagrams), syslog-udp (RFC 5424 datagrams)",
    )
    flood.add_argument(
        "--rate",
        type=float,
        help="records/s per sender (default: unlimited for the TCP formats; "
        f"{DEFAULT_DATAGRAM_RATE} for udp and syslog-udp, which lose what the service cannot take; "
        "0: unlimited)",
    )
    flood.add_argument(
        "--http-batch",
        type=int,
        default=DEFAULT_HTTP_BATCH,
        help=f"--format http: NDJSON lines per request (default: {DEFAULT_HTTP_BATCH:,})",
    )
    flood.add_argument(
        "--metrics-url",
        default=DEFAULT_METRICS_URL,
        help="UDP formats: the service's /metrics, read before and after the run for its "
        f"datagram drop counter (default: {DEFAULT_METRICS_URL}; skipped if unreachable)",
    )
    flood.add_argument("--connections", type=int, default=8, help="sending connections (default: 8)")
    flood.add_argument("--records", type=int, default=1_000_000, help="records in total (default: 1,000,000)")
    flood.add_argument(
        "--null",
        action="store_true",
        help="send to a built-in receiver that only counts frames: the senders' own ceiling",
    )
    flood.set_defaults(func=run_flood)

    conns = modes.add_parser("conns", help="many connections held open at once, some sending")
    common(conns)
    conns.add_argument(
        "--connections", type=int, default=10_000, help="connections to hold open (default: 10,000)"
    )
    conns.add_argument("--senders", type=float, default=0.1, help="fraction of them that send (default: 0.1)")
    conns.add_argument(
        "--records", type=int, default=100, help="records per sending connection (default: 100)"
    )
    conns.set_defaults(func=run_conns)
