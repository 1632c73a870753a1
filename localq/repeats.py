"""Repeatable jobs in the database: schedules (the ``repeats`` table) and their occurrences.

A schedule is a row of ``repeats`` keyed by ``RepeatSpec.key(name)`` (:mod:`localq.repeat`
holds the arithmetic); its occurrences are ordinary jobs written by
:func:`localq.transitions.create_occurrence`, with the id ``repeat:<hash of key>:<slot ms>``.
Every change below runs in one ``BEGIN IMMEDIATE`` transaction that re-reads the schedule
row, which keeps these invariants however many processes run:

- ``slot_ms``, the slot of the newest occurrence, only grows: a slot never gets a second job
  (and the occurrence id is unique besides);
- a schedule has at most one occurrence that has not started: once that occurrence's slot
  has come and it has started (or is gone), :func:`advance` creates the occurrence of
  ``spec.next_after(now)``, strictly in the future; while it waits to start, none other is
  created. So slots missed while nothing ran (or the queue was paused) are skipped, not
  piled up;
- ``next_ms`` is when the scheduler looks next: ``slot_ms``, or the slot after now while the
  pending occurrence waits to start; it becomes NULL (the schedule has ended, and stays
  listed) once ``limit`` occurrences exist or no slot is left before ``end_date``;
- removing a schedule removes its waiting and delayed occurrences in the same transaction,
  so nothing of it runs afterwards.

Who advances a schedule: the scheduler (:func:`create_due`, from ``Queue._scheduler_tick``,
the workers' scheduler thread and ``testing.run_until_idle``), the claim of one of its
occurrences (as Bull does when a repetition starts) and ``add`` of the same schedule.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any, Mapping, cast

from . import transitions
from .errors import ConfigError
from .job import Job
from .text import findable

if TYPE_CHECKING:
    from .options import JobOptions
    from .queue import Queue
    from .repeat import RepeatSpec

__all__ = ["Repeatables", "add_repeat", "add_schedule", "advance", "create_due",
           "delete_schedule", "due_keys", "get_repeatable_jobs", "remove_repeatable",
           "remove_repeatable_by_key", "schedules"]

Row = tuple[Any, ...]

_SCHEDULE = ("SELECT name, spec, template, slot_ms, next_ms, count FROM repeats"
             " WHERE queue = :q AND key = :k")


# -- inside a transaction -------------------------------------------------------------------

def advance(conn: Any, *, queue: str, key: str, now_ms: int, force: bool = False) -> Row | None:
    """Create schedule *key*'s next occurrence once the pending one's slot has come and it has
    started (or is gone).

    The slot is ``spec.next_after(max(now_ms, slot_ms))``: after now and after every slot
    created before. While the pending occurrence waits to start (a paused queue, busy workers
    or none), no other is created and ``next_ms`` moves on to the next slot, when the
    scheduler looks again: slots missed meanwhile are skipped, not piled up. Past ``limit``
    or ``end_date`` the schedule ends instead (``next_ms`` NULL). Runs inside the caller's
    write transaction.

    :param force: create the next slot now, whatever the time (the pending occurrence was
        removed by ``job.remove()`` or ``q.empty()``).
    :returns: the new occurrence's row, or None when nothing was due or the schedule ended.
    """
    rows = conn.execute(_SCHEDULE, {"q": queue, "k": key}).fetchall()
    plan = next_slot(rows[0] if rows else None, now_ms=now_ms, force=force)
    if plan is None:
        return None
    name, _, template, slot_ms, _, count = rows[0]
    spec, slot = plan
    if slot is None or (not force and _unstarted(conn, queue, key, slot_ms)):
        conn.execute("UPDATE repeats SET next_ms = :next WHERE queue = :q AND key = :k",
                     {"next": slot, "q": queue, "k": key})
        return None
    return _occur(conn, queue, key, name, spec, template, slot, count + 1, now_ms)


def next_slot(row: Row | None, *, now_ms: int,
              force: bool) -> tuple[RepeatSpec, int | None] | None:
    """Decide a schedule's next occurrence (both backends' :func:`advance`).

    :param row: the schedule's (name, spec, template, slot_ms, next_ms, count), or None.
    :returns: None when nothing is due (no schedule, it ended, or its time has not come and
        not *force*); else its spec and the next slot (None: the limit is reached).
    """
    from .repeat import RepeatSpec  # croniter costs ~30 ms to import: only when needed

    if row is None or row[4] is None or (row[3] > now_ms and not force):
        return None
    _, spec_text, _, slot_ms, _, count = row
    spec = RepeatSpec.from_dict(json.loads(spec_text))
    ended = spec.limit is not None and count >= spec.limit
    return spec, None if ended else spec.next_after(max(now_ms, slot_ms))


def _unstarted(conn: Any, queue: str, key: str, slot_ms: int) -> bool:
    """Whether the occurrence of *key* at *slot_ms* exists and has never started."""
    return bool(conn.execute(
        "SELECT 1 FROM jobs WHERE queue = :q AND job_id = :j AND processed_on_ms IS NULL"
        " AND state IN ('waiting', 'delayed')",
        {"q": queue, "j": transitions.occurrence_id(key, slot_ms)}).fetchall())


def _occur(conn: Any, queue: str, key: str, name: str, spec: RepeatSpec, template: str,
           slot: int, count: int, now_ms: int) -> Row:
    """Create occurrence number *count* at *slot* and record it as the schedule's newest."""
    row = transitions.create_occurrence(
        conn, queue=queue, key=key, name=name, template=template,
        repeat=dict(spec.public(), key=key, count=count), slot_ms=slot, now_ms=now_ms)
    conn.execute("UPDATE repeats SET slot_ms = :slot, next_ms = :slot, count = :n"
                 " WHERE queue = :q AND key = :k", {"slot": slot, "n": count, "q": queue,
                                                    "k": key})
    return row


