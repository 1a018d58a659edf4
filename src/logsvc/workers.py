"""``serve --workers N``: N worker processes behind one supervisor.

Theory of operation
-------------------
Each worker is a whole ``Server`` (one thread, one edge-triggered epoll loop, as without
``--workers``) with its own journal and its own PostgreSQL connection. They share the
listening ports through ``SO_REUSEPORT``: every worker binds its own socket to each port and
the kernel spreads new connections (and UDP datagrams, by source) over them. Exactly once
holds per journal as it does for one process, and several journals into one database is
what several instances already do (``shipped`` per journal, ``streams`` per client stream).

The supervisor is this process. It never reads a record:

* it picks the ports once: a listener asked for on port 0 gets a free port here (a bound,
  non-listening ``SO_REUSEPORT`` placeholder holds it until the workers have bound it too),
  so all workers listen on the same one;
* it forks the workers (``fork`` before any loop exists in the child; a worker ends with
  ``os._exit``, so nothing the supervisor registered at exit runs in it), and restarts one
  that dies, with a back-off that doubles from 1 s to 30 s while it keeps dying young;
* it answers ``--metrics``: ``/metrics`` sums the workers' own figures (each worker serves
  them on a loopback port of its own, which it reports through a pipe at start; the sum of
  counters is a counter, of gauges a total, except the per-process maxima, which take the
  maximum), adding ``logsvc_workers`` and ``logsvc_worker_restarts_total``; ``/readyz`` is
  ready when every worker is; ``/healthz`` when any runs;
* on SIGTERM/SIGINT it stops the workers one after another (each drains and ships as a single
  ``serve`` does) and exits with the first non-zero status; a second signal is passed on to
  every worker at once.

Worker 0's data directory is ``DATA_DIR`` itself (the layout of a single ``serve``, so going
from one worker to several, or back, keeps its journal); worker N's is ``DATA_DIR/workers/N``.
A worker directory left by an earlier, larger ``--workers`` still gets a worker, so its
journal is shipped (logged once). Unix-domain listeners are served by worker 0 only (a path
cannot be shared like a port). The web console is the supervisor's, on its operator port
(with ``--metrics-tls`` and ``--console-token`` as ``serve`` has them): the records it shows are
in PostgreSQL, whichever worker stored them.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import dataclasses
import errno
import functools
import http.client
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from logsvc import loop as _loop
from logsvc.config import Settings
from logsvc.console import Console
from logsvc.console import build as build_console
from logsvc.ingest.http import HttpConnection, Request, Response
from logsvc.ingest.intake import make_tls_context
from logsvc.ops import metrics_response

log = logging.getLogger("logsvc.workers")

RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
# A worker that ran this long before it died is restarted after the shortest back-off.
HEALTHY_AFTER_S = 60.0
SCRAPE_TIMEOUT_S = 2.0
# Gauges that are one process's maximum, not a quantity: the workers' maximum, not their sum.
_MAX_SAMPLES = frozenset({"logsvc_uptime_seconds", "logsvc_loop_max_turn_seconds", "logsvc_lag_seconds"})


@dataclasses.dataclass(slots=True)
class _Worker:
    index: int
    settings: Settings
    pid: int = 0
    metrics_port: int = 0
    started: float = 0.0
    delay: float = RESTART_MIN_S
    young_deaths: int = 0  # deaths in a row, each within HEALTHY_AFTER_S of its start
    restart_timer: _loop.Timer | None = None
    pipe: int = -1  # read end: the worker writes its metrics port there once it listens
    status: int | None = None  # exit status once it exited while stopping
    signalled: bool = False  # sent SIGTERM while stopping


def worker_dirs(data_dir: Path, n: int) -> list[Path]:
    """The data directories of ``n`` workers, plus any a larger ``--workers`` left behind."""
    dirs = [data_dir] + [data_dir / "workers" / str(i) for i in range(1, n)]
    extra = data_dir / "workers"
    if extra.is_dir():
        for d in sorted(extra.iterdir(), key=lambda p: (len(p.name), p.name)):
            if d.name.isdigit() and int(d.name) >= n and (d / "journal").is_dir():
                log.warning(
                    "%s holds the journal of worker %s from an earlier, larger --workers; a worker "
                    "runs for it too, so what it holds is shipped.",
                    d,
                    d.name,
                )
                dirs.append(d)
    return dirs


class WorkerSupervisor:
    """Runs ``settings.workers`` workers; see the module doc."""

    def __init__(
        self, settings: Settings, dsn: str, embedded_check: Callable[[], bool] | None = None
    ) -> None:
        self.settings = settings
        self.dsn = dsn
        self.reactor = _loop.Reactor()
        self._embedded_check = embedded_check
        self.workers: list[_Worker] = []
        self.restarts = 0
        self.stopping = False
        self._stop_index = 0
        self._placeholders: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._metrics_open = False
        self._conns: dict[int, HttpConnection] = {}
        self._tls: ssl.SSLContext | None = None
        self.console: Console | None = None
        self.exit_status = 0
        self._pid = os.getpid()

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        st = self.settings
        shared = self._resolve_ports()
        for i, d in enumerate(worker_dirs(Path(st.data_dir), st.workers)):
            ws = dataclasses.replace(
                shared,
                data_dir=d,
                dsn=self.dsn,
                # The supervisor scrapes this port over loopback in plain HTTP; its own operator
                # port is the one with --metrics-tls and the console.
                metrics=("127.0.0.1", 0),
                metrics_tls=False,
                workers=1,
                reuse_port=True,
                listen=shared.listen if i == 0 else [a for a in shared.listen if not isinstance(a, str)],
            )
            self.workers.append(_Worker(i, ws))
        for where in shared.listen:
            if not isinstance(where, str):
                log.info(
                    "Listening on %s:%d (SocketHandler pickle frames, in %d workers).",
                    *where,
                    len(self.workers),
                )
        if st.metrics is not None:
            self._bind_metrics(*st.metrics)
            # The web console of the whole service, as serve has it on its operator port; its
            # connections are its own, opened when a browser first asks (none are forked).
            host, token, timeout = st.metrics[0], st.console_token, st.pg_timeout
            self.console = build_console(
                self.reactor, self.dsn, st.schema, host=host, token=token, pg_timeout=timeout
            )
            if st.metrics_tls:
                self._tls = make_tls_context(st)
        r = self.reactor
        r.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        r.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        r.add_signal_handler(signal.SIGCHLD, lambda _: self._reap())
        for w in self.workers:
            self._spawn(w)
        if self._embedded_check is not None:
            r.call_later(2.0, self._embedded_tick)
        log.info(
            "Supervising %d workers (pids %s).",
            len(self.workers),
            ", ".join(str(w.pid) for w in self.workers),
        )

    def _resolve_ports(self) -> Settings:
        # Every worker must bind the same ports: port 0 is chosen once, here.
        st = self.settings

        def tcp(host: str, port: int) -> tuple[str, int]:
            if port:
                return host, port
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, 0))  # bound, never listening: it takes no connections
            self._placeholders.append(s)
            return host, int(s.getsockname()[1])

        def udp(host: str, port: int) -> tuple[str, int]:
            if port:
                return host, port
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:  # closed at once: it would take datagrams
                s.bind((host, 0))
                return host, int(s.getsockname()[1])

        listen: list[tuple[str, int] | str] = [a if isinstance(a, str) else tcp(*a) for a in st.listen]
        return dataclasses.replace(
            st,
            listen=listen,
            listen_tls=[tcp(*a) for a in st.listen_tls],
            listen_json=[dataclasses.replace(j, port=tcp(j.host, j.port)[1]) for j in st.listen_json],
            listen_http=[dataclasses.replace(j, port=tcp(j.host, j.port)[1]) for j in st.listen_http],
            listen_syslog=[tcp(*a) for a in st.listen_syslog],
            listen_gelf=[tcp(*a) for a in st.listen_gelf],  # its UDP side takes the same port
            listen_otlp=[tcp(*a) for a in st.listen_otlp],
            listen_udp=[udp(*a) for a in st.listen_udp],
            listen_syslog_udp=[udp(*a) for a in st.listen_syslog_udp],
        )

    def _spawn(self, w: _Worker) -> None:
        w.restart_timer = None
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(rfd)
            self._become_worker(w, wfd)
        os.close(wfd)
        os.set_blocking(rfd, False)
        w.pid, w.pipe, w.started, w.metrics_port = pid, rfd, time.monotonic(), 0
        self.reactor.register(rfd, _loop.EPOLLIN | _loop.EPOLLET, lambda _: self._read_port(w))

    def _become_worker(self, w: _Worker, wfd: int) -> None:
        # Nothing of the supervisor's may act here: its loop, signal set-up and sockets are
        # closed, and the process ends with os._exit (atexit handlers are the supervisor's).
        status = 1
        try:
            _die_with_parent(self._pid)
            self.reactor.close()
            for s in (*self._placeholders, *([self._listener] if self._listener else [])):
                s.close()
            for c in self._conns.values():
                c.sock.close()
            for other in self.workers:
                if other.pipe >= 0:
                    os.close(other.pipe)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for h in logging.getLogger().handlers:
                h.setFormatter(
                    logging.Formatter(f"%(asctime)s %(levelname)s [worker {w.index}] %(name)s: %(message)s")
                )
            from logsvc.server import Server

            server = Server(w.settings, self.dsn)
            server.start()
            assert server.intake is not None
            port = next(int(x.sock.getsockname()[1]) for x in server.intake.listeners if x.kind == "metrics")
            os.write(wfd, b"%d\n" % port)
            os.close(wfd)
            status = server.run()
        except BaseException:
            log.exception("Worker %d failed.", w.index)
        finally:
            logging.shutdown()
            os._exit(status)

    def _read_port(self, w: _Worker) -> None:
        try:
            data = os.read(w.pipe, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data.strip().isdigit():
            w.metrics_port = int(data)
            if all(x.metrics_port for x in self.workers):
                # Every worker listens now: the placeholders can go, and the operator port
                # opens (so "Listening ... /metrics" in the log means every port takes clients).
                for s in self._placeholders:
                    s.close()
                self._placeholders.clear()
                self._listen_metrics()
        self.reactor.unregister(w.pipe)
        os.close(w.pipe)
        w.pipe = -1

    # -- children --------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = next((x for x in self.workers if x.pid == pid), None)
            if w is None:
                continue  # not a worker (pg_ctl, an embedded PostgreSQL launch)
            code = os.waitstatus_to_exitcode(status)
            w.pid = 0
            w.metrics_port = 0
            if w.pipe >= 0:
                self.reactor.unregister(w.pipe)
                os.close(w.pipe)
                w.pipe = -1
            if self.stopping:
                w.status = code
                if code != 0 and self.exit_status == 0:
                    self.exit_status = code if code > 0 else 1
                log.info("Worker %d (pid %d) stopped with status %d.", w.index, pid, code)
                self._stop_next()
                continue
            lived = time.monotonic() - w.started
            if lived >= HEALTHY_AFTER_S:
                w.young_deaths = 0
            w.delay = min(RESTART_MIN_S * 2**w.young_deaths, RESTART_MAX_S)
            w.young_deaths += 1
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            log.error(
                "Worker %d (pid %d) died (%s) after %.1f s; restarting it in %.0f s. Its journal keeps "
                "what it had read; the restarted worker ships it.",
                w.index,
                pid,
                how,
                lived,
                w.delay,
            )
            self.restarts += 1
            w.restart_timer = self.reactor.call_later(w.delay, functools.partial(self._spawn, w))

    def _embedded_tick(self) -> None:
        if self._embedded_check is not None and not self.stopping:
            self._embedded_check()
            self.reactor.call_later(2.0, self._embedded_tick)

    # -- stop ------------------------------------------------------------------------------

    def _on_stop_signal(self, signum: int) -> None:
        if self.stopping:
            log.warning("%s again: passing it on to every worker.", signal.Signals(signum).name)
            for w in self.workers:
                if w.pid:
                    _signal(w.pid, signal.SIGTERM)
            return
        self.stopping = True
        log.info(
            "%s: stopping the %d workers one after another.", signal.Signals(signum).name, len(self.workers)
        )
        for w in self.workers:
            self.reactor.cancel(w.restart_timer)
        self._stop_next()

    def _stop_next(self) -> None:
        while self._stop_index < len(self.workers):
            w = self.workers[self._stop_index]
            if w.pid:
                if not w.signalled:
                    w.signalled = True
                    _signal(w.pid, signal.SIGTERM)
                return  # wait for it to exit (SIGCHLD), then the next
            self._stop_index += 1
        self.reactor.stop()

    def run(self) -> int:
        """Supervise until stopped; the first non-zero status of a worker, else 0."""
        try:
            self.reactor.run()
        finally:
            for w in self.workers:
                if w.pid:
                    _signal(w.pid, signal.SIGKILL)
            if self.console is not None:
                self.console.close()
            if self._listener is not None:
                self._listener.close()
            self.reactor.close()
        log.info("All workers stopped. Bye.")
        return self.exit_status

    # -- the operator port -----------------------------------------------------------------

    def _bind_metrics(self, host: str, port: int) -> None:
        # Bound at start (a taken address fails the start); it listens once every worker does.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            s.close()
            raise
        self._listener = s

    def _listen_metrics(self) -> None:
        s = self._listener
        if s is None or self._metrics_open:
            return
        self._metrics_open = True
        s.listen(64)
        s.setblocking(False)
        addr = s.getsockname()[:2]
        log.info(
            "Listening on %s:%d (%sHTTP: /metrics, /healthz, /readyz of all workers; the web console at /).",
            addr[0],
            addr[1],
            "TLS, " if self._tls is not None else "",
        )
        self.reactor.register(s.fileno(), _loop.EPOLLIN | _loop.EPOLLET, lambda _: self._accept())

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(256):
            try:
                sock, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    log.warning("Cannot accept an operator connection: %s.", exc)
                return
            sock.setblocking(False)
            if self._tls is not None:  # --metrics-tls: the handshake runs on the loop
                try:
                    sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError) as exc:
                    log.warning("Operator connection from %s: TLS set-up failed: %s.", peer[0], exc)
                    sock.close()
                    continue
            conn = HttpConnection(
                sock,
                f"{peer[0]}:{peer[1]}",
                self.reactor,
                self._app,
                max_body_bytes=1 << 16,
                on_close=self._closed,
            )
            self._conns[conn.fd] = conn
            conn.start()

    def _closed(self, conn: HttpConnection, reason: str) -> None:
        self._conns.pop(conn.fd, None)

    def _app(self, conn: HttpConnection, req: Request) -> Response | None:
        if self.console is not None and Console.claims(req.path):
            return self.console.handle(conn, req)
        if req.method not in ("GET", "HEAD"):
            return Response.json(405, {"error": f"{req.method} is not allowed"}, [("Allow", "GET, HEAD")])
        if req.path == "/metrics":
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Summed(self))
            return metrics_response(registry)
        if req.path == "/healthz":
            up = sum(1 for w in self.workers if w.pid)
            return Response.json(
                200 if up else 503, {"status": "ok" if up else "no worker runs", "workers": up}
            )
        if req.path == "/readyz":
            reasons = []
            for w in self.workers:
                status, body = _get(w.metrics_port, "/readyz") if w.metrics_port else (0, "not started")
                if status != 200:
                    reasons.append(f"worker {w.index}: {body.strip()[:300] or status}")
            if self.stopping:
                reasons.insert(0, "stopping")
            return Response.json(503 if reasons else 200, {"ready": not reasons, "reasons": reasons})
        return Response.json(404, {"error": f"no such path: {req.path[:200]}"})

    def scrape(self) -> list[str]:
        """Each running worker's /metrics page (blocking, ``SCRAPE_TIMEOUT_S`` each)."""
        pages = []
        for w in self.workers:
            if w.metrics_port:
                status, body = _get(w.metrics_port, "/metrics")
                if status == 200:
                    pages.append(body)
        return pages


