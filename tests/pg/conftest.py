"""Fixtures of the PostgreSQL-only tests: a server, a schema per test, a PgStore on it."""

from __future__ import annotations

from typing import Iterator

import pytest

from pg_server import pg_server_url, pg_url  # noqa: F401  (fixtures)


@pytest.fixture
def store(pg_url: str) -> Iterator["PgStore"]:  # noqa: F821
    """A PgStore on the test's own schema."""
    from localq.pg.store import PgStore

    s = PgStore(pg_url)
    try:
        yield s
    finally:
        s.close()
