"""The job row as every move sees it: its columns, its ids and its place in the queue.

Part of :mod:`localq.transitions` (call the moves through there). Ids come from one
sequence: ``max(id) + 1``, raised by the ``id_hwm`` high-water mark in ``meta`` so that an id
is never given twice, even after the newest job was deleted; re-queued jobs take their queue
position (``seq``) from the same sequence.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JOB_COLUMNS", "NEXT_ID", "Row", "STATE_IS", "TAIL", "auto_rowid", "next_id",
           "note_deleted", "public_id", "rowid_of", "take_seq"]

#: ``state = '<state>'`` spelled out: a statement whose plan depends on a bound value is
#: compiled again by SQLite at every run (see claiming._pick_sql), and ``state = :s`` is matched against
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


# max(rowid) is one b-tree descent; the high-water mark covers a deleted newest job.
NEXT_ID = ("max(coalesce((SELECT max(id) FROM jobs), 0),"
           " (SELECT value FROM meta WHERE key = 'id_hwm')) + 1")


def next_id(conn: Any) -> int:
    """Return the next id of the sequence, without taking it (the next insert takes it)."""
    return int(conn.execute(f"SELECT {NEXT_ID}").fetchall()[0][0])


def take_seq(conn: Any, count: int = 1) -> int:
    """Return the first of *count* fresh queue positions, after every id and position so far.

    A job re-entering waiting (retry, promote, stall) must sort after (LIFO: before) every job
    that entered before it. Taken from the id sequence (recorded in ``id_hwm``), each position
    is distinct: with a shared ``max(id) + 1`` two re-queued jobs tied and ran in id order.
    The cost is a gap in the automatic ids, which are only promised unique and increasing.
    """
    first = next_id(conn)
    conn.execute("UPDATE meta SET value = :v WHERE key = 'id_hwm'", {"v": first + count - 1})
    return first


def note_deleted(conn: Any, max_rowid: int | None) -> None:
    """Raise the high-water mark to *max_rowid*, the highest id just deleted (if it was the
    newest), so that the sequence never gives that id again."""
    if max_rowid is None:
        return
    conn.execute(
        "UPDATE meta SET value = :id WHERE key = 'id_hwm' AND value < :id"
        " AND :id > coalesce((SELECT max(id) FROM jobs), 0)", {"id": max_rowid})


#: The ``seq`` of a job entering waiting at position ``:tail`` (from :func:`take_seq`): the
#: tail of waiting, or its head for a LIFO job.
TAIL = "CASE WHEN json_extract(opts, '$.lifo') THEN -:tail ELSE :tail END"