class _Summed(Collector):
    """The workers' metrics summed by name and labels, and the supervisor's own."""

    def __init__(self, sup: WorkerSupervisor) -> None:
        self._sup = sup

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for page in self._sup.scrape():
            for fam in text_string_to_metric_families(page):
                if fam.name not in families:
                    families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                    values[fam.name] = {}
                acc = values[fam.name]
                for s in fam.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    if s.name in _MAX_SAMPLES:
                        acc[key] = max(acc.get(key, s.value), s.value)
                    else:
                        acc[key] = acc.get(key, 0.0) + s.value
        for name, fam in families.items():
            for (sname, labels), v in values[name].items():
                fam.add_sample(sname, dict(labels), v)
            yield fam
        running = Metric("logsvc_workers", "Worker processes running.", "gauge")
        running.add_sample("logsvc_workers", {}, float(sum(1 for w in self._sup.workers if w.pid)))
        yield running
        restarts = Metric("logsvc_worker_restarts", "Workers restarted after they died.", "counter")
        restarts.add_sample("logsvc_worker_restarts_total", {}, float(self._sup.restarts))
        yield restarts


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT_S)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(4 << 20).decode("utf-8", "replace")
    except OSError as exc:
        return 0, str(exc)
    finally:
        conn.close()


def _die_with_parent(supervisor: int) -> None:
    """Linux: SIGTERM this worker if the supervisor dies, even by SIGKILL (PR_SET_PDEATHSIG).

    The worker then stops as on any SIGTERM (drains, ships, exits) instead of living on as an
    orphan holding the ports. Elsewhere, or without libc, nothing is done.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def run(settings: Settings, dsn: str, embedded_check: Callable[[], bool] | None = None) -> int:
    """``serve --workers N``: start the supervisor and its workers; the exit status."""
    sup = WorkerSupervisor(settings, dsn, embedded_check)
    sup.start()
    status = sup.run()
    sys.stdout.flush()
    return status
