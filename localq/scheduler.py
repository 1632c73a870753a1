"""The scheduler: one thread per Queue that has workers; one leader per (database, queue).

Leadership is an exclusive lock on ``<db>-localq/leaders/<sha256 of the queue name>.lock``
(queue names may hold ``:``, which Windows forbids in file names). The first process to take
it leads; the others try again every :data:`LEADER_POLL` seconds, so when the leader dies the
next one takes over within that time. The leader:

* promotes delayed jobs at their due time: it sleeps until the next ``run_at`` and is woken
  by doorbells when delayed jobs are added or retried with a backoff (the claim also takes due
  delayed jobs itself, so nothing waits while leadership changes hands);
* takes back stalled jobs, by Bull's rule (lock expired; every ``stalled_interval``, counted
  against ``max_stalled_count``) and by the lease rule: every :data:`DEAD_OWNER_INTERVAL`
  seconds it reads the distinct owners of the queue's active jobs and probes their lease files,
  so the jobs of a process that died are back in ``waiting`` within a fraction of a second;
* creates due occurrences of repeatable jobs (``localq.repeats``);
* trims the events table to ``settings["max_events"]`` and checkpoints the WAL (PASSIVE, and
  TRUNCATE once the ``-wal`` file passes :data:`WAL_TRUNCATE_BYTES`), so the file stays bounded;
* deletes the lease files, doorbell files and ``workers`` rows of dead processes.

Leadership is an optimisation only: every one of these steps is a guarded, idempotent
transaction, so two leaders at once (a lock that misbehaves) change nothing but the cost.
Followers do none of this, with one exception: every ``stalled_interval`` they too take back
jobs whose lock expired (Bull's rule, which Bull runs in every worker). A leader whose
process is alive but stuck, a handler holding the GIL in a long C call, cannot run its
scheduler thread, and its lock file keeps the leadership from passing on; without the
followers nobody would take back its expired jobs, and its late results would be recorded
(tests/crash/test_gil_holder.py).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import TYPE_CHECKING

import filelock

from . import lease
from .errors import ConfigError

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["DEAD_OWNER_INTERVAL", "LEADER_POLL", "Scheduler", "WAL_TRUNCATE_BYTES"]

#: Seconds between two looks for the jobs of dead processes (the recovery time's main term).
DEAD_OWNER_INTERVAL = 0.2
#: Seconds between two attempts of a follower to become the leader.
LEADER_POLL = 0.2
#: Seconds between two rounds of housekeeping (events trim, WAL checkpoint).
HOUSEKEEPING_INTERVAL = 1.0
#: Seconds between two sweeps of dead processes' files and worker rows.
SWEEP_INTERVAL = 30.0
#: A ``-wal`` file larger than this is checkpointed with TRUNCATE (bytes).
WAL_TRUNCATE_BYTES = 16 * 1024 * 1024
#: A ``-wal`` file larger than this gets a PASSIVE checkpoint each round (bytes).
WAL_PASSIVE_BYTES = 4 * 1024 * 1024


def leader_path(db_path: str, queue: str) -> str:
    """Return the leader lock file of *queue* on *db_path* (its directory is created)."""
    directory = os.path.join(lease.state_dir(db_path), "leaders")
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    digest = hashlib.sha256(queue.encode("utf-8")).hexdigest()[:32]
    return os.path.join(directory, digest + ".lock")


class Scheduler:
    """The scheduler thread of one Queue (see the module docstring).

    :param queue: the queue it schedules.
    :param start: start the thread now (tests call :meth:`tick` by hand instead).
    """

    def __init__(self, queue: Queue, *, start: bool = True) -> None:
        self._queue = queue
        self._lock = queue._backend.leader_lock(queue.path, queue.name)
        self.is_leader = False
        self._lock_failed = False
        self._stop = threading.Event()
        self._next_dead = 0.0
        self._next_stalled = 0.0
        self._next_housekeeping = 0.0
        self._next_sweep = time.monotonic() + 1.0
        self._next_repeat = 0.0
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="localq-scheduler",
                                            daemon=True)
            self._thread.start()

    # -- leadership --------------------------------------------------------------------------

    def try_lead(self) -> bool:
        """Take leadership if nobody holds it; return whether this scheduler leads."""
        # On PostgreSQL leadership ends with its session (a server restart, a cut network):
        # is_locked says so, and the next round takes it again (or another process does).
        if not self.is_leader or not self._lock.is_locked:
            self.is_leader = False
            try:
                self._lock.acquire(timeout=0)
                self.is_leader = True
            except filelock.Timeout:
                return False
            except OSError as exc:
                # The lock file cannot be opened: a symlink planted there (filelock opens it
                # O_NOFOLLOW), a file of another user. Stay a follower, and say so once.
                if not self._lock_failed:
                    self._lock_failed = True
                    self._queue._emit_local("error", ConfigError(
                        f"cannot open the scheduler lock {self._lock.lock_file!r}"
                        f" ({exc.strerror}; a symlink is never followed): remove it so that"
                        " this process can lead"))
                return False
        return True

    def _run(self) -> None:
        watcher = self._queue._watcher
        while not self._stop.is_set():
            if not self.try_lead():
                self._follow()
                self._stop.wait(LEADER_POLL)
                continue
            seen = watcher.schedule_version()
            try:
                timeout = self.tick()
            except Exception as exc:
                # Broad on purpose: this thread recovers every crashed worker's jobs, so it
                # reports what went wrong (database busy, a bug in a repeat schedule...) and
                # tries again rather than dying quietly.
                if self._queue._store.closed:
                    return
                self._queue._emit_local("error", exc)
                timeout = self._queue.settings.retry_process_delay
            if self._stop.is_set():
                return
            watcher.wait_schedule(seen, max(0.0, timeout))

    def _follow(self) -> None:
        """As a follower, take back expired locks every ``stalled_interval`` (see the module
        docstring: a leader stuck holding the GIL cannot). Guarded and idempotent."""
        settings = self._queue.settings
        mono = time.monotonic()
        if not settings.stalled_interval or mono < self._next_stalled:
            return
        self._next_stalled = mono + settings.stalled_interval
        try:
            self._queue._recover_stalled(check_expired=True)
        except Exception as exc:  # as in _run: report, never let this thread die
            if not self._queue._store.closed:
                self._queue._emit_local("error", exc)

    # -- the leader's work -------------------------------------------------------------------

    def tick(self) -> float:
        """Do whatever leader work is due now; return seconds until the next is due."""
        queue, mono = self._queue, time.monotonic()
        if mono >= self._next_dead:
            self._recover(mono)
        due = self._promote()
        if mono >= self._next_repeat:
            repeat_due = self._repeats()
            self._next_repeat = mono + 0.05  # never loop on a schedule that does not advance
        else:
            repeat_due = None
        if mono >= self._next_housekeeping:
            self._housekeeping()
            self._next_housekeeping = mono + HOUSEKEEPING_INTERVAL
        if mono >= self._next_sweep:
            self._sweep()
            self._next_sweep = mono + SWEEP_INTERVAL
        now = queue.clock.now()
        wake = min(self._next_dead, self._next_housekeeping, self._next_sweep) - time.monotonic()
        wake = min(wake, queue.settings.guard_interval or wake)
        for when_ms in (due, repeat_due):
            if when_ms is not None:
                wake = min(wake, when_ms / 1000.0 - now)
        return max(0.0, wake)

    def _recover(self, mono: float) -> None:
        queue = self._queue
        settings = queue.settings
        rows = queue._store.query(
            "SELECT DISTINCT lock_owner FROM jobs WHERE queue = :q AND state = 'active'",
            {"q": queue.name})
        dead = queue._backend.lease.dead_owners(queue.path, [r[0] for r in rows])
        expired = bool(settings.stalled_interval) and mono >= self._next_stalled
        if dead or expired:
            queue._recover_stalled(dead, check_expired=expired)
        if dead:
            with queue._store.write(durable=False) as conn:
                queue._tx.unregister_workers(conn, leases=dead)
        if expired:
            self._next_stalled = mono + settings.stalled_interval
        self._next_dead = mono + DEAD_OWNER_INTERVAL

    def _promote(self) -> int | None:
        """Promote the due delayed jobs; return the next due time (epoch ms) or None."""
        queue = self._queue
        sql = "SELECT min(run_at_ms) FROM jobs WHERE queue = :q AND state = 'delayed'"
        due = queue._store.query(sql, {"q": queue.name})[0][0]
        if due is None or due > queue._now_ms():
            return due  # type: ignore[no-any-return]
        with queue._store.write(durable=False) as conn:
            promoted = queue._tx.promote_due(conn, queue=queue.name, now_ms=queue._now_ms())
        if promoted:
            queue._after_write()
            for job_id in promoted:
                queue._emit_local("waiting", job_id)
        return queue._store.query(sql, {"q": queue.name})[0][0]  # type: ignore[no-any-return]

    def _repeats(self) -> int | None:
        queue = self._queue
        rows = queue._store.query("SELECT min(next_ms) FROM repeats WHERE queue = :q",
                                  {"q": queue.name})
        next_ms = rows[0][0] if rows else None
        if next_ms is None:
            return None
        if next_ms <= queue._now_ms():
            try:
                from .repeats import create_due  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                return None
            create_due(queue)
            rows = queue._store.query("SELECT min(next_ms) FROM repeats WHERE queue = :q",
                                      {"q": queue.name})
            next_ms = rows[0][0] if rows else None
        return None if next_ms is None else int(next_ms)

    def _housekeeping(self) -> None:
        queue = self._queue
        store = queue._store
        keep = queue.settings.max_events
        span = store.query("SELECT coalesce(max(id) - min(id), 0) FROM events")[0][0]
        if span > keep + keep // 10:
            with store.write(durable=False) as conn:
                queue._tx.trim_events(conn, keep=keep)
        size = store.wal_size()
        if size > WAL_TRUNCATE_BYTES:
            store.checkpoint(truncate=True)
        elif size > WAL_PASSIVE_BYTES:
            store.checkpoint()

    def _sweep(self) -> None:
        queue = self._queue
        queue._backend.sweep(queue.path)
        rows = queue._store.query("SELECT DISTINCT lease FROM workers WHERE queue = :q",
                                  {"q": queue.name})
        dead = queue._backend.lease.dead_owners(queue.path, [r[0] for r in rows])
        if dead:
            with queue._store.write(durable=False) as conn:
                queue._tx.unregister_workers(conn, leases=dead)

    def close(self) -> None:
        """Stop the thread and give up leadership (the next process takes over)."""
        self._stop.set()
        self._queue._watcher._wake(True)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        if self.is_leader:
            self._lock.release(force=True)
            self.is_leader = False
