"""A minimal client of the acknowledged protocol, written from docs/protocol.md for tests.

Deliberately not ``logsvc_client``: the server's tests speak the wire format as the
specification states it, so a bug shared by the client and the server cannot hide.
"""

from __future__ import annotations

import json
import logging
import pickle
import socket
import struct
import time
import uuid
from typing import Any

PREAMBLE = b"\x89LOGSVC\n"
HELLO, RECORDS, WELCOME, ACK, ERROR = 0x01, 0x02, 0x81, 0x82, 0x83


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def hello(stream: str, fmt: str = "pickle", **extra: Any) -> bytes:
    return frame(HELLO, json.dumps({"protocol": 1, "stream": stream, "format": fmt, **extra}).encode())


def record_pickle(msg: str, **extra: Any) -> bytes:
    # A record as a logger call makes it (its own path, function and line).
    rec = logging.LogRecord("acked.test", logging.INFO, "/srv/app/acked.py", 42, msg, None, None, "handler")
    rec.__dict__.update(extra)
    d = dict(rec.__dict__)
    d["args"] = None
    d["exc_info"] = None
    return pickle.dumps(d, 1)  # as SocketHandler.makePickle (and logsvc_client) do


def records(first_seq: int, payloads: list[bytes]) -> bytes:
    body = struct.pack(">QI", first_seq, len(payloads)) + b"".join(
        struct.pack(">I", len(p)) + p for p in payloads
    )
    return frame(RECORDS, body)


class RawClient:
    """One connection: preamble + HELLO sent on ``open``; frames read back with ``read_frame``."""

    def __init__(self, port: int, stream: str | None = None, *, host: str = "127.0.0.1") -> None:
        self.stream = stream or uuid.uuid4().hex
        self.sock = socket.create_connection((host, port), timeout=10)
        self._buf = b""

    def open(self, fmt: str = "pickle") -> dict[str, Any]:
        self.sock.sendall(PREAMBLE + hello(self.stream, fmt))
        kind, body = self.read_frame()
        assert kind == WELCOME, (kind, body)
        welcome: dict[str, Any] = json.loads(body)
        return welcome

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_records(self, first_seq: int, messages: list[str], run: str = "") -> None:
        self.sock.sendall(records(first_seq, [record_pickle(m, run=run) for m in messages]))

    def read_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= 5:
                (n,) = struct.unpack_from(">I", self._buf)
                if len(self._buf) >= 4 + n:
                    kind, body = self._buf[4], self._buf[5 : 4 + n]
                    self._buf = self._buf[4 + n :]
                    return kind, body
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the server")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"server closed the connection ({len(self._buf)} bytes left)")
            self._buf += chunk

    def wait_ack(self, seq: int, timeout: float = 10.0) -> int:
        """Read ACKs until one reaches ``seq``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            kind, body = self.read_frame(max(0.01, deadline - time.monotonic()))
            assert kind == ACK, (kind, body)
            (acked,) = struct.unpack(">Q", body)
            if acked >= seq:
                return int(acked)

    def read_error(self) -> dict[str, Any]:
        """The ERROR frame the server sends (after WELCOME and ACKs, which are passed over)."""
        kind, body = self.read_frame()
        while kind in (WELCOME, ACK):
            kind, body = self.read_frame()
        assert kind == ERROR, (kind, body)
        err: dict[str, Any] = json.loads(body)
        return err

    def close(self) -> None:
        self.sock.close()
