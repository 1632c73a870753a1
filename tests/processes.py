"""Helpers for tests with real worker processes (see ``tests/worker_proc.py``).

Every helper that takes *db* accepts either backend's path: a SQLite file, or the
``postgresql://`` URL of a schema (what the ``db_path`` fixture gives); child processes open
``localq.Queue(name, path=db)`` with the same string.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import apsw
import filelock

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_proc.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spawn_worker(db: str, queue: str, log: str, *options: str,
                 wait: bool = True) -> subprocess.Popen[str]:
    """Start ``tests/worker_proc.py`` and return once its worker runs (at once if not *wait*)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, SCRIPT, db, queue, log, *options],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    if not wait:
        return proc
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        raise AssertionError(f"worker process did not start: {line!r}")
    return proc


def stop(*procs: subprocess.Popen[str]) -> None:
    """Kill the processes that still run and reap them all."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Line:
    kind: str
    job: str
    pid: int
    at: float
    text: str


def read_log(path: str) -> list[Line]:
    """Parse the worker log (see worker_proc's docstring)."""
    out = []
    try:
        with open(path) as fh:
            for raw in fh:
                parts = raw.split()
                if not parts:
                    continue
                if parts[0] in ("start", "done"):
                    out.append(Line(parts[0], parts[1], int(parts[2]), float(parts[3]), raw))
                elif parts[0] == "error":
                    out.append(Line("error", "", int(parts[1]), 0.0, raw))
    except FileNotFoundError:
        pass
    return out


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.005) -> bool:
    """Poll *predicate* until it is true or *timeout* seconds pass; return whether it was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def is_pg(db: str) -> bool:
    """Whether *db* is a PostgreSQL URL (else a SQLite file)."""
    from localq.pg.url import is_postgres_url
    return is_postgres_url(db)


def reader(db: str) -> apsw.Connection:
    """A read-only connection to a SQLite file, for checking what workers did."""
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(10_000)
    return conn


def rows(db: str, sql: str, params: Any = None) -> list[Any]:
    """Run one read on a connection of its own (named parameters as ``:name``, on both
    backends) and return its rows."""
    if is_pg(db):
        from localq.pg.store import PgStore
        store = PgStore(db)
        try:
            return [tuple(r) for r in store.query(sql, params)]
        finally:
            store.close()
    conn = reader(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def lock_is_held(path: str) -> bool:
    """Whether some process holds the lock file at *path* (probed without keeping it)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        if filelock.lock_descriptor(fd, blocking=False):
            filelock.unlock_descriptor(fd)
            return False
        return True
    finally:
        os.close(fd)


def leader_is_held(db: str, queue: str) -> bool:
    """Whether some process leads the scheduler of *queue* on *db* (probed, not kept): the
    leader lock file on SQLite, the leader's session advisory lock on PostgreSQL."""
    if not is_pg(db):
        from localq.scheduler import leader_path
        return lock_is_held(leader_path(db, queue))
    import psycopg

    from localq.pg.lease import PgLeaderLock, advisory_key
    from localq.pg.url import parse_url
    key = advisory_key("leader", PgLeaderLock(db, queue).name)
    # A transaction-level try-lock ends with this autocommit statement: a candidate that
    # tries at the same instant may lose one round, never the leadership.
    with psycopg.connect(parse_url(db).conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()
    return not (row and row[0])
