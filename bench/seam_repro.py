"""Reproduce the losses of issue 10 against any checkout of logsvc, and print what happened.

    python bench/seam_repro.py                      # this checkout
    python bench/seam_repro.py --src /tmp/old/src   # another one (e.g. `git archive REV | tar -x`)
    python bench/seam_repro.py --only form,tail     # some scenarios

Each scenario runs a real ``logsvc serve`` (``python -m logsvc serve`` with ``--src`` first on
PYTHONPATH) against the PostgreSQL of ``--dsn`` (default ``$LOGSVC_TEST_DSN``), in a schema of
its own that is dropped afterwards, with stock ``logging.handlers.SocketHandler`` senders, and
prints one line: what was sent, what PostgreSQL holds, what ``/readyz`` said, how long SIGTERM
took. Everything listens on 127.0.0.1 only; every wait is bounded.

Scenarios:
  form     a 71-byte HTTPHandler form whose msg has a format width (msg=%200000000d&args=(1,)),
           then 200 records from a stock client
  ndjson   a 16 MiB POST /ingest of tiny NDJSON lines, then 200 records from a stock client
  tail     1,000 records shipped; a power loss takes the journal's tail; 500 records arrive
           while PostgreSQL is unreachable; then PostgreSQL comes back
  corrupt  three blocks journaled while PostgreSQL is unreachable; a byte of the middle one
           flips on disk; then PostgreSQL becomes reachable
  embedded serve without --dsn; its embedded PostgreSQL's postmaster is SIGKILLed; 100 records
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg


def wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


class Serve:
    def __init__(self, src: str, data: Path, dsn: str | None, schema: str, *args: str) -> None:
        self.log_path = data.parent / f"serve-{uuid.uuid4().hex[:6]}.log"
        env = dict(os.environ, PYTHONPATH=src)
        cmd = [sys.executable, "-m", "logsvc", "serve", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
               *(["--dsn", dsn] if dsn else []), "--schema", schema, "--data-dir", str(data),
               "--batch-max-age", "50ms", "--stats-interval", "0", *args]  # fmt: skip
        self.out = open(self.log_path, "wb")  # closed in stop() / kill()
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, env=env)
        if not wait(lambda: "(HTTP: /metrics" in self.log() or self.proc.poll() is not None, 60):
            raise SystemExit(f"serve did not start:\n{self.log()}")
        if self.proc.poll() is not None:
            raise SystemExit(f"serve exited:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def port(self, what: str) -> int:
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+) \(" + re.escape(what), self.log())
        assert m, self.log()
        return int(m.group(1))

    def readyz(self) -> str:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port('HTTP: /metrics')}/readyz", timeout=3
            ) as r:
                return f"{r.status} {json.loads(r.read()).get('status')}"
        except urllib.error.HTTPError as e:
            return f"{e.code} {json.loads(e.read()).get('status')}"
        except OSError as e:
            return f"no answer ({e})"

    def stop(self, timeout: float = 30.0) -> str:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
            what = f"exited {code} after {time.monotonic() - started:.1f} s"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            what = f"still running {timeout:.0f} s after SIGTERM (killed)"
        self.out.close()
        return what

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()


def send(port: int, n: int, run: str) -> None:
    """n records from a stock SocketHandler, then close it (which flushes)."""
    h = logging.handlers.SocketHandler("127.0.0.1", port)
    lg = logging.getLogger(f"repro.{run}")
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    lg.addHandler(h)
    for i in range(n):
        lg.info("record %d", i, extra={"run": run})
    lg.removeHandler(h)
    h.close()


def stored(dsn: str, schema: str, run: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as c:
            row = c.execute(
                f"SELECT count(*) FROM {schema}.records WHERE extra->>'run' = %s", [run]
            ).fetchone()
        return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def tracebacks(log: str) -> int:
    return log.count("Traceback (most recent call last)")


def scenario_http(src: str, tmp: Path, dsn: str, schema: str, body: bytes, ctype: str) -> str:
    svc = Serve(src, tmp / "data", dsn, schema, "--listen-http", "127.0.0.1:0", "--shutdown-timeout", "10s")
    try:
        s = socket.create_connection(("127.0.0.1", svc.port("HTTP: POST")), timeout=60)
        s.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                  % (ctype.encode(), len(body), body))  # fmt: skip
        time.sleep(1.0)  # let it read the request before the stock client starts
        send(svc.port("SocketHandler"), 200, "after")
        wait(lambda: stored(dsn, schema, "after") == 200, 15)
        ready = svc.readyz()
        n = stored(dsn, schema, "after")
        s.close()
        return (f"stock records stored 200 sent: {n}; /readyz: {ready}; SIGTERM: {svc.stop()}; "
                f"tracebacks in the log: {tracebacks(svc.log())}")  # fmt: skip
    finally:
        svc.kill()


def scenario_form(src: str, tmp: Path, dsn: str, schema: str) -> str:
    body = b"name=widths&msg=%25200000000d&args=%281%2C%29"
    return scenario_http(src, tmp, dsn, schema, body, "application/x-www-form-urlencoded")


def scenario_ndjson(src: str, tmp: Path, dsn: str, schema: str) -> str:
    return scenario_http(
        src, tmp, dsn, schema, b'{"n":1}\n' * (16 * 1024 * 1024 // 8), "application/x-ndjson"
    )


class Gate:
    """A TCP forwarder to PostgreSQL that refuses connections until opened (PostgreSQL 'down')."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = False
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if not self.open:
                c.close()
                continue
            u = socket.create_connection(self.target)
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _gated(dsn: str) -> tuple[Gate, str]:
    """A closed gate to the PostgreSQL of ``dsn`` (over TCP) and the DSN that goes through it."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    gate = Gate((str(params.get("host", "127.0.0.1")), int(params.get("port", 5432))))
    params.update(host="127.0.0.1", port=str(gate.port))
    return gate, psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


def scenario_tail(src: str, tmp: Path, dsn: str, schema: str) -> str:
    data = tmp / "data"
    svc = Serve(src, data, dsn, schema, "--fsync", "never")
    try:
        send(svc.port("SocketHandler"), 1000, "before")
        wait(lambda: stored(dsn, schema, "before") == 1000, 30)
    finally:
        svc.kill()  # then the power loss: the newest segment's unsynced bytes are gone
    segs = sorted((data / "journal").glob("*.seg"))
    os.truncate(segs[-1], 0)
    gate, gated = _gated(dsn)
    svc = Serve(src, data, gated, schema, "--fsync", "never", "--shutdown-timeout", "30s")
    try:
        send(svc.port("SocketHandler"), 500, "after")  # PostgreSQL unreachable meanwhile
        time.sleep(1.0)
        gate.open = True  # PostgreSQL is back
        wait(lambda: stored(dsn, schema, "after") == 500, 30)
        n = stored(dsn, schema, "after")
        last = [
            ln
            for ln in svc.log().splitlines()
            if "PostgreSQL holds" in ln or "jump" in ln or "not clean" in ln
        ]
        return (f"records sent after the loss: 500, stored: {n}; SIGTERM: {svc.stop()}; "
                f"log: {last[0].split(': ', 1)[1][:120] if last else '-'}")  # fmt: skip
    finally:
        svc.kill()


def scenario_corrupt(src: str, tmp: Path, dsn: str, schema: str) -> str:
    data = tmp / "data"
    gate, gated = _gated(dsn)
    svc = Serve(src, data, gated, schema)
    try:
        for run in ("a", "b", "c"):
            send(svc.port("SocketHandler"), 100, run)
            time.sleep(0.5)  # its own block
        seg = sorted((data / "journal").glob("*.seg"))[-1]
        raw = seg.read_bytes()
        at = raw.index(b"record 50\tb") if b"record 50\tb" in raw else raw.index(b"record 50", len(raw) // 3)
        with open(seg, "r+b") as f:
            f.seek(at)
            f.write(b"X")
        gate.open = True
        wait(lambda: stored(dsn, schema, "c") == 100, 20)
        got = {r: stored(dsn, schema, r) for r in ("a", "b", "c")}
        send(svc.port("SocketHandler"), 50, "d")
        wait(lambda: stored(dsn, schema, "d") == 50, 10)
        got["d"] = stored(dsn, schema, "d")
        log = svc.log()
        said = [ln for ln in log.splitlines() if "read back" in ln or "failed its check" in ln]
        return (f"stored by run (100 each, 'b' damaged, 'd' sent after): {got}; "
                f"/readyz: {svc.readyz()}; tracebacks: {tracebacks(log)}; "
                f"reported: {'yes' if said else 'no'}; SIGTERM: {svc.stop()}")  # fmt: skip
    finally:
        svc.kill()


def scenario_embedded(src: str, tmp: Path, dsn: str, schema: str) -> str:
    data = tmp / "data"
    svc = Serve(src, data, None, schema)  # no --dsn: the embedded PostgreSQL under data/pg
    try:
        m = re.search(r"psql '([^']+)'", svc.log())
        assert m, svc.log()
        embedded = m.group(1)
        send(svc.port("SocketHandler"), 100, "before")
        wait(lambda: stored(embedded, schema, "before") == 100, 20)
        postmaster = int((data / "pg" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        send(svc.port("SocketHandler"), 100, "after")
        wait(lambda: stored(embedded, schema, "after") == 100, 20)
        n = stored(embedded, schema, "after")
        return (f"postmaster SIGKILLed; records sent after it: 100, stored within 20 s: {n}; "
                f"/readyz: {svc.readyz()}; SIGTERM: {svc.stop()}")  # fmt: skip
    finally:
        svc.kill()


SCENARIOS = {
    "form": scenario_form,
    "ndjson": scenario_ndjson,
    "tail": scenario_tail,
    "corrupt": scenario_corrupt,
    "embedded": scenario_embedded,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--src", default=str(Path(__file__).resolve().parent.parent / "src"), help="logsvc's src directory"
    )
    p.add_argument(
        "--dsn", default=os.environ.get("LOGSVC_TEST_DSN", "host=127.0.0.1 dbname=test user=postgres")
    )
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    args = p.parse_args()
    for name in args.only.split(","):
        schema = f"repro_{uuid.uuid4().hex[:12]}"
        with tempfile.TemporaryDirectory(prefix="logsvc-repro-") as tmp:
            try:
                print(f"{name}: {SCENARIOS[name](args.src, Path(tmp), args.dsn, schema)}", flush=True)
            finally:
                if name != "embedded":  # that one's database went with its temporary directory
                    with psycopg.connect(args.dsn, autocommit=True) as c:
                        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
