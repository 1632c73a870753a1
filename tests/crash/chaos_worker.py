"""A worker process for the reliability crash tests: ``python chaos_worker.py DB LOG SETTINGS``.

It runs ``localq.Worker(queue "q", handler).run()`` and appends one line per handler call to
LOG (``O_APPEND``: lines of several processes never interleave)::

    start <job id> <attempt> <pid>     the handler began (attempt = attempts_made + 1)
    done <job id> <attempt> <pid>      the handler is about to return a result
    fail <job id> <attempt> <pid>      the handler is about to raise
    error <pid> <class>                an ``error`` event (e.g. a refused late completion)

Job data: ``{"fail": p}`` raises on a fraction p of the attempts (chosen by a hash of the job
id and attempt, so a rerun of the same attempt fails the same way); ``{"sleep": s}`` sleeps
up to s seconds; ``{"regex": n}`` runs ``re.fullmatch(r'(a+)+$', 'a' * n + 'b')``, which holds
the GIL for seconds (catastrophic backtracking), starving every other thread of the process,
lock renewal and scheduler included; with ``"once": path`` only the first run that creates
that file does. Environment: ``CHAOS_SLOTS`` (concurrency, default 2), ``CHAOS_NAME`` (the
job name the worker takes, default ``*``). Prints ``ready`` once the worker runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import localq  # noqa: E402

LOG = sys.argv[2] if __name__ == "__main__" else ""


def _write(line: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _first(marker: str | None) -> bool:
    """Whether this is the first run to claim *marker* (a file path; None: always)."""
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def handler(job: localq.Job) -> Any:
    attempt = job.attempts_made + 1
    data = job.data
    _write(f"start {job.id} {attempt} {os.getpid()}")
    held_gil = bool(data.get("regex")) and _first(data.get("once"))
    if held_gil:
        re.fullmatch(r"(a+)+$", "a" * int(data["regex"]) + "b")
    if data.get("sleep"):
        time.sleep(random.random() * float(data["sleep"]))
    digest = hashlib.sha256(f"{job.id}/{attempt}".encode()).digest()
    if digest[0] / 256 < float(data.get("fail", 0)):
        _write(f"fail {job.id} {attempt} {os.getpid()}")
        raise RuntimeError(f"planned failure of attempt {attempt}")
    _write(f"done {job.id} {attempt} {os.getpid()}")
    return {"by": os.getpid(), "attempt": attempt, "held_gil": held_gil}


def main() -> None:
    db, _, settings = sys.argv[1:4]
    queue = localq.Queue("q", path=db, durability="normal", settings=json.loads(settings))
    queue.on("error", lambda err: _write(f"error {os.getpid()} {type(err).__name__}"))
    worker = localq.Worker(queue, handler, name=os.environ.get("CHAOS_NAME", "*"),
                           concurrency=int(os.environ.get("CHAOS_SLOTS", "2")), autorun=False)
    print("ready", flush=True)
    worker.run()
    queue.close()


if __name__ == "__main__":
    main()