def _add_schedule(conn: Any, *, queue: str, name: str, spec: RepeatSpec, template: str,
                  now_ms: int) -> Row:
    """Store a schedule with its first occurrence, or return the pending one of the same key.

    An existing schedule is kept as it is (its data and options too). When its pending
    occurrence is gone (``job.remove()``, ``q.empty()``), the next slot is created instead.

    :raises ConfigError: a new schedule has no slot at all; an ended one has no occurrence
        left to return.
    """
    key = spec.key(name)
    rows = conn.execute("SELECT slot_ms FROM repeats WHERE queue = :q AND key = :k",
                        {"q": queue, "k": key}).fetchall()
    if not rows:
        slot = spec.next_after(now_ms)
        if slot is None:
            raise ConfigError(f"repeat schedule {key!r} has no slot between now and its"
                              " end_date: nothing was added; give a later end_date")
        conn.execute(
            "INSERT INTO repeats (queue, key, name, spec, template, slot_ms, next_ms, count)"
            " VALUES (:q, :k, :n, :s, :t, :slot, :slot, 0)",
            {"q": queue, "k": key, "n": name, "s": json.dumps(spec.to_dict()), "t": template,
             "slot": slot})
        return _occur(conn, queue, key, name, spec, template, slot, 1, now_ms)
    row = advance(conn, queue=queue, key=key, now_ms=now_ms)
    if row is None:
        pending = conn.execute(
            f"SELECT {transitions.JOB_COLUMNS} FROM jobs WHERE queue = :q AND job_id = :j",
            {"q": queue, "j": transitions.occurrence_id(key, rows[0][0])}).fetchall()
        row = pending[0] if pending else advance(conn, queue=queue, key=key, now_ms=now_ms,
                                                 force=True)
    if row is None:
        raise ConfigError(f"repeat schedule {key!r} has ended (limit or end_date reached) and"
                          " its last occurrence is gone: remove it with"
                          " remove_repeatable_by_key() to start it again")
    return row


_DUE = "SELECT key FROM repeats WHERE queue = :q AND next_ms <= :now"


def due_keys(conn: Any, *, queue: str, now_ms: int) -> list[str]:
    """Return the keys of *queue*'s schedules whose ``next_ms`` has come."""
    return [str(r[0]) for r in conn.execute(_DUE, {"q": queue, "now": now_ms}).fetchall()]


