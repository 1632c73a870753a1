"""Read-only SQL: job lookups, listings, counts, logs and the events cursor.

Every function reads to the end of its cursor (no pinned snapshot) and several reads that
must agree run in one read transaction (``Store.read``).
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from . import serializers
from ._db import Store
from .listing import LIST_ORDER, queue_names_in, shown_state, window
from .transitions import JOB_COLUMNS, STATE_IS, pick_statement, public_id, rowid_of

__all__ = ["active_jobs", "count_events_after", "counts", "events_after", "job_row",
           "job_state", "list_jobs", "logs", "outcome", "queue_names", "recent_events", "rowid",
           "runnable"]


def _paused(conn: Any, queue: str) -> bool:
    return bool(conn.execute("SELECT 1 FROM queues WHERE name = :q AND paused = 1",
                             {"q": queue}).fetchall())


def rowid(store: Store, queue: str, job_id: str) -> int | None:
    """Return the row number of *job_id* in *queue*, or None."""
    with store.read() as conn:
        return rowid_of(conn, queue, job_id)


def job_row(store: Store, queue: str, job_id: str) -> tuple[Any, ...] | None:
    """Return the row of job *job_id* of *queue*, or None."""
    with store.read() as conn:
        rid = rowid_of(conn, queue, job_id)
        if rid is None:
            return None
        rows = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id", {"id": rid}).fetchall()
        return rows[0] if rows else None


def job_state(store: Store, rid: int, now_ms: int) -> str | None:
    """Return the state of row *rid* in one indexed read (``paused``/``stuck`` derived)."""
    rows = store.query(
        "SELECT j.state, j.lock_expires_ms, coalesce(q.paused, 0) FROM jobs AS j"
        " LEFT JOIN queues AS q ON q.name = j.queue WHERE j.id = +:id", {"id": rid})
    if not rows:
        return None
    state, expires, paused = rows[0]
    return shown_state(state, expires, bool(paused), now_ms)


def list_jobs(store: Store, queue: str, states: Sequence[str], start: int, end: int,
              asc: bool) -> list[tuple[Any, ...]]:
    """Return job rows of *queue* in *states*, Bull-style: the inclusive range
    [*start*, *end*] (``end=-1``: the last) taken per state, concatenated in the given order.
    """
    out: list[tuple[Any, ...]] = []
    with store.read() as conn:
        paused = _paused(conn, queue)
        for state in dict.fromkeys(states):
            if (state == "paused") != paused and state in ("waiting", "paused"):
                continue  # waiting jobs show as "paused" while the queue is paused
            sql_state, order = LIST_ORDER[state]
            if not asc:
                order = ", ".join(f"{col.strip()} DESC" for col in order.split(","))
            limit, offset, cut = window(start, end, everything=-1)
            # The state is spelled out and the queue is +:q: see _STATE_COUNT.
            rows = conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE queue = +:q AND {STATE_IS[sql_state]}"
                f" ORDER BY {order} LIMIT +:limit OFFSET +:offset",
                {"q": queue, "limit": limit, "offset": offset}).fetchall()
            out.extend(rows[cut])
    return out


#: One statement per state, the state spelled out. SQLite (3.54) compiles a statement again at
#: every run when the planner looked at a bound value: ``state = :s`` (matched against the
#: partial indexes), and ``queue = :q`` next to an ORDER BY, min() or DISTINCT. ``+:q`` keeps
#: the planner away from the value (same plan, as EXPLAIN QUERY PLAN shows), so a cached
#: statement is reused; on a hot path that was most of a statement's cost.
_STATE_COUNT = {state: f"SELECT count(*) FROM jobs WHERE queue = :q AND {STATE_IS[state]}"
                for state in STATE_IS}


def counts(store: Store, queue: str, states: Sequence[str]) -> dict[str, int]:
    """Return ``{state: count}`` for *states* (each count one partial-index range)."""
    out: dict[str, int] = {}
    with store.read() as conn:
        paused = _paused(conn, queue)
        for state in states:
            sql_state = LIST_ORDER[state][0]
            if state in ("waiting", "paused") and (state == "paused") != paused:
                out[state] = 0
                continue
            out[state] = int(conn.execute(_STATE_COUNT[sql_state], {"q": queue}
                                          ).fetchall()[0][0])
    return out


def logs(store: Store, rid: int, start: int, end: int, asc: bool) -> tuple[list[str], int]:
    """Return a page of job *rid*'s log rows (inclusive range) and the total count."""
    with store.read() as conn:
        total = int(conn.execute("SELECT count(*) FROM job_logs WHERE job = :id",
                                 {"id": rid}).fetchall()[0][0])
        order = "ASC" if asc else "DESC"
        limit, offset, cut = window(start, end, everything=-1)
        rows = conn.execute(f"SELECT row FROM job_logs WHERE job = +:id ORDER BY id {order}"
                            " LIMIT +:limit OFFSET +:offset",
                            {"id": rid, "limit": limit, "offset": offset}).fetchall()
    return [r[0] for r in rows[cut]], total


