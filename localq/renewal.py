"""Lock renewal: one thread per Queue keeps the locks of every job the queue holds alive.

It does not depend on the handlers: a handler that blocks (even one that holds the GIL for a
while) delays renewal only as long as it holds the GIL, never for the length of the job.
Every ``settings["lock_renew_time"]`` seconds (``lock_duration / 2`` by default) it extends,
in one transaction, the lock of every token in ``queue._locks``: jobs run by the queue's
workers, by its sandbox children, and jobs taken by hand with ``get_next_job()`` (as in Bull,
whose lock renewal also runs for the jobs a queue instance holds, not only for its workers'
ones). A lock found lost (the job stalled and was taken back, or was removed) is dropped and
reported as an ``error`` event with a :class:`~localq.LockError`; the job's handler sees
``job.is_cancelled()`` and anything it returns is refused (fencing).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from .errors import LocalqError, LockError

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["LockRenewer", "renew_locks"]


def renew_locks(queue: Queue) -> list[int]:
    """Extend every lock *queue* holds, once; return the row ids whose lock was lost."""
    locks = dict(queue._locks)  # a copy: workers add and drop tokens meanwhile
    if not locks:
        return []
    lock_ms = int(queue.settings.lock_duration * 1000)
    with queue._store.write(durable=False) as conn:
        lost = queue._tx.extend_locks(conn, locks=locks.items(), lock_ms=lock_ms,
                                        now_ms=queue._now_ms())
    dropped = []
    for rowid in lost:
        token = locks[rowid]
        # A job being completed or failed right now reads as "lost" once its outcome is
        # committed: that is the normal end of its lock, not an error.
        if token in queue._finishing or queue._locks.get(rowid) != token:
            continue
        queue._locks.pop(rowid, None)
        dropped.append(rowid)
        job = queue._running.get(rowid)
        public = job.id if job is not None else _public_id(queue, rowid)
        if job is not None:
            job._cancel()
        queue._emit_local("error", LockError(
            f"lost the lock of job {public!r} (it stalled and was taken back, or was removed):"
            " whatever its handler returns will not be recorded; raise"
            " settings['lock_duration'] if handlers block for long",
            job_id=public, expected="active", actual=None))
    return dropped


def _public_id(queue: Queue, rowid: int) -> str:
    rows = queue._store.query("SELECT job_id FROM jobs WHERE id = :id", {"id": rowid})
    public: str = queue._tx.public_id(rowid, rows[0][0] if rows else None)
    return public


class LockRenewer:
    """The renewal thread of one Queue (started with its first claim)."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="localq-renew", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = float(self._queue.settings.lock_renew_time or 1.0)
        while not self._stop.wait(interval):
            try:
                renew_locks(self._queue)
            except LocalqError as exc:
                if self._queue._store.closed:
                    return
                self._queue._emit_local("error", exc)

    def close(self) -> None:
        """Stop renewing (the locks then expire unless their jobs finish first)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
