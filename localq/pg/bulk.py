"""Adding many jobs in one statement (PostgreSQL): the ``add_bulk`` move.

:func:`localq.pg.transitions.add_job` sends one statement per job, so a batch of 1000 cost
1000 round trips. Here the batch goes as arrays in one multi-row ``INSERT ... SELECT FROM
unnest(...)`` that also writes the events and sends the NOTIFY, with the same rows, ids,
queue positions, events and custom-id rule as :func:`~localq.pg.transitions.add_job` called
once per job in order.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from ..options import NO_PRIORITY
from ._sql import J_COLUMNS, JOB_COLUMNS, WATCHED, Row
from ._sql import rows as _rows

__all__ = ["add_jobs"]

_INSERT_MANY = (
    "WITH src AS (SELECT * FROM unnest(%(job_id)s::text[], %(name)s::text[], %(data)s::text[],"
    "  %(opts)s::text[], %(priority)s::bigint[], %(delay)s::bigint[], %(lifo)s::boolean[],"
    "  %(ts)s::bigint[], %(edata)s::text[]) WITH ORDINALITY"
    "  AS s(job_id, name, data, opts, priority, delay_ms, lifo, ts, edata, ord)),"
    # One queue position per job, given out in the jobs' order whatever order nextval() ran
    # in: the batch keeps its FIFO (LIFO) order among itself.
    " pos AS (SELECT n, row_number() OVER (ORDER BY n) AS k"
    "  FROM (SELECT nextval('job_seq') AS n FROM src) AS d),"
    # The identity ids are drawn in the ORDER BY's order (the INSERT's own target list runs
    # above the sorted SELECT). A custom id that exists is left out before the INSERT: a
    # conflicting row would still draw an id and leave a gap (ON CONFLICT only settles two
    # batches adding one id at once).
    " j AS (INSERT INTO jobs (queue, job_id, name, data, opts, state, priority, seq,"
    "  timestamp_ms, delay_ms, run_at_ms)"
    "  SELECT %(q)s, s.job_id, s.name, s.data, s.opts,"
    "   CASE WHEN s.delay_ms > 0 THEN 'delayed' ELSE 'waiting' END, s.priority,"
    "   CASE WHEN s.lifo THEN -p.n ELSE p.n END, s.ts, s.delay_ms, %(now)s + s.delay_ms"
    "  FROM src AS s JOIN pos AS p ON p.k = s.ord"
    "  WHERE s.job_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS o WHERE o.queue = %(q)s"
    "   AND o.job_id = s.job_id)"
    "  ORDER BY s.ord"
    "  ON CONFLICT (queue, job_id) WHERE job_id IS NOT NULL DO NOTHING"
    "  RETURNING " + JOB_COLUMNS + ", seq),"
    " ev AS (INSERT INTO events (queue, event, job_id, data, ts_ms)"
    "  SELECT %(q)s, j.state, coalesce(j.job_id, j.id::text), s.edata, %(now)s"
    "  FROM j JOIN pos AS p ON p.n = abs(j.seq) JOIN src AS s ON s.ord = p.k"
    "  WHERE j.state = 'delayed' OR " + WATCHED + " ORDER BY j.id)"
    # One NOTIFY per payload ("c:" waiting, "d:" delayed), as add_job's would fold to.
    " SELECT p.k, " + J_COLUMNS + ", CASE WHEN row_number() OVER (PARTITION BY j.state) = 1"
    "  THEN pg_notify('localq_' || current_schema(),"
    "   CASE WHEN j.state = 'delayed' THEN 'd:' ELSE 'c:' END || %(q)s) END"
    " FROM j JOIN pos AS p ON p.n = abs(j.seq)"
)

_BY_CUSTOM_IDS = ("SELECT " + JOB_COLUMNS + " FROM jobs WHERE queue = %(q)s"
                  " AND job_id = ANY(%(ids)s::text[])")


def add_jobs(conn: Any, *, queue: str, jobs: Sequence[dict[str, Any]], rowid: int,
             now_ms: int) -> list[tuple[Row, bool]]:
    """Insert several jobs in order, each as ``add_job`` would (one statement for the lot,
    a second one only when custom ids were not inserted).

    From: (new). To: ``waiting`` / ``delayed``. Guard: a custom id already in the queue, or
    earlier in *jobs*, adds nothing and returns that job. Emits: as ``add_job`` per job
    (``delayed`` always, ``waiting`` while someone listens); one NOTIFY per kind.

    :param jobs: ``add_job``'s keywords for each job (``name``, ``data``, ``stored_opts``,
        ``job_id``, ``priority``, ``delay_ms``, ``lifo``, ``timestamp_ms``).
    :param rowid: ignored (ids come from the identity sequence).
    :returns: (row, inserted) per job, in order.
    """
    if not jobs:
        return []
    # Only the first entry of a custom id is sent: the others return its row afterwards.
    sent: list[int] = []
    seen: set[str] = set()
    for i, job in enumerate(jobs):
        custom = job["job_id"]
        if custom is not None:
            if custom in seen:
                continue
            seen.add(custom)
        sent.append(i)
    batch = [jobs[i] for i in sent]
    params = {
        "q": queue, "now": now_ms, "wall": int(time.time() * 1000),
        "job_id": [j["job_id"] for j in batch], "name": [j["name"] for j in batch],
        "data": [j["data"] for j in batch], "opts": [j["stored_opts"] for j in batch],
        "priority": [NO_PRIORITY if j["priority"] is None else j["priority"] for j in batch],
        "delay": [j["delay_ms"] for j in batch], "lifo": [bool(j["lifo"]) for j in batch],
        "ts": [j["timestamp_ms"] for j in batch],
        "edata": [json.dumps((now_ms + j["delay_ms"]) / 1000.0) if j["delay_ms"] > 0 else None
                  for j in batch],
    }
    out: list[tuple[Row, bool] | None] = [None] * len(jobs)
    for r in _rows(conn, _INSERT_MANY, params):
        out[sent[r[0] - 1]] = (tuple(r[1:-1]), True)
    missing = [i for i, got in enumerate(out) if got is None]
    if missing:
        found = {r[1]: r for r in _rows(conn, _BY_CUSTOM_IDS, {
            "q": queue, "ids": sorted({jobs[i]["job_id"] for i in missing})})}
        for i in missing:
            row = found.get(jobs[i]["job_id"])
            inserted = False
            if row is None:  # removed since the INSERT looked: add it as add_job would now
                from .transitions import add_job  # transitions re-exports this module
                row, inserted = add_job(conn, queue=queue, opts={}, now_ms=now_ms, **jobs[i])
                found[jobs[i]["job_id"]] = row
            out[i] = (tuple(row), inserted)
    done = [got for got in out if got is not None]
    assert len(done) == len(jobs)
    return done
