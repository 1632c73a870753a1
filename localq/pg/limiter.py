"""The rate limiter on PostgreSQL: the twin of :mod:`localq.limiter` (same functions).

Starts are rows of ``rate_starts`` written in the claim's transaction, as on SQLite. SQLite
serialises claims with its write lock; on PostgreSQL two claimers could both see one free slot
and both start a job, so a claim on a limited queue first takes a transaction-level advisory
lock on (schema, queue), as BullMQ's ``move_to_active`` does. Queues without a limiter never
take it, so they pay nothing.
"""

from __future__ import annotations

import re
from typing import Any

from ..limiter import RateLimit
from .schema import ADVISORY_NAMESPACE

__all__ = ["group_filter", "limited_until", "lock_limiter", "record_start"]

#: Second namespace of advisory locks: one lock per limited queue.
_LIMITER_LOCK = ADVISORY_NAMESPACE + 1


def _path(limit: RateLimit) -> list[str]:
    """Turn the SQLite JSON path '$."a"."b"' of :class:`RateLimit` into ['a', 'b']."""
    assert limit.group_path is not None
    return re.findall(r'\."([^"]*)"', limit.group_path)


#: The group of a job: its data's group field as text, as SQLite's ``CAST(json_extract())``.
#: PostgreSQL's JSON parser refuses a whole document holding an escaped NUL ("\u0000",
#: Python's encoding of NUL), wherever it is: such data (rare, found by a plain ``strpos``
#: first) is parsed with each escaped NUL spelled U+FFFD instead, so that one job cannot make
#: every claim of the queue fail. The pattern skips a "\u0000" preceded by an odd number
#: of backslashes: that is the text "\u0000" itself, not a NUL.
_GROUP = (r"coalesce((CASE WHEN strpos(data, '\u0000') = 0 THEN data"
          r" ELSE regexp_replace(data, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g') END)::jsonb"
          " #>> %(gpath)s::text[], '')")


def _group_sql(limit: RateLimit) -> str:
    return _GROUP if limit.group_path else "''"


def lock_limiter(conn: Any, queue: str) -> None:
    """Take *queue*'s limiter lock until the end of the transaction (re-entrant)."""
    conn.execute("SELECT pg_advisory_xact_lock(%(ns)s, hashtext(current_schema() || ':' || %(q)s))",
                 {"ns": _LIMITER_LOCK, "q": queue})


def group_filter(conn: Any, limit: RateLimit, queue: str, now_ms: int,
                 params: dict[str, Any]) -> str | None:
    """Return the SQL condition that skips jobs of saturated groups (adding its parameters
    to *params*), or None when the whole queue is saturated (no job may start now).

    Takes the queue's limiter lock until the end of the transaction.
    """
    lock_limiter(conn, queue)
    conn.execute("DELETE FROM rate_starts WHERE queue = %(q)s AND ts_ms <= %(cutoff)s",
                 {"q": queue, "cutoff": now_ms - limit.duration_ms})
    full = [r[0] for r in conn.execute(
        "SELECT grp FROM rate_starts WHERE queue = %(q)s GROUP BY grp HAVING count(*) >= %(max)s",
        {"q": queue, "max": limit.max}).fetchall()]
    if not full:
        return ""
    if limit.group_path is None:
        return None
    params["gpath"] = _path(limit)
    params["full_groups"] = full
    return f" AND {_group_sql(limit)} <> ALL(%(full_groups)s::text[])"


def record_start(conn: Any, limit: RateLimit, queue: str, rowid: int, now_ms: int) -> None:
    """Count the start of job *rowid* in its group's window."""
    conn.execute(
        f"INSERT INTO rate_starts (queue, grp, ts_ms) SELECT %(q)s, {_group_sql(limit)}, %(now)s"
        " FROM jobs WHERE id = %(id)s",
        {"q": queue, "now": now_ms, "id": rowid,
         "gpath": _path(limit) if limit.group_path else None})


def limited_until(conn: Any, limit: RateLimit, queue: str, now_ms: int) -> int | None:
    """Return when the first saturated group frees a slot (epoch ms), or None if none is full."""
    rows = conn.execute(
        "SELECT min(first) FROM (SELECT min(ts_ms) + %(dur)s AS first FROM rate_starts"
        " WHERE queue = %(q)s AND ts_ms > %(cutoff)s GROUP BY grp HAVING count(*) >= %(max)s)"
        " AS g", {"q": queue, "dur": limit.duration_ms, "cutoff": now_ms - limit.duration_ms,
                  "max": limit.max}).fetchall()
    return None if not rows or rows[0][0] is None else int(rows[0][0])
