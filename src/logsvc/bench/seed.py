"""``logsvc bench seed``: the original design's workload, through the stock ``SocketHandler``.

A pool of client processes, each configured by the seed's own ``dictConfig`` (nothing of
logsvc's on the client side); each task logs ``randint(300, 800)`` records with the seed's
sleeps between them, then one marked last record. The run is complete when every task's last
record is stored.

Latency: ``stored - created`` per record, where ``created`` is the client's
``LogRecord.created`` and ``stored`` is PostgreSQL's ``now()`` in the batch's transaction.
That undercounts the commit latency by at most the batch's own COPY time, which is small
next to the batch age (see docs/benchmarks.md).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import argparse
import logging
import logging.config
import multiprocessing
import os
import random
import time
import uuid
from typing import Any

from logsvc.bench.counting import wait_stored
from logsvc.bench.records import MESSAGE
from logsvc.bench.report import Result, progress_bar, report
from logsvc.bench.service import attach

_SEED_SLEEPS = (0.01, 0.02, 0.03, 0.04, 0.03, 0.02, 0.01)  # the seed's own choice list
# Set in each pool process by _seed_setup, read by _seed_task.
_seed_state: dict[str, Any] = {}


# --client: the handler class the seed's dictConfig names (acked: the one-line switch).
HANDLER_CLASSES = {"stock": "logging.handlers.SocketHandler", "acked": "logsvc_client.Handler"}


def _seed_setup(
    host: str, port: int, run_id: str, min_records: int, max_records: int, sleep: bool, client: str
) -> None:
    # The seed's setup_logging: dictConfig with a SocketHandler, stock, nothing of ours
    # (--client acked names logsvc_client.Handler instead, and nothing else changes).
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "service_logger": {
                    "level": "DEBUG",
                    "class": HANDLER_CLASSES[client],
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
    pid = os.getpid()
    logger = logging.getLogger("bench.seed")
    run, sleep = _seed_state["run"], _seed_state["sleep"]
    cnt = count = random.randint(_seed_state["lo"], _seed_state["hi"])
    while True:
        logger.debug(MESSAGE, pid, cnt, extra={"trace_id": idx, "run": run, "i": f"{idx}:{cnt}"})
        cnt -= 1
        if sleep:
            time.sleep(random.choice(_SEED_SLEEPS))
        if cnt == 0:
            break
    logger.debug("[%06d] --------", pid, extra={"trace_id": idx, "run": run, "i": f"{idx}:end", "last": True})
    for h in logging.getLogger().handlers:
        h.flush()  # logsvc_client.Handler: waits until the task's records are acknowledged
    return count + 1


def run_seed(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:12]
    watch, counter = attach(args, run_id)
    ctx = multiprocessing.get_context("fork")
    update, stop = progress_bar(args.tasks, "tasks finished", args.json)
    watch.start()
    start = time.monotonic()
    sent = 0
    try:
        with ctx.Pool(
            args.procs,
            _seed_setup,
            (
                args.host,
                args.port,
                run_id,
                args.min_records,
                args.max_records,
                not args.no_sleep,
                args.client,
            ),
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
    result = Result("seed", run_id, sent=sent, service_pid=watch.pid)
    result.finish(counter, watch, start, done)
    result.extra = {
        "client": args.client,
        "procs": args.procs,
        "tasks": args.tasks,
        "offered_records_per_s": round(sent / max(sent_at - start, 1e-9)),
        "stored_records_per_s": round(result.records_per_s),
    }
    result.extra.update({f"latency_{k}": round(v, 4) for k, v in counter.latency().items()})
    result.extra["latency_histogram_20ms"] = counter.latency_histogram()
    counter.close()
    return report(result, args.json)
