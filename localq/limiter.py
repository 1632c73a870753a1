"""The rate limiter: at most ``max`` job starts per sliding window of ``duration`` seconds.

Starts are rows of ``rate_starts`` written in the claim's own transaction, so the limit holds
across every process on the file. A window slides (stricter than Bull's fixed window that
restarts at the first job): a slot frees when the oldest start in the window gets older than
``duration``. Limited jobs simply stay ``waiting``, in order: none is moved or dropped
(Bull's ``bounceBack`` dropped them, bull#1148). With ``group_key`` each value of that data
field (a dotted path, e.g. ``"account.id"``) has its own window; jobs without the field
share one group.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import ConfigError
from .options import Limiter

__all__ = ["RateLimit", "compile_limit", "group_filter", "limited_until", "record_start"]


class RateLimit(NamedTuple):
    """A queue's limiter in the units the SQL uses."""

    max: int
    duration_ms: int
    #: SQLite JSON path of the group field ('$."a"."b"'), or None without groups.
    group_path: str | None


def compile_limit(limiter: Limiter | None) -> RateLimit | None:
    """Turn a validated :class:`~localq.options.Limiter` into a :class:`RateLimit`."""
    if limiter is None:
        return None
    path = None
    if limiter.group_key is not None:
        parts = limiter.group_key.split(".")
        if any(not p or '"' in p for p in parts):
            raise ConfigError(f"limiter group_key {limiter.group_key!r} must be a dotted path of"
                              " field names without quotes, e.g. 'account.id'")
        path = "$" + "".join(f'."{p}"' for p in parts)
    return RateLimit(limiter.max, max(1, int(limiter.duration * 1000)), path)


def _group_sql(limit: RateLimit) -> str:
    return ("coalesce(CAST(json_extract(data, :gpath) AS TEXT), '')" if limit.group_path
            else "''")


def group_filter(conn: Any, limit: RateLimit, queue: str, now_ms: int,
                 params: dict[str, Any]) -> str | None:
    """Return the SQL condition that skips jobs of saturated groups (adding its parameters
    to *params*), or None when the whole queue is saturated (no job may start now)."""
    cutoff = now_ms - limit.duration_ms
    conn.execute("DELETE FROM rate_starts WHERE queue = :q AND ts_ms <= :cutoff",
                 {"q": queue, "cutoff": cutoff})
    full = [r[0] for r in conn.execute(
        "SELECT grp FROM rate_starts WHERE queue = +:q GROUP BY grp HAVING count(*) >= :max",
        {"q": queue, "max": limit.max}).fetchall()]
    if not full:
        return ""
    if limit.group_path is None:
        return None
    params["gpath"] = limit.group_path
    marks = []
    for i, grp in enumerate(full):
        params[f"g{i}"] = grp
        marks.append(f":g{i}")
    return f" AND {_group_sql(limit)} NOT IN ({', '.join(marks)})"


def record_start(conn: Any, limit: RateLimit, queue: str, rowid: int, now_ms: int) -> None:
    """Count the start of job *rowid* in its group's window."""
    conn.execute(
        f"INSERT INTO rate_starts (queue, grp, ts_ms) SELECT :q, {_group_sql(limit)}, :now"
        " FROM jobs WHERE id = :id",
        {"q": queue, "now": now_ms, "id": rowid, "gpath": limit.group_path})


def limited_until(conn: Any, limit: RateLimit, queue: str, now_ms: int) -> int | None:
    """Return when the first saturated group frees a slot (epoch ms), or None if none is full."""
    rows = conn.execute(
        "SELECT min(first) FROM (SELECT min(ts_ms) + :dur AS first FROM rate_starts"
        " WHERE queue = +:q AND ts_ms > :cutoff GROUP BY grp HAVING count(*) >= :max)",
        {"q": queue, "dur": limit.duration_ms, "cutoff": now_ms - limit.duration_ms,
         "max": limit.max}).fetchall()
    return None if not rows or rows[0][0] is None else int(rows[0][0])
