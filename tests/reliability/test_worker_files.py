"""Security of what workers add to the file system, and of what runs in them.

Workers keep lock files (process leases, the scheduler's leadership, doorbells) in
``<db>-localq/``. They are owner-only whatever the umask, never opened through a symlink,
and a worker runs only the handler its own code passed: job data naming a module imports
nothing.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import localq
from localq.scheduler import leader_path

# Lease and leader-lock files are SQLite's: PostgreSQL holds them as advisory locks
# (tests/pg/test_pg_lease.py).
FILES_ONLY = pytest.mark.sqlite_only

SENTINEL = "tests.reliability.sentinel_module_never_imported"


@pytest.fixture(params=[0o022, 0o002], ids=["umask-022", "umask-002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _run_once(q: localq.Queue, handler: Any = None) -> None:
    worker = localq.Worker(q, handler or (lambda job: "ok"), autorun=False)
    worker.run(until_idle=True)
    worker.close()


@FILES_ONLY
def test_lock_files_and_their_directories_are_owner_only_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "q.db"
    with localq.Queue("q", path=path) as q:
        q.add({"n": 1})
        worker = localq.Worker(q, lambda job: "ok", autorun=False)
        worker.run(until_idle=True)
        leader = Path(leader_path(str(path), "q"))
        seen = {}
        for root, dirs, files in os.walk(tmp_path):
            for name in dirs + files:
                item = Path(root, name)
                seen[str(item.relative_to(tmp_path))] = stat.S_IMODE(item.lstat().st_mode)
        worker.close()
    assert leader.relative_to(tmp_path).as_posix() in seen
    assert any(name.endswith(".lock") and "leases" in name for name in seen), seen
    wrong = {name: f"{mode:o}" for name, mode in seen.items()
             if mode != (0o700 if (tmp_path / name).is_dir() else 0o600)}
    assert wrong == {}, f"under umask {umask:03o}"


@FILES_ONLY
def test_a_symlink_planted_at_the_leader_lock_is_not_followed_and_is_reported(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    target = tmp_path / "target"
    target.write_text("precious")
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    errors: list[BaseException] = []
    crashed: list[BaseException] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: crashed.append(args.exc_value)  # type: ignore[assignment]
    try:
        with localq.Queue("q", path=path) as q:
            Path(leader_path(str(path), "q")).symlink_to(target)
            q.on("error", errors.append)
            q.add({"n": 1})
            _run_once(q)
            assert q.get_job_counts("completed") == {"completed": 1}
    finally:
        threading.excepthook = hook
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before
    assert crashed == [], "the scheduler thread died"
    assert errors and isinstance(errors[0], localq.ConfigError), errors
    assert "leaders" in str(errors[0]) and "symlink" in str(errors[0])


def test_job_data_naming_a_module_imports_nothing(db_path: str) -> None:
    """Only the worker's own handler runs; a "module:function" string in a job is data."""
    seen: list[Any] = []
    with localq.Queue("q", path=db_path) as q:
        q.add({"handler": f"{SENTINEL}:boom", "module": SENTINEL}, name=f"{SENTINEL}:boom")
        _run_once(q, lambda job: seen.append(job.data) or "ran")
    assert seen == [{"handler": f"{SENTINEL}:boom", "module": SENTINEL}]
    assert SENTINEL not in sys.modules
