"""Every change of a job row: the only module that writes the ``jobs`` table.

State machine (Bull's, with ``paused`` as a queue flag and ``stalled`` as an event)::

     add(delay>0) ──────────► delayed ──── due (promote_due) / promote() ────► waiting
                                 ▲                                              │  ▲
        failed attempt, backoff>0┘                                 claim (lock) │  │ failed attempt, no backoff
                                                                                ▼  │ stalled (count ≤ max)
     add ─────────────────────────────────────────────────────────────────► active ─┘
                                                                           │    │
                                                  move_to_completed ◄──────┘    └──► move_to_failed (final)
                                                        │                                │
                                                    completed                         failed ── retry() ──► waiting
                                                                                         ▲
                                                      stalled more than max_stalled_count┘

| move                 | from               | to                       | guard                         | emits            |
|----------------------|--------------------|--------------------------|-------------------------------|------------------|
| add / add_job        | (new)              | waiting / delayed        | custom id unused              | waiting/delayed  |
| promote_due          | delayed            | waiting                  | run_at <= now                 | waiting          |
| claim                | waiting            | active                   | queue not paused              | active           |
| extend_locks         | active             | active                   | token                         | -                |
| move_to_completed    | active             | completed (or removed)   | token (unless ignore_lock)    | completed        |
| move_to_failed       | active             | delayed/waiting/failed   | token (unless ignore_lock)    | failed (+delayed/waiting) |
| recover_stalled      | active             | waiting / failed         | lock expired or owner dead    | stalled (+failed)|
| release              | active             | waiting (head)           | token                         | waiting          |
| retry                | failed             | waiting                  | state                         | waiting          |
| promote              | delayed            | waiting                  | state                         | waiting          |
| set_progress/add_log/update_data | any    | (same)                   | token when active             | progress         |
| remove               | not locked         | (gone)                   | no live lock                  | removed          |
| clean / empty / obliterate | per state    | (gone)                   | active: unlocked only         | -                |
| create_occurrence    | (new)              | delayed                  | occurrence id unused          | delayed          |
| remove_occurrences   | waiting / delayed  | (gone)                   | the schedule's key            | removed          |
| pause / resume       | queue flag         |                          | -                             | paused/resumed   |
| note_drained         | (none)             |                          | -                             | drained (watched)|
| register_worker / unregister_workers | ``workers`` rows |            | -                             | -                |

Each function runs inside the caller's ``BEGIN IMMEDIATE`` transaction (``Store.write``), takes
the time as ``now_ms`` (the caller reads the clock), never sleeps, logs or calls user code, and
writes the global event row in the same transaction (outbox). Moves out of ``active`` match the
row's state and lock token; when nothing matched, the row is looked up and the precise error
raised (Bull's -2/-3 codes, typed). SQL uses named parameters and fixed table names only.

Repeat occurrences are ordinary rows with the deterministic id ``repeat:<hash of key>:<slot>``
(:func:`occurrence_id`), so two schedulers creating one slot create one job; the schedules
(the ``repeats`` table) are kept by :mod:`localq.repeats`, in the same transactions. The
claim of an occurrence also creates its schedule's next one when due (as Bull does when a
repetition starts). An occurrence whose schedule was removed while it ran is not run again:
a failed attempt is final and a stalled one fails (a waiting or delayed one would have been
removed with the schedule).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Iterable, Sequence

from .errors import InvalidJobState, JobNotFound, LockError
from .limiter import RateLimit, group_filter, record_start
from .options import NO_PRIORITY

__all__ = [
    "JOB_COLUMNS", "REMOVED_SCHEDULE_REASON", "STALLED_REASON", "STATE_IS", "add_job", "add_jobs",
    "add_log", "auto_rowid", "claim", "clean", "create_occurrence", "delete_queue", "emit",
    "empty", "extend_locks", "lock_for_claim", "move_to_completed", "move_to_failed",
    "next_rowid", "note_drained", "occurrence_id", "pause", "pick_statement", "promote",
    "promote_due", "public_id", "recover_stalled", "register_worker", "release", "remove",
    "remove_occurrences", "resume", "retry", "retry_failed", "rowid_of", "set_progress",
    "trim_events", "unregister_workers", "update_data", "watch_queue",
]

#: ``state = '<state>'`` spelled out: a statement whose plan depends on a bound value is
#: compiled again by SQLite at every run (see _pick_sql), and ``state = :s`` is matched against
#: the partial indexes.
STATE_IS = {"waiting": "state = 'waiting'", "delayed": "state = 'delayed'",
            "active": "state = 'active'", "completed": "state = 'completed'",
            "failed": "state = 'failed'"}

#: The columns every Job snapshot is built from, in this order (see ``Job._from_row``).
JOB_COLUMNS = (
    "id, job_id, name, data, opts, state, priority, timestamp_ms, delay_ms, run_at_ms,"
    " attempts_made, stalled_count, progress, returnvalue, failed_reason, stacktrace,"
    " processed_on_ms, finished_on_ms, lock_token, lock_expires_ms, queue"
)

Row = tuple[Any, ...]

STALLED_REASON = "job stalled more than allowable limit"
REMOVED_SCHEDULE_REASON = "stalled after its repeat schedule was removed: not run again"


def public_id(rowid: int, job_id: str | None) -> str:
    """Return the id users see: the custom id, else the row number."""
    return job_id if job_id is not None else str(rowid)


def auto_rowid(job_id: str) -> int | None:
    """Return the row number an automatic id names (``"42"``), or None for any other text
    (``str.isdigit`` accepts ``"²"``, which ``int()`` rejects; ``"042"`` is not job 42)."""
    if job_id.isascii() and job_id.isdigit() and str(int(job_id)) == job_id:
        return int(job_id)
    return None


def rowid_of(conn: Any, queue: str, job_id: str) -> int | None:
    """Return the row number of job *job_id* of *queue*, or ``None``."""
    auto = auto_rowid(job_id)
    if auto is not None:
        sql = "SELECT id FROM jobs WHERE id = :id AND queue = :queue AND job_id IS NULL"
        rows = conn.execute(sql, {"id": auto, "queue": queue}).fetchall()
    else:
        sql = "SELECT id FROM jobs WHERE queue = :queue AND job_id = :job_id"
        rows = conn.execute(sql, {"queue": queue, "job_id": job_id}).fetchall()
    return rows[0][0] if rows else None


def emit(conn: Any, queue: str, event: str, job_id: str | None, data: Any, now_ms: int) -> None:
    """Append one global event row (``data`` is JSON-encoded here)."""
    conn.execute(
        "INSERT INTO events (queue, event, job_id, data, ts_ms) VALUES (:q, :e, :j, :d, :t)",
        {"q": queue, "e": event, "j": job_id, "d": None if data is None else json.dumps(data),
         "t": now_ms},
    )


def _emit_if_watched(conn: Any, queue: str, event: str, job_id: str | None,
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


# max(rowid) is one b-tree descent; the high-water mark covers a deleted newest job.
_NEXT_ID = ("max(coalesce((SELECT max(id) FROM jobs), 0),"
            " (SELECT value FROM meta WHERE key = 'id_hwm')) + 1")


def _next_id(conn: Any) -> int:
    return int(conn.execute(f"SELECT {_NEXT_ID}").fetchall()[0][0])


def _take_seq(conn: Any, count: int = 1) -> int:
    """Return the first of *count* fresh queue positions, after every id and position so far.

    A job re-entering waiting (retry, promote, stall) must sort after (LIFO: before) every job
    that entered before it. Taken from the id sequence (recorded in ``id_hwm``), each position
    is distinct: with a shared ``max(id) + 1`` two re-queued jobs tied and ran in id order.
    The cost is a gap in the automatic ids, which are only promised unique and increasing.
    """
    first = _next_id(conn)
    conn.execute("UPDATE meta SET value = :v WHERE key = 'id_hwm'", {"v": first + count - 1})
    return first


def _note_deleted(conn: Any, max_rowid: int | None) -> None:
    if max_rowid is None:
        return
    conn.execute(
        "UPDATE meta SET value = :id WHERE key = 'id_hwm' AND value < :id"
        " AND :id > coalesce((SELECT max(id) FROM jobs), 0)", {"id": max_rowid})


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


# -- producing ----------------------------------------------------------------------------

def add_job(conn: Any, *, queue: str, name: str, data: str, opts: dict[str, Any],
            stored_opts: str, job_id: str | None, priority: int | None, delay_ms: int,
            lifo: bool, timestamp_ms: int, now_ms: int, repeat_key: str | None = None,
            rowid: int | None = None) -> tuple[Row, bool]:
    """Insert one job, unless its custom id exists.

    From: (new). To: ``delayed`` if *delay_ms* > 0, else ``waiting``.
    Guard: a custom *job_id* already in the queue adds nothing.
    Emits: ``delayed`` (with the due time) or ``waiting``.

    :param rowid: the row number to use (``add_bulk`` passes consecutive ones); computed when None.
    :returns: the job's row and whether it was inserted (False: the existing job's row).
    """
    if job_id is not None:
        rows = conn.execute(_BY_CUSTOM_ID, {"q": queue, "j": job_id}).fetchall()
        if rows:
            return rows[0], False
    state = "delayed" if delay_ms > 0 else "waiting"
    priority = NO_PRIORITY if priority is None else priority
    watched: int | None = None
    if rowid is None:
        # One read gives the next id and whether a process listens for ``waiting`` events;
        # then a plain INSERT. (An INSERT ... SELECT reading jobs itself, or one with
        # RETURNING, makes SQLite build a temporary table at every add: most of an add's
        # cost inside SQLite.)
        rowid, watched = conn.execute(_NEXT_AND_WATCHED, {
            "q": queue, "wall": int(time.time() * 1000)}).fetchall()[0]
    conn.execute(_INSERT, {
        "id": rowid, "queue": queue, "job_id": job_id, "name": name, "data": data,
        "opts": stored_opts, "state": state, "priority": priority,
        "seq": -rowid if lifo else rowid, "ts": timestamp_ms, "delay": delay_ms,
        "run_at": now_ms + delay_ms, "rk": repeat_key})
    row = _new_row(rowid, queue, job_id, name, data, stored_opts, state, priority,
                   timestamp_ms, delay_ms, now_ms + delay_ms)
    public = public_id(rowid, job_id)
    if state == "delayed":
        emit(conn, queue, "delayed", public, (now_ms + delay_ms) / 1000.0, now_ms)
    elif watched is None:
        _emit_if_watched(conn, queue, "waiting", public, now_ms)
    elif watched:
        emit(conn, queue, "waiting", public, None, now_ms)
    return row, True


def add_jobs(conn: Any, *, queue: str, jobs: Sequence[dict[str, Any]], rowid: int,
             now_ms: int) -> list[tuple[Row, bool]]:
    """Insert several jobs in order, each as :func:`add_job` would, at consecutive row
    numbers from *rowid* (a custom id already in the queue adds nothing and takes none).

    From: (new). To: ``waiting`` / ``delayed``. Guard and emits: as :func:`add_job`.
    Plain jobs (no custom id, no delay) go in with one statement for the lot, and whether a
    process listens for ``waiting`` events is read once: ``add_bulk``'s cost per job is then
    close to that of the INSERT itself.

    :param jobs: :func:`add_job`'s keywords for each job (``name``, ``data``,
        ``stored_opts``, ``job_id``, ``priority``, ``delay_ms``, ``lifo``, ``timestamp_ms``).
    :returns: (row, inserted) per job, in order.
    """
    out: list[tuple[Row, bool]] = []
    plain: list[dict[str, Any]] = []
    watched: bool | None = None

    def flush() -> None:
        nonlocal watched
        if not plain:
            return
        conn.executemany(_INSERT, plain)
        if watched is None:
            watched = bool(conn.execute(_WATCHED, {"q": queue, "wall": int(time.time() * 1000)}
                                        ).fetchall())
        if watched:
            conn.executemany(
                "INSERT INTO events (queue, event, job_id, data, ts_ms)"
                " VALUES (:queue, 'waiting', :public, NULL, :now)",
                [{"queue": queue, "public": str(p["id"]), "now": now_ms} for p in plain])
        plain.clear()

    for job in jobs:
        priority = NO_PRIORITY if job["priority"] is None else job["priority"]
        if job["job_id"] is not None or job["delay_ms"] > 0:
            flush()
            row, inserted = add_job(conn, queue=queue, opts={}, now_ms=now_ms, rowid=rowid,
                                    **job)
            rowid += inserted
            out.append((row, inserted))
            continue
        params = {
            "id": rowid, "queue": queue, "job_id": None, "name": job["name"],
            "data": job["data"], "opts": job["stored_opts"], "state": "waiting",
            "priority": priority, "seq": -rowid if job["lifo"] else rowid,
            "ts": job["timestamp_ms"], "delay": 0, "run_at": now_ms, "rk": None,
        }
        plain.append(params)
        out.append((_new_row(rowid, queue, None, job["name"], job["data"], job["stored_opts"],
                             "waiting", priority, job["timestamp_ms"], 0, now_ms), True))
        rowid += 1
    flush()
    return out


def _new_row(rowid: int, queue: str, job_id: str | None, name: str, data: str, opts: str,
             state: str, priority: int, timestamp_ms: int, delay_ms: int, run_at_ms: int) -> Row:
    """Return the JOB_COLUMNS row of a job just inserted (what RETURNING would give)."""
    return (rowid, job_id, name, data, opts, state, priority, timestamp_ms, delay_ms, run_at_ms,
            0, 0, None, None, None, None, None, None, None, None, queue)


_BY_CUSTOM_ID = f"SELECT {JOB_COLUMNS} FROM jobs WHERE queue = :q AND job_id = :j"
_INSERT = ("INSERT INTO jobs (id, queue, job_id, name, data, opts, state, priority, seq,"
           " timestamp_ms, delay_ms, run_at_ms, repeat_key) VALUES (:id, :queue, :job_id, :name,"
           " :data, :opts, :state, :priority, :seq, :ts, :delay, :run_at, :rk)")
_WATCHED = "SELECT 1 FROM queues WHERE name = :q AND watch_until_ms > :wall"
_NEXT_AND_WATCHED = (f"SELECT {_NEXT_ID}, EXISTS (SELECT 1 FROM queues WHERE name = :q"
                     " AND watch_until_ms > :wall)")


def next_rowid(conn: Any) -> int:
    """Return the row number the next inserted job will get (for ``add_bulk``)."""
    return _next_id(conn)


# -- taking jobs --------------------------------------------------------------------------

_TAIL = "CASE WHEN json_extract(opts, '$.lifo') THEN -:tail ELSE :tail END"


def promote_due(conn: Any, *, queue: str, now_ms: int, limit: int = 1000) -> list[str]:
    """Move due delayed jobs of *queue* to the tail of waiting (head for LIFO jobs).

    From: ``delayed``. To: ``waiting``. Guard: ``run_at_ms <= now_ms``. Emits: ``waiting``.
    Idempotent: two schedulers running it at once promote each job once.

    :returns: the public ids of the promoted jobs.
    """
    due = conn.execute(
        "SELECT id, job_id FROM jobs WHERE queue = +:queue AND state = 'delayed'"
        " AND run_at_ms <= :now ORDER BY run_at_ms, id LIMIT +:limit",
        {"queue": queue, "now": now_ms, "limit": limit}).fetchall()
    if not due:
        return []
    # One position each, in due order: jobs due earlier run earlier, as in Bull.
    first = _take_seq(conn, len(due))
    ids = []
    for offset, (rowid, job_id) in enumerate(due):
        conn.execute(f"UPDATE jobs SET state = 'waiting', delay_ms = 0, seq = {_TAIL}"
                     " WHERE id = :id", {"id": rowid, "tail": first + offset})
        public = public_id(rowid, job_id)
        emit(conn, queue, "waiting", public, None, now_ms)
        ids.append(public)
    return ids


def claim(conn: Any, *, queue: str, token: str, owner: str, lock_ms: int, now_ms: int,
          names: Sequence[str] | None = None, limit: RateLimit | None = None) -> Row | None:
    """Lock the next runnable job of *queue* for *token* (promoting due delayed jobs first).

    From: ``waiting``. To: ``active``. Guard: the queue is not paused; the job's name is in
    *names* (any name when None); the rate *limit* has room for the job's group (limited
    jobs stay waiting, in order). Emits: ``active``.

    :returns: the claimed job's row, or None when nothing is runnable now.
    """
    params: dict[str, Any] = {"queue": queue, "now": now_ms, "wall": int(time.time() * 1000)}
    name_filter = _name_filter(names, params)
    promoted = False
    if limit is not None:
        # Due jobs are promoted even when the limiter lets no job start now.
        if conn.execute(_DUE_SQL, params).fetchall():
            promote_due(conn, queue=queue, now_ms=now_ms)
        promoted = True
        groups = group_filter(conn, limit, queue, now_ms, params)
        if groups is None:
            return None
        name_filter += groups
    # One statement finds the next job, whether delayed jobs are due (promoted first, as
    # they may sort ahead of it) and whether a process listens for ``active`` events.
    sql = _PICK_SQL if not name_filter else _pick_sql(name_filter)
    found = conn.execute(sql, params).fetchall()[0]
    if found[-2] and not promoted:
        promote_due(conn, queue=queue, now_ms=now_ms)
        found = conn.execute(sql, params).fetchall()[0]
    if found[0] is None:
        return None
    watched = found[-1]
    expires = now_ms + lock_ms
    conn.execute(_CLAIM_SQL, {"id": found[0], "token": token, "owner": owner,
                              "expires": expires, "now": now_ms})
    # The row as the UPDATE left it (what RETURNING would give, without its temporary table).
    row: Row = (*found[:5], "active", *found[6:16], now_ms, found[17], token, expires,
                found[20])
    if limit is not None:
        record_start(conn, limit, queue, row[0], now_ms)
    if '"repeat":' in row[4]:  # a repeat occurrence: its schedule's next one, if due
        repeat = json.loads(row[4]).get("repeat")
        if isinstance(repeat, dict) and isinstance(repeat.get("key"), str):
            from .repeats import advance  # repeats builds on this module
            advance(conn, queue=queue, key=repeat["key"], now_ms=now_ms)
    if watched:
        conn.execute("INSERT INTO events (queue, event, job_id, data, ts_ms)"
                     " VALUES (:q, 'active', :j, NULL, :t)",
                     {"q": queue, "j": public_id(row[0], row[1]), "t": now_ms})
    return row


def _name_filter(names: Sequence[str] | None, params: dict[str, Any]) -> str:
    if names is None:
        return ""
    marks = []
    for i, name in enumerate(names):
        params[f"n{i}"] = name
        marks.append(f":n{i}")
    return f" AND name IN ({', '.join(marks)})"


def pick_statement(names: Sequence[str] | None, params: dict[str, Any]) -> str:
    """Return :func:`claim`'s read of the next job (adding the *names* to *params*, which
    also holds ``queue``, ``now`` and ``wall``): one row, the next job's JOB_COLUMNS (NULLs
    when none), whether delayed jobs are due, whether a process listens for events.
    ``localq.queries.runnable`` runs it outside any transaction."""
    name_filter = _name_filter(names, params)
    return _PICK_SQL if not name_filter else _pick_sql(name_filter)


# Checking first is ~10x cheaper than an UPDATE that finds nothing to promote.
_DUE_SQL = ("SELECT 1 FROM jobs WHERE queue = :queue AND state = 'delayed'"
            " AND run_at_ms <= :now LIMIT 1")


def _pick_sql(name_filter: str) -> str:
    # SELECT then UPDATE by rowid: under BEGIN IMMEDIATE nobody can take the row in between,
    # and it measured ~40% cheaper than UPDATE ... WHERE id = (SELECT ...). One read gives the
    # next job's row (JOB_COLUMNS, NULLs when none), whether delayed jobs are due and whether
    # a process listens (_emit_if_watched's test).
    #
    # "+:queue": SQLite (3.54) compiles a statement again at every run when its planner looked
    # at a bound value, here for the ORDER BY under "queue = :queue" (a third of a claim's
    # cost). The unary + hides the value from the planner; the plan stays the same.
    return (f"SELECT {_JOB_COLUMNS_J}, p.due, p.watched FROM (SELECT"
            " (SELECT id FROM jobs WHERE queue = +:queue AND state = 'waiting'" + name_filter +
            " AND NOT EXISTS (SELECT 1 FROM queues WHERE name = +:queue AND paused = 1)"
            " ORDER BY priority, seq, id LIMIT 1) AS id,"
            " EXISTS (SELECT 1 FROM jobs WHERE queue = +:queue AND state = 'delayed'"
            " AND run_at_ms <= +:now) AS due,"
            " coalesce((SELECT watch_until_ms > :wall FROM queues WHERE name = +:queue), 0)"
            " AS watched) AS p LEFT JOIN jobs AS j ON j.id = p.id")


_JOB_COLUMNS_J = ", ".join("j." + column.strip() for column in JOB_COLUMNS.split(","))
_PICK_SQL = _pick_sql("")
_CLAIM_SQL = ("UPDATE jobs SET state = 'active', lock_token = :token, lock_owner = :owner,"
              " lock_expires_ms = :expires, processed_on_ms = :now WHERE id = :id")


def lock_for_claim(conn: Any, *, queue: str, limit: RateLimit | None) -> None:
    """Take the locks a claim of *queue* needs before the caller reads the clock.

    Nothing here: ``BEGIN IMMEDIATE`` already holds the file's write lock, which serialises
    every claim (the PostgreSQL twin takes the rate limiter's lock of a limited queue).
    """


def extend_locks(conn: Any, *, locks: Iterable[tuple[int, str]], lock_ms: int,
                 now_ms: int) -> list[int]:
    """Push the lock expiry of each (rowid, token) forward.

    From/To: ``active``. Guard: token. Emits: nothing.

    :returns: the rowids whose lock was lost (not active any more, or another token).
    """
    lost = []
    for rowid, token in locks:
        changed = conn.execute(
            "UPDATE jobs SET lock_expires_ms = :exp WHERE id = :id AND state = 'active'"
            " AND lock_token = :token RETURNING id",
            {"exp": now_ms + lock_ms, "id": rowid, "token": token}).fetchall()
        if not changed:
            lost.append(rowid)
    return lost


# -- finishing ----------------------------------------------------------------------------

def _retain(conn: Any, queue: str, state: str, policy: Any, now_ms: int, rowid: int) -> bool:
    """Apply remove_on_complete / remove_on_fail after *rowid* reached *state*.

    :returns: whether *rowid* itself was removed.
    """
    if policy is False or policy is None:
        return False
    if policy is True:
        conn.execute("DELETE FROM jobs WHERE id = :id", {"id": rowid})
        _note_deleted(conn, rowid)
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
        _note_deleted(conn, max(doomed))
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
    # Read back rather than RETURNING (a temporary table per statement in SQLite).
    queue, opts_text = conn.execute("SELECT queue, opts FROM jobs WHERE id = :id",
                                    {"id": rowid}).fetchall()[0]
    opts = json.loads(opts_text) if opts_text != "{}" else {}
    conn.execute(
        "INSERT INTO events (queue, event, job_id, data, ts_ms)"
        " VALUES (:q, 'completed', :j, :d, :t)",
        {"q": queue, "j": public, "d": returnvalue, "t": now_ms})
    _retain(conn, queue, "completed", opts.get("remove_on_complete", False), now_ms, rowid)


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
    stacktrace = json.loads(row[3]) if row[3] else []
    limit = opts.get("stack_trace_limit")
    if stack is not None and limit != 0:
        stacktrace.append(stack)
        if limit is not None:
            stacktrace = stacktrace[-limit:]
    retry = (retry_delay_ms is not None and attempts_made < opts.get("attempts", 1)
             and not _schedule_removed(conn, queue, opts))
    if not retry:
        state, run_at, finished = "failed", 0, now_ms
    elif retry_delay_ms:
        state, run_at, finished = "delayed", now_ms + retry_delay_ms, None
    else:
        state, run_at, finished = "waiting", 0, None
    # Only a job going straight back to waiting needs a new position (delayed ones get
    # theirs when promoted).
    conn.execute(
        f"UPDATE jobs SET state = :state, attempts_made = :made, failed_reason = :reason,"
        f" stacktrace = :st, run_at_ms = :run_at, delay_ms = :delay, finished_on_ms = :fin,"
        f" seq = CASE WHEN :tail IS NULL THEN seq ELSE {_TAIL} END, lock_token = NULL,"
        f" lock_owner = NULL, lock_expires_ms = NULL WHERE id = :id",
        {"state": state, "made": attempts_made, "reason": reason, "st": json.dumps(stacktrace),
         "run_at": run_at, "delay": retry_delay_ms or 0, "fin": finished, "id": rowid,
         "tail": _take_seq(conn) if state == "waiting" else None})
    emit(conn, queue, "failed", public, reason, now_ms)
    if state == "failed":
        _retain(conn, queue, "failed", opts.get("remove_on_fail", False), now_ms, rowid)
    elif state == "delayed":
        emit(conn, queue, "delayed", public, run_at / 1000.0, now_ms)
    else:
        emit(conn, queue, "waiting", public, None, now_ms)
    return state


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
                  REMOVED_SCHEDULE_REASON if _schedule_removed(conn, queue, opts) else None)
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
                {"n": stalled, "tail": _take_seq(conn), "id": rowid})
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
        " RETURNING queue", {"tail": _next_id(conn), "id": rowid, "token": token}).fetchall()
    if rows:
        emit(conn, rows[0][0], "waiting", public, None, now_ms)
    return bool(rows)


# -- changing jobs that are not running ---------------------------------------------------

def _writable(conn: Any, rowid: int, token: str | None, public: str, now_ms: int) -> Row:
    """Return (state, queue) of a job the caller may write to, else raise.

    With a *token* the job must be active and locked with it (fencing). Without one, an
    active job whose lock is still live belongs to its worker and is refused.
    """
    rows = conn.execute("SELECT state, lock_token, lock_expires_ms, queue FROM jobs WHERE id = :id",
                        {"id": rowid}).fetchall()
    if not rows:
        raise JobNotFound(public)
    state, lock_token, expires, queue = rows[0]
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
        f"UPDATE jobs SET state = 'waiting', seq = {_TAIL}, failed_reason = NULL,"
        " finished_on_ms = NULL, processed_on_ms = NULL WHERE id = :id AND state = 'failed'"
        " RETURNING queue", {"id": rowid, "tail": _take_seq(conn)}).fetchall()
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
        f"UPDATE jobs SET state = 'waiting', delay_ms = 0, seq = {_TAIL}"
        " WHERE id = :id AND state = 'delayed' RETURNING queue",
        {"id": rowid, "tail": _take_seq(conn)}).fetchall()
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


# -- removing -----------------------------------------------------------------------------

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
    _note_deleted(conn, rowid)
    emit(conn, queue, "removed", public, None, now_ms)


_CLEAN_STATES = {"completed": "completed", "failed": "failed", "waiting": "waiting",
                 "wait": "waiting", "paused": "waiting", "delayed": "delayed", "active": "active"}


def clean(conn: Any, *, queue: str, state: str, before_ms: int, limit: int,
          now_ms: int) -> list[str]:
    """Remove jobs of *state* whose last time (finished, else processed, else created) is
    before *before_ms*; active jobs only when their lock has expired.

    :returns: the public ids removed.
    """
    if _CLEAN_STATES[state] == "waiting":
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
        f" AND {STATE_IS[_CLEAN_STATES[state]]}"
        " AND coalesce(finished_on_ms, processed_on_ms, timestamp_ms) < +:before" + unlocked +
        " ORDER BY id LIMIT +:n) RETURNING id, job_id", params).fetchall()
    if rows:
        _note_deleted(conn, max(r[0] for r in rows))
    return [public_id(r[0], r[1]) for r in rows]


def empty(conn: Any, *, queue: str) -> int:
    """Remove the waiting (and paused) and delayed jobs of *queue*, with their logs.

    :returns: how many jobs were removed.
    """
    rows = conn.execute("DELETE FROM jobs WHERE queue = :q AND state IN ('waiting', 'delayed')"
                        " RETURNING id", {"q": queue}).fetchall()
    if rows:
        _note_deleted(conn, max(r[0] for r in rows))
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
        _note_deleted(conn, max(r[0] for r in rows))
    for sql in ("DELETE FROM repeats WHERE queue = :q", "DELETE FROM rate_starts WHERE queue = :q",
                "DELETE FROM queues WHERE name = :q"):
        conn.execute(sql, {"q": queue})
    return len(rows)


# -- repeat occurrences (the schedules themselves live in localq/repeats.py) ---------------

def occurrence_id(key: str, slot_ms: int) -> str:
    """Return the job id of schedule *key*'s occurrence at *slot_ms*: ``repeat:<hash>:<slot>``.

    Deterministic, so two schedulers creating one slot create one job (``jobs_custom_id`` is
    unique); 64 bits of SHA-256 keep the keys of a queue apart.
    """
    return f"{_occurrence_prefix(key)}{slot_ms}"


def _occurrence_prefix(key: str) -> str:
    return f"repeat:{hashlib.sha256(key.encode()).hexdigest()[:16]}:"


def _schedule_removed(conn: Any, queue: str, opts: dict[str, Any]) -> bool:
    """Whether *opts* are those of a repeat occurrence whose schedule no longer exists."""
    repeat = opts.get("repeat")
    if not isinstance(repeat, dict) or not isinstance(repeat.get("key"), str):
        return False
    return not conn.execute("SELECT 1 FROM repeats WHERE queue = :q AND key = :k",
                            {"q": queue, "k": repeat["key"]}).fetchall()


def create_occurrence(conn: Any, *, queue: str, key: str, name: str, template: str,
                      repeat: dict[str, Any], slot_ms: int, now_ms: int) -> Row:
    """Insert the occurrence of schedule *key* at *slot_ms* (the caller advances the schedule).

    From: (new). To: ``delayed`` until *slot_ms* (``waiting`` if it has come). Guard: the
    occurrence id is unused (else the existing row is returned). Emits: ``delayed``.

    :param template: JSON ``{"data": text, "opts": stored options, "priority": p}``.
    :param repeat: what ``job.opts["repeat"]`` holds (the options, ``key`` and ``count``).
    """
    plan = json.loads(template)
    delay_ms = max(0, slot_ms - now_ms)
    opts = dict(plan["opts"], delay=delay_ms / 1000, repeat=repeat)
    row, _ = add_job(conn, queue=queue, name=name, data=plan["data"], opts=opts,
                     stored_opts=json.dumps(opts, separators=(",", ":")),
                     job_id=occurrence_id(key, slot_ms), priority=plan["priority"],
                     delay_ms=delay_ms, lifo=bool(opts.get("lifo")), timestamp_ms=now_ms,
                     now_ms=now_ms, repeat_key=key)
    return row


def remove_occurrences(conn: Any, *, queue: str, key: str, now_ms: int) -> list[Row]:
    """Remove the pending occurrences of schedule *key* (with the schedule, by the caller).

    From: ``waiting`` / ``delayed`` (the pending occurrence, and retries waiting for their
    backoff). To: (gone). An ``active`` one runs on, but is not run again once the schedule
    is gone (:func:`move_to_failed`, :func:`recover_stalled`). Emits: ``removed`` per job.

    :returns: the rows of the jobs removed.
    """
    prefix = _occurrence_prefix(key)
    # A range on the custom-id index: ";" follows ":" in ASCII, so [lo, hi) is the prefix.
    rows: list[Row] = conn.execute(
        "DELETE FROM jobs WHERE queue = :q AND job_id >= :lo AND job_id < :hi"
        " AND repeat_key = :k AND state IN ('waiting', 'delayed')"
        f" RETURNING {JOB_COLUMNS}",
        {"q": queue, "lo": prefix, "hi": prefix[:-1] + ";", "k": key}).fetchall()
    if rows:
        _note_deleted(conn, max(r[0] for r in rows))
    for row in rows:
        emit(conn, queue, "removed", public_id(row[0], row[1]), None, now_ms)
    return rows


# -- the queue flag and housekeeping ------------------------------------------------------

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
    _emit_if_watched(conn, queue, "drained", None, now_ms)


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
