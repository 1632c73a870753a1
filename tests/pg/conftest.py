"""Fixtures of the PostgreSQL-only tests: a server, a schema per test, a PgStore on it."""

from __future__ import annotations

from typing import Iterator

import pytest



@pytest.fixture
def store(pg_url: str) -> Iterator["PgStore"]:  # noqa: F821
    """A PgStore on the test's own schema."""
    from localq.pg.store import PgStore

    s = PgStore(pg_url)
    try:
        yield s
    finally:
        s.close()
