"""Learning that the database changed, without fixed-interval polling of job tables.

Commits made through this process call :meth:`Watcher.notify` and wake waiters at once.
Commits by other processes are seen through ``PRAGMA data_version``, which changes whenever
another connection commits; reading it costs a few microseconds and touches no table. A
single thread per queue polls it, and only while somebody is waiting.
"""

from __future__ import annotations

import threading
import time

from ._db import Store
from .errors import DatabaseError

__all__ = ["Watcher"]

#: Seconds between two data_version reads while somebody waits (pickup latency vs idle CPU).
POLL_INTERVAL = 0.002


class Watcher:
    """Wake waiters when the database changes (any process) or :meth:`notify` is called.

    :param store: the database to watch.
    :param interval: seconds between two ``data_version`` reads while somebody waits.
    """

    def __init__(self, store: Store, *, interval: float = POLL_INTERVAL) -> None:
        self._store = store
        self._interval = interval
        self._cond = threading.Condition()
        self._version = 0
        self._waiters = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def version(self) -> int:
        """Return a counter that grows each time a change is seen."""
        with self._cond:
            return self._version

    def notify(self) -> None:
        """Wake every waiter (call after a commit made in this process)."""
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def wait_change(self, seen: int, timeout: float | None) -> bool:
        """Block until the version differs from *seen*, or *timeout* seconds pass.

        :returns: whether a change was seen.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            try:
                self._ensure_thread()
                while self._version == seen and not self._closed:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return self._version != seen
            finally:
                self._waiters -= 1

    def close(self) -> None:
        """Stop the polling thread and release every waiter."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="localq-watcher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last = None
        idle_since = time.monotonic()
        while True:
            with self._cond:
                if self._closed:
                    return
                if self._waiters == 0:
                    # Nobody waits: park for a while, then end the thread if still idle.
                    if time.monotonic() - idle_since > 1.0:
                        self._thread = None
                        return
                    self._cond.wait(0.1)
                    last = None
                    continue
            idle_since = time.monotonic()
            try:
                current = self._store.data_version()
            except DatabaseError:
                if self._store.closed:
                    return
                current = None
            if last is not None and current != last:
                self.notify()
            last = current
            time.sleep(self._interval)
