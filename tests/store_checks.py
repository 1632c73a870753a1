"""What the multi-process tests check after the damage, on either backend.

Read through :func:`tests.processes.rows`, a connection of their own (for a SQLite file:
the default VFS, never the connection that saw a fault), so that they hold for a SQLite file
and for a PostgreSQL schema alike (reference/reliability.md §7 "invariant checker"):

* :func:`check_store`: a SQLite file passes ``integrity_check`` and is still in WAL mode
  (PostgreSQL has no file of ours to damage: nothing to check there);
* :func:`check_invariants`: every job at rest is in one known state, active if and only if it
  holds a lock, within its attempts, with exactly one ``completed`` event if completed and
  one ``failed`` event per recorded failure (0 completed twice, 0 half-recorded).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import apsw

from tests.processes import is_pg, rows

__all__ = ["JobRow", "check_file", "check_invariants", "check_store", "read_jobs", "stalls"]

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


def check_store(db: str) -> None:
    """A SQLite file reopened through the default VFS is intact (no-op on PostgreSQL)."""
    if not is_pg(db):
        check_file(db)


def read_jobs(db: str) -> dict[str, JobRow]:
    """Return every job of *db* by public id."""
    out = {}
    for (rowid, job_id, name, data, state, opts, made, rv, token, expires, finished) in rows(
            db, "SELECT id, job_id, name, data, state, opts, attempts_made, returnvalue,"
                " lock_token, lock_expires_ms, finished_on_ms FROM jobs"):
        job = JobRow(rowid, job_id, name, json.loads(data), state,
                     int(json.loads(opts).get("attempts", 1)), made,
                     None if rv is None else json.loads(rv), token, expires, finished)
        out[job.public] = job
    return out


def stalls(db: str) -> dict[str, int]:
    """Return each job's ``stalled_count`` by public id."""
    return {job_id if job_id is not None else str(rowid): count
            for rowid, job_id, count in rows(db, "SELECT id, job_id, stalled_count FROM jobs")}


def _event_counts(db: str, event: str) -> Counter[str]:
    return Counter(r[0] for r in rows(db, "SELECT job_id FROM events WHERE event = :e",
                                      {"e": event}))


def check_invariants(db: str) -> dict[str, JobRow]:
    """Check what holds for every job at rest, whatever happened to it; return the jobs.

    * each job is in exactly one known state;
    * active if and only if it holds a lock token (and an expiry);
    * ``attempts_made <= attempts``;
    * completed jobs have a finish time and exactly one ``completed`` event (the state
      change and its outbox row were one transaction: a completion is never half there, and
      no job was completed twice);
    * every recorded failed attempt has its ``failed`` event, and no more.
    """
    jobs = read_jobs(db)
    completed = _event_counts(db, "completed")
    failed = _event_counts(db, "failed")
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
