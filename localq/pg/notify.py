"""Learning that another process committed, through LISTEN/NOTIFY (or polling, for poolers).

The PostgreSQL twin of ``PRAGMA data_version``: :meth:`Notifier.version` is a counter that
grows whenever a notification arrives on the schema's channel. Transitions that make a job
runnable or write an event call ``pg_notify`` inside their own transaction, so the
notification is delivered exactly when (and only if) the change is visible.

One thread owns one dedicated connection (never a pooled one: a pool would hand the LISTEN
session to someone else) and waits in ``notifies()``; psycopg's generator holds the
connection lock while it waits, so nothing else uses that connection (psycopg #760).

A dropped connection is the classic failure of LISTEN-based queues (BullMQ #4729,
procrastinate #1425: pickup silently degrades to the poll timeout). Here the thread
reconnects with backoff, LISTENs again and bumps the counter, so every waiter probes the
database once: whatever was committed while nobody listened is found by that probe.

Without LISTEN (``listen=off`` in the URL, for PgBouncer's transaction mode) the counter grows
every ``poll_interval`` seconds instead, and waiters re-probe at that pace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from typing import Any, Callable

import psycopg
from psycopg import sql

from . import forksafe

__all__ = ["Notifier", "channel_for"]

log = logging.getLogger("localq")

#: Seconds one wait for the socket lasts before the thread looks again regardless (close()
#: wakes it at once through a pipe; this bounds a notification buffered where select() cannot
#: see it, as inside TLS).
_WAIT = 0.5
#: Reconnection backoff bounds, in seconds.
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
#: TCP keepalives: a dead server or cut network is noticed in ~15 s, not hours.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                              "keepalives_count": 3}


def channel_for(schema: str) -> str:
    """Return the NOTIFY channel of a localq schema (transitions use the same rule in SQL:
    ``'localq_' || current_schema()``)."""
    return f"localq_{schema}"


class Notifier:
    """A counter that grows on every notification of one schema's channel.

    :param conninfo: libpq URL of the server.
    :param schema: the localq schema (its channel is :func:`channel_for`).
    :param listen: False: no LISTEN, the counter grows every *poll_interval* seconds.
    """

    def __init__(self, conninfo: str, schema: str, *, listen: bool,
                 poll_interval: float) -> None:
        self._conninfo = conninfo
        self._channel = channel_for(schema)
        self._listen = listen
        self._poll = poll_interval
        self._lock = threading.Lock()
        self._version = 0
        self._listening = threading.Event()
        self._stop = threading.Event()
        #: close() writes to it: the listening thread's select() returns at once.
        self._bell: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._subscribers: list[Callable[[str | None], None]] = []
        #: How many times the LISTEN session was (re)established (tests read it).
        self.sessions = 0

    @property
    def listening(self) -> bool:
        """Whether wakeups come by LISTEN (False: ``listen=off``, callers poll)."""
        return self._listen

    @property
    def poll_interval(self) -> float:
        """Seconds between two looks of a waiter without LISTEN."""
        return self._poll

    def subscribe(self, callback: Callable[[str | None], None]) -> None:
        """Call *callback* with each notification's payload (``None`` after a reconnection:
        anything may have changed), from the listening thread; starts it."""
        with self._lock:
            self._subscribers.append(callback)
        self.version()

    def unsubscribe(self, callback: Callable[[str | None], None]) -> None:
        """Stop calling *callback*."""
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def _deliver(self, payload: str | None) -> None:
        self.bump()
        for callback in list(self._subscribers):
            try:
                callback(payload)
            except Exception:  # a subscriber's bug must not stop the wakeups of the others
                log.exception("localq: a wakeup subscriber raised")

    def version(self) -> int:
        """Return the counter, starting the listening thread on first use."""
        if not self._listen:
            return int(time.monotonic() / self._poll)
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._bell = os.pipe()
                    self._thread = threading.Thread(target=self._run, name="localq-pg-listen",
                                                    daemon=True)
                    self._thread.start()
            # A change committed after version() returns must be seen: wait (bounded) until
            # LISTEN is in place before answering the first time.
            self._listening.wait(5.0)
        return self._version

    def bump(self) -> None:
        """Make the counter grow (a notification, or a reconnection that may have missed one)."""
        with self._lock:
            self._version += 1

    def close(self) -> None:
        """Stop the thread and close its connection."""
        with self._lock:  # the thread closes the pipe under the lock too: never a reused fd
            self._stop.set()
            thread = self._thread
            if self._bell is not None:
                with contextlib.suppress(OSError):  # full: it has rung already
                    os.write(self._bell[1], b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join(_WAIT * 4)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10,
                               application_name="localq-listen", **KEEPALIVES)
        forksafe.track(conn)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return conn

    def _run(self) -> None:
        try:
            self._listen_until_closed()
        finally:
            with self._lock:
                bell, self._bell = self._bell, None
            if bell is not None:
                os.close(bell[0])
                os.close(bell[1])

    def _bell_fd(self) -> int:
        bell = self._bell
        assert bell is not None  # made before the thread starts, closed when it ends
        return bell[0]

    def _listen_until_closed(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                log.debug("localq: LISTEN connection failed: %s", exc)
                self._listening.set()  # callers fall back to their own timeouts
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_MIN
            self.sessions += 1
            self._deliver(None)  # anything committed while nobody listened: make waiters look
            self._listening.set()
            try:
                with conn:
                    while not self._stop.is_set():
                        # What libpq holds already first (select() cannot see it), then a
                        # wait for the socket or close()'s bell.
                        for note in conn.notifies(timeout=0):
                            self._deliver(note.payload)
                        select.select([conn.fileno(), self._bell_fd()], [], [], _WAIT)
            except psycopg.Error as exc:
                log.debug("localq: LISTEN connection lost, reconnecting: %s", exc)
                self._deliver(None)
