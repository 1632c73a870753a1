"""Writes to a whole queue: clean, empty, delete, pause and resume; and housekeeping.

Part of :mod:`localq.transitions` (its docstring holds the state machine). Housekeeping: the
events table's trim, the ``drained`` event and the ``workers`` rows.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import InvalidJobState
from ..states import CLEAN_STATES
from .outbox import emit, emit_if_watched
from .rows import STATE_IS, note_deleted, public_id

__all__ = ["clean", "delete_queue", "empty", "note_drained", "pause", "register_worker",
           "resume", "trim_events", "unregister_workers"]



def clean(conn: Any, *, queue: str, state: str, before_ms: int, limit: int,
          now_ms: int) -> list[str]:
    """Remove jobs of *state* whose last time (finished, else processed, else created) is
    before *before_ms*; active jobs only when their lock has expired.

    :returns: the public ids removed.
    """
    if CLEAN_STATES[state] == "waiting":
        # As in get_jobs and get_job_counts, a queue's waiting jobs are in the "paused" state
        # while it is paused and in "waiting" otherwise, never in both.
        paused = bool(conn.execute("SELECT 1 FROM queues WHERE name = :q AND paused = 1",
                                   {"q": queue}).fetchall())
        if paused != (state == "paused"):
            return []
    params: dict[str, Any] = {"q": queue, "before": before_ms, "now": now_ms,
                              "n": limit if limit > 0 else -1}
    unlocked = " AND (lock_expires_ms IS NULL OR lock_expires_ms < :now)" if state == "active" else ""
    rows = conn.execute(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = +:q"
        f" AND {STATE_IS[CLEAN_STATES[state]]}"
        " AND coalesce(finished_on_ms, processed_on_ms, timestamp_ms) < +:before" + unlocked +
        " ORDER BY id LIMIT +:n) RETURNING id, job_id", params).fetchall()
    if rows:
        note_deleted(conn, max(r[0] for r in rows))
    return [public_id(r[0], r[1]) for r in rows]


def empty(conn: Any, *, queue: str) -> int:
    """Remove the waiting (and paused) and delayed jobs of *queue*, with their logs.

    :returns: how many jobs were removed.
    """
    rows = conn.execute("DELETE FROM jobs WHERE queue = :q AND state IN ('waiting', 'delayed')"
                        " RETURNING id", {"q": queue}).fetchall()
    if rows:
        note_deleted(conn, max(r[0] for r in rows))
    return len(rows)


def delete_queue(conn: Any, *, queue: str, force: bool, now_ms: int) -> int:
    """Remove everything of *queue*: jobs, logs, schedules, limiter window and pause flag.

    :raises InvalidJobState: jobs are active (with a live lock) and not *force*.
    :returns: how many jobs were removed.
    """
    if not force:
        active = conn.execute("SELECT count(*) FROM jobs WHERE queue = :q AND state = 'active'"
                              " AND lock_expires_ms >= :now", {"q": queue, "now": now_ms}
                              ).fetchall()[0][0]
        if active:
            raise InvalidJobState(f"queue {queue!r} has {active} active job(s): wait for them,"
                                  " or call obliterate(force=True)", expected="no active jobs",
                                  actual="active")
    rows = conn.execute("DELETE FROM jobs WHERE queue = :q RETURNING id", {"q": queue}).fetchall()
    if rows:
        note_deleted(conn, max(r[0] for r in rows))
    for sql in ("DELETE FROM repeats WHERE queue = :q", "DELETE FROM rate_starts WHERE queue = :q",
                "DELETE FROM queues WHERE name = :q"):
        conn.execute(sql, {"q": queue})
    return len(rows)


def pause(conn: Any, *, queue: str, now_ms: int) -> None:
    """Stop every process from taking jobs of *queue* (running jobs finish). Emits ``paused``."""
    conn.execute("INSERT INTO queues (name, paused) VALUES (:q, 1)"
                 " ON CONFLICT (name) DO UPDATE SET paused = 1", {"q": queue})
    emit(conn, queue, "paused", None, None, now_ms)


def resume(conn: Any, *, queue: str, now_ms: int) -> None:
    """Let processes take jobs of *queue* again. Emits ``resumed``."""
    conn.execute("UPDATE queues SET paused = 0 WHERE name = :q", {"q": queue})
    emit(conn, queue, "resumed", None, None, now_ms)


def trim_events(conn: Any, *, keep: int) -> int:
    """Delete all but the newest *keep* events (never the newest, so ids are not reused).

    :returns: how many rows were deleted.
    """
    conn.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - :keep",
                 {"keep": keep})
    return int(conn.changes())


def note_drained(conn: Any, *, queue: str, now_ms: int) -> None:
    """Record that a worker of *queue* found nothing to do after having worked.

    Emits ``drained``, while a process listens (as ``waiting`` and ``active``): a worker
    kept just busy by a producer drains the queue after nearly every job.
    """
    emit_if_watched(conn, queue, "drained", None, now_ms)


def register_worker(conn: Any, *, worker_id: str, queue: str, pid: int, host: str,
                    lease: str, concurrency: int, now_ms: int) -> None:
    """Add (or refresh) a ``workers`` row: the worker of *queue* alive as long as *lease* is."""
    conn.execute(
        "INSERT OR REPLACE INTO workers (id, queue, pid, host, started_ms, concurrency, lease)"
        " VALUES (:id, :q, :pid, :host, :now, :c, :lease)",
        {"id": worker_id, "q": queue, "pid": pid, "host": host, "now": now_ms,
         "c": concurrency, "lease": lease})


def unregister_workers(conn: Any, *, worker_ids: Sequence[str] = (),
                       leases: Sequence[str] = ()) -> int:
    """Delete the ``workers`` rows of *worker_ids* and of every worker of *leases* (dead ones).

    :returns: how many rows were deleted.
    """
    n = 0
    for wid in worker_ids:
        n += len(conn.execute("DELETE FROM workers WHERE id = :id RETURNING id",
                              {"id": wid}).fetchall())
    for lease in leases:
        n += len(conn.execute("DELETE FROM workers WHERE lease = :l RETURNING id",
                              {"l": lease}).fetchall())
    return n
