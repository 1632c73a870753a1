"""Bull's listing rules, shared by both backends' reads: which stored state and order each
listed state means, Bull's inclusive ``[start, end]`` ranges, and the state a job shows."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["LIST_ORDER", "queue_names_in", "shown_state", "window"]

#: Listed state -> (stored state, ascending ORDER BY that its index serves).
LIST_ORDER = {
    "waiting": ("waiting", "priority, seq, id"),
    "paused": ("waiting", "priority, seq, id"),
    "delayed": ("delayed", "run_at_ms, id"),
    "active": ("active", "processed_on_ms, id"),
    "completed": ("completed", "finished_on_ms, id"),
    "failed": ("failed", "finished_on_ms, id"),
}


def window(start: int, end: int, *, everything: int | None) -> tuple[int | None, int, slice]:
    """Return (LIMIT, OFFSET, slice of the fetched rows) for Bull's inclusive [start, end].

    Negative indexes count from the end, as Redis LRANGE does in Bull; they need the whole
    list, so only non-negative ranges are pushed down to SQL.

    :param everything: the LIMIT meaning "all rows" in the database's SQL (SQLite: -1,
        PostgreSQL: NULL).
    """
    stop = None if end == -1 else end + 1
    if start < 0 or end < -1:
        return everything, 0, slice(start, stop)
    return (max(0, end - start + 1) if end >= 0 else everything), start, slice(None)


def shown_state(state: str, lock_expires_ms: int | None, queue_paused: bool,
                now_ms: int) -> str:
    """The state a job shows: waiting jobs of a paused queue are ``paused``, and an active
    job whose lock expired is ``stuck``."""
    if state == "waiting" and queue_paused:
        return "paused"
    if state == "active" and lock_expires_ms is not None and lock_expires_ms < now_ms:
        return "stuck"
    return str(state)


def queue_names_in(conn: Any, next_queue: Sequence[str]) -> list[str]:
    """Return the names of every queue, sorted: queues with jobs, paused queues, queues with a
    repeat schedule and queues with a registered worker (read on *conn*'s snapshot).

    :param next_queue: one statement per partial index giving the smallest queue name after
        the parameter ``after`` that has a job in that state (one index seek each, so listing
        queues costs O(queues * log jobs), not a scan of every job).
    """
    names: set[str] = set()
    for sql in next_queue:
        last = ""
        while True:
            found = conn.execute(sql, {"after": last}).fetchall()[0][0]
            if found is None:
                break
            last = str(found)
            names.add(last)
    for sql in ("SELECT name FROM queues", "SELECT DISTINCT queue FROM repeats",
                "SELECT DISTINCT queue FROM workers"):
        names.update(str(row[0]) for row in conn.execute(sql).fetchall())
    return sorted(names)
