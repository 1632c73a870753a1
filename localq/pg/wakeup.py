"""Waking a queue's waiters on PostgreSQL: the twin of ``localq.wakeup.Watcher``.

Same interface (``version`` / ``wait_change``, ``schedule_version`` / ``wait_schedule``,
``notify``, ``close``). On SQLite other processes ring a UDP doorbell; here their
transactions NOTIFY the schema's channel (``c:<queue>``, or ``d:<queue>`` when delayed jobs
changed) and the store's LISTEN thread (:mod:`localq.pg.notify`) wakes the waiters of that
queue directly: pickup takes the notification's latency (about a millisecond), and an idle
process costs nothing. Notifications reach other machines too, which a doorbell cannot.

The LISTEN thread delivers ``None`` after every (re)connection, which wakes every waiter once:
whatever was committed while nobody listened is found by the waiter's next look (BullMQ
#4729). Without LISTEN (``listen=off``) waiters look again every ``poll_interval`` seconds.
"""

from __future__ import annotations

import threading
import time

from .store import PgStore

__all__ = ["PgWatcher"]


class PgWatcher:
    """Wake the waiters of one queue when it changes (any process) or :meth:`notify` is called.

    :param store: the schema to watch.
    :param name: the queue's name (notifications of other queues are ignored).
    """

    def __init__(self, store: PgStore, *, name: str = "") -> None:
        self._store = store
        self.name = name
        self._cond = threading.Condition()
        self._version = 0
        self._schedule_version = 0
        self._closed = False
        self._subscribed = False
        self._poll = store.notifier.poll_interval
        self._listening = store.notifier.listening

    def _subscribe(self) -> None:
        if not self._subscribed and self._listening and not self._closed:
            self._subscribed = True
            self._store.notifier.subscribe(self._on_note)

    def _on_note(self, payload: str | None) -> None:
        if payload is None:
            self._wake(True)
            return
        kind, _, queue = payload.partition(":")
        if queue == self.name or not self.name:
            self._wake(kind == "d")

    def _wake(self, delayed: bool) -> None:
        with self._cond:
            self._version += 1
            if delayed:
                self._schedule_version += 1
            self._cond.notify_all()

    # -- the waiting side --------------------------------------------------------------------

    def version(self) -> int:
        """Return a counter that grows each time a change is seen; call it *before* looking at
        the database, then pass it to :meth:`wait_change` if there was nothing to do. (The
        first call starts listening, before it returns: a later commit is never missed.)"""
        self._subscribe()
        with self._cond:
            return self._version

    def wait_change(self, seen: int, timeout: float | None) -> bool:
        """Block until the version differs from *seen*, or *timeout* seconds pass.

        :returns: whether a change was (or may have been) seen.
        """
        return self._wait(seen, timeout, schedule=False)

    def schedule_version(self) -> int:
        """Return a counter that grows when delayed jobs (or schedules) may have changed."""
        self._subscribe()
        with self._cond:
            return self._schedule_version

    def wait_schedule(self, seen: int, timeout: float | None) -> bool:
        """Block until :meth:`schedule_version` differs from *seen* or *timeout* seconds pass."""
        return self._wait(seen, timeout, schedule=True)

    def _wait(self, seen: int, timeout: float | None, *, schedule: bool) -> bool:
        self._subscribe()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                current = self._schedule_version if schedule else self._version
                if current != seen:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._listening:
                    # Polling: report a possible change every poll_interval.
                    step = self._poll if remaining is None else min(self._poll, remaining)
                    self._cond.wait(step)
                    if deadline is None or time.monotonic() < deadline:
                        return True
                    continue
                self._cond.wait(remaining)
            return True

    # -- the waking side ---------------------------------------------------------------------

    def notify(self, *, delayed: bool = False) -> None:
        """Wake this process's waiters after a commit made here (other processes are woken by
        the NOTIFY the transaction sent).

        :param delayed: the commit added or moved delayed jobs (wakes schedulers too).
        """
        self._wake(delayed)

    def close(self) -> None:
        """Release every waiter and stop listening (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._subscribed:
            try:
                self._store.notifier.unsubscribe(self._on_note)
            except Exception:  # the store may be closed already: nothing to unsubscribe from
                pass
