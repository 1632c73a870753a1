"""The jobs of repeat schedules (the schedules themselves live in :mod:`localq.repeats`).

Part of :mod:`localq.transitions` (its docstring holds the state machine). An occurrence is an
ordinary row with the deterministic id ``repeat:<hash of key>:<slot>``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .adding import add_job
from .outbox import emit
from .rows import JOB_COLUMNS, Row, note_deleted, public_id

__all__ = ["create_occurrence", "occurrence_id", "remove_occurrences"]


def occurrence_id(key: str, slot_ms: int) -> str:
    """Return the job id of schedule *key*'s occurrence at *slot_ms*: ``repeat:<hash>:<slot>``.

    Deterministic, so two schedulers creating one slot create one job (``jobs_custom_id`` is
    unique); 64 bits of SHA-256 keep the keys of a queue apart.
    """
    return f"{occurrence_prefix(key)}{slot_ms}"


def occurrence_prefix(key: str) -> str:
    return f"repeat:{hashlib.sha256(key.encode()).hexdigest()[:16]}:"


def schedule_removed(conn: Any, queue: str, opts: dict[str, Any]) -> bool:
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
    row, _ = add_job(conn, queue=queue, name=name,
                     **occurrence_fields(key=key, template=template, repeat=repeat,
                                         slot_ms=slot_ms, now_ms=now_ms))
    return row


def occurrence_fields(*, key: str, template: str, repeat: dict[str, Any], slot_ms: int,
                      now_ms: int) -> dict[str, Any]:
    """The ``add_job`` arguments (but queue and name) of schedule *key*'s occurrence at
    *slot_ms*, for both backends' :func:`create_occurrence`."""
    plan = json.loads(template)
    delay_ms = max(0, slot_ms - now_ms)
    opts = dict(plan["opts"], delay=delay_ms / 1000, repeat=repeat)
    return dict(data=plan["data"], opts=opts, stored_opts=json.dumps(opts, separators=(",", ":")),
                job_id=occurrence_id(key, slot_ms), priority=plan["priority"],
                delay_ms=delay_ms, lifo=bool(opts.get("lifo")), timestamp_ms=now_ms,
                now_ms=now_ms, repeat_key=key)


def remove_occurrences(conn: Any, *, queue: str, key: str, now_ms: int) -> list[Row]:
    """Remove the pending occurrences of schedule *key* (with the schedule, by the caller).

    From: ``waiting`` / ``delayed`` (the pending occurrence, and retries waiting for their
    backoff). To: (gone). An ``active`` one runs on, but is not run again once the schedule
    is gone (:func:`move_to_failed`, :func:`recover_stalled`). Emits: ``removed`` per job.

    :returns: the rows of the jobs removed.
    """
    prefix = occurrence_prefix(key)
    # A range on the custom-id index: ";" follows ":" in ASCII, so [lo, hi) is the prefix.
    rows: list[Row] = conn.execute(
        "DELETE FROM jobs WHERE queue = :q AND job_id >= :lo AND job_id < :hi"
        " AND repeat_key = :k AND state IN ('waiting', 'delayed')"
        f" RETURNING {JOB_COLUMNS}",
        {"q": queue, "lo": prefix, "hi": prefix[:-1] + ";", "k": key}).fetchall()
    if rows:
        note_deleted(conn, max(r[0] for r in rows))
    for row in rows:
        emit(conn, queue, "removed", public_id(row[0], row[1]), None, now_ms)
    return rows
