"""A small server side of docs/protocol.md, for the client's own tests (no journal, no PostgreSQL).

Written from the spec with ``struct``, not with the client's ``_protocol``, so the two check
each other. It keeps what it received per stream in a ``Store`` (several servers may share
one, as two logsvc instances share a database), acknowledges after each RECORDS frame
unless told to hold its ACKs, and can drop every connection, refuse with an ERROR, or send
garbage. Every rule of the spec a client could break is checked and noted in ``violations``.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PREAMBLE = b"\x89LOGSVC\n"
MAX_FRAME = 4 << 20


@dataclass
class Store:
    """What every server sharing this store has taken: per stream, seq -> payload."""

    records: dict[str, dict[int, bytes]] = field(default_factory=dict)
    duplicates: int = 0  # records received again (resends the client could not avoid)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, stream: str, seq: int, payload: bytes) -> None:
        with self.lock:
            got = self.records.setdefault(stream, {})
            if seq in got:
                self.duplicates += 1
                assert got[seq] == payload, f"seq {seq} of {stream} came back with other content"
            else:
                got[seq] = payload

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.records.values())

    def highest(self, stream: str) -> int:
        with self.lock:
            return max(self.records.get(stream, {}), default=0)

    def payloads(self, stream: str | None = None) -> list[bytes]:
        with self.lock:
            streams = [stream] if stream else list(self.records)
            return [p for s in streams for _, p in sorted(self.records.get(s, {}).items())]


class FakeServer:
    """Listens on 127.0.0.1 (or a unix path, or TLS) in threads of its own."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        unix_path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        window: int = 10_000,
        max_frame_bytes: int = MAX_FRAME,
        remember: bool = True,
    ) -> None:
        self.store = store or Store()
        self.unix_path = unix_path
        self.ssl_context = ssl_context
        self.window = window
        self.max_frame_bytes = max_frame_bytes
        self.remember = remember  # False: WELCOME.acked is always 0 (a server that knows nothing)
        self.port = 0
        self.hold_acks = False
        self.refuse_with: str | None = None  # answer HELLO with this ERROR instead of WELCOME
        self.garbage: bytes | None = None  # answer HELLO with these bytes instead of WELCOME
        self.hellos: list[dict[str, object]] = []
        self.frames = 0
        self.violations: list[str] = []
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = False

    def start(self) -> FakeServer:
        if self.unix_path:
            ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
            ls.bind(self.unix_path)
        else:
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", self.port))
            self.port = ls.getsockname()[1]
        ls.listen(64)
        ls.settimeout(0.05)
        self._listener = ls
        self._running = True
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        """Stop listening and close every connection (a restart can follow, on the same port)."""
        self._running = False
        for t in self._threads:
            t.join(5)
        self._threads = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.drop_connections()

    def drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # -- threads ----------------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        assert self._listener is not None
        while self._running:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.ssl_context is not None:
                try:
                    conn.settimeout(5)
                    conn = self.ssl_context.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    conn.close()
                    continue
            with self._lock:
                self._conns.add(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._conversation(conn)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _conversation(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        buf = bytearray()

        def need(n: int) -> bool:
            while len(buf) < n:
                if not self._running:
                    return False
                try:
                    data = conn.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    return False
                buf.extend(data)
            return True

        def frame() -> tuple[int, bytes] | None:
            if not need(5):
                return None
            (length,) = struct.unpack_from(">L", buf)
            if length == 0 or length > self.max_frame_bytes:
                self.violations.append(f"frame length {length}")
                return None
            if not need(4 + length):
                return None
            kind, body = buf[4], bytes(buf[5 : 4 + length])
            del buf[: 4 + length]
            return kind, body

        def send(kind: int, body: bytes) -> None:
            conn.sendall(struct.pack(">LB", 1 + len(body), kind) + body)

        if not need(8) or bytes(buf[:8]) != PREAMBLE:
            self.violations.append("bad preamble")
            return
        del buf[:8]
        first = frame()
        if first is None or first[0] != 0x01:
            self.violations.append("HELLO missing")
            return
        hello = json.loads(first[1])
        self.hellos.append(hello)
        stream = hello["stream"]
        if hello.get("protocol") != 1 or len(stream) != 32 or hello.get("format") not in ("pickle", "json"):
            self.violations.append(f"bad HELLO {hello}")
        if self.garbage is not None:
            conn.sendall(self.garbage)
            return
        if self.refuse_with:
            send(0x83, json.dumps({"error": self.refuse_with, "message": "refused for a test"}).encode())
            return
        acked = self.store.highest(stream) if self.remember else 0
        welcome = {
            "protocol": 1,
            "acked": acked,
            "max_frame_bytes": self.max_frame_bytes,
            "max_record_bytes": 1 << 20,
            "window": self.window,
            "server": "fake/1",
        }
        send(0x81, json.dumps(welcome).encode())
        last_seq = 0
        high = acked  # the highest seq taken on this connection (or known)
        sent_ack = acked
        while self._running:
            if not self.hold_acks and high > sent_ack:
                send(0x82, struct.pack(">Q", high))
                sent_ack = high
            if len(buf) < 5:
                try:
                    data = conn.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    return
                buf.extend(data)
                continue
            got = frame()
            if got is None:
                return
            kind, body = got
            if kind != 0x02:
                self.violations.append(f"frame type {kind}")
                return
            first_seq, count = struct.unpack_from(">QL", body)
            if first_seq <= last_seq or first_seq < 1:
                self.violations.append(f"seq_order: {first_seq} after {last_seq}")
            pos = 12
            for k in range(count):
                (n,) = struct.unpack_from(">L", body, pos)
                self.store.take(stream, first_seq + k, body[pos + 4 : pos + 4 + n])
                pos += 4 + n
            if pos != len(body):
                self.violations.append("RECORDS body does not match its count")
            self.frames += 1
            last_seq = first_seq + count - 1
            high = max(high, last_seq)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl: (cert, key)."""
    key, cert = directory / "k.pem", directory / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
