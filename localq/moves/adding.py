"""Adding jobs: one (:func:`add_job`) or many in a row (:func:`add_jobs`).

Part of :mod:`localq.transitions` (its docstring holds the state machine).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..options import NO_PRIORITY
from .outbox import emit, emit_if_watched
from .rows import JOB_COLUMNS, NEXT_ID, Row, next_id, public_id

__all__ = ["add_job", "add_jobs", "next_rowid"]


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
    if job_id is None and state == "waiting" and repeat_key is None:
        conn.execute(_INSERT_PLAIN, {
            "id": rowid, "queue": queue, "name": name, "data": data, "opts": stored_opts,
            "priority": priority, "seq": -rowid if lifo else rowid, "ts": timestamp_ms,
            "run_at": now_ms})
    else:
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
        emit_if_watched(conn, queue, "waiting", public, now_ms)
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
    # The columns a fresh row ends with (what _new_row gives after run_at_ms).
    tail = (0, 0, None, None, None, None, None, None, None, None, queue)

    def flush() -> None:
        nonlocal watched
        if not plain:
            return
        conn.executemany(_INSERT_PLAIN, plain)
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
        if job["job_id"] is not None or job["delay_ms"] > 0:
            flush()
            row, inserted = add_job(conn, queue=queue, opts={}, now_ms=now_ms, rowid=rowid,
                                    **job)
            rowid += inserted
            out.append((row, inserted))
            continue
        priority = NO_PRIORITY if job["priority"] is None else job["priority"]
        name, data, stored, ts = job["name"], job["data"], job["stored_opts"], job["timestamp_ms"]
        plain.append({"id": rowid, "queue": queue, "name": name, "data": data, "opts": stored,
                      "priority": priority, "seq": -rowid if job["lifo"] else rowid, "ts": ts,
                      "run_at": now_ms})
        out.append(((rowid, None, name, data, stored, "waiting", priority, ts, 0, now_ms)
                    + tail, True))
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
#: The INSERT of a plain job (no custom id, no delay): every parameter costs a dict lookup
#: by a new str in apsw, so the constant columns are spelled out.
_INSERT_PLAIN = ("INSERT INTO jobs (id, queue, job_id, name, data, opts, state, priority, seq,"
                 " timestamp_ms, delay_ms, run_at_ms) VALUES (:id, :queue, NULL, :name, :data,"
                 " :opts, 'waiting', :priority, :seq, :ts, 0, :run_at)")
_WATCHED = "SELECT 1 FROM queues WHERE name = :q AND watch_until_ms > :wall"
_NEXT_AND_WATCHED = (f"SELECT {NEXT_ID}, EXISTS (SELECT 1 FROM queues WHERE name = :q"
                     " AND watch_until_ms > :wall)")


def next_rowid(conn: Any) -> int:
    """Return the row number the next inserted job will get (for ``add_bulk``)."""
    return next_id(conn)
