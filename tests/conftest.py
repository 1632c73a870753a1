"""Shared fixtures: a queue on a file under tmp_path, a FakeClock, hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

import localq
from localq.testing import FakeClock

settings.register_profile("default", deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("ci", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A fresh database path under the test's tmp_path."""
    return str(tmp_path / "q.db")


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
        return {t: q._store.query(f"SELECT * FROM {t} ORDER BY rowid") for t in TABLES}
    return take
