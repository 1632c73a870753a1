"""The storage seam: everything that speaks SQL (or locks files) for one kind of database.

A :class:`Backend` bundles the modules a Queue needs for its path: the store (connections
and transactions), ``transitions`` (every job move), ``queries`` (reads), the rate limiter's
SQL, the process lease, the scheduler's leader lock and the change watcher. The Queue,
Job, Worker, scheduler, CLI and testing layers above only call these, so the same layers run
on SQLite (a file path) and on PostgreSQL (a ``postgresql://`` URL, :mod:`localq.pg`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

__all__ = ["Backend", "backend_for", "sqlite_backend"]


@dataclass(frozen=True)
class Backend:
    """The SQL-speaking parts of one database kind.

    :ivar kind: ``"sqlite"`` or ``"postgresql"``.
    :ivar transitions: the module of job moves (``localq.transitions`` or its twin).
    :ivar queries: the module of reads (``localq.queries`` or its twin).
    :ivar limiter: the module with the rate limiter's SQL (``limited_until``).
    :ivar lease: the process-lease module (``acquire``, ``release``, ``current``,
        ``dead_owners``, ``is_alive``, ``sweep``), called with the queue's path.
    :ivar leader_lock: ``(path, queue name) -> lock`` shaped like ``filelock.FileLock``
        (``acquire(timeout=0)`` raising ``filelock.Timeout``, ``release()``, ``is_locked``).
    :ivar watcher: ``(store, name=queue) -> Watcher``: wakes waiters on changes.
    :ivar sweep: housekeeping of the side files of dead processes, given the path.
    :ivar nul_in_text: whether text columns hold the NUL character (PostgreSQL's do not:
        names, ids and log rows holding it are refused there, see :mod:`localq.text`).
    """

    kind: str
    transitions: ModuleType
    queries: ModuleType
    limiter: ModuleType
    lease: ModuleType
    leader_lock: Callable[[str, str], Any]
    watcher: Callable[..., Any]
    sweep: Callable[[str], None]
    nul_in_text: bool = True


def _sqlite_leader_lock(path: str, queue: str) -> Any:
    import filelock

    from .scheduler import leader_path
    return filelock.FileLock(leader_path(path, queue), mode=0o600, thread_local=False,
                             fallback_to_soft=False)


def _sqlite_sweep(path: str) -> None:
    from . import doorbell, lease
    lease.sweep(path)
    doorbell.sweep_bells(path)


def sqlite_backend() -> Backend:
    """Return the backend of SQLite files (the default)."""
    from . import lease, limiter, queries, transitions
    from .wakeup import Watcher
    return Backend(kind="sqlite", transitions=transitions, queries=queries, limiter=limiter,
                   lease=lease, leader_lock=_sqlite_leader_lock, watcher=Watcher,
                   sweep=_sqlite_sweep)


def backend_for(path: str | os.PathLike[str] | None) -> tuple[Backend, str]:
    """Return the backend of a queue path and the path to open with it.

    ``None`` means ``$LOCALQ_PATH``, else ``./localq.db``. A ``postgresql://`` (or
    ``postgres://``) URL selects PostgreSQL and is returned as given; anything else is a
    SQLite file, resolved by ``localq._db.resolve_path``.

    :raises ConfigError: a bad file path, or a URL without the PostgreSQL driver installed.
    """
    from .pg.url import is_postgres_url

    raw = path if path is not None else os.environ.get("LOCALQ_PATH") or None
    if is_postgres_url(raw):
        from .pg.backend import pg_backend
        return pg_backend(), str(raw)
    from ._db import resolve_path
    return sqlite_backend(), resolve_path(path)