def schedules(conn: Any, *, queue: str) -> list[Row]:
    """Return (key, name, spec, slot_ms, next_ms, count) of *queue*'s schedules, soonest
    first and ended ones last."""
    return list(conn.execute(
        "SELECT key, name, spec, slot_ms, next_ms, count FROM repeats WHERE queue = :q"
        " ORDER BY next_ms IS NULL, slot_ms, key", {"q": queue}).fetchall())


def delete_schedule(conn: Any, *, queue: str, key: str) -> bool:
    """Delete schedule *key* (the caller removes its occurrences in the same transaction)."""
    return bool(conn.execute("DELETE FROM repeats WHERE queue = :q AND key = :k RETURNING 1",
                             {"q": queue, "k": key}).fetchall())


add_schedule = _add_schedule


def _impl(queue: Queue) -> Any:
    """The in-transaction schedule functions of the queue's backend (this module on SQLite,
    :mod:`localq.pg.repeats` on PostgreSQL, which locks the schedule row first)."""
    if queue._backend.kind == "postgresql":
        from .pg import repeats as pg_repeats
        return pg_repeats
    return sys.modules[__name__]


# -- Queue-level operations -----------------------------------------------------------------

def add_repeat(queue: Queue, opts: JobOptions, text: str) -> Job:
    """Store the schedule of ``add(..., repeat=...)`` and return its pending occurrence.

    Adding the same repeat options and name again changes nothing and returns the pending
    occurrence. A top-level ``job_id`` is the repeat's ``job_id`` (as in Bull).

    :param opts: the merged, validated options; ``opts.repeat`` is set.
    :param text: the job data, already serialised.
    :raises ConfigError: bad repeat options, or ``delay`` / ``timestamp`` (each occurrence
        gets its own), or two different job ids.
    """
    from .queue import _stored_opts
    from .repeat import parse_repeat

    if opts.delay:
        raise ConfigError("delay does not apply to repeatable jobs (each occurrence waits for"
                          " its slot): drop it, or use repeat 'start_date'")
    if opts.timestamp is not None:
        raise ConfigError("timestamp does not apply to repeatable jobs: each occurrence is"
                          " stamped when it is created; drop it")
    spec = parse_repeat(opts.repeat, now_ms=queue._now_ms())
    if opts.job_id is not None:
        if spec.job_id is not None and spec.job_id != opts.job_id:
            raise ConfigError(f"job_id {opts.job_id!r} and repeat job_id {spec.job_id!r}"
                              " differ: give one of them")
        spec = dataclasses.replace(spec, job_id=opts.job_id)
    plain = dataclasses.replace(opts, repeat=None, job_id=None)
    template = json.dumps({"data": text, "opts": json.loads(_stored_opts(plain)),
                           "priority": opts.priority})
    with queue._store.write(durable=True) as conn:
        row = _impl(queue).add_schedule(conn, queue=queue.name, name=opts.name, spec=spec,
                                        template=template, now_ms=queue._now_ms())
    queue._after_write()
    return Job(queue, row)


def create_due(queue: Queue) -> list[Job]:
    """Create the occurrences of *queue*'s schedules whose slot has come (the scheduler's work).

    Cheap when nothing is due (one read, no write transaction). Safe to run in several
    processes at once. Callers sleep until ``SELECT min(next_ms) FROM repeats WHERE queue =
    ?`` (epoch ms, on the queue's clock; NULL: no running schedule).

    :returns: the occurrences created.
    """
    if not queue._store.query(_DUE + " LIMIT 1", {"q": queue.name, "now": queue._now_ms()}):
        return []
    impl = _impl(queue)
    with queue._store.write(durable=False) as conn:
        now = queue._now_ms()  # read under the lock: later than any other scheduler's commit
        made = [impl.advance(conn, queue=queue.name, key=key, now_ms=now)
                for key in impl.due_keys(conn, queue=queue.name, now_ms=now)]
    rows = [row for row in made if row is not None]
    if rows:
        queue._after_write()
    return [Job(queue, row) for row in rows]


