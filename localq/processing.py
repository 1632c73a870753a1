"""The processing side of a Queue (mixed into Queue): taking and finishing jobs, the process
lease, lock renewal, the scheduler and workers.

Kept apart from ``queue.py`` so that producing and admin stay readable; see the README's
workers section for the user's view.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

from . import serializers
from .errors import ConfigError, LocalqError
from .job import Job, failure_plan
from .options import seconds
from .text import storable

if TYPE_CHECKING:
    from .backend import Backend
    from ._db import Store
    from .clock import Clock
    from .events import EventBus
    from .limiter import RateLimit
    from .options import Settings
    from .renewal import LockRenewer
    from .scheduler import Scheduler
    from .wakeup import Watcher
    from .worker import Worker

__all__ = ["Processing"]

Handler = Union[Callable[["Job"], Any], str]

#: The longest failure reason stored (a stack trace may take twice as much).
_MAX_REASON = 10_000


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
    _q: Any
    _limit: RateLimit | None
    _limited_until_ms: int | None

    if TYPE_CHECKING:  # defined by Queue and its Getters mixin
        def _now_ms(self) -> int: ...
        def _after_write(self, *, delayed: bool = False) -> None: ...
        def _emit_local(self, event: str, *args: Any) -> None: ...
        def get_job(self, job_id: str) -> Job | None: ...

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

    # -- taking and finishing jobs (by hand, and for workers) --------------------------------

    def _claim(self, *, names: Sequence[str] | None = None, conn: Any = None,
               emit: bool = True, drained: bool = False) -> Job | None:
        """Take and lock the next runnable job (inside *conn*'s transaction when given; then
        pass ``emit=False`` and emit ``active`` after the commit). With *drained*, finding
        nothing also records a global ``drained`` event, in the same transaction."""
        params = self._claim_params(names)
        # A backend may claim in one statement (PostgreSQL) that writes nothing when nothing
        # is runnable: no read first. Not for a limited claim (see _complete).
        one = getattr(self._tx, "fetch_next", None) if self._limit is None else None
        if conn is not None:
            row = self._claim_in(conn, params)
        elif one is not None:
            row = one(self._store, now_ms=self._now_ms(), claim=params, drained=drained)
        elif self._nothing_to_claim(names, drained):
            return None
        else:
            with self._store.write(durable=False) as conn:
                row = self._claim_in(conn, params)
                if row is None and drained:
                    self._tx.note_drained(conn, queue=self.name, now_ms=self._now_ms())
        if row is None:
            if drained:
                self._after_write()  # global:drained listeners elsewhere
            return None
        job = self._claimed(row, params["token"])
        if emit:
            self._emit_local("active", job)
        return job

    def _nothing_to_claim(self, names: Sequence[str] | None, drained: bool) -> bool:
        """Whether a read shows that a claim would find nothing (and write no ``drained``
        event): an idle worker, woken by every commit, then leaves the write lock to others.
        Not with a rate limiter (its window is kept by the claim)."""
        runnable = getattr(self._q, "runnable", None)  # a backend may not have the read
        if self._limit is not None or runnable is None:
            return False
        found, watched = runnable(self._store, queue=self.name, names=names,
                                  now_ms=self._now_ms())
        return not found and not (drained and watched)

    def _claim_params(self, names: Sequence[str] | None) -> dict[str, Any]:
        return dict(queue=self.name, token=secrets.token_hex(8), owner=self._owner,
                    lock_ms=int(self.settings.lock_duration * 1000), names=names,
                    limit=self._limit)

    def _claimed(self, row: tuple[Any, ...], token: str) -> Job:
        """Hold the lock of a job claimed (and committed) with *token*; return the job."""
        self._locks[row[0]] = token
        self._after_claim()
        return Job(self, row, token=token)  # type: ignore[arg-type]

    def _claim_in(self, conn: Any, params: dict[str, Any]) -> tuple[Any, ...] | None:
        # The time is read under the write lock, so claims commit in time order: the limiter's
        # sliding window (and a repeat schedule's next slot) never sees a start from its future.
        # (SQLite holds that lock since BEGIN IMMEDIATE; PostgreSQL takes the limiter's here.)
        self._tx.lock_for_claim(conn, queue=self.name, limit=self._limit)
        now = self._now_ms()
        row: tuple[Any, ...] | None = self._tx.claim(conn, now_ms=now, **params)
        self._limited_until_ms = None
        if row is None and self._limit is not None:
            self._limited_until_ms = self._backend.limiter.limited_until(
                conn, self._limit, self.name, now)
        return row

    def get_next_job(self, timeout: float = 0) -> Job | None:
        """Take and lock the next runnable job (a due delayed job counts), waiting up to
        *timeout* seconds for one; finish it with ``move_to_completed`` / ``move_to_failed``.
        """
        import time
        limit = seconds(timeout, "timeout")
        deadline = time.monotonic() + limit
        while True:
            seen = self._watcher.version()
            job = self._claim()
            remaining = deadline - time.monotonic()
            if job is not None or remaining <= 0:
                return job
            self._watcher.wait_change(seen, remaining)

    def _complete(self, job: Job, result: Any, *, ignore_lock: bool = False,
                  fetch: bool = False, names: Sequence[str] | None = None) -> Job | None:
        text = serializers.dumps(result, what="return value", limit=self.settings.max_data_bytes)
        token = job._require_token(ignore_lock)
        row = None
        # Prepared before and used after the transaction: other processes wait for the write
        # lock while it is held.
        params = self._claim_params(names) if fetch else None
        # A backend may complete (and claim) in one statement: PostgreSQL, one round trip
        # instead of five; not for a limited claim (the limiter reads the clock under its lock).
        one = getattr(self._tx, "complete_and_fetch", None)
        if params is not None and self._limit is not None:
            one = None
        if token is not None:
            self._finishing.add(token)
        try:
            if one is not None:
                row = one(self._store, rowid=job._rowid, public=job.id, token=token,
                          returnvalue=text, now_ms=self._now_ms(), claim=params)
            else:
                with self._store.write(durable=False) as conn:
                    self._tx.move_to_completed(conn, rowid=job._rowid, public=job.id,
                                               token=token, returnvalue=text,
                                               now_ms=self._now_ms())
                    if params is not None:
                        row = self._claim_in(conn, params)
            job._release()
        finally:
            self._finishing.discard(token or "")
        # Only once committed is the fetched job ours (a rollback took nothing).
        nxt = None if row is None or params is None else self._claimed(row, params["token"])
        job._state = "completed"
        job.returnvalue = None if text == "null" else json.loads(text)
        job.finished_on = self._clock.now()
        self._after_write()
        self._emit_local("completed", job, job.returnvalue)
        if nxt is not None:
            self._emit_local("active", nxt)
        return nxt

    def _fail(self, job: Job, err: Any, *, ignore_lock: bool = False) -> str:
        token = job._require_token(ignore_lock)
        reason, stack, delay = failure_plan(job, err, self.settings.backoff_strategies)
        # Never refused (a lost failure would leave the job active until it stalls): what
        # the database cannot hold as text is written as escapes (see localq.text).
        reason = storable(reason[:_MAX_REASON], nul=self._backend.nul_in_text)
        if token is not None:
            self._finishing.add(token)
        try:
            with self._store.write(durable=False) as conn:
                state: str = self._tx.move_to_failed(
                    conn, rowid=job._rowid, public=job.id, token=token,
                    reason=reason,
                    stack=None if stack is None else stack[: 2 * _MAX_REASON],
                    retry_delay_ms=delay, now_ms=self._now_ms())
            job._release()
        finally:
            self._finishing.discard(token or "")
        job._state, job.failed_reason = state, reason
        job.attempts_made += 1
        self._after_write(delayed=state == "delayed")
        self._emit_local("failed", job, err)
        return state

    def _recover_stalled(self, dead_owners: Sequence[str] = (), *,
                         check_expired: bool = True) -> list[tuple[str, str]]:
        """Take back this queue's stalled jobs (lock expired by the queue's clock, unless
        *check_expired* is False, or owner in *dead_owners*); emit ``stalled`` (and ``failed``
        past ``max_stalled_count``)."""
        with self._store.write(durable=False) as conn:
            taken: list[tuple[str, str]] = self._tx.recover_stalled(
                conn, queue=self.name, now_ms=self._now_ms(), dead_owners=list(dead_owners),
                max_stalled_count=self.settings.max_stalled_count, check_expired=check_expired)
        if taken:
            self._after_write()
        for job_id, state in taken:
            job = self.get_job(job_id)
            if job is not None:
                self._locks.pop(job._rowid, None)
                self._emit_local("stalled", job)
                if state == "failed":
                    self._emit_local("failed", job, job.failed_reason)
        return taken

    def _scheduler_tick(self) -> None:
        """Do the scheduler's periodic work for this queue once, on the queue's clock."""
        owners = self._store.query("SELECT DISTINCT lock_owner FROM jobs WHERE queue = :q"
                                   " AND state = 'active'", {"q": self.name})
        self._recover_stalled(self._backend.lease.dead_owners(self.path, [r[0] for r in owners]))
        if not self._store.query("SELECT 1 FROM repeats WHERE queue = :q LIMIT 1", {"q": self.name}):
            return
        from .repeats import create_due
        create_due(self)  # type: ignore[arg-type]

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
        are not listed (a read of the database only: the scheduler deletes them, so ``localq
        stats`` never writes to it, and works on a file it may only read)."""
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
