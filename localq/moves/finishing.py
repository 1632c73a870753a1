"""Moves out of ``active``: completed, failed (or retried), stalled and released jobs.

Part of :mod:`localq.transitions` (its docstring holds the state machine). Each move matches
the row's state and lock token; when nothing matched, the row is looked up and the precise
error raised. Retention (``remove_on_complete`` / ``remove_on_fail``) runs in the same
transaction.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from ..errors import InvalidJobState, JobNotFound, LockError
from .occurrences import schedule_removed
from .outbox import emit
from .rows import STATE_IS, TAIL, Row, next_id, note_deleted, public_id, take_seq

__all__ = ["REMOVED_SCHEDULE_REASON", "STALLED_REASON", "move_to_completed", "move_to_failed",
           "recover_stalled", "release"]

STALLED_REASON = "job stalled more than allowable limit"
REMOVED_SCHEDULE_REASON = "stalled after its repeat schedule was removed: not run again"


def _locked_row(conn: Any, rowid: int, token: str | None, public: str) -> Row:
    """Return (state, lock_token, attempts_made, stacktrace, opts, queue, job_id) of an active job
    held with *token* (any holder when *token* is None), else raise the precise error."""
    rows = conn.execute(
        "SELECT state, lock_token, attempts_made, stacktrace, opts, queue, job_id"
        " FROM jobs WHERE id = :id", {"id": rowid}).fetchall()
    if not rows:
        raise JobNotFound(public)
    row: Row = rows[0]
    if row[0] != "active":
        if token is not None:
            raise LockError(f"job {public!r} is {row[0]}, no longer locked by this queue"
                            " (its lock was lost, e.g. it stalled and was taken back)",
                            job_id=public, expected="active", actual=row[0])
        raise InvalidJobState(f"job {public!r} is {row[0]}, not active",
                              job_id=public, expected="active", actual=row[0])
    if token is not None and row[1] != token:
        raise LockError(f"job {public!r} is locked by another worker (this queue's lock on it"
                        " was lost): its result was not recorded", job_id=public,
                        expected="active", actual="active")
    return row


def _retain(conn: Any, queue: str, state: str, policy: Any, now_ms: int, rowid: int) -> bool:
    """Apply remove_on_complete / remove_on_fail after *rowid* reached *state*.

    :returns: whether *rowid* itself was removed.
    """
    if policy is False or policy is None:
        return False
    if policy is True:
        conn.execute("DELETE FROM jobs WHERE id = :id", {"id": rowid})
        note_deleted(conn, rowid)
        return True
    params: dict[str, Any] = {"q": queue}
    doomed: list[int] = []
    # The state is spelled out (it is 'completed' or 'failed'): as a parameter the statement
    # would be compiled again at every run (see the note on +:param at _pick_sql).
    where = f"queue = +:q AND {STATE_IS[state]}"
    if isinstance(policy, dict) and "age" in policy:
        params["before"] = now_ms - int(policy["age"] * 1000)
        doomed += [r[0] for r in conn.execute(
            f"SELECT id FROM jobs WHERE {where} AND finished_on_ms < :before",
            params).fetchall()]
    count = policy.get("count") if isinstance(policy, dict) else policy
    if count is not None:
        params["keep"] = int(count)
        doomed += [r[0] for r in conn.execute(
            f"SELECT id FROM jobs WHERE {where}"
            " ORDER BY finished_on_ms DESC, id DESC LIMIT -1 OFFSET +:keep", params).fetchall()]
    if doomed:
        conn.executemany("DELETE FROM jobs WHERE id = :id", [{"id": i} for i in set(doomed)])
        note_deleted(conn, max(doomed))
    return rowid in doomed


def move_to_completed(conn: Any, *, rowid: int, public: str, token: str | None,
                      returnvalue: str, now_ms: int) -> None:
    """Record a job's result.

    From: ``active``. To: ``completed`` (or removed by ``remove_on_complete``).
    Guard: ``state = 'active'`` and, unless *token* is None (ignore_lock), the lock token.
    Emits: ``completed`` with the result (written even when the row is removed, so that
    ``job.finished()`` still answers).

    :raises LockError: the lock is not held with *token*.
    :raises InvalidJobState: the job is not active (ignore_lock).
    :raises JobNotFound: the job is gone.
    """
    conn.execute(_COMPLETE_IGNORING_LOCK if token is None else _COMPLETE,
                 {"rv": returnvalue, "now": now_ms, "id": rowid, "token": token})
    if not conn.changes():
        _locked_row(conn, rowid, token, public)  # raises the precise error
        raise AssertionError("unreachable: the guard matched nothing but the row is held")
    # Nearly every job has no retention rule: then the event row, taking the queue from the
    # job's row, is all that is left (one statement where a read and an insert were).
    conn.execute(_COMPLETED_EVENT_UNLESS_RETAINED,
                 {"j": public, "d": returnvalue, "t": now_ms, "id": rowid})
    if conn.changes():
        return
    # Read back rather than RETURNING (a temporary table per statement in SQLite).
    queue, opts_text = conn.execute("SELECT queue, opts FROM jobs WHERE id = :id",
                                    {"id": rowid}).fetchall()[0]
    opts = json.loads(opts_text) if opts_text != "{}" else {}
    conn.execute(
        "INSERT INTO events (queue, event, job_id, data, ts_ms)"
        " VALUES (:q, 'completed', :j, :d, :t)",
        {"q": queue, "j": public, "d": returnvalue, "t": now_ms})
    _retain(conn, queue, "completed", opts.get("remove_on_complete", False), now_ms, rowid)


#: The ``completed`` event of a job whose stored options name no ``remove_on_complete``
#: (a text search: a false match only takes the general path).
_COMPLETED_EVENT_UNLESS_RETAINED = (
    "INSERT INTO events (queue, event, job_id, data, ts_ms)"
    " SELECT queue, 'completed', :j, :d, :t FROM jobs"
    " WHERE id = :id AND instr(opts, '\"remove_on_complete\"') = 0")
_COMPLETE_IGNORING_LOCK = (
    "UPDATE jobs SET state = 'completed', returnvalue = :rv, finished_on_ms = :now,"
    " lock_token = NULL, lock_owner = NULL, lock_expires_ms = NULL"
    " WHERE id = :id AND state = 'active'")
_COMPLETE = (
    "UPDATE jobs SET state = 'completed', returnvalue = :rv, finished_on_ms = :now,"
    " lock_token = NULL, lock_owner = NULL, lock_expires_ms = NULL"
    " WHERE id = :id AND state = 'active' AND lock_token = :token")


def move_to_failed(conn: Any, *, rowid: int, public: str, token: str | None, reason: str,
                   stack: str | None, retry_delay_ms: int | None, now_ms: int) -> str:
    """Record a failed attempt; retry it (now or after a backoff) or fail it for good.

    From: ``active``. To: ``waiting`` (attempts left, no delay), ``delayed`` (attempts left,
    *retry_delay_ms* > 0) or ``failed`` (no attempts left, or *retry_delay_ms* is None: discarded,
    unrecoverable, or backoff said -1; or a repeat occurrence whose schedule was removed).
    Guard: as :func:`move_to_completed`.
    Emits: ``failed`` (every attempt, as in Bull) and then ``waiting`` / ``delayed`` on a retry.

    :returns: the state the job is in now (``"failed"`` also when retention removed it).
    """
    row = _locked_row(conn, rowid, token, public)
    attempts_made, opts, queue = row[2] + 1, json.loads(row[4]), row[5]
    state, run_at, finished, stacktrace = attempt_outcome(
        row[3], opts, stack=stack, attempts_made=attempts_made, retry_delay_ms=retry_delay_ms,
        schedule_removed=lambda: schedule_removed(conn, queue, opts), now_ms=now_ms)
    # Only a job going straight back to waiting needs a new position (delayed ones get
    # theirs when promoted).
    conn.execute(
        f"UPDATE jobs SET state = :state, attempts_made = :made, failed_reason = :reason,"
        f" stacktrace = :st, run_at_ms = :run_at, delay_ms = :delay, finished_on_ms = :fin,"
        f" seq = CASE WHEN :tail IS NULL THEN seq ELSE {TAIL} END, lock_token = NULL,"
        f" lock_owner = NULL, lock_expires_ms = NULL WHERE id = :id",
        {"state": state, "made": attempts_made, "reason": reason, "st": json.dumps(stacktrace),
         "run_at": run_at, "delay": retry_delay_ms or 0, "fin": finished, "id": rowid,
         "tail": take_seq(conn) if state == "waiting" else None})
    emit(conn, queue, "failed", public, reason, now_ms)
    if state == "failed":
        _retain(conn, queue, "failed", opts.get("remove_on_fail", False), now_ms, rowid)
    elif state == "delayed":
        emit(conn, queue, "delayed", public, run_at / 1000.0, now_ms)
    else:
        emit(conn, queue, "waiting", public, None, now_ms)
    return state


def attempt_outcome(stored_stacktrace: str | None, opts: dict[str, Any], *, stack: str | None,
                    attempts_made: int, retry_delay_ms: int | None,
                    schedule_removed: Callable[[], bool], now_ms: int,
                    ) -> tuple[str, int, int | None, list[str]]:
    """Decide where a failed attempt goes (both backends' ``move_to_failed``).

    :param stored_stacktrace: the job's stack traces as stored (JSON list, or empty).
    :param attempts_made: the attempts made, this one included.
    :param schedule_removed: whether the job is a repeat occurrence whose schedule is gone
        (asked only when a retry is otherwise due).
    :returns: the new state, ``run_at_ms``, ``finished_on_ms`` and the stack traces to store
        (*stack* appended, cut to ``stack_trace_limit``).
    """
    stacktrace = json.loads(stored_stacktrace) if stored_stacktrace else []
    limit = opts.get("stack_trace_limit")
    if stack is not None and limit != 0:
        stacktrace.append(stack)
        if limit is not None:
            stacktrace = stacktrace[-limit:]
    retry = (retry_delay_ms is not None and attempts_made < opts.get("attempts", 1)
             and not schedule_removed())
    if not retry:
        return "failed", 0, now_ms, stacktrace
    if retry_delay_ms:
        return "delayed", now_ms + retry_delay_ms, None, stacktrace
    return "waiting", 0, None, stacktrace


def recover_stalled(conn: Any, *, queue: str, now_ms: int, dead_owners: Sequence[str],
                    max_stalled_count: int, check_expired: bool = True) -> list[tuple[str, str]]:
    """Take back active jobs whose lock expired or whose owner process is gone.

    From: ``active``. To: the head of ``waiting`` (``stalled_count + 1``), or ``failed`` with
    "job stalled more than allowable limit" past *max_stalled_count* (attempts ignored, as
    in Bull; ``remove_on_fail`` applies). Guard: ``lock_expires_ms < now_ms`` (unless
    *check_expired* is False) or ``lock_owner`` in *dead_owners*. Emits: ``stalled``, and
    ``failed`` for those failed. A repeat occurrence whose schedule was removed fails (removal
    promises no run after it). Idempotent: a job taken back is no longer active, so a second
    run skips it.

    :returns: (public id, new state) of each job taken back.
    """
    params: dict[str, Any] = {"q": queue, "now": now_ms}
    marks = []
    for i, owner in enumerate(dead_owners):
        params[f"o{i}"] = owner
        marks.append(f":o{i}")
    rules = ["lock_expires_ms < :now"] if check_expired else []
    if marks:
        rules.append(f"lock_owner IN ({', '.join(marks)})")
    if not rules:
        return []
    rows = conn.execute(
        "SELECT id, job_id, stalled_count, opts FROM jobs WHERE queue = +:q AND state = 'active'"
        # Newest first: each goes to the head of waiting, so they run again oldest first.
        f" AND ({' OR '.join(rules)}) ORDER BY id DESC", params).fetchall()
    out = []
    for rowid, job_id, stalled, opts_text in rows:
        public = public_id(rowid, job_id)
        stalled += 1
        emit(conn, queue, "stalled", public, None, now_ms)
        opts = json.loads(opts_text)
        reason = (STALLED_REASON if stalled > max_stalled_count else
                  REMOVED_SCHEDULE_REASON if schedule_removed(conn, queue, opts) else None)
        if reason is not None:
            conn.execute(
                "UPDATE jobs SET state = 'failed', stalled_count = :n, failed_reason = :r,"
                " finished_on_ms = :now, lock_token = NULL, lock_owner = NULL,"
                " lock_expires_ms = NULL WHERE id = :id",
                {"n": stalled, "r": reason, "now": now_ms, "id": rowid})
            emit(conn, queue, "failed", public, reason, now_ms)
            _retain(conn, queue, "failed", opts.get("remove_on_fail", False), now_ms, rowid)
            out.append((public, "failed"))
        else:
            # Bull puts a stalled job back at the head of the wait list.
            conn.execute(
                "UPDATE jobs SET state = 'waiting', stalled_count = :n, seq = -:tail,"
                " lock_token = NULL, lock_owner = NULL, lock_expires_ms = NULL WHERE id = :id",
                {"n": stalled, "tail": take_seq(conn), "id": rowid})
            emit(conn, queue, "waiting", public, None, now_ms)
            out.append((public, "waiting"))
    return out


def release(conn: Any, *, rowid: int, public: str, token: str, now_ms: int) -> bool:
    """Give an active job back unfinished (a worker closing past its timeout): it runs next.

    From: ``active``. To: the head of ``waiting``; attempts and stalled count unchanged.
    Guard: token. Emits: ``waiting``.

    :returns: whether the job was released (False: the lock was already lost).
    """
    rows = conn.execute(
        "UPDATE jobs SET state = 'waiting', seq = -:tail, lock_token = NULL, lock_owner = NULL,"
        " lock_expires_ms = NULL WHERE id = :id AND state = 'active' AND lock_token = :token"
        " RETURNING queue", {"tail": next_id(conn), "id": rowid, "token": token}).fetchall()
    if rows:
        emit(conn, rows[0][0], "waiting", public, None, now_ms)
    return bool(rows)
