"""Helpers for tests with real worker processes (see ``tests/worker_proc.py``)."""

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


def reader(db: str) -> apsw.Connection:
    """A read-only connection for checking what workers did."""
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(10_000)
    return conn


def rows(db: str, sql: str, params: Any = None) -> list[Any]:
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
