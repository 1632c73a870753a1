"""The PostgreSQL backend: the modules of :mod:`localq.pg` bundled for the storage seam."""

from __future__ import annotations

from ..backend import Backend

__all__ = ["pg_backend"]


def _no_sweep(path: str) -> None:
    """Nothing to sweep: leases and wakeups leave no files behind on PostgreSQL."""


def pg_backend() -> Backend:
    """Return the backend of ``postgresql://`` URLs.

    :raises ConfigError: psycopg or psycopg-pool is not installed.
    """
    from . import require
    require()
    from . import lease, limiter, queries, transitions
    from .wakeup import PgWatcher
    return Backend(kind="postgresql", transitions=transitions, queries=queries, limiter=limiter,
                   lease=lease, leader_lock=lease.PgLeaderLock, watcher=PgWatcher,
                   sweep=_no_sweep, nul_in_text=False)
