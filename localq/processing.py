"""The processing side of a Queue: lease, lock renewal, scheduler and workers (mixed into Queue).

Kept apart from ``queue.py`` so that producing and admin stay readable; see
``docs/readme/workers.rst`` for the user's view.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Union

from .errors import ConfigError, LocalqError

if TYPE_CHECKING:
    from .backend import Backend
    from ._db import Store
    from .clock import Clock
    from .events import EventBus
    from .job import Job
    from .options import Settings
    from .renewal import LockRenewer
    from .scheduler import Scheduler
    from .wakeup import Watcher
    from .worker import Worker

__all__ = ["Processing"]

Handler = Union[Callable[["Job"], Any], str]


class Processing:
    """Processing methods of :class:`localq.Queue`."""

    name: str
    path: str
    settings: Settings
    _clock: Clock
    _store: Store
    _backend: Backend
    _tx: Any
    _watcher: Watcher
    _events: EventBus
    _locks: dict[int, str]
    _workers: list[Worker]
    _closed: bool

    def _init_processing(self) -> None:
        #: Tokens of jobs whose outcome is being written (see renewal.renew_locks).
        self._finishing: set[str] = set()
        #: Jobs run by this queue's workers right now, by row id.
        self._running: dict[int, Job] = {}
        self._lease: Any = None
        self._renewer: LockRenewer | None = None
        self._scheduler: Scheduler | None = None
        self._processing_lock = threading.Lock()
        self._running_cond = threading.Condition()
        subscribe = getattr(self._clock, "_subscribe", None)
        if callable(subscribe):  # a FakeClock: re-check timers whenever the test moves time
            subscribe(self._on_clock_moved)

    def _on_clock_moved(self) -> None:
        if self._closed:
            return
        self._watcher._wake(True)
        for worker in list(self._workers):
            worker._clock_moved()

    # -- the process lease ------------------------------------------------------------------

    @property
    def _owner(self) -> str:
        """The lease id recorded as ``lock_owner`` of every job this queue takes."""
        current = self._lease
        # Hot path (every claim): the lease is only given up by close(), or lost by a fork.
        if current is not None and current.pid == os.getpid():
            return str(current.id)
        if current is None or current.pid != os.getpid() or not current.held:
            with self._processing_lock:
                current = self._lease
                if current is None or current.pid != os.getpid() or not current.held:
                    # After a fork the child takes a lease of its own; the parent's is not
                    # released here (it belongs to the parent).
                    current = self._lease = self._backend.lease.acquire(self.path)
        return str(current.id)

    def _after_claim(self) -> None:
        renewer = self._renewer
        if renewer is None or renewer.pid != os.getpid():
            with self._processing_lock:
                renewer = self._renewer
                if (renewer is None or renewer.pid != os.getpid()) and not self._closed:
                    from .renewal import LockRenewer
                    self._renewer = LockRenewer(self)  # type: ignore[arg-type]

    def _ensure_scheduler(self) -> None:
        with self._processing_lock:
            if self._scheduler is None and not self._closed:
                from .scheduler import Scheduler
                self._scheduler = Scheduler(self)  # type: ignore[arg-type]

    def _renew_locks(self) -> list[int]:
        """Extend every lock this queue holds once (the renewal thread's step)."""
        from .renewal import renew_locks
        return renew_locks(self)  # type: ignore[arg-type]

    # -- workers -----------------------------------------------------------------------------

    def process(self, handler: Handler, *, name: str = "*", concurrency: int = 1,
                sandbox: bool = False) -> Worker:
        """Start processing jobs in background threads (or child processes) and return the
        running :class:`~localq.Worker`.

        :param handler: ``handler(job)`` returning the job's result (or an ``async def``); with
            ``sandbox=True`` also a ``"package.module:function"`` import string.
        :param name: take only jobs with this name (``"*"``: any).
        :param concurrency: how many jobs run at once.
        :param sandbox: run each job in a child process of a pool of *concurrency* processes.
        :raises ConfigError: a bad handler, name or concurrency.
        """
        from .worker import Worker
        return Worker(self, handler, name=name, concurrency=concurrency,  # type: ignore[arg-type]
                      sandbox=sandbox)

    def get_workers(self) -> list[dict[str, Any]]:
        """Return the live workers of this queue, in every process: dicts with ``id``, ``pid``,
        ``host``, ``started`` (epoch seconds) and ``concurrency``. Rows left by dead processes
        are not listed (a read only: the scheduler deletes them, so ``localq stats`` never
        writes, and works on a file it may only read)."""
        rows = self._store.query(
            "SELECT id, pid, host, started_ms, concurrency, lease FROM workers WHERE queue = :q"
            " ORDER BY started_ms, id", {"q": self.name})
        dead = set(self._backend.lease.dead_owners(self.path, [r[5] for r in rows]))
        return [{"id": r[0], "pid": r[1], "host": r[2], "started": r[3] / 1000.0,
                 "concurrency": r[4]} for r in rows if r[5] not in dead]

    def when_current_jobs_finished(self, timeout: float | None = None) -> None:
        """Block until the jobs this queue's workers are running now have finished.

        :raises TimeoutError: they are still running after *timeout* seconds.
        """
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, (int, float)) or timeout < 0):
            raise ConfigError(f"timeout must be None or seconds >= 0, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._running_cond:
            pending = set(self._running.values())
            while True:
                pending &= set(self._running.values())
                if not pending:
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{len(pending)} job(s) of queue {self.name!r} still"
                                       f" running after {timeout:g} s")
                self._running_cond.wait(remaining)

    def _job_started(self, job: Job) -> None:
        with self._running_cond:
            self._running[job._rowid] = job

    def _job_done(self, job: Job) -> None:
        with self._running_cond:
            if self._running.get(job._rowid) is job:
                del self._running[job._rowid]
            self._running_cond.notify_all()

    def _close_processing(self) -> None:
        """Stop workers (waiting for running jobs), scheduler, renewal; give the lease back."""
        for worker in list(self._workers):
            worker.close()
        if self._scheduler is not None:
            self._scheduler.close()
        if self._renewer is not None:
            self._renewer.close()
        held = self._lease
        self._lease = None
        if held is not None and held.pid == os.getpid():
            try:
                self._backend.lease.release(held)
            except (OSError, LocalqError):
                pass
