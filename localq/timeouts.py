"""Job timeouts: one watchdog thread per Worker fails jobs that run past their ``timeout``.

A job's outcome is written once: by its handler's return, by the watchdog at the deadline, or
by a worker closing past its own timeout, whichever comes first (:class:`Run` settles once).
At the deadline the watchdog marks the job cancelled (``job.is_cancelled()``), cancels a
coroutine handler's task (the handler sees ``asyncio.CancelledError``), kills the child of a
sandboxed job, and fails the job with :class:`~localq.JobTimeout` (retries and backoff apply).
A thread cannot be killed, so a sync handler keeps its slot until it returns; what it returns
then is dropped, and would be refused anyway since the job's lock is gone (fencing).

Deadlines follow the queue's clock (``processed_on + timeout``), so tests can drive them with
``FakeClock.advance``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any, Callable

from .errors import JobTimeout

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue

__all__ = ["Run", "Watchdog"]


class Run:
    """One run of one job by a worker slot: the job, its deadline, and who settled it."""

    def __init__(self, job: Job, slot: int, deadline: float | None) -> None:
        self.job = job
        self.slot = slot
        self.deadline = deadline
        self.lock = threading.Lock()
        self.settled = False
        self.task: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self.thread = threading.current_thread()

    def claim_outcome(self) -> bool:
        """Return True once: to whoever writes the job's outcome first."""
        with self.lock:
            if self.settled:
                return False
            self.settled = True
            return True

    def cancel(self) -> None:
        """Tell the handler to stop: ``job.is_cancelled()`` and, for a coroutine, its task."""
        self.job._cancel()
        if self.task is not None:
            loop, task = self.task
            # A RuntimeError: the loop already finished, so the handler has returned.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)


class Watchdog:
    """Fail the runs of one worker that pass their deadline.

    :param queue: the worker's queue (its clock and its failure path).
    :param on_timeout: called with the run before it is failed (the sandbox kills the child).
    """

    def __init__(self, queue: Queue, on_timeout: Callable[[Run], None]) -> None:
        self._queue = queue
        self._on_timeout = on_timeout
        self._cond = threading.Condition()
        self._runs: set[Run] = set()
        self._stop = False
        self._thread: threading.Thread | None = None

    def watch(self, run: Run) -> None:
        """Start watching *run* (no-op without a deadline)."""
        if run.deadline is None:
            return
        with self._cond:
            self._runs.add(run)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="localq-timeouts",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, run: Run) -> None:
        """Stop watching *run* (it finished)."""
        with self._cond:
            self._runs.discard(run)

    def poke(self) -> None:
        """Re-check the deadlines now (the clock was moved)."""
        with self._cond:
            self._cond.notify()

    def _loop(self) -> None:
        clock = self._queue.clock
        while True:
            with self._cond:
                if self._stop:
                    return
                now = clock.now()
                due = [r for r in self._runs if r.deadline is not None and r.deadline <= now]
                for run in due:
                    self._runs.discard(run)
                if not due:
                    pending = [r.deadline for r in self._runs if r.deadline is not None]
                    # Capped: a clock that is not the wall clock may move without telling us.
                    wait = min(pending) - now if pending else None
                    self._cond.wait(None if wait is None else min(max(wait, 0.001), 1.0))
                    continue
            for run in due:
                self._expire(run)

    def _expire(self, run: Run) -> None:
        if not run.claim_outcome():
            return
        run.cancel()
        self._on_timeout(run)  # first: a sandbox child stops at once
        timeout = run.job.opts.get("timeout")
        err = JobTimeout(f"job {run.job.id!r} timed out after {timeout:g} s (its timeout option)")
        from .runner import settle
        settle(self._queue, run.job, False, err)

    def close(self) -> None:
        """Stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
