"""What every reliability test checks after the damage: the file, and the jobs in it.

:func:`check_file` reopens the database through SQLite's own VFS (never the connection that
saw the fault) and runs ``PRAGMA integrity_check``; :func:`check_invariants` holds for any
localq file at rest, whatever happened to it (reference/reliability.md §7 "invariant
checker"); :func:`drain` proves that no job is stranded: with the clock past every lock and
delay, every job ends completed or failed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import apsw

import localq
from localq.testing import FakeClock, run_until_idle

__all__ = ["JobRow", "check_file", "check_invariants", "drain", "read_jobs"]

STATES = {"waiting", "delayed", "active", "completed", "failed"}


@dataclass(frozen=True)
class JobRow:
    """The columns of one job row that the checks look at."""

    rowid: int
    job_id: str | None
    name: str
    data: Any
    state: str
    attempts: int
    attempts_made: int
    returnvalue: Any
    lock_token: str | None
    lock_expires_ms: int | None
    finished_on_ms: int | None

    @property
    def public(self) -> str:
        return self.job_id if self.job_id is not None else str(self.rowid)


def check_file(path: str) -> None:
    """Reopen *path* through the default VFS: integrity ok, WAL mode, a localq schema."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def read_jobs(path: str) -> dict[str, JobRow]:
    """Return every job of the file by public id (default VFS)."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute(
            "SELECT id, job_id, name, data, state, opts, attempts_made, returnvalue,"
            " lock_token, lock_expires_ms, finished_on_ms FROM jobs").fetchall()
    finally:
        conn.close()
    out = {}
    for (rowid, job_id, name, data, state, opts, made, rv, token, expires, finished) in rows:
        row = JobRow(rowid, job_id, name, json.loads(data), state,
                     int(json.loads(opts).get("attempts", 1)), made,
                     None if rv is None else json.loads(rv), token, expires, finished)
        out[row.public] = row
    return out


def _event_counts(path: str, event: str) -> Counter[str]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT job_id FROM events WHERE event = ?", (event,)).fetchall()
    finally:
        conn.close()
    return Counter(job_id for (job_id,) in rows)


def check_invariants(path: str) -> dict[str, JobRow]:
    """Check what holds for every job of a file at rest; return the jobs.

    * each job is in exactly one known state;
    * active if and only if it holds a lock token (and an expiry);
    * ``attempts_made <= attempts``;
    * completed jobs have a result and a finish time, and exactly one ``completed`` event
      (the state change and its outbox row were one transaction: a completion is never
      half there, and no job was completed twice);
    * every recorded failed attempt has its ``failed`` event, and no more (the same
      all-or-nothing for failures).
    """
    jobs = read_jobs(path)
    completed = _event_counts(path, "completed")
    failed = _event_counts(path, "failed")
    for job in jobs.values():
        where = f"job {job.public} {job}"
        assert job.state in STATES, where
        assert (job.state == "active") == (job.lock_token is not None), where
        assert (job.state == "active") == (job.lock_expires_ms is not None), where
        assert job.attempts_made <= job.attempts, where
        if job.state == "completed":
            assert job.finished_on_ms is not None, where
            assert completed[job.public] == 1, f"{where}: {completed[job.public]} completed events"
        else:
            assert completed[job.public] == 0, f"{where}: completed event but {job.state}"
        stall_failed = job.state == "failed" and job.attempts_made < job.attempts
        assert failed[job.public] == job.attempts_made + stall_failed, (
            f"{where}: {failed[job.public]} failed events for {job.attempts_made} attempts")
    return jobs


def drain(path: str, queue: str, *, at: float, result: Any = "drained") -> dict[str, JobRow]:
    """Reopen *path* with the clock at *at* (past every lock and delay) and run every
    runnable job, failing nothing; return the jobs, all of them completed or failed."""
    with localq.Queue(queue, path=path, clock=FakeClock(at)) as q:
        run_until_idle(q, lambda job: result)
        counts = q.get_job_counts()
    unfinished = {s: counts[s] for s in ("waiting", "active", "delayed", "paused") if counts[s]}
    assert unfinished == {}, counts
    jobs = check_invariants(path)
    assert {job.state for job in jobs.values()} <= {"completed", "failed"}
    return jobs
