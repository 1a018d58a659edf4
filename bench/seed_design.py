"""The seed's own design, reimplemented small and faithfully, as the benchmark's baseline.

Usage::

    python bench/seed_design.py --listen 127.0.0.1:PORT --dsn DSN --schema NAME [--log-file PATH]

What the seed's blog post ("Logger service using epoll - Part 2") describes, and nothing more:

- one process, one thread, no child processes;
- an edge-triggered ``select.epoll`` receiver for ``logging.handlers.SocketHandler`` frames
  (4-byte big-endian length, then a pickled record dict), each socket read until ``EAGAIN``;
- ``pickle.loads`` on every frame;
- every record written to a file as a formatted line (the seed's "Step 1");
- rows buffered and inserted with ``psycopg2.extras.execute_values`` in 1,000-row blocks, one
  commit per block (the seed's "Step 3");
- a ``signal.setitimer`` timer whose SIGALRM flushes a partial buffer, so records that arrive
  while traffic is idle are not stuck in memory.

UNSAFE: ``pickle.loads`` runs whatever the sender puts in the frame (any import, any call).
That is exactly what the seed did and why logsvc has a restricted unpickler. This script is a
measurement baseline only: run it on a loopback address, against load you generate yourself.

It stores into ``{schema}.records`` with the columns the benchmark counts by (``extra`` is
every attribute of the record beyond logging's standard ones, as JSON, like logsvc), so
``logsvc bench flood`` can count a run here exactly as it does against logsvc. It prints
``Listening on HOST:PORT`` on stderr once ready, and on SIGTERM or SIGINT reads what clients
already sent, flushes, and exits 0.

Two liberties, both in the seed's favour or neutral: the file copy goes through a buffered
file object (one ``write`` syscall per 8 KiB, where a ``logging.FileHandler`` flushes every
record), and the SIGALRM handler only inserts when the loop is idle in ``epoll.poll``; when
it fires mid-batch it leaves a flag for the loop, because flushing from inside another flush
would insert the same rows twice.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import errno
import json
import logging
import pickle
import select
import signal
import socket
import struct
import sys
import time
from types import FrameType
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import psycopg2.extras  # type: ignore[import-untyped]

BLOCK_ROWS = 1000  # the seed's "1k-blocks"
TIMER_S = 0.2  # the SIGALRM period: how long a partial buffer may wait
RECV_BYTES = 64 * 1024
POLL_S = 1.0  # epoll.poll timeout, so a stop request is seen even when idle

# What the stdlib sets on every record; anything else came from ``extra=`` and goes to the
# ``extra`` column. Taken from logging itself, plus the two attributes Formatter adds.
STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# The seed's client format (its setup_logging), with the message it cut off at the end.
LINE_FORMAT = "%(levelname)1.1s %(asctime)s %(name)s:%(lineno)3s %(message)s"
DATE_FORMAT = "%Y.%m.%d %H:%M:%S"

_unpack_len = struct.Struct(">L").unpack_from

DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.records (
    created timestamptz,
    levelno int,
    levelname text,
    logger text,
    message text,
    pathname text,
    lineno int,
    func text,
    process bigint,
    thread bigint,
    extra jsonb,
    stored timestamptz DEFAULT now()
);
"""
INSERT = (
    "INSERT INTO {s}.records (created, levelno, levelname, logger, message, pathname, lineno, func,"
    " process, thread, extra) VALUES %s"
)
# An untyped literal takes its column's type, so ``extra`` needs no ``::jsonb`` (a cast costs ~1.5 µs a row).
TEMPLATE = "(to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


def _text(v: Any) -> str | None:
    # PostgreSQL text cannot hold NUL; the seed would have failed the whole block here.
    return None if v is None else str(v).replace("\x00", "\ufffd")


