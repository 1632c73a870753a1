"""The baseline: the same operations written directly on apsw, with nothing on top.

``raw`` (synchronous NORMAL) and ``raw-full`` (FULL: an fsync per commit) are the
physical limit of this machine that DESIGN.md's targets are ratios of:

- add: one ``INSERT`` in its own ``BEGIN IMMEDIATE`` transaction;
- bulk add: one transaction per batch;
- claim: one ``BEGIN IMMEDIATE`` transaction around
  ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING``;
- ack: a second transaction, guarded by the state it expects.

The schema is the least a real queue needs: an integer primary key (rowid), the
columns a job has, and one partial index over waiting jobs so a claim stays a
b-tree seek however many finished jobs pile up (without it every claim rescans the
completed rows and a drain is quadratic).

Each ``w*`` function takes ``(path, n, sync)``, where ``path`` is an empty directory
the run may write in, and returns the figures as a dict.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, cast

import apsw

from benchmarks.common import Backend, Claim, Settings, sync_name
from benchmarks.workloads import w1_add, w2_add_bulk, w3_drain, w4_end_to_end

_QUEUE = "bench"
_NAME = "job"
#: Long enough that no benchmark process gives up on the lock; SQLite's default
#: busy handler sleeps 1, 2, 5, 10... ms between retries, which W4 pays.
_BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    queue       TEXT NOT NULL,
    name        TEXT NOT NULL,
    data        TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    started_ms  INTEGER,
    finished_ms INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (queue, id) WHERE state = 'waiting';
"""
_INSERT = ("INSERT INTO jobs (queue, name, data, state, created_ms) "
           "VALUES (:queue, :name, :data, 'waiting', :now)")
_CLAIM = """
UPDATE jobs SET state = 'active', started_ms = :now
WHERE id = (SELECT id FROM jobs WHERE queue = :queue AND state = 'waiting'
            ORDER BY id LIMIT 1)
RETURNING id, data
"""
_ACK = ("UPDATE jobs SET state = 'completed', finished_ms = :now "
        "WHERE id = :id AND state = 'active'")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RawAdapter:
    """The floor: one apsw connection on a WAL file, explicit transactions."""

    def __init__(self, path: str, sync: str) -> None:
        self._conn = apsw.Connection(path)
        self._conn.set_busy_timeout(_BUSY_TIMEOUT_MS)
        # Each PRAGMA is read to the end: a half-read cursor would pin a snapshot.
        self._conn.execute("PRAGMA journal_mode = WAL").fetchall()
        self._conn.execute(f"PRAGMA synchronous = {sync}").fetchall()
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute(_SCHEMA)
        self._conn.execute("COMMIT")

    def add(self, data: str) -> None:
        """Insert one waiting job in its own transaction."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_INSERT, {"queue": _QUEUE, "name": _NAME, "data": data,
                                   "now": _now_ms()})
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def add_bulk(self, items: Sequence[str]) -> None:
        """Insert a batch of waiting jobs in one transaction."""
        conn = self._conn
        now = _now_ms()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, [{"queue": _QUEUE, "name": _NAME, "data": d,
                                        "now": now} for d in items])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def claim(self) -> Claim | None:
        """Move the oldest waiting job to active in one IMMEDIATE transaction."""
        conn = self._conn
        # IMMEDIATE, never DEFERRED: a read that upgrades to a write gets
        # SQLITE_BUSY at once, without the busy handler (DESIGN.md, SQLite hazards).
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(_CLAIM, {"now": _now_ms(), "queue": _QUEUE}).fetchall()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if not rows:
            return None
        job_id, data = rows[0]
        return Claim(token=job_id, data=cast(str, data))

    def ack(self, claim: Claim) -> None:
        """Mark an active job completed in a second transaction.

        :raises RuntimeError: if the job was not active: it was completed twice.
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_ACK, {"now": _now_ms(), "id": claim.token})
            changed = conn.changes()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if changed != 1:
            raise RuntimeError(f"job {claim.token} was not active when acked")

    def settings(self) -> Settings:
        """Read the pragmas back from the connection."""
        (mode,), = self._conn.execute("PRAGMA journal_mode").fetchall()
        (sync,), = self._conn.execute("PRAGMA synchronous").fetchall()
        return Settings(journal_mode=str(mode), synchronous=sync_name(cast(int, sync)))

    def pages_written(self) -> int | None:
        """Pages this connection wrote to the WAL (``SQLITE_DBSTATUS_CACHE_WRITE``)."""
        return int(self._conn.status(apsw.SQLITE_DBSTATUS_CACHE_WRITE)[0])

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def open_raw(workdir: str, sync: str) -> RawAdapter:
    """Open (creating if needed) the raw database in ``workdir``."""
    return RawAdapter(os.path.join(workdir, "raw.db"), sync)


BACKEND = Backend(
    name="raw", family="raw", open=open_raw,
    driver=f"apsw {apsw.apsw_version()}", sqlite_version=apsw.sqlite_lib_version(),
    supports_bulk=True,
)
BACKENDS = [BACKEND]


def w1(path: str, n: int, sync: str) -> dict[str, Any]:
    """W1, add one by one, on raw apsw; see :func:`benchmarks.workloads.w1_add`."""
    return w1_add(BACKEND, path, n, sync).to_dict()


def w2(path: str, n: int, sync: str) -> dict[str, Any]:
    """W2, add in batches of 1000; see :func:`benchmarks.workloads.w2_add_bulk`."""
    return w2_add_bulk(BACKEND, path, n, sync).to_dict()


def w3(path: str, n: int, sync: str) -> dict[str, Any]:
    """W3, drain with one consumer; see :func:`benchmarks.workloads.w3_drain`."""
    return w3_drain(BACKEND, path, n, sync).to_dict()


def w4(path: str, n: int, sync: str) -> dict[str, Any]:
    """W4, 1 producer + 2 consumer processes; see :func:`benchmarks.workloads.w4_end_to_end`."""
    return w4_end_to_end(BACKEND, path, n, sync).to_dict()
