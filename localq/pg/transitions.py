"""Every change of a job row on PostgreSQL: the twin of :mod:`localq.transitions`.

Same functions, keyword arguments, return values, errors, state machine and events as the
SQLite module (its docstring holds the table); only the SQL differs. What PostgreSQL needs:

* Transactions run at READ COMMITTED with many writers at once (no ``BEGIN IMMEDIATE``
  lock), so a move that reads a row before writing it locks the row first
  (``FOR NO KEY UPDATE``: it does not block foreign-key checks of ``job_logs``), and a move
  that picks rows (claim, promotion, stalled recovery, retention, clean) uses
  ``FOR UPDATE SKIP LOCKED``: two claimers never get the same job and never wait for each
  other; a row another transaction is deleting is left to it (no deadlock between two
  retention sweeps). Guarded ``UPDATE``\\s re-check their guard on the newest row version.
* The claim, a completion and an add are one statement each (data-modifying CTEs write the
  job and its event together), so a transition costs one round trip plus BEGIN/COMMIT.
  The hot ones need no BEGIN/COMMIT at all: :func:`complete_and_fetch` and
  :func:`fetch_next` (:mod:`localq.pg.finish`) run the claim, the completion, or both, as
  one statement that is its own transaction, through a server-side function; a batch of
  adds is one statement (:func:`add_jobs`, :mod:`localq.pg.bulk`).
* Every transition that makes a job runnable or writes an event calls ``pg_notify`` on the
  schema's channel in the same statement: delivered at commit, folded when repeated inside
  one transaction, never delivered for a rolled-back change. Claims and lock renewals do not
  notify (nothing waits for them), which keeps NOTIFY's commit-time lock off the hot path.
* Ids come from sequences (never reused), queue positions from ``job_seq``; the ``rowid``
  argument of :func:`add_job` is accepted for interface parity and ignored.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable, Sequence

from ..errors import InvalidJobState, JobNotFound, LockError
from .errors import guard_error
from .bulk import add_jobs
from .finish import complete_and_fetch, fetch_next
from ..limiter import RateLimit
from ..options import NO_PRIORITY
from ..states import CLEAN_STATES
from ..moves.finishing import attempt_outcome
from ..moves.job_admin import check_writable
from ..moves.occurrences import occurrence_fields, occurrence_id, occurrence_prefix
from ..transitions import auto_rowid
from ._sql import J_COLUMNS as _J_COLUMNS
from ._sql import JOB_COLUMNS, WATCHED, Row, emit, public_id
from ._sql import NOTIFY as _NOTIFY
from ._sql import emit_many as _emit_many
from ._sql import note as _note
from ._sql import rows as _rows
from .limiter import group_filter, lock_limiter, record_start

__all__ = [
    "JOB_COLUMNS", "REMOVED_SCHEDULE_REASON", "STALLED_REASON", "add_job", "add_jobs",
    "add_log", "auto_rowid", "claim", "clean", "complete_and_fetch", "create_occurrence",
    "delete_queue", "emit", "empty", "extend_locks", "fetch_next", "lock_for_claim",
    "move_to_completed", "move_to_failed", "next_rowid", "note_drained", "occurrence_id",
    "pause", "promote", "promote_due", "public_id", "recover_stalled", "register_worker",
    "release", "remove", "remove_occurrences", "resume", "retry", "retry_failed", "rowid_of",
    "set_progress", "trim_events", "unregister_workers", "update_data", "watch_queue",
]

STALLED_REASON = "job stalled more than allowable limit"
REMOVED_SCHEDULE_REASON = "stalled after its repeat schedule was removed: not run again"

#: A new queue position from job_seq, negated for LIFO jobs (evaluated per row).
_TAIL = ("(CASE WHEN j.opts::jsonb @> '{\"lifo\": true}' THEN -1 ELSE 1 END)"
         " * nextval('job_seq')")


def rowid_of(conn: Any, queue: str, job_id: str) -> int | None:
    """Return the row number of job *job_id* of *queue*, or ``None``."""
    auto = auto_rowid(job_id)
    if auto is not None:
        if auto >= 2**63:
            return None
        rows = _rows(conn, "SELECT id FROM jobs WHERE id = %(id)s AND queue = %(q)s"
                     " AND job_id IS NULL", {"id": auto, "q": queue})
    else:
        rows = _rows(conn, "SELECT id FROM jobs WHERE queue = %(q)s AND job_id = %(j)s",
                     {"q": queue, "j": job_id})
    return int(rows[0][0]) if rows else None


#: Whether someone listens to the queue's global events (see watch_queue).
_WATCHED = WATCHED


def watch_queue(conn: Any, *, queue: str, until_ms: int) -> None:
    """Ask writers to record every event of *queue* until *until_ms* (wall clock)."""
    conn.execute("INSERT INTO queues (name, watch_until_ms) VALUES (%(q)s, %(u)s)"
                 " ON CONFLICT (name) DO UPDATE"
                 " SET watch_until_ms = greatest(queues.watch_until_ms, excluded.watch_until_ms)",
                 {"q": queue, "u": until_ms})


def _locked_row(conn: Any, rowid: int, token: str | None, public: str) -> Row:
    """Lock and return (state, lock_token, attempts_made, stacktrace, opts, queue, job_id) of
    an active job held with *token* (any holder when *token* is None), else raise."""
    rows = _rows(conn, "SELECT state, lock_token, attempts_made, stacktrace, opts, queue, job_id"
                 " FROM jobs WHERE id = %(id)s FOR NO KEY UPDATE", {"id": rowid})
    if not rows:
        raise guard_error(public, token, None)
    row = rows[0]
    if row[0] != "active" or (token is not None and row[1] != token):
        raise guard_error(public, token, row[0])
    return row


# -- producing ----------------------------------------------------------------------------

_INSERT = (
    "WITH src AS (SELECT nextval('job_seq') AS n),"
    " j AS (INSERT INTO jobs (queue, job_id, name, data, opts, state, priority, seq,"
    "  timestamp_ms, delay_ms, run_at_ms, repeat_key)"
    "  SELECT %(q)s, %(job_id)s, %(name)s, %(data)s, %(opts)s, %(state)s, %(priority)s,"
    "   CASE WHEN %(lifo)s THEN -n ELSE n END, %(ts)s, %(delay)s, %(run_at)s, %(rk)s FROM src"
    "  {guard} {conflict} RETURNING " + JOB_COLUMNS + "),"
    " ev AS (INSERT INTO events (queue, event, job_id, data, ts_ms)"
    "  SELECT %(q)s, %(event)s, coalesce(j.job_id, j.id::text), %(edata)s, %(now)s FROM j"
    "  WHERE %(event)s = 'delayed' OR " + _WATCHED + ")"
    " SELECT " + _J_COLUMNS + ", " + _NOTIFY + " FROM j"
)


def add_job(conn: Any, *, queue: str, name: str, data: str, opts: dict[str, Any],
            stored_opts: str, job_id: str | None, priority: int | None, delay_ms: int,
            lifo: bool, timestamp_ms: int, now_ms: int, repeat_key: str | None = None,
            rowid: int | None = None) -> tuple[Row, bool]:
    """Insert one job, unless its custom id exists (one statement: job, event, NOTIFY).

    From: (new). To: ``delayed`` if *delay_ms* > 0, else ``waiting``.
    Guard: a custom *job_id* already in the queue adds nothing (``ON CONFLICT``: two
    concurrent adds of one id make one job). Emits: ``delayed`` (with the due time) or
    ``waiting`` (only while someone listens, as on SQLite); notifies in both cases.

    :param rowid: ignored (ids come from the identity sequence).
    :returns: the job's row and whether it was inserted (False: the existing job's row).
    """
    state = "delayed" if delay_ms > 0 else "waiting"
    params = {
        "q": queue, "job_id": job_id, "name": name, "data": data, "opts": stored_opts,
        "state": state, "priority": NO_PRIORITY if priority is None else priority,
        "lifo": lifo, "ts": timestamp_ms, "delay": delay_ms, "run_at": now_ms + delay_ms,
        "rk": repeat_key, "now": now_ms, "event": state, "wall": int(time.time() * 1000),
        "edata": json.dumps((now_ms + delay_ms) / 1000.0) if state == "delayed" else None,
        "note": _note(queue, state == "delayed"),
    }
    # A custom id that exists adds nothing. Checked before the insert too: a conflicting
    # INSERT would still draw an identity value, leaving a gap in the automatic ids.
    guard, conflict = (("WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE queue = %(q)s"
                        " AND job_id = %(job_id)s)",
                        "ON CONFLICT (queue, job_id) WHERE job_id IS NOT NULL DO NOTHING")
                       if job_id is not None else ("", ""))
    sql = _INSERT.format(guard=guard, conflict=conflict)
    for _ in range(3):
        rows = _rows(conn, sql, params)
        if rows:
            return rows[0][:-1], True
        # The custom id exists (committed, or committed while we waited for its insert).
        rows = _rows(conn, f"SELECT {JOB_COLUMNS} FROM jobs WHERE queue = %(q)s"
                     " AND job_id = %(j)s", {"q": queue, "j": job_id})
        if rows:
            return rows[0], False
    raise AssertionError(f"job id {job_id!r} kept appearing and vanishing")  # pragma: no cover


def next_rowid(conn: Any) -> int:
    """Return 0: on PostgreSQL :func:`add_job` takes ids from the sequence itself (``add_bulk``
    passes this value back and it is ignored)."""
    return 0


# -- taking jobs --------------------------------------------------------------------------

_PROMOTE = (
    "WITH due AS (SELECT id, run_at_ms FROM jobs WHERE queue = %(q)s AND state = 'delayed'"
    "  AND run_at_ms <= %(now)s ORDER BY run_at_ms, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
    # one position each, in due order: jobs due earlier run earlier, as in Bull
    " pos AS (SELECT id, nextval('job_seq') AS p FROM (SELECT id FROM due"
    "  ORDER BY run_at_ms, id) AS d),"
    " upd AS (UPDATE jobs j SET state = 'waiting', delay_ms = 0,"
    "  seq = (CASE WHEN j.opts::jsonb @> '{\"lifo\": true}' THEN -1 ELSE 1 END) * pos.p"
    "  FROM pos WHERE j.id = pos.id RETURNING j.id, j.job_id, pos.p),"
    " ev AS (INSERT INTO events (queue, event, job_id, data, ts_ms)"
    "  SELECT %(q)s, 'waiting', coalesce(job_id, id::text), NULL, %(now)s FROM"
    "  (SELECT * FROM upd ORDER BY p) AS u)"
    " SELECT id, job_id, " + _NOTIFY + " FROM upd ORDER BY p"
)


def promote_due(conn: Any, *, queue: str, now_ms: int, limit: int = 1000) -> list[str]:
    """Move due delayed jobs of *queue* to the tail of waiting (head for LIFO jobs).

    From: ``delayed``. To: ``waiting``. Guard: ``run_at_ms <= now_ms``. Emits: ``waiting``.
    Idempotent: two schedulers running it at once promote each job once (SKIP LOCKED).

    :returns: the public ids of the promoted jobs.
    """
    rows = _rows(conn, _PROMOTE, {"q": queue, "now": now_ms, "limit": limit,
                                  "note": _note(queue)})
    return [public_id(r[0], r[1]) for r in rows]


def claim(conn: Any, *, queue: str, token: str, owner: str, lock_ms: int, now_ms: int,
          names: Sequence[str] | None = None, limit: RateLimit | None = None) -> Row | None:
    """Lock the next runnable job of *queue* for *token* (promoting due delayed jobs first).

    From: ``waiting``. To: ``active``. Guard: the queue is not paused; the job's name is in
    *names* (any name when None); the rate *limit* has room for the job's group. Emits:
    ``active`` (only while someone listens). ``FOR UPDATE SKIP LOCKED`` in a ``MATERIALIZED``
    CTE: concurrent claimers take different jobs, and the planner cannot re-run the LIMIT
    subquery and lock more rows than it claims (Oban #4, queue_classic #320).

    :returns: the claimed job's row, or None when nothing is runnable now.
    """
    promote_due(conn, queue=queue, now_ms=now_ms)
    params: dict[str, Any] = {"q": queue, "token": token, "owner": owner,
                              "expires": now_ms + lock_ms, "now": now_ms,
                              "wall": int(time.time() * 1000)}
    where = ""
    if names is not None:
        params["names"] = list(names)
        where = " AND name = ANY(%(names)s::text[])"
    if limit is not None:
        groups = group_filter(conn, limit, queue, now_ms, params)
        if groups is None:
            return None
        where += groups
    rows = _rows(conn, (
        "WITH next AS MATERIALIZED (SELECT id FROM jobs WHERE queue = %(q)s"
        "  AND state = 'waiting'" + where +
        "  AND NOT EXISTS (SELECT 1 FROM queues WHERE name = %(q)s AND paused = 1)"
        "  ORDER BY priority, seq, id LIMIT 1 FOR UPDATE SKIP LOCKED),"
        " j AS (UPDATE jobs j SET state = 'active', lock_token = %(token)s,"
        "  lock_owner = %(owner)s, lock_expires_ms = %(expires)s, processed_on_ms = %(now)s"
        "  FROM next WHERE j.id = next.id RETURNING " + _J_COLUMNS + "),"
        " ev AS (INSERT INTO events (queue, event, job_id, data, ts_ms)"
        "  SELECT %(q)s, 'active', coalesce(j.job_id, j.id::text), NULL, %(now)s FROM j"
        "  WHERE " + _WATCHED + ")"
        " SELECT * FROM j"), params)
    if not rows:
        return None
    row = rows[0]
    if limit is not None:
        record_start(conn, limit, queue, row[0], now_ms)
    if '"repeat":' in row[4]:  # a repeat occurrence: its schedule's next one, if due
        repeat = json.loads(row[4]).get("repeat")
        if isinstance(repeat, dict) and isinstance(repeat.get("key"), str):
            from .repeats import advance  # repeats builds on this module
            advance(conn, queue=queue, key=repeat["key"], now_ms=now_ms)
    return row


def lock_for_claim(conn: Any, *, queue: str, limit: RateLimit | None) -> None:
    """Take the locks a claim of *queue* needs before the caller reads the clock: on a queue
    with a rate limiter, the limiter's transaction lock, so that limited claims commit in the
    order of their clock readings (SQLite's write lock gives that to every claim)."""
    if limit is not None:
        lock_limiter(conn, queue)


def extend_locks(conn: Any, *, locks: Iterable[tuple[int, str]], lock_ms: int,
                 now_ms: int) -> list[int]:
    """Push the lock expiry of each (rowid, token) forward, in one statement (a HOT update:
    no index covers ``lock_expires_ms``).

    From/To: ``active``. Guard: token. Emits: nothing.

    :returns: the rowids whose lock was lost (not active any more, or another token).
    """
    pairs = list(locks)
    if not pairs:
        return []
    kept = {r[0] for r in _rows(
        conn, "UPDATE jobs j SET lock_expires_ms = %(exp)s FROM unnest(%(ids)s::bigint[],"
        " %(tokens)s::text[]) AS l(id, token) WHERE j.id = l.id AND j.state = 'active'"
        " AND j.lock_token = l.token RETURNING j.id",
        {"exp": now_ms + lock_ms, "ids": [p[0] for p in pairs], "tokens": [p[1] for p in pairs]})}
    return [rowid for rowid, _ in pairs if rowid not in kept]


# -- finishing ----------------------------------------------------------------------------

def _retain(conn: Any, queue: str, state: str, policy: Any, now_ms: int, rowid: int) -> bool:
    """Apply remove_on_complete / remove_on_fail after *rowid* reached *state*.

    Rows another transaction holds are skipped (SKIP LOCKED): that transaction is finishing
    or removing them, and the next sweep sees them; two sweeps never deadlock.

    :returns: whether *rowid* itself was removed.
    """
    if policy is False or policy is None:
        return False
    if policy is True:
        conn.execute("DELETE FROM jobs WHERE id = %(id)s", {"id": rowid})
        return True
    params: dict[str, Any] = {"q": queue, "s": state}
    doomed: set[int] = set()
    if isinstance(policy, dict) and "age" in policy:
        params["before"] = now_ms - int(policy["age"] * 1000)
        doomed.update(r[0] for r in _rows(
            conn, "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = %(q)s"
            " AND state = %(s)s AND finished_on_ms < %(before)s FOR UPDATE SKIP LOCKED)"
            " RETURNING id", params))
    count = policy.get("count") if isinstance(policy, dict) else policy
    if count is not None:
        params["keep"] = int(count)
        doomed.update(r[0] for r in _rows(
            conn, "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = %(q)s"
            " AND state = %(s)s ORDER BY finished_on_ms DESC, id DESC OFFSET %(keep)s"
            " FOR UPDATE SKIP LOCKED) RETURNING id", params))
    return rowid in doomed


def move_to_completed(conn: Any, *, rowid: int, public: str, token: str | None,
                      returnvalue: str, now_ms: int) -> None:
    """Record a job's result (one statement: guarded update, event, NOTIFY).

    From: ``active``. To: ``completed`` (or removed by ``remove_on_complete``).
    Guard: ``state = 'active'`` and, unless *token* is None (ignore_lock), the lock token.
    Emits: ``completed`` with the result (written even when the row is removed, so that
    ``job.finished()`` still answers).

    :raises LockError: the lock is not held with *token*.
    :raises InvalidJobState: the job is not active (ignore_lock).
    :raises JobNotFound: the job is gone.
    """
    guard = "" if token is None else " AND lock_token = %(token)s"
    done = _rows(conn, (
        "WITH d AS (UPDATE jobs SET state = 'completed', returnvalue = %(rv)s,"
        "  finished_on_ms = %(now)s, lock_token = NULL, lock_owner = NULL,"
        "  lock_expires_ms = NULL WHERE id = %(id)s AND state = 'active'" + guard +
        "  RETURNING queue, opts),"
        " ev AS (INSERT INTO events (queue, event, job_id, data, ts_ms)"
        "  SELECT d.queue, 'completed', %(public)s, %(rv)s, %(now)s FROM d)"
        " SELECT d.queue, d.opts, pg_notify('localq_' || current_schema(), 'c:' || d.queue) FROM d"),
        {"rv": returnvalue, "now": now_ms, "id": rowid, "token": token, "public": public})
    if not done:
        _locked_row(conn, rowid, token, public)  # raises the precise error
        raise AssertionError("unreachable: the guard matched nothing but the row is held")
    queue, opts_text = done[0][0], done[0][1]
    if opts_text != "{}":
        _retain(conn, queue, "completed", json.loads(opts_text).get("remove_on_complete", False),
                now_ms, rowid)


def move_to_failed(conn: Any, *, rowid: int, public: str, token: str | None, reason: str,
                   stack: str | None, retry_delay_ms: int | None, now_ms: int) -> str:
    """Record a failed attempt; retry it (now or after a backoff) or fail it for good.

    From: ``active``. To: ``waiting`` (attempts left, no delay; a new queue position),
    ``delayed`` (attempts left, *retry_delay_ms* > 0) or ``failed`` (no attempts left, or
    *retry_delay_ms* is None). Guard: as :func:`move_to_completed` (the row is locked first).
    Emits: ``failed`` (every attempt, as in Bull) and then ``waiting`` / ``delayed`` on a retry.

    :returns: the state the job is in now (``"failed"`` also when retention removed it).
    """
    row = _locked_row(conn, rowid, token, public)
    attempts_made, opts, queue = row[2] + 1, json.loads(row[4]), row[5]
    state, run_at, finished, stacktrace = attempt_outcome(
        row[3], opts, stack=stack, attempts_made=attempts_made, retry_delay_ms=retry_delay_ms,
        schedule_removed=lambda: _schedule_removed(conn, queue, opts), now_ms=now_ms)
    # Only a job going straight back to waiting takes a new position (delayed ones get theirs
    # when promoted).
    conn.execute(
        "UPDATE jobs j SET state = %(state)s, attempts_made = %(made)s, failed_reason = %(reason)s,"
        " stacktrace = %(st)s, run_at_ms = %(run_at)s, delay_ms = %(delay)s,"
        " finished_on_ms = %(fin)s::bigint, lock_token = NULL, lock_owner = NULL,"
        f" lock_expires_ms = NULL, seq = CASE WHEN %(requeue)s THEN {_TAIL} ELSE j.seq END"
        " WHERE id = %(id)s",
        {"state": state, "made": attempts_made, "reason": reason, "st": json.dumps(stacktrace),
         "run_at": run_at, "delay": retry_delay_ms or 0, "fin": finished, "id": rowid,
         "requeue": state == "waiting"})
    events: list[tuple[str, str | None, str | None]] = [("failed", public, json.dumps(reason))]
    if state == "delayed":
        events.append(("delayed", public, json.dumps(run_at / 1000.0)))
    elif state == "waiting":
        events.append(("waiting", public, None))
    _emit_many(conn, queue, events, now_ms)
    if state == "failed":
        _retain(conn, queue, "failed", opts.get("remove_on_fail", False), now_ms, rowid)
    return state


def recover_stalled(conn: Any, *, queue: str, now_ms: int, dead_owners: Sequence[str],
                    max_stalled_count: int, check_expired: bool = True) -> list[tuple[str, str]]:
    """Take back active jobs whose lock expired or whose owner process is gone.

    From: ``active``. To: the head of ``waiting`` (``stalled_count + 1``), or ``failed`` with
    "job stalled more than allowable limit" past *max_stalled_count* (attempts ignored, as
    in Bull; ``remove_on_fail`` applies). Guard: ``lock_expires_ms < now_ms`` (unless
    *check_expired* is False) or ``lock_owner`` in *dead_owners*; rows a worker is finishing
    right now are skipped (SKIP LOCKED). Emits: ``stalled``, and ``failed`` for those failed.
    Idempotent: a job taken back is no longer active, so a second run skips it.

    :returns: (public id, new state) of each job taken back.
    """
    if not check_expired and not dead_owners:
        return []
    rows = _rows(conn, "SELECT id, job_id, stalled_count, opts FROM jobs WHERE queue = %(q)s"
                 " AND state = 'active' AND ((%(expired)s AND lock_expires_ms < %(now)s)"
                 " OR lock_owner = ANY(%(dead)s::text[])) ORDER BY id FOR UPDATE SKIP LOCKED",
                 {"q": queue, "now": now_ms, "dead": list(dead_owners),
                  "expired": check_expired})
    out = []
    for rowid, job_id, stalled, opts_text in rows:
        public = public_id(rowid, job_id)
        stalled += 1
        opts = json.loads(opts_text)
        reason = (STALLED_REASON if stalled > max_stalled_count else
                  REMOVED_SCHEDULE_REASON if _schedule_removed(conn, queue, opts) else None)
        if reason is not None:
            conn.execute(
                "UPDATE jobs SET state = 'failed', stalled_count = %(n)s, failed_reason = %(r)s,"
                " finished_on_ms = %(now)s, lock_token = NULL, lock_owner = NULL,"
                " lock_expires_ms = NULL WHERE id = %(id)s",
                {"n": stalled, "r": reason, "now": now_ms, "id": rowid})
            _emit_many(conn, queue, [("stalled", public, None),
                                     ("failed", public, json.dumps(reason))], now_ms)
            _retain(conn, queue, "failed", opts.get("remove_on_fail", False), now_ms, rowid)
            out.append((public, "failed"))
        else:
            # Bull puts a stalled job back at the head of the wait list.
            conn.execute(
                "UPDATE jobs SET state = 'waiting', stalled_count = %(n)s,"
                " seq = -nextval('job_seq'), lock_token = NULL, lock_owner = NULL,"
                " lock_expires_ms = NULL WHERE id = %(id)s", {"n": stalled, "id": rowid})
            _emit_many(conn, queue, [("stalled", public, None), ("waiting", public, None)],
                       now_ms)
            out.append((public, "waiting"))
    return out



def release(conn: Any, *, rowid: int, public: str, token: str, now_ms: int) -> bool:
    """Give an active job back unfinished (a worker closing past its timeout): it runs next.

    From: ``active``. To: the head of ``waiting``; attempts and stalled count unchanged.
    Guard: token. Emits: ``waiting``.

    :returns: whether the job was released (False: the lock was already lost).
    """
    rows = _rows(conn, "UPDATE jobs SET state = 'waiting', seq = -nextval('job_seq'),"
                 " lock_token = NULL, lock_owner = NULL, lock_expires_ms = NULL"
                 " WHERE id = %(id)s AND state = 'active' AND lock_token = %(token)s"
                 " RETURNING queue", {"id": rowid, "token": token})
    if rows:
        _emit_many(conn, rows[0][0], [("waiting", public, None)], now_ms)
    return bool(rows)


# -- changing jobs that are not running ---------------------------------------------------

def _writable(conn: Any, rowid: int, token: str | None, public: str, now_ms: int) -> Row:
    """Lock and return (state, queue) of a job the caller may write to, else raise.

    With a *token* the job must be active and locked with it (fencing). Without one, an
    active job whose lock is still live belongs to its worker and is refused. The row lock
    also serialises log appends, so the count :func:`add_log` returns is exact (BullMQ's
    ``MAX(idx)+1`` raced under two processes: #4682).
    """
    rows = _rows(conn, "SELECT state, lock_token, lock_expires_ms, queue FROM jobs"
                 " WHERE id = %(id)s FOR NO KEY UPDATE", {"id": rowid})
    return check_writable(rows[0] if rows else None, public, token, now_ms)


def set_progress(conn: Any, *, rowid: int, public: str, token: str | None, progress: str,
                 now_ms: int) -> None:
    """Store a job's progress (a HOT update). Guard: see :func:`_writable`. Emits: ``progress``."""
    _, queue = _writable(conn, rowid, token, public, now_ms)
    conn.execute("UPDATE jobs SET progress = %(p)s WHERE id = %(id)s",
                 {"p": progress, "id": rowid})
    _emit_many(conn, queue, [("progress", public, progress)], now_ms)


def add_log(conn: Any, *, rowid: int, public: str, token: str | None, row: str,
            now_ms: int) -> int:
    """Append a log row to a job. Guard: see :func:`_writable`.

    :returns: the number of log rows the job has now.
    """
    _writable(conn, rowid, token, public, now_ms)
    # The count runs on the statement's snapshot, which does not hold the new row: + 1.
    rows = _rows(conn, "WITH ins AS (INSERT INTO job_logs (job, row) VALUES (%(id)s, %(row)s))"
                 " SELECT count(*) + 1 FROM job_logs WHERE job = %(id)s",
                 {"id": rowid, "row": row})
    return int(rows[0][0])


def update_data(conn: Any, *, rowid: int, public: str, token: str | None, data: str,
                now_ms: int) -> None:
    """Replace a job's data (no merge, as in Bull). Guard: see :func:`_writable`."""
    _writable(conn, rowid, token, public, now_ms)
    conn.execute("UPDATE jobs SET data = %(d)s WHERE id = %(id)s", {"d": data, "id": rowid})


def _state(conn: Any, rowid: int, public: str) -> str:
    rows = _rows(conn, "SELECT state FROM jobs WHERE id = %(id)s", {"id": rowid})
    if not rows:
        raise JobNotFound(public)
    return str(rows[0][0])


def retry(conn: Any, *, rowid: int, public: str, now_ms: int) -> None:
    """Re-queue a failed job (``attempts_made`` is kept, as in Bull).

    From: ``failed``. To: ``waiting`` (a new queue position). Guard: state. Emits: ``waiting``.

    :raises InvalidJobState: the job is not failed.
    """
    rows = _rows(conn, f"UPDATE jobs j SET state = 'waiting', seq = {_TAIL}, failed_reason = NULL,"
                 " finished_on_ms = NULL, processed_on_ms = NULL WHERE id = %(id)s"
                 " AND state = 'failed' RETURNING queue", {"id": rowid})
    if not rows:
        actual = _state(conn, rowid, public)
        raise InvalidJobState(f"job {public!r} is {actual}, not failed: only failed jobs can be"
                              " retried", job_id=public, expected="failed", actual=actual)
    _emit_many(conn, rows[0][0], [("waiting", public, None)], now_ms)


def retry_failed(conn: Any, *, queue: str, count: int | None, now_ms: int) -> int:
    """Re-queue up to *count* failed jobs of *queue*, oldest failure first.

    From: ``failed``. To: ``waiting``. Emits: ``waiting`` each.

    :returns: how many were re-queued.
    """
    rows = _rows(conn, "SELECT id, job_id FROM jobs WHERE queue = %(q)s AND state = 'failed'"
                 " ORDER BY finished_on_ms, id LIMIT %(n)s FOR UPDATE SKIP LOCKED",
                 {"q": queue, "n": count})
    for rowid, job_id in rows:
        retry(conn, rowid=rowid, public=public_id(rowid, job_id), now_ms=now_ms)
    return len(rows)


def promote(conn: Any, *, rowid: int, public: str, now_ms: int) -> None:
    """Run a delayed job now.

    From: ``delayed``. To: ``waiting`` (a new queue position). Guard: state. Emits: ``waiting``.

    :raises InvalidJobState: the job is not delayed.
    """
    rows = _rows(conn, f"UPDATE jobs j SET state = 'waiting', delay_ms = 0, seq = {_TAIL}"
                 " WHERE id = %(id)s AND state = 'delayed' RETURNING queue", {"id": rowid})
    if not rows:
        actual = _state(conn, rowid, public)
        raise InvalidJobState(f"job {public!r} is {actual}, not delayed: only delayed jobs can"
                              " be promoted", job_id=public, expected="delayed", actual=actual)
    _emit_many(conn, rows[0][0], [("waiting", public, None)], now_ms)


# -- removing -----------------------------------------------------------------------------

def remove(conn: Any, *, rowid: int, public: str, token: str | None, now_ms: int) -> None:
    """Remove a job and its logs.

    From: any state but a live lock held by someone else. To: (gone). Emits: ``removed``.

    :raises LockError: the job is active and locked by a live worker.
    :raises JobNotFound: the job is gone.
    """
    rows = _rows(conn, "SELECT state, lock_token, lock_expires_ms, queue FROM jobs"
                 " WHERE id = %(id)s FOR UPDATE", {"id": rowid})
    if not rows:
        raise JobNotFound(public)
    state, lock_token, expires, queue = rows[0]
    if state == "active" and lock_token != token and expires is not None and expires >= now_ms:
        raise LockError(f"job {public!r} is active and locked by a worker: wait for it to"
                        " finish, or stop that worker", job_id=public, expected="not active",
                        actual=state)
    conn.execute("DELETE FROM jobs WHERE id = %(id)s", {"id": rowid})
    _emit_many(conn, queue, [("removed", public, None)], now_ms)


def _is_paused(conn: Any, queue: str) -> bool:
    return bool(_rows(conn, "SELECT 1 FROM queues WHERE name = %(q)s AND paused = 1",
                     {"q": queue}))


def clean(conn: Any, *, queue: str, state: str, before_ms: int, limit: int,
          now_ms: int) -> list[str]:
    """Remove jobs of *state* whose last time (finished, else processed, else created) is
    before *before_ms*; active jobs only when their lock has expired. Waiting jobs are in the
    ``paused`` state while the queue is paused and in ``waiting`` otherwise, never both.

    :returns: the public ids removed.
    """
    if CLEAN_STATES[state] == "waiting" and _is_paused(conn, queue) != (state == "paused"):
        return []
    unlocked = (" AND (lock_expires_ms IS NULL OR lock_expires_ms < %(now)s)"
                if state == "active" else "")
    rows = _rows(conn, "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = %(q)s"
                 " AND state = %(s)s AND coalesce(finished_on_ms, processed_on_ms, timestamp_ms)"
                 " < %(before)s" + unlocked + " ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
                 " RETURNING id, job_id",
                 {"q": queue, "s": CLEAN_STATES[state], "before": before_ms, "now": now_ms,
                  "n": limit if limit > 0 else None})
    return [public_id(r[0], r[1]) for r in sorted(rows)]


def empty(conn: Any, *, queue: str) -> int:
    """Remove the waiting (and paused) and delayed jobs of *queue*, with their logs.

    :returns: how many jobs were removed.
    """
    rows = _rows(conn, "DELETE FROM jobs WHERE queue = %(q)s AND state IN ('waiting', 'delayed')"
                 " RETURNING id", {"q": queue})
    return len(rows)


def delete_queue(conn: Any, *, queue: str, force: bool, now_ms: int) -> int:
    """Remove everything of *queue*: jobs, logs, schedules, limiter window and pause flag.

    :raises InvalidJobState: jobs are active (with a live lock) and not *force*.
    :returns: how many jobs were removed.
    """
    if not force:
        active = _rows(conn, "SELECT count(*) FROM jobs WHERE queue = %(q)s AND state = 'active'"
                       " AND lock_expires_ms >= %(now)s", {"q": queue, "now": now_ms})[0][0]
        if active:
            raise InvalidJobState(f"queue {queue!r} has {active} active job(s): wait for them,"
                                  " or call obliterate(force=True)", expected="no active jobs",
                                  actual="active")
    rows = _rows(conn, "DELETE FROM jobs WHERE queue = %(q)s RETURNING id", {"q": queue})
    for sql in ("DELETE FROM repeats WHERE queue = %(q)s",
                "DELETE FROM rate_starts WHERE queue = %(q)s",
                "DELETE FROM queues WHERE name = %(q)s"):
        conn.execute(sql, {"q": queue})
    return len(rows)


# -- repeat occurrences (the schedules themselves live in localq/pg/repeats.py) ------------

def _schedule_removed(conn: Any, queue: str, opts: dict[str, Any]) -> bool:
    """Whether *opts* are those of a repeat occurrence whose schedule no longer exists."""
    repeat = opts.get("repeat")
    if not isinstance(repeat, dict) or not isinstance(repeat.get("key"), str):
        return False
    return not _rows(conn, "SELECT 1 FROM repeats WHERE queue = %(q)s AND key = %(k)s",
                     {"q": queue, "k": repeat["key"]})


def create_occurrence(conn: Any, *, queue: str, key: str, name: str, template: str,
                      repeat: dict[str, Any], slot_ms: int, now_ms: int) -> Row:
    """Insert the occurrence of schedule *key* at *slot_ms* (the caller advances the schedule).

    From: (new). To: ``delayed`` until *slot_ms* (``waiting`` if it has come). Guard: the
    occurrence id is unused (else the existing row is returned). Emits: ``delayed``.

    :param template: JSON ``{"data": text, "opts": stored options, "priority": p}``.
    :param repeat: what ``job.opts["repeat"]`` holds (the options, ``key`` and ``count``).
    """
    row, _ = add_job(conn, queue=queue, name=name,
                     **occurrence_fields(key=key, template=template, repeat=repeat,
                                         slot_ms=slot_ms, now_ms=now_ms))
    return row


def remove_occurrences(conn: Any, *, queue: str, key: str, now_ms: int) -> list[Row]:
    """Remove the pending occurrences of schedule *key* (with the schedule, by the caller).

    From: ``waiting`` / ``delayed``. To: (gone). An ``active`` one runs on, but is not run
    again once the schedule is gone. Emits: ``removed`` per job.

    :returns: the rows of the jobs removed.
    """
    # No id range here as on SQLite: under a linguistic collation ";" need not sort after ":".
    rows = _rows(conn, "DELETE FROM jobs WHERE queue = %(q)s AND state IN ('waiting', 'delayed')"
                 " AND repeat_key = %(k)s AND starts_with(job_id, %(p)s)"
                 f" RETURNING {JOB_COLUMNS}", {"q": queue, "k": key, "p": occurrence_prefix(key)})
    rows.sort()
    _emit_many(conn, queue, [("removed", public_id(r[0], r[1]), None) for r in rows], now_ms)
    return rows


# -- the queue flag and housekeeping ------------------------------------------------------

def pause(conn: Any, *, queue: str, now_ms: int) -> None:
    """Stop every process from taking jobs of *queue* (running jobs finish). Emits ``paused``."""
    conn.execute("INSERT INTO queues (name, paused) VALUES (%(q)s, 1)"
                 " ON CONFLICT (name) DO UPDATE SET paused = 1", {"q": queue})
    _emit_many(conn, queue, [("paused", None, None)], now_ms)


def resume(conn: Any, *, queue: str, now_ms: int) -> None:
    """Let processes take jobs of *queue* again. Emits ``resumed`` (and wakes the workers)."""
    conn.execute("UPDATE queues SET paused = 0 WHERE name = %(q)s", {"q": queue})
    _emit_many(conn, queue, [("resumed", None, None)], now_ms)


def trim_events(conn: Any, *, keep: int) -> int:
    """Delete all but the newest *keep* events (by id; a reader that lags that far behind
    misses the trimmed ones, as on SQLite).

    :returns: how many rows were deleted.
    """
    rows = _rows(conn, "WITH d AS (DELETE FROM events WHERE id <= (SELECT max(id) FROM events)"
                 " - %(keep)s RETURNING 1) SELECT count(*) FROM d", {"keep": keep})
    return int(rows[0][0])


def note_drained(conn: Any, *, queue: str, now_ms: int) -> None:
    """Record that a worker of *queue* found nothing to do after having worked. Emits ``drained``."""
    _emit_many(conn, queue, [("drained", None, None)], now_ms)


def register_worker(conn: Any, *, worker_id: str, queue: str, pid: int, host: str,
                    lease: str, concurrency: int, now_ms: int) -> None:
    """Add (or refresh) a ``workers`` row: the worker of *queue* alive as long as *lease* is."""
    conn.execute(
        "INSERT INTO workers (id, queue, pid, host, started_ms, concurrency, lease)"
        " VALUES (%(id)s, %(q)s, %(pid)s, %(host)s, %(now)s, %(c)s, %(lease)s)"
        " ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, pid = excluded.pid,"
        " host = excluded.host, started_ms = excluded.started_ms,"
        " concurrency = excluded.concurrency, lease = excluded.lease",
        {"id": worker_id, "q": queue, "pid": pid, "host": host, "now": now_ms,
         "c": concurrency, "lease": lease})


def unregister_workers(conn: Any, *, worker_ids: Sequence[str] = (),
                       leases: Sequence[str] = ()) -> int:
    """Delete the ``workers`` rows of *worker_ids* and of every worker of *leases* (dead ones).

    :returns: how many rows were deleted.
    """
    rows = _rows(conn, "WITH d AS (DELETE FROM workers WHERE id = ANY(%(ids)s::text[])"
                 " OR lease = ANY(%(leases)s::text[]) RETURNING 1) SELECT count(*) FROM d",
                 {"ids": list(worker_ids), "leases": list(leases)})
    return int(rows[0][0])
