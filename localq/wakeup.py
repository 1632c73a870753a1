"""Learning that a queue changed, without fixed-interval polling of job tables.

Commits made through this process wake waiters at once (:meth:`Watcher.notify`). Commits by
other processes ring this process's doorbell (:mod:`localq.doorbell`): a UDP datagram sent only
while a thread here is actually waiting, so pickup takes well under a millisecond and an idle
process sleeps in ``select``. ``PRAGMA data_version`` (which changes whenever another connection
commits) is the safety net: it is read once more right after a waiter arms its doorbell, and
by each waiting thread every :data:`~localq.doorbell.FALLBACK_INTERVAL` seconds.
"""

from __future__ import annotations

import os
import threading
import time

from . import doorbell
from ._db import Store
from .errors import DatabaseError

__all__ = ["Watcher"]


class Watcher:
    """Wake the waiters of one queue when it changes (any process) or :meth:`notify` is called.

    :param store: the database to watch.
    :param name: the queue's name (doorbells are rung per queue).
    """

    def __init__(self, store: Store, *, name: str = "") -> None:
        self._store = store
        self.name = name
        # One lock, two conditions: a commit wakes the threads waiting for a change, and only
        # a change of delayed jobs wakes the scheduler (it used to wake on every commit, a
        # thread switch per job for a busy worker).
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._schedule_cond = threading.Condition(lock)
        self._version = 0
        self._schedule_version = 0
        self._waiters = 0
        self._local = threading.local()
        self._closed = False
        self._pid = os.getpid()
        self._hub_obj = doorbell.hub_for(store.path)
        self._hub_obj.add(self)

    @property
    def _hub(self) -> doorbell.Hub:
        if os.getpid() != self._pid:  # forked: the parent's hub has no thread here
            self._pid = os.getpid()
            self._hub_obj = doorbell.hub_for(self._store.path)
            self._hub_obj.add(self)
        return self._hub_obj

    # -- the waiting side --------------------------------------------------------------------

    def version(self) -> int:
        """Return a counter that grows each time a change is seen; call it *before* looking at
        the database, then pass it to :meth:`wait_change` if there was nothing to do."""
        with self._cond:
            seen = self._version
        self._local.mark = (seen, self._data_version())
        return seen

    def wait_change(self, seen: int, timeout: float | None) -> bool:
        """Block until the version differs from *seen*, or *timeout* seconds pass.

        :returns: whether a change was (or may have been) seen.
        """
        hub = self._hub
        hub.arm(doorbell.CHANGE)
        try:
            # Armed: from now on any commit rings us. One that came between version() and
            # arming shows as a data_version (of this thread's connection: the counter is per
            # connection) that differs from the one read by version(); so does a commit whose
            # datagram was lost, at the next read.
            mark = getattr(self._local, "mark", None)
            baseline = mark[1] if mark is not None and mark[0] == seen else self._data_version()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if baseline is not None and self._data_version() != baseline:
                    return True
                step = hub.poll_interval
                if deadline is not None:
                    step = min(step, deadline - time.monotonic())
                    if step <= 0:
                        return False
                if self._wait(seen, step, schedule=False):
                    return True
        finally:
            hub.disarm(doorbell.CHANGE)

    def schedule_version(self) -> int:
        """Return a counter that grows when delayed jobs (or schedules) may have changed."""
        with self._cond:
            return self._schedule_version

    def wait_schedule(self, seen: int, timeout: float | None) -> bool:
        """Block until :meth:`schedule_version` differs from *seen* or *timeout* seconds pass
        (the scheduler's wait: woken by delayed-job changes only, not by every commit)."""
        hub = self._hub
        hub.arm(doorbell.SCHEDULE)
        try:
            return self._wait(seen, timeout, schedule=True)
        finally:
            hub.disarm(doorbell.SCHEDULE)

    def _wait(self, seen: int, timeout: float | None, *, schedule: bool) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            try:
                while not self._closed:
                    current = self._schedule_version if schedule else self._version
                    if current != seen:
                        return True
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    (self._schedule_cond if schedule else self._cond).wait(remaining)
                return True
            finally:
                self._waiters -= 1

    # -- the waking side ---------------------------------------------------------------------

    def notify(self, *, delayed: bool = False) -> None:
        """Wake every waiter of this queue, here and in other processes (call after a commit).

        :param delayed: the commit added or moved delayed jobs (wakes schedulers too).
        """
        if self._closed:
            self._wake(delayed)
            return
        self._hub.ring(self.name, delayed=delayed)

    def _wake(self, delayed: bool) -> None:
        with self._cond:
            self._version += 1
            if delayed:
                self._schedule_version += 1
                self._schedule_cond.notify_all()
            if self._waiters:
                self._cond.notify_all()

    def _data_version(self) -> int | None:
        try:
            return self._store.data_version()
        except DatabaseError:
            return None

    def close(self) -> None:
        """Release every waiter and stop listening (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            self._schedule_cond.notify_all()
        if os.getpid() == self._pid:
            self._hub_obj.remove(self)
