"""Read-only SQL on PostgreSQL: the twin of :mod:`localq.queries` (same functions and shapes).

Reads that must agree run in one ``REPEATABLE READ READ ONLY`` transaction
(``PgStore.read``).

The events cursor is the one real difference. Event ids come from a sequence, but
transactions commit in another order than they took their ids: a reader paging by
``id > cursor`` skips an event whose transaction committed after a later id was read
(measured in the design brief: 5,425 of 6,000 events seen with two writers). Here each event
records its transaction id (``xid8``) and readers page by ``(xid, id)``, reading only events
of transactions older than their snapshot's ``xmin``: every such transaction has ended, so no
event can later appear behind the cursor (PgQ's idea). A long transaction anywhere in the
cluster delays delivery; it never loses an event. The cursor stays one ``int`` for the callers:
``xid << 64 | id``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from .store import PgStore
from .. import serializers
from ..listing import LIST_ORDER, queue_names_in, shown_state, window
from ._sql import WATCHED
from .transitions import JOB_COLUMNS, auto_rowid, public_id, rowid_of

__all__ = ["active_jobs", "count_events_after", "counts", "events_after", "job_row",
           "job_state", "last_event_id", "list_jobs", "logs", "outcome", "public", "queue_names",
           "recent_events", "rowid", "runnable"]


_ID_BITS = 64
_ID_MASK = (1 << _ID_BITS) - 1
#: How long :func:`last_event_id` waits for transactions in flight to end (seconds).
_SETTLE = 2.0


def _paused(conn: Any, queue: str) -> bool:
    return bool(conn.execute("SELECT 1 FROM queues WHERE name = %(q)s AND paused = 1",
                             {"q": queue}).fetchall())


def rowid(store: PgStore, queue: str, job_id: str) -> int | None:
    """Return the row number of *job_id* in *queue*, or None."""
    with store.read() as conn:
        return rowid_of(conn, queue, job_id)


def job_row(store: PgStore, queue: str, job_id: str) -> tuple[Any, ...] | None:
    """Return the row of job *job_id* of *queue*, or None."""
    params: dict[str, Any] = {"q": queue}
    auto = auto_rowid(job_id)
    if auto is not None:
        if auto >= 2**63:
            return None
        where, params["id"] = "id = %(id)s AND queue = %(q)s AND job_id IS NULL", auto
    else:
        where, params["j"] = "queue = %(q)s AND job_id = %(j)s", job_id
    rows = store.query(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where}", params)
    return tuple(rows[0]) if rows else None


def job_state(store: PgStore, rid: int, now_ms: int) -> str | None:
    """Return the state of row *rid* in one indexed read (``paused``/``stuck`` derived)."""
    rows = store.query(
        "SELECT j.state, j.lock_expires_ms, coalesce(q.paused, 0) = 1 FROM jobs AS j"
        " LEFT JOIN queues AS q ON q.name = j.queue WHERE j.id = %(id)s", {"id": rid})
    if not rows:
        return None
    state, expires, paused = rows[0]
    return shown_state(state, expires, bool(paused), now_ms)


def list_jobs(store: PgStore, queue: str, states: Sequence[str], start: int, end: int,
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
            limit, offset, cut = window(start, end, everything=None)
            rows = conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE queue = %(q)s AND state = %(s)s"
                f" ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s",
                {"q": queue, "s": sql_state, "limit": limit, "offset": offset}).fetchall()
            out.extend(tuple(r) for r in rows[cut])
    return out


def counts(store: PgStore, queue: str, states: Sequence[str]) -> dict[str, int]:
    """Return ``{state: count}`` for *states*, in one statement (each count one
    partial-index range)."""
    with store.read() as conn:
        rows = conn.execute(
            "SELECT state, count(*) FROM jobs WHERE queue = %(q)s AND state = ANY(%(s)s::text[])"
            " GROUP BY state", {"q": queue, "s": sorted({LIST_ORDER[s][0] for s in states})}
        ).fetchall()
        paused = _paused(conn, queue) if {"waiting", "paused"} & set(states) else False
    found = dict(rows)
    out: dict[str, int] = {}
    for state in states:
        if state in ("waiting", "paused") and (state == "paused") != paused:
            out[state] = 0
        else:
            out[state] = int(found.get(LIST_ORDER[state][0], 0))
    return out


def logs(store: PgStore, rid: int, start: int, end: int, asc: bool) -> tuple[list[str], int]:
    """Return a page of job *rid*'s log rows (inclusive range) and the total count."""
    with store.read() as conn:
        total = int(conn.execute("SELECT count(*) FROM job_logs WHERE job = %(id)s",
                                 {"id": rid}).fetchall()[0][0])
        order = "ASC" if asc else "DESC"
        limit, offset, cut = window(start, end, everything=None)
        rows = conn.execute(f"SELECT row FROM job_logs WHERE job = %(id)s ORDER BY id {order}"
                            " LIMIT %(limit)s OFFSET %(offset)s",
                            {"id": rid, "limit": limit, "offset": offset}).fetchall()
    return [r[0] for r in rows[cut]], total


