"""``logsvc bench``: load generators that count what PostgreSQL kept.

Three workloads, each usable against any running logsvc (or anything that speaks the
SocketHandler protocol and stores into a ``records`` table with an ``extra`` jsonb column):

* ``seed``  -- the original design's workload: a pool of client processes, each task sending
  ``randint(300, 800)`` records through the *stock* ``SocketHandler`` (configured with
  ``dictConfig``) with the seed's sleeps between them.
* ``flood`` -- C connections sending pre-encoded, real ``SocketHandler`` frames as fast as the
  service takes them; the clock runs until the last record is committed. ``--format`` sends
  the same records the way another kind of sender does instead.
* ``conns`` -- K connections held open at once, a fraction of them sending.

Every record carries ``extra={"run": RUN_ID, "i": UNIQUE, ...}``; the last record of each
sender also carries ``"last": true``. The run is complete when every sender's last record is
in PostgreSQL, and then one count gives **sent, stored, lost, duplicated**.

The package, one module per concern: ``records`` (the tagged records in each wire format,
pure), ``senders`` (the forked flood senders), ``service`` (the service seen from outside:
listening, pid, CPU, memory, metrics), ``counting`` (counting a run in PostgreSQL and
waiting for it), ``report`` (the result and its table or JSON), and one module per mode:
``flood``, ``seed``, ``conns``. This file only builds the command line.
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
from typing import Any

from logsvc import config
from logsvc.bench.conns import run_conns
from logsvc.bench.flood import DEFAULT_DATAGRAM_RATE, DEFAULT_METRICS_URL, run_flood
from logsvc.bench.records import FORMATS
from logsvc.bench.seed import run_seed
from logsvc.bench.senders import DEFAULT_HTTP_BATCH


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
    seed.add_argument(
        "--client",
        choices=("stock", "acked"),
        default="stock",
        help="the handler the clients' dictConfig names: stock (logging.handlers.SocketHandler, the "
        "seed's) or acked (logsvc_client.Handler; each task waits for its records' acknowledgement)",
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
        "otlp (POST /v1/logs, OTLP protobuf, on --listen-http or --listen-otlp), "
        "bulk (POST /_bulk, Elasticsearch bulk NDJSON as Filebeat sends it, on --listen-http), "
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
        help=f"--format http, otlp, bulk: records per request (default: {DEFAULT_HTTP_BATCH:,})",
    )
    flood.add_argument(
        "--metrics-url",
        default=DEFAULT_METRICS_URL,
        help="UDP formats: the service's /metrics, read before and after the run for its "
        f"datagram drop counter (default: {DEFAULT_METRICS_URL}; skipped if unreachable)",
    )
    flood.add_argument(
        "--client",
        choices=("frames", "stock", "acked"),
        default="frames",
        help="--format pickle: how records are sent. frames (default): pre-encoded SocketHandler "
        "frames, the service's ceiling; stock: LogRecords through logging.handlers.SocketHandler; "
        "acked: through logsvc_client.Handler (acknowledged, spooled; each sender waits for its last "
        "acknowledgement, and the report adds the emit-to-ack latency). Both handler clients report "
        "how long each handle() call took (emit_p50_us, emit_p99_us)",
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
