"""UDP listeners: one datagram is one record (``DatagramHandler`` pickles, syslog datagrams),
or for GELF one datagram or a set of chunks (``wire.gelf`` reassembles them).

A ``DatagramReader`` drains its socket edge-triggered, within a budget per turn, parses each
datagram with a sans-IO format and hands the records to the journal writer. UDP has no
backpressure: while the writer is not accepting, the socket is simply not read, the kernel's
receive buffer fills and drops, and those drops are counted (``SO_RXQ_OVFL`` with each
datagram, ``/proc/net/udp`` for the current figure).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING

from logsvc import loop as _loop
from logsvc.errors import ProtocolError, RecordRejected
from logsvc.wire import GelfDatagramFormat, PickleDatagramFormat, SyslogFormat

if TYPE_CHECKING:
    from logsvc.ingest.intake import Intake

log = logging.getLogger("logsvc.ingest")

# Datagrams read from one UDP socket per loop turn before the others get their turn.
DATAGRAM_BUDGET = 2048
MAX_DATAGRAM_BYTES = 65535
# Asked for as the UDP receive buffer: ~2 s of the seed's load in the kernel while a turn
# runs long. Above net.core.rmem_max only root gets it (SO_RCVBUFFORCE); we try both.
UDP_RCVBUF_BYTES = 8 << 20
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: the drop counter as ancillary data
# Not in CPython 3.11's socket module; 33 on Linux (asm-generic/socket.h). Root only.
_SO_RCVBUFFORCE: int | None = getattr(
    socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None
)
_UINT32 = struct.Struct("I")
# Distinct senders whose "ip:port" text is kept, so it is made once per sender, not per datagram.
_PEER_CACHE = 4096


class DatagramReader:
    """One bound UDP socket and the format of its datagrams."""

    def __init__(self, intake: Intake, sock: socket.socket, kind: str, name: str) -> None:
        self._intake = intake
        self.sock = sock
        self.kind = kind  # "udp" (DatagramHandler pickles), "syslog_udp" or "gelf_udp"
        self.name = name
        st = intake.settings
        self.format: PickleDatagramFormat | SyslogFormat | GelfDatagramFormat = (
            PickleDatagramFormat(st.max_frame_bytes)
            if kind == "udp"
            else intake.gelf_format()
            if kind == "gelf_udp"
            else intake.syslog_format()
        )
        self.drops_seen = 0  # the kernel's drop counter last seen
        self.read_scheduled = False
        self.closed = False
        self._peers: dict[tuple[str, int], str] = {}
        self._ipv6 = sock.family == socket.AF_INET6

    @classmethod
    def bind(
        cls, intake: Intake, host: str, port: int, kind: str, *, reuse_port: bool = False
    ) -> DatagramReader:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if reuse_port:  # serve --workers: the kernel spreads datagrams over the workers' sockets
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        for opt in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
            if opt is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, UDP_RCVBUF_BYTES)
                break
            except OSError:
                continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
        except OSError:
            pass  # not Linux: drops are not observable
        addr = sock.getsockname()[:2]
        shown = f"[{addr[0]}]:{addr[1]}" if family == socket.AF_INET6 else f"{addr[0]}:{addr[1]}"
        return cls(intake, sock, kind, shown)

    def start(self) -> None:
        self._intake.reactor.register(self.sock.fileno(), _loop.EPOLLIN | _loop.EPOLLET, self._on_event)

    def _on_event(self, events: int) -> None:
        if not self.read_scheduled:
            self.read()

    def _scheduled(self) -> None:
        self.read_scheduled = False
        self.read()

    def read(self) -> None:
        """Read datagrams until EAGAIN (or the budget); each is one record or one rejection."""
        if self.closed:
            return
        writer = self._intake.writer
        if not writer.accepting:
            writer.park(self, self.read)
            return
        sock, fmt = self.sock, self.format
        m = self._intake.metrics
        now = time.time()
        if isinstance(fmt, SyslogFormat | GelfDatagramFormat):
            fmt.now = now  # GELF: the clock of its chunk reassembly timeout
        write = writer.write
        ancsize = socket.CMSG_SPACE(_UINT32.size)
        peers = self._peers
        if len(peers) > _PEER_CACHE:
            peers.clear()
        nbytes = 0
        for _ in range(DATAGRAM_BUDGET):
            try:
                data, anc, _flags, addr = sock.recvmsg(MAX_DATAGRAM_BYTES, ancsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("Receiving on udp %s failed: %s.", self.name, exc)
                break
            nbytes += len(data)
            for level, typ, value in anc:
                if level == socket.SOL_SOCKET and typ == _SO_RXQ_OVFL and len(value) >= _UINT32.size:
                    total = _UINT32.unpack_from(value)[0]
                    if total > self.drops_seen:
                        m.udp_datagrams_dropped += total - self.drops_seen
                        self.drops_seen = total
            peer = peers.get(addr)
            if peer is None:
                peer = peers[addr] = f"[{addr[0]}]:{addr[1]}" if self._ipv6 else f"{addr[0]}:{addr[1]}"
            try:
                rec = fmt.parse(data)
            except (RecordRejected, ProtocolError) as exc:
                # A format that breaks its promise still costs one datagram, never the socket.
                m.records_rejected[self.kind, exc.reason] += 1
                continue
            if rec is not None:  # None: a GELF chunk whose message is not complete yet
                write((rec,), self.kind, peer, now)
        else:
            # Budget spent: the rest on the next turn (edge-triggered: no new edge for them).
            if not self.read_scheduled:
                self.read_scheduled = True
                self._intake.reactor.call_soon(self._scheduled)
        m.bytes_received += nbytes
        if isinstance(fmt, GelfDatagramFormat) and fmt.evicted:
            self._count_evicted(fmt)

    def sweep(self, now: float) -> None:
        """GELF: drop the messages whose chunks did not all come in time, and count them.

        ``now`` is on the clock ``read`` gives the format (``time.time()``). Without this an
        incomplete message would wait for the next datagram to be dropped and counted.
        """
        fmt = self.format
        if isinstance(fmt, GelfDatagramFormat):
            fmt.now = now
            fmt.expire()
            if fmt.evicted:
                self._count_evicted(fmt)

    def _count_evicted(self, fmt: GelfDatagramFormat) -> None:
        # GELF messages whose chunks did not all come in time (or that a cap pushed out).
        self._intake.metrics.records_rejected[self.kind, "incomplete"] += fmt.evicted
        fmt.evicted = 0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._intake.writer.unpark(self)
        self._intake.reactor.unregister(self.sock.fileno())
        self.sock.close()


def udp_drops(readers: list[DatagramReader], seen: int) -> int:
    """Datagrams the kernel dropped on our UDP sockets (full receive buffer).

    ``SO_RXQ_OVFL`` reports the count only with the next datagram received, so drops after
    the last one would go unseen; /proc/net/udp has the current figure per socket. ``seen``
    is the count from ancillary data, the floor.
    """
    if not readers:
        return seen
    inodes = {os.fstat(r.sock.fileno()).st_ino for r in readers if not r.closed}
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 12 and int(parts[9]) in inodes:
                        total += int(parts[12])
        except (OSError, ValueError, StopIteration):
            continue
    return max(total, seen)
