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

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError
from .runner import call_handler, execute, settle  # noqa: F401 (call_handler: moved to runner)

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
        self._listeners: list[weakref.WeakMethod[Callable[[], None]]] = []

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
            now = self._now
        self._moved()
        return now

    def set(self, when: float) -> None:
        """Jump to *when* (epoch seconds)."""
        with self._lock:
            self._now = float(when)
        self._moved()

    def _subscribe(self, callback: Callable[[], None]) -> None:
        """Call the bound method *callback* whenever the time changes (queues and workers
        re-check their timers then, so tests never wait for real time to pass)."""
        self._listeners.append(weakref.WeakMethod(callback))

    def _moved(self) -> None:
        alive = []
        for ref in list(self._listeners):
            callback = ref()
            if callback is not None:
                alive.append(ref)
                callback()
        self._listeners = alive


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
        ok, value = execute(handler, job)
        settle(queue, job, ok, value)
