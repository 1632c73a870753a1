"""``localq worker QUEUE module:function``: run a worker in the foreground.

The handler is chosen by whoever starts the worker (an import string on the command line),
never by job data. SIGINT and SIGTERM stop it gracefully: running jobs finish first
(``Worker.run`` handles both).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from . import cli_format as fmt
from .errors import ConfigError
from .runner import resolve_handler

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["load_handler", "run_worker"]


def load_handler(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the current directory is searched first, as ``python -m``
    does) and return the function.

    :raises ConfigError: a malformed spec, a module that fails to import, a missing name.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return resolve_handler(spec)


def run_worker(queue: Queue, handler: Callable[..., Any], args: argparse.Namespace) -> int:
    """Process *queue* with *handler* until Ctrl-C / SIGTERM (or idle, with ``--until-idle``);
    return 0. Progress lines go to stderr, so stdout stays free for the handler's output."""
    from .worker import Worker
    if args.concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, not {args.concurrency}")
    done = {"completed": 0, "failed": 0}
    queue.on("completed", lambda *_: done.__setitem__("completed", done["completed"] + 1))
    queue.on("failed", lambda *_: done.__setitem__("failed", done["failed"] + 1))
    worker = Worker(queue, args.handler if args.sandbox else handler,
                    concurrency=args.concurrency, sandbox=args.sandbox, autorun=False)
    pid = os.getpid()
    print(f"localq worker pid {pid}: queue {queue.name!r} in {queue.path!r}, handler"
          f" {args.handler}, concurrency {args.concurrency}"
          + (", sandboxed" if args.sandbox else "")
          + ("" if args.until_idle else "; Ctrl-C or SIGTERM stops it gracefully"),
          file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        worker.run(until_idle=args.until_idle)
    finally:
        worker.close()
    print(f"localq worker pid {pid} stopped after {fmt.duration(time.monotonic() - start)}:"
          f" {done['completed']} completed, {done['failed']} failed attempts",
          file=sys.stderr, flush=True)
    return 0
