"""Worker: take jobs, run them, record their outcome; concurrency, pause, graceful stop.

A worker runs *concurrency* slots, each a thread (or, with ``sandbox=True``, a thread that
drives one child process). One slot at a time claims and waits for work, so an idle worker
costs one sleeping thread and a new job wakes exactly one slot. A slot that finishes a job
completes it and takes the next one in the same transaction (Bull's ``moveToFinished`` with
fetch), so a busy worker pays one commit per job.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Union

from .errors import ConfigError, LocalqError
from .runner import execute, resolve_handler, settle
from .text import check_text
from .timeouts import Run, Watchdog

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue
    from .sandbox import Pool

__all__ = ["Worker"]

Handler = Union[Callable[["Job"], Any], str]



def names_for(queue: Queue, name: str) -> list[str] | None:
    """The claim's name filter for *name* (``"*"``: None, any name).

    :raises ConfigError: *name* is not a non-empty str, or text the database cannot hold
        (else every claim would fail).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a job name or '*', not {name!r}")
    check_text(name, "name", nul=queue._backend.nul_in_text)
    return None if name == "*" else [name]

class Worker:
    """Process the jobs of *queue* with *handler* (see API.md "Processing").

    :param queue: the queue to take jobs from.
    :param handler: ``handler(job)`` (sync or ``async def``) returning the job's result, or a
        ``"package.module:function"`` import string.
    :param name: take only jobs with this name (``"*"``: any name).
    :param concurrency: how many jobs run at once (threads, or child processes with *sandbox*).
    :param sandbox: run each job in a spawned child process (see ``localq.sandbox``).
    :param autorun: start at once (else :meth:`run` starts it).
    :raises ConfigError: a bad handler, name or concurrency.
    """

    def __init__(self, queue: Queue, handler: Handler, *, name: str = "*", concurrency: int = 1,
                 sandbox: bool = False, autorun: bool = True) -> None:
        names = names_for(queue, name)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an int >= 1, not {concurrency!r}")
        if not isinstance(sandbox, bool):
            raise ConfigError("sandbox must be True or False")
        self.queue = queue
        self.name = name
        self.concurrency = concurrency
        self.sandbox = sandbox
        self.id = secrets.token_hex(8)
        if sandbox:
            from .sandbox import handler_ref
            self._ref = handler_ref(handler)
            self._handler: Callable[[Job], Any] = resolve_handler(self._ref)
        elif isinstance(handler, str):
            self._handler = resolve_handler(handler)
        elif callable(handler):
            self._handler = handler
        else:
            raise ConfigError("handler must be a callable or a 'package.module:function' string")
        self._names = names
        self._cond = threading.Condition()
        self._claim_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        #: The run of each busy slot (by slot: after a lost lock the same job may run twice).
        self._runs: dict[int, Run] = {}
        self._started = self._stopping = self._paused = self._closing = False
        self._until_idle = self._worked = self._force = False
        self._busy = self._epoch = 0
        #: Claims in flight, and jobs claimed but not yet counted in _busy: pause(wait=True)
        #: waits for them too, or a claim that began just before pause() would start a job
        #: after pause() returned.
        self._starting = 0
        self._stop_event = threading.Event()
        self._closed = threading.Event()
        self._watchdog = Watchdog(queue, self._timed_out)
        self._pool: Pool | None = None
        queue._workers.append(self)
        if autorun:
            self._start()

    def __repr__(self) -> str:
        return f"<Worker {self.id} queue={self.queue.name!r} name={self.name!r}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        with self._cond:
            if self._started or self._closing:
                return
            self._started = True
        queue = self.queue
        with queue._store.write(durable=False) as conn:
            queue._tx.register_worker(
                conn, worker_id=self.id, queue=queue.name, pid=os.getpid(),
                host=socket.gethostname(), lease=queue._owner, concurrency=self.concurrency,
                now_ms=queue._now_ms())
        queue._ensure_scheduler()
        if self.sandbox:
            from .sandbox import Pool
            self._pool = Pool(self._ref, self.concurrency, self._relay)
        for slot in range(self.concurrency):
            thread = threading.Thread(target=self._slot, args=(slot,), daemon=True,
                                      name=f"localq-worker-{self.id}-{slot}")
            self._threads.append(thread)
            thread.start()

    def run(self, until_idle: bool = False) -> None:
        """Process jobs until :meth:`close`, SIGINT or SIGTERM (or, with *until_idle*, until no
        job is runnable now: jobs delayed into the future do not count), then close.

        Called in the main thread, it handles SIGINT and SIGTERM: the first stops taking jobs
        and waits for the running ones; a second stops waiting and gives them back to the
        queue. The previous signal handlers are restored on return.
        """
        if until_idle:
            with self._cond:
                self._until_idle = True
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self._start()
            self.queue._watcher._wake(False)  # an idle slot re-checks with until_idle set
            while not self._stop_event.wait(1.0):
                pass
            self.close()
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_event.is_set():
            self._force = True  # second signal: stop waiting for running jobs
        self._stop_event.set()
        with self._cond:
            self._stopping = True
        self.queue._watcher._wake(False)

    def pause(self, wait: bool = True) -> None:
        """Stop taking jobs (this worker only); unless *wait* is False, wait for running ones
        and for a claim in flight, so that no job starts after this returns."""
        with self._cond:
            self._paused = True
        self.queue._watcher._wake(False)
        if wait:
            own = threading.current_thread() in self._threads  # called by a handler
            with self._cond:
                while self._busy > own or self._starting:
                    self._cond.wait(0.5)

    def resume(self) -> None:
        """Take jobs again after :meth:`pause`."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()
        self.queue._watcher._wake(False)

    def is_running(self) -> bool:
        """Whether the worker has started and is not closed."""
        return self._started and not self._closed.is_set()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs and wait for the running ones, up to *timeout* seconds (None: as
        long as they take). Jobs still running then are cancelled (``job.is_cancelled()``) and
        given back to the queue, to run next elsewhere; their late results are refused.
        Idempotent; :meth:`Queue.close` calls it.
        """
        with self._cond:
            first = not self._closing
            self._closing = self._stopping = True
            self._cond.notify_all()
        self._stop_event.set()
        if not first:
            self._closed.wait(timeout)
            return
        self.queue._watcher._wake(False)
        deadline = None if timeout is None else time.monotonic() + timeout
        # Called by a handler (of this worker): its own job cannot finish while it waits.
        own = threading.current_thread() in self._threads
        with self._cond:
            while self._busy > own and not self._force:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(0.2 if remaining is None else min(remaining, 0.2))
            left = [r for r in self._runs.values() if r.thread is not threading.current_thread()]
        for run in left:
            self._give_back(run)
        self._watchdog.close()
        if self._pool is not None:
            self._pool.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(0.1 if left else 5.0)
        try:
            if self._started and not self.queue._store.closed:
                with self.queue._store.write(durable=False) as conn:
                    self.queue._tx.unregister_workers(conn, worker_ids=[self.id])
        except LocalqError:
            pass
        if self in self.queue._workers:
            self.queue._workers.remove(self)
        self._closed.set()

    def _give_back(self, run: Run) -> None:
        if not run.claim_outcome():
            return
        run.cancel()
        job, queue = run.job, self.queue
        token = job._held_token()
        if token is not None:
            try:
                with queue._store.write(durable=False) as conn:
                    queue._tx.release(conn, rowid=job._rowid, public=job.id, token=token,
                                        now_ms=queue._now_ms())
                queue._after_write()
            except LocalqError as exc:
                queue._emit_local("error", exc)
        job._release()
        if self._pool is not None:
            self._pool.kill(run.slot, job.id)

    # -- the slots ---------------------------------------------------------------------------

    def _slot(self, slot: int) -> None:
        loop = None if self.sandbox else asyncio.new_event_loop()
        queue = self.queue
        job: Job | None = None
        try:
            while True:
                try:
                    if job is None:
                        job = self._take()
                        if job is None:
                            return
                    job = self._process(slot, job, loop)
                except Exception as exc:
                    # A database error (or a bug) must not silently cost the worker a slot:
                    # report it, drop the job's lock so that it stalls and runs again, go on.
                    if job is not None:
                        job._release()
                    job = None
                    if queue._store.closed or self._stopping:
                        return
                    queue._emit_local("error", exc)
                    self._stop_event.wait(queue.settings.retry_process_delay)
        finally:
            if loop is not None:
                loop.close()

    def _take(self) -> Job | None:
        """Claim the next job, waiting for one; None when the worker stops."""
        queue = self.queue
        with self._claim_lock:
            while True:
                with self._cond:
                    while self._paused and not self._stopping:
                        self._cond.wait()
                    if self._stopping:
                        return None
                    epoch, worked = self._epoch, self._worked
                seen = queue._watcher.version()
                with self._cond:
                    # close() sets _stopping, then wakes the watcher: a wake-up that came
                    # between the check above and version() (which blocks while PostgreSQL's
                    # LISTEN starts) is already in *seen*, and the wait below would sleep
                    # through it until drain_delay. Likewise pause(): either it is seen here
                    # or it waits for this claim (_starting).
                    if self._stopping:
                        return None
                    if self._paused:
                        continue
                    self._starting += 1
                # Only a claim that started after run(until_idle=True) was called may end the
                # run: on a worker already running, an earlier empty claim can predate a job
                # added just before that call. Read after version(), so that run()'s wake-up
                # either is in *seen* (then this is True) or ends the wait below.
                idle_armed = self._until_idle
                job = None
                try:
                    job = queue._claim(names=self._names, drained=worked)
                except LocalqError as exc:
                    if queue._store.closed:
                        return None
                    queue._emit_local("error", exc)
                    self._stop_event.wait(queue.settings.retry_process_delay)
                    continue
                finally:
                    if job is None:
                        self._started_none()
                if job is not None:
                    with self._cond:
                        self._worked = True
                    return job  # still counted in _starting until _process counts it busy
                if self._found_nothing(epoch, worked, idle_armed):
                    return None
                queue._watcher.wait_change(seen, self._idle_timeout())

    def _started_none(self) -> None:
        """A claim in flight (or a fetch) ended without a job."""
        with self._cond:
            self._starting -= 1
            self._cond.notify_all()

    def _found_nothing(self, epoch: int, drained: bool, idle_armed: bool) -> bool:
        """Emit ``drained`` once after work; return True when ``run(until_idle=True)`` is done."""
        queue = self.queue
        with self._cond:
            if drained:
                self._worked = False
            done = idle_armed and self._busy == 0 and self._epoch == epoch
            if done:
                self._stopping = True
        if drained:  # the global row was written by the claim that found nothing
            queue._emit_local("drained")
        if done:
            self._stop_event.set()
        return done

    def _idle_timeout(self) -> float | None:
        """How long an idle slot sleeps at most: until the next delayed job is due (the claim
        takes it directly), capped by ``drain_delay`` (doorbells wake it earlier)."""
        queue = self.queue
        cap = queue.settings.drain_delay or None
        rows = queue._store.query("SELECT min(run_at_ms) FROM jobs WHERE queue = :q"
                                  " AND state = 'delayed'", {"q": queue.name})
        wake = [float(rows[0][0])] if rows and rows[0][0] is not None else []
        limited = getattr(queue, "_limited_until_ms", None)  # the rate limiter frees a slot
        if limited is not None:
            wake.append(float(limited))
        if wake:
            until = max(0.001, min(wake) / 1000.0 - queue.clock.now())
            return until if cap is None else min(cap, until)
        return cap

    def _process(self, slot: int, job: Job, loop: asyncio.AbstractEventLoop | None) -> Job | None:
        queue = self.queue
        try:
            timeout = job.opts.get("timeout")
            start = job.processed_on if job.processed_on is not None else queue.clock.now()
            run = Run(job, slot, None if not timeout else start + float(timeout))
        except BaseException:
            self._started_none()  # not started after all: pause() must not wait for it
            raise
        with self._cond:
            self._busy += 1
            self._starting -= 1  # counted since its claim (in _take, or the fetch below)
            self._runs[slot] = run
        queue._job_started(job)
        self._watchdog.watch(run)
        nxt = None
        fetch = False
        try:
            if self._pool is not None:
                try:
                    ok, value = self._pool.run(slot, job)
                except Exception as exc:  # the child could not be started: the job fails
                    ok, value = False, exc
            else:
                def on_task(task_loop: asyncio.AbstractEventLoop, task: Any) -> None:
                    run.task = (task_loop, task)
                ok, value = execute(self._handler, job, loop=loop, on_task=on_task)
            self._watchdog.forget(run)
            if run.claim_outcome():
                with self._cond:
                    fetch = not (self._stopping or self._paused)
                    self._starting += fetch
                nxt = settle(queue, job, ok, value, fetch=fetch, names=self._names)
        finally:
            self._watchdog.forget(run)
            queue._job_done(job)
            with self._cond:
                if fetch and nxt is None:
                    self._starting -= 1
                self._runs.pop(slot, None)
                self._busy -= 1
                self._epoch += 1
                if nxt is not None:
                    self._worked = True
                self._cond.notify_all()
            if self._until_idle:
                queue._watcher._wake(False)  # the claiming slot re-checks for idleness
        return nxt

    # -- hooks -------------------------------------------------------------------------------

    def _timed_out(self, run: Run) -> None:
        if self._pool is not None:
            self._pool.kill(run.slot, run.job.id)

    def _clock_moved(self) -> None:
        self._watchdog.poke()

    def _relay(self, slot: int, method: str, args: tuple[Any, ...]) -> Any:
        """Apply a job call relayed from a sandbox child (progress, log, update, discard)."""
        with self._cond:
            run = self._runs.get(slot)
        if run is None:
            raise LocalqError("the job of this sandbox slot is no longer running")
        job = run.job
        if method == "progress":
            return job.progress(args[0])
        if method == "log":
            return job.log(args[0])
        if method == "update":
            job.update(args[0])
            return None
        if method == "discard":
            job.discard()
            return None
        raise ConfigError(f"sandboxed jobs cannot call {method!r}")
