"""Looking at a queue URL without changing anything there.

Opening a :class:`~localq.pg.store.PgStore` creates its schema (a first open must, as a new
SQLite file is created). Commands that only read, such as ``localq stats``, must not: a typo
in ``?schema=`` would otherwise leave an empty schema on the server and report "no queues"
instead of the mistake. :func:`holds_tables` is what they ask first, on one short session.
"""

from __future__ import annotations

import psycopg

from .errors import connect_error, translate
from .notify import KEEPALIVES
from .url import parse_url

__all__ = ["holds_tables"]


def holds_tables(url: str) -> bool:
    """Return whether the schema of *url* exists and holds at least one table.

    A schema holding another application's tables counts: opening it then fails with the
    reason (:class:`~localq.pg.store.PgStore` refuses it), which is more useful than "missing".

    :raises ConfigError: a bad localq URL parameter.
    :raises DatabaseError: the server cannot be reached or refuses the role.
    """
    parsed = parse_url(url)
    try:
        conn = psycopg.connect(parsed.conninfo, autocommit=True, connect_timeout=10,
                               application_name="localq", **KEEPALIVES)
    except psycopg.OperationalError as exc:
        raise connect_error(exc, parsed.shown) from exc  # as a Queue's first open says it
    except psycopg.Error as exc:
        raise translate(exc, parsed.shown, 10.0, schema=parsed.schema) from exc
    try:
        with conn:
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = %s)",
                               (parsed.schema,)).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, parsed.shown, 10.0, schema=parsed.schema) from exc
    return bool(row and row[0])
