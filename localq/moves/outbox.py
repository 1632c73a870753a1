"""The global event rows every move writes inside its own transaction (outbox style).

Part of :mod:`localq.transitions`; :mod:`localq.events` tails these rows for ``global:``
listeners in every process.
"""

from __future__ import annotations

import json
import time
from typing import Any

__all__ = ["emit", "emit_if_watched", "watch_queue"]


def emit(conn: Any, queue: str, event: str, job_id: str | None, data: Any, now_ms: int) -> None:
    """Append one global event row (``data`` is JSON-encoded here)."""
    conn.execute(
        "INSERT INTO events (queue, event, job_id, data, ts_ms) VALUES (:q, :e, :j, :d, :t)",
        {"q": queue, "e": event, "j": job_id, "d": None if data is None else json.dumps(data),
         "t": now_ms},
    )


def emit_if_watched(conn: Any, queue: str, event: str, job_id: str | None,
                    now_ms: int) -> None:
    """Append a ``waiting`` (on add), ``active`` or ``drained`` event only while a process
    listens.

    These are the most frequent events and nothing but ``global:`` listeners reads
    them; skipping them takes an add from 3 to 2 pages written (DESIGN.md). Listeners keep
    ``queues.watch_until_ms`` in the future (wall clock, see :func:`watch_queue`).
    """
    conn.execute(
        "INSERT INTO events (queue, event, job_id, data, ts_ms) SELECT :q, :e, :j, NULL, :t"
        " WHERE EXISTS (SELECT 1 FROM queues WHERE name = :q AND watch_until_ms > :wall)",
        {"q": queue, "e": event, "j": job_id, "t": now_ms, "wall": int(time.time() * 1000)})


def watch_queue(conn: Any, *, queue: str, until_ms: int) -> None:
    """Ask writers to record every event of *queue* until *until_ms* (wall clock)."""
    conn.execute("INSERT INTO queues (name, watch_until_ms) VALUES (:q, :u) ON CONFLICT (name)"
                 " DO UPDATE SET watch_until_ms = max(watch_until_ms, :u)",
                 {"q": queue, "u": until_ms})
