"""Writes to one job outside its run: progress, logs, data, retry, promote and remove.

Part of :mod:`localq.transitions` (its docstring holds the state machine). A job running under
a live lock belongs to its worker: only that worker (with the lock token) may write to it,
and nobody else may remove it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidJobState, JobNotFound, LockError
from .outbox import emit
from .rows import TAIL, Row, note_deleted, public_id, take_seq

__all__ = ["add_log", "promote", "remove", "retry", "retry_failed", "set_progress",
           "update_data"]


def _writable(conn: Any, rowid: int, token: str | None, public: str, now_ms: int) -> Row:
    """Return (state, queue) of a job the caller may write to, else raise.

    With a *token* the job must be active and locked with it (fencing). Without one, an
    active job whose lock is still live belongs to its worker and is refused.
    """
    rows = conn.execute("SELECT state, lock_token, lock_expires_ms, queue FROM jobs WHERE id = :id",
                        {"id": rowid}).fetchall()
    return check_writable(rows[0] if rows else None, public, token, now_ms)


def check_writable(row: Row | None, public: str, token: str | None, now_ms: int) -> Row:
    """The guard of :func:`_writable` (both backends) on the job's (state, lock_token,
    lock_expires_ms, queue), None when the job is gone; returns (state, queue)."""
    if row is None:
        raise JobNotFound(public)
    state, lock_token, expires, queue = row
    if token is not None:
        if state != "active" or lock_token != token:
            raise LockError(f"job {public!r} is no longer locked by this queue (state {state}):"
                            " the write was refused", job_id=public, expected="active",
                            actual=state)
    elif state == "active" and expires is not None and expires >= now_ms:
        raise LockError(f"job {public!r} is active and locked by a worker: only that worker may"
                        " change it", job_id=public, expected="not active", actual=state)
    return state, queue


def set_progress(conn: Any, *, rowid: int, public: str, token: str | None, progress: str,
                 now_ms: int) -> None:
    """Store a job's progress. Guard: see :func:`_writable`. Emits: ``progress``."""
    _, queue = _writable(conn, rowid, token, public, now_ms)
    conn.execute("UPDATE jobs SET progress = :p WHERE id = :id", {"p": progress, "id": rowid})
    conn.execute("INSERT INTO events (queue, event, job_id, data, ts_ms)"
                 " VALUES (:q, 'progress', :j, :d, :t)",
                 {"q": queue, "j": public, "d": progress, "t": now_ms})


def add_log(conn: Any, *, rowid: int, public: str, token: str | None, row: str,
            now_ms: int) -> int:
    """Append a log row to a job. Guard: see :func:`_writable`.

    :returns: the number of log rows the job has now.
    """
    _writable(conn, rowid, token, public, now_ms)
    conn.execute("INSERT INTO job_logs (job, row) VALUES (:id, :row)", {"id": rowid, "row": row})
    return int(conn.execute("SELECT count(*) FROM job_logs WHERE job = :id",
                            {"id": rowid}).fetchall()[0][0])


def update_data(conn: Any, *, rowid: int, public: str, token: str | None, data: str,
                now_ms: int) -> None:
    """Replace a job's data (no merge, as in Bull). Guard: see :func:`_writable`."""
    _writable(conn, rowid, token, public, now_ms)
    conn.execute("UPDATE jobs SET data = :d WHERE id = :id", {"d": data, "id": rowid})


def retry(conn: Any, *, rowid: int, public: str, now_ms: int) -> None:
    """Re-queue a failed job (``attempts_made`` is kept, as in Bull).

    From: ``failed``. To: ``waiting``. Guard: state. Emits: ``waiting``.

    :raises InvalidJobState: the job is not failed.
    """
    rows = conn.execute(
        f"UPDATE jobs SET state = 'waiting', seq = {TAIL}, failed_reason = NULL,"
        " finished_on_ms = NULL, processed_on_ms = NULL WHERE id = :id AND state = 'failed'"
        " RETURNING queue", {"id": rowid, "tail": take_seq(conn)}).fetchall()
    if not rows:
        actual = _state(conn, rowid, public)
        raise InvalidJobState(f"job {public!r} is {actual}, not failed: only failed jobs can be"
                              " retried", job_id=public, expected="failed", actual=actual)
    emit(conn, rows[0][0], "waiting", public, None, now_ms)


def retry_failed(conn: Any, *, queue: str, count: int | None, now_ms: int) -> int:
    """Re-queue up to *count* failed jobs of *queue*, oldest failure first.

    From: ``failed``. To: ``waiting``. Emits: ``waiting`` each.

    :returns: how many were re-queued.
    """
    rows = conn.execute(
        "SELECT id, job_id FROM jobs WHERE queue = +:q AND state = 'failed'"
        " ORDER BY finished_on_ms, id LIMIT +:n",
        {"q": queue, "n": -1 if count is None else count}).fetchall()
    for rowid, job_id in rows:
        retry(conn, rowid=rowid, public=public_id(rowid, job_id), now_ms=now_ms)
    return len(rows)


def promote(conn: Any, *, rowid: int, public: str, now_ms: int) -> None:
    """Run a delayed job now.

    From: ``delayed``. To: ``waiting``. Guard: state. Emits: ``waiting``.

    :raises InvalidJobState: the job is not delayed.
    """
    rows = conn.execute(
        f"UPDATE jobs SET state = 'waiting', delay_ms = 0, seq = {TAIL}"
        " WHERE id = :id AND state = 'delayed' RETURNING queue",
        {"id": rowid, "tail": take_seq(conn)}).fetchall()
    if not rows:
        actual = _state(conn, rowid, public)
        raise InvalidJobState(f"job {public!r} is {actual}, not delayed: only delayed jobs can"
                              " be promoted", job_id=public, expected="delayed", actual=actual)
    emit(conn, rows[0][0], "waiting", public, None, now_ms)


def _state(conn: Any, rowid: int, public: str) -> str:
    rows = conn.execute("SELECT state FROM jobs WHERE id = :id", {"id": rowid}).fetchall()
    if not rows:
        raise JobNotFound(public)
    return str(rows[0][0])


def remove(conn: Any, *, rowid: int, public: str, token: str | None, now_ms: int) -> None:
    """Remove a job and its logs.

    From: any state but a live lock held by someone else. To: (gone). Emits: ``removed``.

    :raises LockError: the job is active and locked by a live worker.
    :raises JobNotFound: the job is gone.
    """
    rows = conn.execute("SELECT state, lock_token, lock_expires_ms, queue FROM jobs"
                        " WHERE id = :id", {"id": rowid}).fetchall()
    if not rows:
        raise JobNotFound(public)
    state, lock_token, expires, queue = rows[0]
    if state == "active" and lock_token != token and expires is not None and expires >= now_ms:
        raise LockError(f"job {public!r} is active and locked by a worker: wait for it to"
                        " finish, or stop that worker", job_id=public, expected="not active",
                        actual=state)
    conn.execute("DELETE FROM jobs WHERE id = :id", {"id": rowid})
    note_deleted(conn, rowid)
    emit(conn, queue, "removed", public, None, now_ms)
