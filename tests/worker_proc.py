"""A worker process for the multi-process tests: ``python tests/worker_proc.py DB QUEUE LOG``.

It processes QUEUE of DB with ``worker.run()`` (so SIGTERM / SIGINT are graceful) and appends
one line per event to LOG (O_APPEND, so lines of several processes never interleave):

    start <job id> <pid> <epoch s>      the handler began
    done <job id> <pid> <epoch s>       the handler is about to return
    error <pid> <class> <message>       an ``error`` event of the queue
    child <job id> <pid>                (sandbox) the pid of the child running the job

Job data understood by the handler: ``{"hold": s}`` sleep s seconds; ``{"jitter": s}`` sleep a
random time up to s. Options: ``--concurrency N``, ``--name NAME``, ``--settings JSON``,
``--sandbox``. Prints ``ready`` once the worker runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import localq  # noqa: E402

_LOG = os.environ.get("LOCALQ_TEST_LOG", "")


def _write(line: str) -> None:
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def handler(job: Any) -> Any:
    """Record the start, wait as the data says, record the end; return the job's id."""
    _write(f"start {job.id} {os.getpid()} {time.time():.6f}")
    data = job.data if isinstance(job.data, dict) else {}
    if data.get("hold"):
        time.sleep(float(data["hold"]))
    if data.get("jitter"):
        time.sleep(random.random() * float(data["jitter"]))
    _write(f"done {job.id} {os.getpid()} {time.time():.6f}")
    return {"by": os.getpid()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("queue")
    parser.add_argument("log")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--name", default="*")
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--sandbox", action="store_true")
    args = parser.parse_args()
    os.environ["LOCALQ_TEST_LOG"] = args.log  # inherited by sandbox children
    global _LOG
    _LOG = args.log
    queue = localq.Queue(args.queue, path=args.db, durability="normal",
                         settings=json.loads(args.settings))
    queue.on("error", lambda err: _write(f"error {os.getpid()} {type(err).__name__} {err}"))
    target = "worker_proc:handler" if args.sandbox else handler
    worker = localq.Worker(queue, target, name=args.name, concurrency=args.concurrency,
                           sandbox=args.sandbox)  # registered in get_workers() from now
    print("ready", flush=True)
    worker.run()
    queue.close()


if __name__ == "__main__":
    main()