def get_repeatable_jobs(queue: Queue) -> list[dict[str, Any]]:
    """Return one dict per schedule of *queue*, soonest ``next`` first (ended ones last).

    Keys: ``key``, ``name``, ``cron``, ``every`` (seconds), ``tz``, ``start_date``,
    ``end_date``, ``next`` (epoch seconds: the pending occurrence's slot, past while it waits
    to start; None once ended), ``limit``, ``count`` (occurrences created), ``job_id`` (the
    repeat's) and ``next_job_id`` (the pending occurrence's id; None once ended).
    """
    from .repeat import RepeatSpec

    with queue._store.read() as conn:
        rows = _impl(queue).schedules(conn, queue=queue.name)
    out = []
    for key, name, spec_text, slot_ms, next_ms, count in rows:
        ended = next_ms is None
        out.append({"key": key, "name": name, "cron": None, "every": None,
                    **RepeatSpec.from_dict(json.loads(spec_text)).public(),
                    "next": None if ended else slot_ms / 1000, "count": count,
                    "next_job_id": None if ended else queue._tx.occurrence_id(key, slot_ms)})
    return out


def remove_repeatable(queue: Queue, repeat_opts: Mapping[str, Any], *,
                      name: str | None = None) -> bool:
    """Remove the schedule added with *repeat_opts* and *name*, and its pending occurrence.

    :param name: the job name used in ``add`` (default: the queue's default job name).
    :returns: whether a schedule was removed.
    :raises ConfigError: *repeat_opts* are not valid repeat options.
    """
    from .repeat import parse_repeat

    if name is None:
        name = queue._base_opts.name
    elif not isinstance(name, str) or not name:
        raise ConfigError(f"name must be the job name used in add(), not {name!r}")
    spec = parse_repeat(repeat_opts)  # no now_ms: a schedule past its end_date stays removable
    return remove_repeatable_by_key(queue, spec.key(name))


def remove_repeatable_by_key(queue: Queue, key: str) -> bool:
    """Remove schedule *key* and its waiting or delayed occurrences, in one transaction.

    An occurrence already running finishes, but is not run again (no retry, and failed if
    it stalls). Emits ``removed`` for each occurrence removed.

    :returns: whether a schedule was removed.
    :raises ConfigError: *key* is not a str.
    """
    if not isinstance(key, str):
        raise ConfigError(f"key must be a str from get_repeatable_jobs(), not {key!r}")
    if not findable(key, nul=queue._backend.nul_in_text):
        return False  # no schedule can have a key the database cannot store
    with queue._store.write(durable=True) as conn:
        now = queue._now_ms()
        existed = bool(_impl(queue).delete_schedule(conn, queue=queue.name, key=key))
        rows = queue._tx.remove_occurrences(conn, queue=queue.name, key=key, now_ms=now)
    queue._after_write()
    for row in rows:
        queue._emit_local("removed", Job(queue, row))
    return existed


class Repeatables:
    """The repeatable-job methods of :class:`localq.Queue` (Bull's names, snake_case)."""

    def get_repeatable_jobs(self) -> list[dict[str, Any]]:
        """Return one dict per schedule: ``key``, ``name``, ``cron`` or ``every`` (seconds),
        ``tz``, ``next`` (epoch seconds, None once ended), ``end_date``, ``start_date``,
        ``limit``, ``count``, ``job_id`` and ``next_job_id``; soonest first."""
        return get_repeatable_jobs(cast("Queue", self))

    def remove_repeatable(self, repeat_opts: Mapping[str, Any], *,
                          name: str | None = None) -> bool:
        """Remove the schedule added with the same *repeat_opts* and *name*, with its pending
        occurrence, so that it never runs again; return whether it existed."""
        return remove_repeatable(cast("Queue", self), repeat_opts, name=name)

    def remove_repeatable_by_key(self, key: str) -> bool:
        """Remove schedule *key* (from ``get_repeatable_jobs()`` or
        ``job.opts["repeat"]["key"]``) with its pending occurrence; return whether it existed."""
        return remove_repeatable_by_key(cast("Queue", self), key)
