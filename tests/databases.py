"""A test database seen from outside localq, on either backend (the ``db_path`` fixture's).

Tests of "creates nothing" and "leaves another application's database alone" need to look
without opening a Queue (which would create the file or schema): a SQLite path is a file,
a ``postgresql://`` URL names a schema (``?schema=``) on a server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import apsw

from localq.pg.url import is_postgres_url, parse_url

__all__ = ["connect", "contents", "exists", "make_foreign", "polling"]


def connect(url: str) -> Any:
    """Return an autocommit psycopg connection to the server of queue URL *url*."""
    import psycopg

    return psycopg.connect(parse_url(url).conninfo, autocommit=True)


def _schema(url: str) -> str:
    return parse_url(url).schema


def exists(path: str) -> bool:
    """Whether the file, or the URL's schema, exists."""
    if not is_postgres_url(path):
        return os.path.exists(path)
    with connect(path) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                 (_schema(path),)).fetchone())


def make_foreign(path: str) -> None:
    """Make *path* another application's database: a SQLite file, or a schema, holding a
    table ``t`` with one row."""
    if not is_postgres_url(path):
        conn = apsw.Connection(path)
        conn.execute("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        conn.close()
        return
    schema = _schema(path)  # a checked name: lowercase letters, digits and underscores
    with connect(path) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".t (x int)')
        conn.execute(f'INSERT INTO "{schema}".t VALUES (1)')


def contents(path: str) -> Any:
    """Everything *path* holds, to compare before and after: the file's bytes, or every
    table of the schema with its rows; None if there is nothing there."""
    if not is_postgres_url(path):
        return Path(path).read_bytes() if os.path.isfile(path) else None
    if not exists(path):
        return None
    schema = _schema(path)
    with connect(path) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))]
        return {t: sorted(conn.execute(f'SELECT * FROM "{schema}"."{t}"').fetchall())
                for t in tables}


def polling(path: str) -> str:
    """*path*, with PostgreSQL's LISTEN thread off (``listen=off``) for a URL.

    For tests that open and close a queue per hypothesis example and never wait for a
    wakeup: closing a queue whose listening thread runs takes up to half a second.
    """
    if not is_postgres_url(path):
        return path
    return f"{path}{'&' if '?' in path else '?'}listen=off"
