"""Repeat schedules on PostgreSQL: the in-transaction part of :mod:`localq.repeats`.

The same invariants as on SQLite (see that module's docstring): ``slot_ms`` only grows, a
schedule has at most one occurrence that has not started, ``next_ms`` is when the scheduler
looks next. SQLite gets them from its single writer; here every function first locks the
schedule row (``FOR UPDATE``), so two schedulers (or a scheduler and a claim) advancing one
schedule take turns, and the second one re-reads what the first wrote. The occurrence id is
unique besides, so a slot never gets a second job whatever happens.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..repeats import next_slot
from . import transitions

if TYPE_CHECKING:
    from ..repeat import RepeatSpec

__all__ = ["add_schedule", "advance", "delete_schedule", "due_keys", "next_due_ms",
           "schedules"]

Row = tuple[Any, ...]

_SCHEDULE = ("SELECT name, spec, template, slot_ms, next_ms, count FROM repeats"
             " WHERE queue = %(q)s AND key = %(k)s FOR UPDATE")


def _rows(conn: Any, sql: str, params: Any) -> list[Row]:
    return list(conn.execute(sql, params).fetchall())


def advance(conn: Any, *, queue: str, key: str, now_ms: int, force: bool = False) -> Row | None:
    """Create schedule *key*'s next occurrence once the pending one's slot has come and it has
    started (or is gone); see ``localq.repeats.advance``.

    :param force: create the next slot now (the pending occurrence was removed).
    :returns: the new occurrence's row, or None when nothing was due or the schedule ended.
    """
    rows = _rows(conn, _SCHEDULE, {"q": queue, "k": key})
    plan = next_slot(rows[0] if rows else None, now_ms=now_ms, force=force)
    if plan is None:
        return None
    name, _, template, slot_ms, _, count = rows[0]
    spec, slot = plan
    if slot is None or (not force and _unstarted(conn, queue, key, slot_ms)):
        conn.execute("UPDATE repeats SET next_ms = %(next)s::bigint WHERE queue = %(q)s"
                     " AND key = %(k)s", {"next": slot, "q": queue, "k": key})
        return None
    return _occur(conn, queue, key, name, spec, template, slot, count + 1, now_ms)


def _unstarted(conn: Any, queue: str, key: str, slot_ms: int) -> bool:
    """Whether the occurrence of *key* at *slot_ms* exists and has never started."""
    return bool(_rows(
        conn, "SELECT 1 FROM jobs WHERE queue = %(q)s AND job_id = %(j)s"
        " AND processed_on_ms IS NULL AND state IN ('waiting', 'delayed')",
        {"q": queue, "j": transitions.occurrence_id(key, slot_ms)}))


def _occur(conn: Any, queue: str, key: str, name: str, spec: RepeatSpec, template: str,
           slot: int, count: int, now_ms: int) -> Row:
    """Create occurrence number *count* at *slot* and record it as the schedule's newest."""
    row = transitions.create_occurrence(
        conn, queue=queue, key=key, name=name, template=template,
        repeat=dict(spec.public(), key=key, count=count), slot_ms=slot, now_ms=now_ms)
    conn.execute("UPDATE repeats SET slot_ms = %(slot)s, next_ms = %(slot)s, count = %(n)s"
                 " WHERE queue = %(q)s AND key = %(k)s",
                 {"slot": slot, "n": count, "q": queue, "k": key})
    return row


def add_schedule(conn: Any, *, queue: str, name: str, spec: RepeatSpec, template: str,
                 now_ms: int) -> Row:
    """Store a schedule with its first occurrence, or return the pending one of the same key
    (``localq.repeats._add_schedule``). Two processes adding one schedule at once make one:
    the insert is ``ON CONFLICT DO NOTHING`` and the loser goes on as for an existing one.

    :raises ConfigError: a new schedule has no slot at all; an ended one has no occurrence
        left to return.
    """
    key = spec.key(name)
    slot = spec.next_after(now_ms)
    created = slot is not None and bool(_rows(
        conn, "INSERT INTO repeats (queue, key, name, spec, template, slot_ms, next_ms, count)"
        " VALUES (%(q)s, %(k)s, %(n)s, %(s)s, %(t)s, %(slot)s, %(slot)s, 0)"
        " ON CONFLICT (queue, key) DO NOTHING RETURNING 1",
        {"q": queue, "k": key, "n": name, "s": json.dumps(spec.to_dict()), "t": template,
         "slot": slot}))
    if created:
        assert slot is not None
        return _occur(conn, queue, key, name, spec, template, slot, 1, now_ms)
    rows = _rows(conn, "SELECT slot_ms FROM repeats WHERE queue = %(q)s AND key = %(k)s"
                 " FOR UPDATE", {"q": queue, "k": key})
    if not rows:
        raise ConfigError(f"repeat schedule {key!r} has no slot between now and its"
                          " end_date: nothing was added; give a later end_date")
    row = advance(conn, queue=queue, key=key, now_ms=now_ms)
    if row is None:
        pending = _rows(conn, f"SELECT {transitions.JOB_COLUMNS} FROM jobs WHERE queue = %(q)s"
                        " AND job_id = %(j)s",
                        {"q": queue, "j": transitions.occurrence_id(key, rows[0][0])})
        row = pending[0] if pending else advance(conn, queue=queue, key=key, now_ms=now_ms,
                                                 force=True)
    if row is None:
        raise ConfigError(f"repeat schedule {key!r} has ended (limit or end_date reached) and"
                          " its last occurrence is gone: remove it with"
                          " remove_repeatable_by_key() to start it again")
    return row


def due_keys(conn: Any, *, queue: str, now_ms: int) -> list[str]:
    """Return the keys of *queue*'s schedules whose ``next_ms`` has come."""
    return [str(r[0]) for r in _rows(conn, "SELECT key FROM repeats WHERE queue = %(q)s"
                                     " AND next_ms <= %(now)s ORDER BY key",
                                     {"q": queue, "now": now_ms})]


def next_due_ms(conn: Any, *, queue: str) -> int | None:
    """Return when the scheduler of *queue* must look next (epoch ms), None: no schedule runs."""
    value = _rows(conn, "SELECT min(next_ms) FROM repeats WHERE queue = %(q)s", {"q": queue})
    return None if value[0][0] is None else int(value[0][0])


def schedules(conn: Any, *, queue: str) -> list[Row]:
    """Return (key, name, spec, slot_ms, next_ms, count) of *queue*'s schedules, soonest first
    and ended ones last (what ``get_repeatable_jobs`` lists)."""
    return _rows(conn, "SELECT key, name, spec, slot_ms, next_ms, count FROM repeats"
                 " WHERE queue = %(q)s ORDER BY next_ms IS NULL, slot_ms, key", {"q": queue})


def delete_schedule(conn: Any, *, queue: str, key: str) -> bool:
    """Delete schedule *key* (the caller removes its occurrences in the same transaction)."""
    return bool(_rows(conn, "DELETE FROM repeats WHERE queue = %(q)s AND key = %(k)s"
                      " RETURNING 1", {"q": queue, "k": key}))