class SeedService:
    """The receiver, the buffer and the timer; ``run()`` until ``stop()``."""

    def __init__(self, host: str, port: int, dsn: str, schema: str, log_file: str | None) -> None:
        self.db = psycopg2.connect(dsn)
        with self.db.cursor() as cur:
            cur.execute(DDL.format(s=schema))
        self.db.commit()
        self.insert_sql = INSERT.format(s=schema)

        self.out = (
            None if log_file is None else open(log_file, "a", encoding="utf-8", errors="backslashreplace")
        )
        self.formatter = logging.Formatter(LINE_FORMAT, DATE_FORMAT)

        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.address: tuple[str, int] = self.listener.getsockname()

        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), select.EPOLLIN | select.EPOLLET)
        self.conns: dict[int, socket.socket] = {}
        self.bufs: dict[int, bytearray] = {}

        self.rows: list[tuple[Any, ...]] = []
        self.busy = False  # the loop is between polls: the timer must not flush now
        self.flush_due = False
        self.stopping = False
        self.stored = 0
        self.bad_frames = 0

    # -- signals -------------------------------------------------------------------------

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.busy or not self.rows:
            self.flush_due = True
        else:
            self.flush()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.setitimer(signal.ITIMER_REAL, TIMER_S, TIMER_S)
        listener_fd = self.listener.fileno()
        while not self.stopping:
            events = self.epoll.poll(POLL_S)
            self.busy = True
            for fd, _mask in events:
                if fd == listener_fd:
                    self._accept()
                else:
                    self._read(fd)
            if self.flush_due:
                self.flush_due = False
                self.flush()
            self.busy = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        # What clients already sent before the stop is in the kernel: take it, then flush.
        self.busy = True
        for fd in list(self.conns):
            self._read(fd)
        self.flush()
        self.close()

    def _accept(self) -> None:
        while True:  # edge-triggered: accept until EAGAIN
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    print(f"accept: {e}", file=sys.stderr)
                    return
                raise
            sock.setblocking(False)
            fd = sock.fileno()
            self.conns[fd] = sock
            self.bufs[fd] = bytearray()
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)

    def _read(self, fd: int) -> None:
        sock = self.conns[fd]
        buf = self.bufs[fd]
        eof = False
        while True:  # edge-triggered: read until EAGAIN, or no new edge will come
            try:
                data = sock.recv(RECV_BYTES)
            except BlockingIOError:
                break
            except ConnectionError:
                eof = True
                break
            if not data:
                eof = True
                break
            buf += data
        self._frames(buf)
        if eof:
            self.epoll.unregister(fd)
            sock.close()
            del self.conns[fd], self.bufs[fd]

    def _frames(self, buf: bytearray) -> None:
        pos = 0
        end = len(buf)
        rows = self.rows
        while end - pos >= 4:
            (n,) = _unpack_len(buf, pos)
            if end - pos - 4 < n:
                break
            try:
                d = pickle.loads(buf[pos + 4 : pos + 4 + n])  # UNSAFE, as the seed did
            except Exception:
                self.bad_frames += 1
                d = None
            pos += 4 + n
            if isinstance(d, dict):
                self._handle(d, rows)
                if len(rows) >= BLOCK_ROWS:
                    self.flush()
                    rows = self.rows
        del buf[:pos]

    def _handle(self, d: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
        record = logging.makeLogRecord(d)
        if self.out is not None:
            self.out.write(self.formatter.format(record) + "\n")
        extra = {k: v for k, v in d.items() if k not in STANDARD_ATTRS}
        rows.append(
            (
                record.created,
                record.levelno,
                _text(record.levelname),
                _text(record.name),
                _text(d.get("msg")),
                _text(record.pathname),
                record.lineno,
                _text(record.funcName),
                record.process,
                record.thread,
                json.dumps(extra, default=repr).replace("\\u0000", "\\ufffd") if extra else None,
            )
        )

    def flush(self) -> None:
        """Insert the buffered rows in 1,000-row blocks, one commit per block."""
        rows, self.rows = self.rows, []
        if not rows:
            return
        with self.db.cursor() as cur:
            for i in range(0, len(rows), BLOCK_ROWS):
                block = rows[i : i + BLOCK_ROWS]
                psycopg2.extras.execute_values(cur, self.insert_sql, block, TEMPLATE, page_size=BLOCK_ROWS)
                self.db.commit()
                self.stored += len(block)
        if self.out is not None:
            self.out.flush()

    def close(self) -> None:
        for sock in self.conns.values():
            sock.close()
        self.epoll.close()
        self.listener.close()
        if self.out is not None:
            self.out.close()
        self.db.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:5000", metavar="HOST:PORT", help="port 0: any free port")
    p.add_argument("--dsn", required=True, help="psycopg2 connection string")
    p.add_argument("--schema", default="seed", help="tables go into this schema (created if missing)")
    p.add_argument("--log-file", default="seed_design.log", help="the file copy of every record")
    p.add_argument(
        "--no-file",
        action="store_true",
        help="skip the file copy: NOT the seed's design, only to see what the copy costs",
    )
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    svc = SeedService(host, int(port), args.dsn, args.schema, None if args.no_file else args.log_file)
    print(f"Listening on {svc.address[0]}:{svc.address[1]}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    svc.run()
    print(
        f"Stopped after {time.monotonic() - t0:.1f} s: stored={svc.stored} bad_frames={svc.bad_frames}",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
