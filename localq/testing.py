"""Helpers for users' own unit tests: a fake clock and running jobs in the calling thread.

::

    from localq.testing import FakeClock, run_until_idle

    def test_retry_after_backoff(tmp_path):
        clock = FakeClock()
        q = localq.Queue("t", path=tmp_path / "q.db", clock=clock)
        q.add({"n": 1}, attempts=2, backoff=10)
        assert run_until_idle(q, flaky) == 1     # fails once, retry is delayed 10 s
        clock.advance(10)
        assert run_until_idle(q, flaky) == 1     # the retry runs, no sleep needed

The ``localq_queue`` pytest fixture (installed with the package) gives a fresh queue on a
temporary file.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError, SerializationError

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue

__all__ = ["FakeClock", "run_until_idle"]


class FakeClock:
    """A clock that only moves when told to: ``Queue(..., clock=FakeClock())``.

    :param start: the initial time in epoch seconds (default: the wall clock at creation).
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the fake time in epoch seconds."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, with a negative value); return the new time."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ConfigError(f"advance() takes seconds, not {type(seconds).__name__}")
        with self._lock:
            self._now += float(seconds)
            return self._now

    def set(self, when: float) -> None:
        """Jump to *when* (epoch seconds)."""
        with self._lock:
            self._now = float(when)


def call_handler(handler: Callable[[Job], Any], job: Job) -> Any:
    """Call a sync or ``async def`` handler with *job* and return its result."""
    result = handler(job)
    if inspect.isawaitable(result):
        async def _await() -> Any:
            return await result
        result = asyncio.run(_await())
    return result


def run_until_idle(queue: Queue, handler: Callable[[Job], Any], *, name: str = "*") -> int:
    """Run, in the calling thread, every job of *queue* that is runnable now; return how many ran.

    Jobs go through the real claim / complete / fail path. Meanwhile it does what workers and
    the scheduler would: promotes delayed jobs that are due by the queue's clock (retries
    included), takes back stalled jobs, and creates due repeat occurrences.

    :param name: run only jobs with this name (``"*"``: all).
    """
    if not callable(handler):
        raise ConfigError("handler must be callable")
    names = None if name == "*" else [name]
    ran = 0
    while True:
        queue._scheduler_tick()
        job = queue._claim(names=names)
        if job is None:
            return ran
        ran += 1
        try:
            result = call_handler(handler, job)
        except Exception as exc:  # the handler's failure is the job's failure
            queue._fail(job, exc)
            continue
        try:
            queue._complete(job, result)
        except SerializationError as exc:
            queue._fail(job, exc)
