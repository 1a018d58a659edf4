"""``logsvc bench``: load generators that count what PostgreSQL kept.

Three workloads, each usable against any running logsvc (or anything that speaks the
SocketHandler protocol and stores into a ``records`` table with an ``extra`` jsonb column):

* ``seed``  -- the original design's workload: a pool of client processes, each task sending
  ``randint(300, 800)`` records through the *stock* ``SocketHandler`` (configured with
  ``dictConfig``) with the seed's sleeps between them.
* ``flood`` -- C connections sending pre-encoded, real ``SocketHandler`` frames as fast as the
  service takes them; the clock runs until the last record is committed.
* ``conns`` -- K connections held open at once, a fraction of them sending.

Every record carries ``extra={"run": RUN_ID, "i": UNIQUE, ...}``; the last record of each
sender also carries ``"last": true``. The run is complete when every sender's last record is
in PostgreSQL (records of one connection are committed in order), and then one count gives
**sent, stored, lost, duplicated**. The completion poll adapts its interval to the query's
cost (at most ~10% of one PostgreSQL core), so measuring does not slow what is measured.

Latency (``seed``): ``stored - created`` per record, where ``created`` is the client's
``LogRecord.created`` and ``stored`` is PostgreSQL's ``now()`` in the batch's transaction.
That undercounts the commit latency by at most the batch's own COPY time, which is small
next to the batch age (see docs/benchmarks.md).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
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
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as EventT
from typing import Any

import psycopg

from logsvc import config
from logsvc.errors import ConfigError, LogsvcError

_CLK_TCK = os.sysconf("SC_CLK_TCK")
SEND_CHUNK_BYTES = 256 * 1024


# -- the service seen from outside --------------------------------------------------------


def pid_listening_on(port: int) -> int | None:
    """The pid of the process with a listening TCP socket on ``port`` (loopback), if visible."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
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


class Counter:
    """Counts a run's rows in ``{schema}.records``."""

    def __init__(self, dsn: str, schema: str, run_id: str) -> None:
        from logsvc.store.schema import check_identifier

        self.table = f"{check_identifier(schema)}.records"
        self.run = json.dumps({"run": run_id})
        self.last = json.dumps({"run": run_id, "last": True})
        try:
            self.conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise LogsvcError(f"cannot connect to PostgreSQL to count the run: {exc}") from None

    def finished_senders(self) -> int:
        try:
            row = self.conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE extra @> %s::jsonb", [self.last]
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        return int(row[0]) if row else 0

    def totals(self) -> tuple[int, int]:
        """(rows, distinct record ids) of this run."""
        row = self.conn.execute(
            f"SELECT count(*), count(DISTINCT extra->>'i') FROM {self.table} WHERE extra @> %s::jsonb",
            [self.run],
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
        rows += [
            (k, f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
            for k, v in result.extra.items()
        ]
        for k, v in rows:
            table.add_row(k, v)
        Console().print(table)
        if not result.complete:
            Console(stderr=True).print("[red]Timed out before every sender's last record was stored.[/red]")
    return 0 if result.complete and result.lost == 0 and result.duplicated == 0 else 1


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


def flood_frames(run_id: str, sender: int, count: int) -> bytes:
    """``count`` real SocketHandler frames, pre-encoded; the last is marked."""
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
    return b"".join(frames)


def _flood_sender(host: str, port: int, run_id: str, sender: int, count: int, ready: Any, go: EventT) -> None:
    data = flood_frames(run_id, sender, count)
    sock = socket.create_connection((host, port))
    view = memoryview(data)
    ready.put(sender)
    go.wait(120)
    for off in range(0, len(view), SEND_CHUNK_BYTES):
        sock.sendall(view[off : off + SEND_CHUNK_BYTES])
    sock.close()


def _start_senders(
    target: Callable[..., None], host: str, port: int, run_id: str, counts: list[int]
) -> tuple[list[multiprocessing.process.BaseProcess], EventT]:
    ctx = multiprocessing.get_context("fork")
    ready: Any = ctx.Queue()
    go = ctx.Event()
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=target, args=(host, port, run_id, i, n, ready, go), daemon=True)
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
                raise LogsvcError(f"a sender could not start or connect to {host}:{port}") from None
    return procs, go


def _join(procs: list[multiprocessing.process.BaseProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def _check_listening(host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise LogsvcError(
            f"nothing answers on {host}:{port} ({exc.strerror or exc}); "
            "start `logsvc serve` or give --host/--port"
        ) from None


def _attach(args: argparse.Namespace, run_id: str) -> tuple[ProcessWatch, Counter]:
    """Check the service answers, find its pid, and open the counting connection."""
    _check_listening(args.host, args.port)
    settings = config.resolve(args)
    watch = ProcessWatch(args.service_pid or pid_listening_on(args.port))
    return watch, Counter(config.conninfo(settings), settings.schema, run_id)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_flood(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:12]
    counts = [c for c in _split(args.records, args.connections) if c]
    if args.null:
        return _flood_null(args, run_id, counts)
    watch, counter = _attach(args, run_id)
    pid = watch.pid
    result = Result("flood", run_id, sent=sum(counts), service_pid=pid)
    procs, go = _start_senders(_flood_sender, args.host, args.port, run_id, counts)
    update, stop = _progress(len(counts), "senders finished", args.json)
    watch.start()
    start = time.monotonic()
    go.set()
    try:
        _join(procs, args.timeout)
        sent_at = time.monotonic()
        done = wait_stored(counter, len(counts), args.timeout, watch, update)
    finally:
        stop()
    result.complete = done is not None
    end = done if done is not None else time.monotonic()
    result.seconds = end - start
    result.finish(counter, watch)
    result.records_per_s = result.stored / result.seconds if result.seconds else 0.0
    result.extra = {
        "connections": len(counts),
        "send_seconds": round(sent_at - start, 3),
        "offered_records_per_s": round(result.sent / max(sent_at - start, 1e-9)),
    }
    counter.close()
    return report(result, args.json)


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
    procs, go = _start_senders(_flood_sender, "127.0.0.1", port, run_id, counts)
    start = time.monotonic()
    go.set()
    frames = q.get(timeout=args.timeout)
    seconds = time.monotonic() - start
    _join(procs, 30)
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

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1", help="the service's address (default: 127.0.0.1)")
        p.add_argument("--port", type=int, default=5000, help="the service's port (default: 5000)")
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
    common(flood)
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