def outcome(store: PgStore, queue: str, rid: int, public: str) -> tuple[str, Any]:
    """Return how job *rid* ended: ``("completed", result)``, ``("failed", reason)``,
    ``("pending", None)`` or ``("gone", None)`` (removed unfinished).

    A job removed by retention is answered from its last status event. Ordering that job's
    events by id is safe although ids commit out of order: every transition of one job holds
    the job's row lock when it writes its event, so they take their ids in commit order.
    """
    with store.read() as conn:
        rows = conn.execute("SELECT state, returnvalue, failed_reason FROM jobs WHERE id = %(id)s",
                            {"id": rid}).fetchall()
        if rows:
            state, result, reason = rows[0]
            if state == "completed":
                return "completed", json.loads(result) if result is not None else None
            if state == "failed":
                return "failed", reason
            return "pending", None
        events = conn.execute(
            "SELECT event, data FROM events WHERE queue = %(q)s AND job_id = %(j)s AND event IN"
            " ('completed', 'failed', 'waiting', 'delayed', 'active', 'stalled')"
            " ORDER BY id DESC LIMIT 1", {"q": queue, "j": public}).fetchall()
    if events and events[0][0] == "completed":
        return "completed", serializers.loads(events[0][1], path=store.path)
    if events and events[0][0] == "failed":
        return "failed", serializers.loads(events[0][1], path=store.path)
    return "gone", None


def events_after(store: PgStore, queue: str, cursor: int, limit: int = 500
                 ) -> list[tuple[int, str, str | None, Any]]:
    """Return (cursor, event, job_id, data) of *queue*'s events after *cursor*, in commit-safe
    order; pass the last cursor back to read on. Only events of transactions older than the
    snapshot's xmin are returned (see the module docstring)."""
    rows = store.query(
        "SELECT xid::text::bigint, id, event, job_id, data FROM events WHERE queue = %(q)s"
        " AND (xid, id) > (%(x)s::text::xid8, %(i)s)"
        " AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY xid, id LIMIT %(n)s",
        {"q": queue, "x": str(cursor >> _ID_BITS), "i": cursor & _ID_MASK, "n": limit})
    return [((r[0] << _ID_BITS) | r[1], r[2], r[3], serializers.loads(r[4], path=store.path))
            for r in rows]


def last_event_id(store: PgStore) -> int:
    """Return a cursor after every event committed so far.

    Transactions in flight now may commit before or after this call returns; it waits (up to
    2 s) until those have ended and places the cursor after all of them, so an event committed
    after this returns is always read. If one outlives the wait, the cursor goes before it:
    a few recent events may then be read twice, never missed.
    """
    first = store.query("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")[0][0]
    deadline = time.monotonic() + _SETTLE
    pause = 0.001
    while True:
        xmin = store.query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")[0][0]
        if xmin >= first:
            return int(first) << _ID_BITS
        if time.monotonic() > deadline:
            return int(xmin) << _ID_BITS
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


_RUNNABLE = (
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = %(q)s AND state = 'waiting'"
    "  AND (%(names)s::text[] IS NULL OR name = ANY(%(names)s::text[]))"
    "  AND NOT EXISTS (SELECT 1 FROM queues WHERE name = %(q)s AND paused = 1))"
    " OR EXISTS (SELECT 1 FROM jobs WHERE queue = %(q)s AND state = 'delayed'"
    "  AND run_at_ms <= %(now)s), " + WATCHED
)


