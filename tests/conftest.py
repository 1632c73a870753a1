"""Shared fixtures: a queue on a file under tmp_path, a FakeClock, hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

import localq
from localq.testing import FakeClock
from pg_server import pg_server_url, pg_url  # noqa: F401  (fixtures)

settings.register_profile("default", deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("ci", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


#: The backends the contract suite runs on: ``LOCALQ_TEST_BACKENDS=sqlite`` (or ``postgres``)
#: keeps one of them.
BACKENDS = tuple(b for b in os.environ.get("LOCALQ_TEST_BACKENDS", "sqlite,postgres").split(",")
                 if b)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend of this run of a contract test: ``"sqlite"`` or ``"postgres"``."""
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the PostgreSQL runs of tests marked ``sqlite_only`` (file-specific promises:
    file modes, WAL, lease files, apsw tracing)."""
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        if (spec is not None and spec.params.get("backend") == "postgres"
                and item.get_closest_marker("sqlite_only")):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def db_path(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database: a file under tmp_path, or a schema of its own on the test server."""
    if backend == "sqlite":
        return str(tmp_path / "q.db")
    url = request.getfixturevalue("pg_url")
    return str(url)


@pytest.fixture
def clock() -> FakeClock:
    """A FakeClock starting at a fixed, round time (2026-01-01T00:00:00Z)."""
    return FakeClock(1767225600.0)


@pytest.fixture
def queue(db_path: str, clock: FakeClock) -> Iterator[localq.Queue]:
    """A queue named "q" on db_path, driven by clock."""
    q = localq.Queue("q", path=db_path, clock=clock)
    try:
        yield q
    finally:
        q.close()


#: Every table a localq file holds, for before/after comparisons.
TABLES = ("jobs", "job_logs", "events", "queues", "meta", "workers", "repeats", "rate_starts")


@pytest.fixture
def snapshot() -> Callable[[localq.Queue], dict[str, list[Any]]]:
    """Return a function giving every row of every table of a queue's file.

    Comparing two snapshots proves that a refused call stored nothing (not even an event).
    """
    def take(q: localq.Queue) -> dict[str, list[Any]]:
        if q._backend.kind == "sqlite":
            return {t: q._store.query(f"SELECT * FROM {t} ORDER BY rowid") for t in TABLES}
        # PostgreSQL: no rowid, and no meta table (sequences hold the ids); rows sorted here,
        # by id first where the table has one (jobs, job_logs, events: in insertion order).
        def key(row: tuple[Any, ...]) -> tuple[int, str]:
            return (row[0] if isinstance(row[0], int) else 0, repr(row))
        # The events' columns as on SQLite (the xid column is PostgreSQL's cursor).
        columns = {"events": "id, queue, event, job_id, data, ts_ms"}
        return {t: sorted((tuple(r) for r in q._store.query(
                    f"SELECT {columns.get(t, '*')} FROM {t}")), key=key)
                for t in TABLES if t != "meta"}
    return take
