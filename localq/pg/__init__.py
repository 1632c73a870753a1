"""The PostgreSQL backend: the same queues on a PostgreSQL server (extra ``localq[postgres]``).

A queue path that is a ``postgresql://`` URL selects it. The modules mirror the SQLite ones
one for one, so the Queue, Job, Worker, scheduler, CLI and testing layers above are shared:

* :mod:`localq.pg.store`: :class:`~localq.pg.store.PgStore`, the twin of ``localq._db.Store``;
* :mod:`localq.pg.schema`: the DDL and its versioned migrations;
* :mod:`localq.pg.transitions`: every job move (the twin of ``localq.transitions``);
* :mod:`localq.pg.queries`: read-only SQL (the twin of ``localq.queries``);
* :mod:`localq.pg.limiter`: the rate limiter's SQL (the twin of ``localq.limiter``);
* :mod:`localq.pg.notify`: LISTEN/NOTIFY wakeups with a polling fallback.

Importing this package needs psycopg 3 and psycopg-pool; :func:`require` says how to get them.
"""

from __future__ import annotations

from ..errors import ConfigError
from .url import is_postgres_url, redact

__all__ = ["is_postgres_url", "redact", "require"]


def require() -> None:
    """Check that the PostgreSQL driver is installed.

    :raises ConfigError: psycopg or psycopg-pool is missing (with the install command).
    """
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise ConfigError("a postgresql:// path needs the PostgreSQL driver: pip install"
                          " 'localq[postgres]' (psycopg 3 and psycopg-pool)") from exc