def runnable(store: PgStore, *, queue: str, names: Sequence[str] | None,
             now_ms: int) -> tuple[bool, bool]:
    """Return whether a claim could take a job now (one waiting in a queue that is not
    paused, or a delayed one due) and whether a process listens for events, in one read
    outside any transaction (``localq.queries.runnable``'s twin): an idle worker woken by
    a NOTIFY looks before it opens a transaction."""
    rows = store.query(_RUNNABLE, {"q": queue, "now": now_ms, "wall": int(time.time() * 1000),
                                   "names": None if names is None else list(names)})
    return bool(rows[0][0]), bool(rows[0][1])


def public(rid: int, job_id: str | None) -> str:
    """Return the public id of a row (re-exported for callers outside transitions)."""
    return public_id(rid, job_id)


# -- overview reads (the command line and the live view) -----------------------------------

#: One index descent per partial index: the smallest queue name after %(after)s that has a
#: job in that state (PostgreSQL answers min() from the index), so listing queues costs
#: O(queues * log jobs), not a scan of every job.
_NEXT_QUEUE = (
    "SELECT min(queue) FROM jobs WHERE state = 'waiting' AND queue > %(after)s",
    "SELECT min(queue) FROM jobs WHERE state = 'delayed' AND queue > %(after)s",
    "SELECT min(queue) FROM jobs WHERE state = 'active' AND queue > %(after)s",
    "SELECT min(queue) FROM jobs WHERE state IN ('completed', 'failed') AND queue > %(after)s",
)


def queue_names(store: PgStore) -> list[str]:
    """Return the names of every queue of the schema, sorted: queues with jobs, paused queues,
    queues with a repeat schedule and queues with a registered worker."""
    with store.read() as conn:
        return queue_names_in(conn, _NEXT_QUEUE)


def active_jobs(store: PgStore, queue: str, limit: int
                ) -> list[tuple[str, str, Any, float | None]]:
    """Return (id, name, progress, processed_on in epoch seconds) of up to *limit* active
    jobs of *queue*, longest-running first."""
    rows = store.query(
        "SELECT id, job_id, name, progress, processed_on_ms FROM jobs"
        " WHERE queue = %(q)s AND state = 'active' ORDER BY processed_on_ms, id LIMIT %(n)s",
        {"q": queue, "n": limit})
    return [(public_id(r[0], r[1]), r[2], json.loads(r[3]) if r[3] is not None else 0,
             None if r[4] is None else r[4] / 1000.0) for r in rows]


def count_events_after(store: PgStore, queue: str, event: str, cursor: int
                       ) -> tuple[int, int]:
    """Return how many *event* events of *queue* lie after *cursor*, and the cursor to pass
    next time (as :func:`events_after`: commit-order safe). ``cursor < 0`` only returns the
    next cursor."""
    with store.read() as conn:
        newest = int(conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
                                  ).fetchall()[0][0]) << _ID_BITS
        if cursor < 0:
            return 0, newest
        count = int(conn.execute(
            "SELECT count(*) FROM events WHERE queue = %(q)s AND event = %(e)s"
            " AND (xid, id) > (%(x)s::text::xid8, %(i)s) AND xid < %(n)s::text::xid8",
            {"q": queue, "e": event, "x": str(cursor >> _ID_BITS), "i": cursor & _ID_MASK,
             "n": str(newest >> _ID_BITS)}).fetchall()[0][0])
    return count, newest


def recent_events(store: PgStore, queue: str, event: str, limit: int, *,
                  window: int = 5000) -> list[tuple[str | None, Any, float]]:
    """Return (job id, data, time in epoch seconds) of the newest *limit* *event* events of
    *queue*, newest first, looking at the newest *window* events only (a bounded read)."""
    rows = store.query(
        "SELECT job_id, data, ts_ms FROM events WHERE id > (SELECT coalesce(max(id), 0)"
        " FROM events) - %(w)s AND queue = %(q)s AND event = %(e)s ORDER BY id DESC LIMIT %(n)s",
        {"w": window, "q": queue, "e": event, "n": limit})
    return [(r[0], json.loads(r[1]) if r[1] is not None else None, r[2] / 1000.0) for r in rows]
