"""Helpers for users' own unit tests: a fake clock, and jobs run in the calling thread.

No sleeping and no threads: ``FakeClock`` makes every time rule of a queue (delays, backoff,
repeat schedules, lock expiry, ``clean(grace)``, retention by age) follow a clock the test
moves, and ``run_until_idle`` runs the jobs that are runnable now through the real
claim / complete / fail path::

    import localq
    from localq.testing import FakeClock, run_until_idle

    def test_retry_after_backoff(tmp_path):
        clock = FakeClock()
        with localq.Queue("t", path=tmp_path / "q.db", clock=clock) as q:
            q.add({"n": 1}, attempts=2, backoff=10)
            assert run_until_idle(q, flaky) == 1     # fails once; the retry waits 10 s
            assert run_until_idle(q, flaky) == 0     # nothing is runnable yet
            clock.advance(10)
            assert run_until_idle(q, flaky) == 1     # the retry runs, no sleep needed

The ``localq_queue`` pytest fixture (installed with the package, see
:mod:`localq.pytest_plugin`) gives such a queue on a temporary file, ready to use.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError
from .runner import call_handler, execute, settle  # noqa: F401 (call_handler: moved to runner)
from .worker import names_for

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
    """Run, in the calling thread, every job of *queue* that is runnable now; return how many
    attempts ran.

    Each job goes through the real claim / complete / fail path, so retries, backoff,
    ``remove_on_complete``, events and ``job.finished()`` behave as with a worker. Between
    jobs it does what workers and the scheduler would do meanwhile, on the queue's clock:
    promote due delayed jobs (retries included), take back stalled jobs and create due
    repeat occurrences. A retry that is due at once (no backoff) runs in the same call; one
    delayed into the future waits until the clock reaches it.

    :param queue: the queue (usually with ``clock=FakeClock()``).
    :param handler: ``handler(job)`` returns the result or raises; ``async def`` works too.
    :param name: run only jobs with this name (``"*"``: all).
    :returns: how many attempts ran (a job that failed and was retried counts twice).
    :raises ConfigError: *handler* is not callable, or *name* is not a job name.
    """
    if not callable(handler):
        raise ConfigError("handler must be callable")
    names = names_for(queue, name)
    ran = 0
    while True:
        queue._scheduler_tick()
        job = queue._claim(names=names)
        if job is None:
            return ran
        ran += 1
        ok, value = execute(handler, job)
        settle(queue, job, ok, value)