def outcome(store: Store, queue: str, rid: int, public: str) -> tuple[str, Any]:
    """Return how job *rid* ended: ``("completed", result)``, ``("failed", reason)``,
    ``("pending", None)`` or ``("gone", None)`` (removed unfinished).

    A job removed by retention is answered from its last status event.
    """
    with store.read() as conn:
        rows = conn.execute("SELECT state, returnvalue, failed_reason FROM jobs WHERE id = :id",
                            {"id": rid}).fetchall()
        if rows:
            state, result, reason = rows[0]
            if state == "completed":
                return "completed", json.loads(result) if result is not None else None
            if state == "failed":
                return "failed", reason
            return "pending", None
        # A retry writes "failed" then "waiting"/"delayed" in one transaction, so the last
        # status event tells a final failure from one that was retried.
        events = conn.execute(
            "SELECT event, data FROM events WHERE queue = :q AND job_id = :j AND event IN"
            " ('completed', 'failed', 'waiting', 'delayed', 'active', 'stalled')"
            " ORDER BY id DESC LIMIT 1", {"q": queue, "j": public}).fetchall()
    if events and events[0][0] == "completed":
        return "completed", serializers.loads(events[0][1], path=store.path)
    if events and events[0][0] == "failed":
        return "failed", serializers.loads(events[0][1], path=store.path)
    return "gone", None


def events_after(store: Store, queue: str, cursor: int, limit: int = 500
                 ) -> list[tuple[int, str, str | None, Any]]:
    """Return (id, event, job_id, data) of *queue*'s events with id > *cursor*, oldest first."""
    rows = store.query("SELECT id, event, job_id, data FROM events WHERE id > :c AND queue = +:q"
                       " ORDER BY id LIMIT +:n", {"c": cursor, "q": queue, "n": limit})
    return [(r[0], r[1], r[2], serializers.loads(r[3], path=store.path)) for r in rows]


def last_event_id(store: Store) -> int:
    """Return the newest event id (0 when there is none)."""
    return int(store.query("SELECT coalesce(max(id), 0) FROM events")[0][0])


def runnable(store: Store, *, queue: str, names: Sequence[str] | None,
             now_ms: int) -> tuple[bool, bool]:
    """Return whether a claim could take a job now (one waiting in a queue that is not
    paused, or a delayed one due) and whether a process listens for events, in one read
    outside any transaction: an idle worker looks before it takes the write lock."""
    params: dict[str, Any] = {"queue": queue, "now": now_ms, "wall": int(time.time() * 1000)}
    found = store.query(pick_statement(names, params), params)[0]
    return found[0] is not None or bool(found[-2]), bool(found[-1])


def public(rid: int, job_id: str | None) -> str:
    """Return the public id of a row (re-exported for callers outside transitions)."""
    return public_id(rid, job_id)


# -- overview reads (the command line and the live view) -----------------------------------

#: One skip-scan per partial index: the smallest queue name after :after that has a job in
#: that state. Each is one index seek, so listing queues costs O(queues * log jobs), not a
#: scan of every job.
_NEXT_QUEUE = (
    "SELECT min(queue) FROM jobs WHERE state = 'waiting' AND queue > :after",
    "SELECT min(queue) FROM jobs WHERE state = 'delayed' AND queue > :after",
    "SELECT min(queue) FROM jobs WHERE state = 'active' AND queue > :after",
    "SELECT min(queue) FROM jobs WHERE state = 'completed' AND queue > :after",
    "SELECT min(queue) FROM jobs WHERE state = 'failed' AND queue > :after",
)


def queue_names(store: Store) -> list[str]:
    """Return the names of every queue of the file, sorted: queues with jobs, paused queues,
    queues with a repeat schedule and queues with a registered worker."""
    with store.read() as conn:
        return queue_names_in(conn, _NEXT_QUEUE)


def active_jobs(store: Store, queue: str, limit: int) -> list[tuple[str, str, Any, float | None]]:
    """Return (id, name, progress, processed_on in epoch seconds) of up to *limit* active
    jobs of *queue*, longest-running first."""
    rows = store.query(
        "SELECT id, job_id, name, progress, processed_on_ms FROM jobs"
        " WHERE queue = +:q AND state = 'active' ORDER BY processed_on_ms, id LIMIT +:n",
        {"q": queue, "n": limit})
    return [(public_id(r[0], r[1]), r[2], json.loads(r[3]) if r[3] is not None else 0,
             None if r[4] is None else r[4] / 1000.0) for r in rows]


def count_events_after(store: Store, queue: str, event: str, cursor: int) -> tuple[int, int]:
    """Return how many *event* events of *queue* have an id > *cursor*, and the newest event
    id of the file (the next cursor). ``cursor < 0`` only returns the newest id."""
    with store.read() as conn:
        newest = _integer(conn, "SELECT coalesce(max(id), 0) FROM events", None)
        if cursor < 0:
            return 0, newest
        count = _integer(conn, "SELECT count(*) FROM events WHERE id > :c AND id <= :n"
                         " AND queue = :q AND event = :e",
                         {"c": cursor, "n": newest, "q": queue, "e": event})
    return count, newest


def _integer(conn: Any, sql: str, params: Any) -> int:
    return int(conn.execute(sql, params).fetchall()[0][0])


def recent_events(store: Store, queue: str, event: str, limit: int, *,
                  window: int = 5000) -> list[tuple[str | None, Any, float]]:
    """Return (job id, data, time in epoch seconds) of the newest *limit* *event* events of
    *queue*, newest first, looking at the newest *window* events of the file only (a bounded
    read however long the events table is)."""
    rows = store.query(
        "SELECT job_id, data, ts_ms FROM events WHERE id > (SELECT coalesce(max(id), 0)"
        " FROM events) - :w AND queue = :q AND event = :e ORDER BY id DESC LIMIT +:n",
        {"w": window, "q": queue, "e": event, "n": limit})
    return [(r[0], json.loads(r[1]) if r[1] is not None else None, r[2] / 1000.0) for r in rows]
