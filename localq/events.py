"""Events: local callbacks, and ``global:`` events read from the events table by cursor.

Local events fire in the thread that did the work. Global events are rows written by the
transition that caused them (in the same transaction), so a process that listens reads
every one of them in order, whatever process wrote it; none is lost to a disconnect as
with Redis pub/sub (bull#2187). One thread per Queue tails the table, started by the first
``on("global:...")``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError, LocalqError

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["EventBus", "GLOBAL_EVENTS", "LOCAL_EVENTS"]

log = logging.getLogger("localq")

LOCAL_EVENTS = frozenset({"error", "waiting", "active", "stalled", "progress", "completed",
                          "failed", "paused", "resumed", "cleaned", "drained", "removed"})
GLOBAL_EVENTS = frozenset({"waiting", "active", "stalled", "progress", "completed", "failed",
                           "paused", "resumed", "drained", "removed", "delayed"})
#: Global events that carry no job id.
_QUEUE_EVENTS = frozenset({"paused", "resumed", "drained"})
#: Global events whose data is passed as a second argument.
_WITH_DATA = frozenset({"progress", "completed", "failed", "delayed"})

Callback = Callable[..., Any]

#: How long one announcement that this process listens lasts, and how often it is renewed
#: (writers skip ``waiting``/``active`` rows while nobody listens; see transitions).
WATCH_TTL = 60.0
WATCH_RENEW = 20.0


class EventBus:
    """Listeners of one Queue instance, local and global."""

    def __init__(self, queue: Queue) -> None:
        self._store = queue._store
        self._queue = queue.name
        self._watcher = queue._watcher
        self._tx = queue._tx
        self._q = queue._q
        self._lock = threading.Lock()
        self._listeners: dict[str, list[tuple[Callback, bool]]] = {}
        self._tail: threading.Thread | None = None
        self._stop = threading.Event()
        self._announced = 0.0

    def on(self, event: str, callback: Callback, *, once: bool = False) -> None:
        """Register *callback* for *event* (``"global:<name>"`` for every process's events)."""
        if not isinstance(event, str):
            raise ConfigError(f"event must be a str, not {type(event).__name__}")
        base = event[7:] if event.startswith("global:") else event
        known = GLOBAL_EVENTS if event.startswith("global:") else LOCAL_EVENTS
        if base not in known:
            raise ConfigError(f"unknown event {event!r}: use one of {sorted(known)}"
                               " (with 'global:' for events of every process)")
        if not callable(callback):
            raise ConfigError("callback must be callable")
        with self._lock:
            self._listeners.setdefault(event, []).append((callback, once))
        if event.startswith("global:"):
            self._start_tail()

    def off(self, event: str, callback: Callback) -> None:
        """Unregister *callback* from *event* (no error if it was not registered)."""
        with self._lock:
            entries = self._listeners.get(event, [])
            self._listeners[event] = [e for e in entries if e[0] is not callback]

    def has(self, event: str) -> bool:
        """Whether anything listens to *event*."""
        return bool(self._listeners.get(event))

    def emit(self, event: str, *args: Any) -> None:
        """Call *event*'s listeners; an exception in one is logged and never propagates."""
        entries = self._listeners.get(event)
        if not entries:
            if event == "error" and args:
                log.error("localq queue %r: %s", self._queue, args[0])
            return
        with self._lock:
            entries = list(self._listeners.get(event, []))
            if any(once for _, once in entries):
                self._listeners[event] = [e for e in entries if not e[1]]
        for callback, _ in entries:
            try:
                callback(*args)
            except Exception:
                log.exception("localq: a %r event listener raised", event)

    def close(self) -> None:
        """Stop the global tail thread."""
        self._stop.set()
        self._watcher.notify()  # the tail may be waiting for a change: let it see the stop
        tail = self._tail
        if tail is not None and tail is not threading.current_thread():
            tail.join(2.0)

    def _start_tail(self) -> None:
        with self._lock:
            if self._tail is not None:
                return
            # Announce first, then read the cursor: every writer that commits after the
            # announcement records all events, and everything before is behind the cursor.
            self._announce()
            cursor = self._q.last_event_id(self._store)
            self._tail = threading.Thread(target=self._run_tail, args=(cursor,),
                                          name="localq-events", daemon=True)
            self._tail.start()

    def _announce(self) -> None:
        with self._store.write(durable=False) as conn:
            self._tx.watch_queue(conn, queue=self._queue,
                                    until_ms=int((time.time() + WATCH_TTL) * 1000))
        self._announced = time.monotonic()

    def _run_tail(self, cursor: int) -> None:
        while not self._stop.is_set():
            if time.monotonic() - self._announced > WATCH_RENEW:
                try:
                    self._announce()
                except LocalqError as exc:
                    self.emit("error", exc)
            seen = self._watcher.version()
            try:
                batch = self._q.events_after(self._store, self._queue, cursor)
            except LocalqError as exc:
                if self._store.closed:
                    return
                self.emit("error", exc)
                self._stop.wait(1.0)
                continue
            for event_id, event, job_id, data in batch:
                cursor = event_id
                args: tuple[Any, ...] = () if event in _QUEUE_EVENTS else (job_id,)
                if event in _WITH_DATA:
                    args += (data,)
                self.emit("global:" + event, *args)
            if not batch and not self._stop.is_set():
                self._watcher.wait_change(seen, 0.5)

