"""Taking jobs: promoting due delayed jobs, claiming the next runnable one, keeping locks.

Part of :mod:`localq.transitions` (its docstring holds the state machine).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable, Sequence

from ..limiter import RateLimit, group_filter, record_start
from .outbox import emit
from .rows import JOB_COLUMNS, TAIL, Row, public_id, take_seq

__all__ = ["claim", "extend_locks", "lock_for_claim", "pick_statement", "promote_due"]


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
    first = take_seq(conn, len(due))
    ids = []
    for offset, (rowid, job_id) in enumerate(due):
        conn.execute(f"UPDATE jobs SET state = 'waiting', delay_ms = 0, seq = {TAIL}"
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
            from ..repeats import advance  # repeats builds on localq.transitions
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
    # a process listens (emit_if_watched's test).
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
