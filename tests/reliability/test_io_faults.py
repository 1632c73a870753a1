"""I/O errors at every point of a producer/worker scenario, through the real localq API.

SQLite's own I/O-error loop (https://sqlite.org/testing.html §3.2) applied to localq: run
the scenario of :mod:`tests.reliability.faultqueue` once on a :class:`~tests.faults.FaultVFS`
to count its writes, syncs and truncates, then rerun it failing the k-th one, for every k.

* **Once** (a transient error): the call that hit it raises :class:`localq.DatabaseError`,
  the same call made again succeeds, and the file ends up exactly as after a run without
  any fault: nothing of the failed call was stored, nothing was lost or doubled.
* **Persistent** (a dead disk, or a full one): every call returns or raises
  ``DatabaseError``; the file passes ``integrity_check``; every acknowledged add is there
  with its data, every acknowledged completion with its result; a call that raised is all
  or nothing (a bulk add's jobs are all there or none). A raised call may turn out to be
  stored after a restart (its COMMIT's frames were written, only the fsync failed): the
  outcome of a call that failed at COMMIT is unknown, as the README says, and the checks
  allow exactly that. Half of the runs then disarm the fault and show that the same Queue
  object works again without a restart; the other half close it on the dead disk, which
  is what makes an unknown outcome reappear. Finally :func:`~tests.reliability.checks.drain`
  shows that no job is stranded.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import apsw
import pytest

import localq
from localq.testing import FakeClock
from tests.faults import FaultVFS
from tests.reliability.checks import check_file, check_invariants, drain, read_jobs
from tests.reliability.faultqueue import START, FaultQueue, Scenario, Step

# A VFS injecting I/O errors under SQLite; a PostgreSQL server handles its own I/O (the session
# loss a client sees is in tests/pg/test_pg_reliability.py).
pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]

Op = Literal["write", "sync", "truncate", "any"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed localq file with the schema (one file: the last close removed the WAL)."""
    path = tmp_path_factory.mktemp("io-faults") / "template.db"
    localq.Queue("q", path=path).close()
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.fixture(scope="module")
def vfs() -> Iterator[FaultVFS]:
    # No real fsync: the sweeps test what localq does with error codes, not durability.
    with FaultVFS(sync_to_disk=False) as fault_vfs:
        yield fault_vfs


def _dump(path: str) -> dict[str, list[Any]]:
    """Every row of the file, less what differs between identical runs (lock tokens)."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        jobs = conn.execute(
            "SELECT id, queue, job_id, name, data, opts, state, priority, seq, timestamp_ms,"
            " delay_ms, run_at_ms, attempts_made, stalled_count, progress, returnvalue,"
            " failed_reason, processed_on_ms, finished_on_ms, lock_expires_ms,"
            " lock_token IS NULL FROM jobs ORDER BY id").fetchall()
        out = {"jobs": jobs}
        for table in ("events", "job_logs", "meta", "queues"):
            out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return out


def _run(template: Path, path: Path, vfs: FaultVFS, *, durability: str, retry: bool,
         arm: Any = None) -> tuple[Scenario, FaultQueue]:
    shutil.copyfile(template, path)
    clock = FakeClock(START)
    q = FaultQueue("q", path=path, clock=clock, durability=durability, vfs_name=vfs.vfs_name)
    (arm or vfs.reset)()
    scenario = Scenario(q, clock, retry)
    scenario.run()
    return scenario, q


@dataclass
class Stats:
    points: int = 0
    raised: int = 0          # runs in which some call raised
    unknown: int = 0         # calls that raised and were found stored after the restart
    live_recovered: int = 0  # runs where the same Queue object worked again after disarm


def _errors_are_database_errors(scenario: Scenario, context: str) -> None:
    for step in scenario.steps:
        if step.error is not None:
            assert isinstance(step.error, localq.DatabaseError), (context, step)
            assert step.error.path and step.error.path in str(step.error), (context, step)


def _stored_after_raising(step: Step, stored: bool, context: str) -> bool:
    """A call that raised yet is in the file must have said that its outcome was unknown."""
    if stored:
        assert "outcome of this call is unknown" in str(step.error), (context, step)
    return stored


def _check_persistent(path: str, scenario: Scenario, context: str) -> int:
    """Check the file against what the scenario acknowledged; return how many calls that
    raised turned out stored (unknown outcomes)."""
    check_file(path)
    jobs = check_invariants(path)
    by_key: dict[str, list[Any]] = {}
    for job in jobs.values():
        by_key.setdefault(job.name, []).append(job)
    unknown = 0
    for step in scenario.steps:
        if step.kind in ("add", "add_bulk"):
            expected = scenario.adds[step.label]
            expected = expected if step.kind == "add_bulk" else [expected]
            present = sorted((job.data for job in by_key.get(step.label, [])),
                             key=lambda d: d.get("i", 0))
            if step.outcome == "ok":
                assert present == expected, (context, step, "acknowledged add lost or changed")
                ids = scenario.ids[step.label]
                ids = ids if isinstance(ids, list) else [ids]
                assert sorted(ids) == sorted(j.public for j in by_key[step.label]), (context, step)
            else:
                # All or nothing: a bulk add is never partly stored, an add never changed.
                assert present in ([], expected), (context, step, present)
                unknown += _stored_after_raising(step, present == expected, context)
        elif step.kind in ("complete", "complete_fetch") and step.outcome != "skipped":
            job = jobs[step.label]
            if step.outcome == "ok":
                assert job.state == "completed", (context, step, job)
                assert job.returnvalue == scenario.expected_results[step.label], (context, job)
            else:
                assert job.state in ("active", "completed"), (context, step, job)
                unknown += _stored_after_raising(step, job.state == "completed", context)
        elif step.kind == "fail" and step.outcome != "skipped":
            job = jobs[step.label]
            fails = [s for s in scenario.steps if s.kind == "fail" and s.label == step.label]
            acked = sum(s.outcome == "ok" for s in fails)
            assert acked <= job.attempts_made <= len(fails), (context, step, job)
    return unknown


SWEEPS = [
    pytest.param("write", apsw.SQLITE_IOERR_WRITE, False, "safe", id="write-ioerr"),
    pytest.param("write", apsw.SQLITE_FULL, True, "safe", id="write-full-torn"),
    pytest.param("sync", apsw.SQLITE_IOERR_FSYNC, False, "safe", id="sync-ioerr-safe"),
    pytest.param("sync", apsw.SQLITE_IOERR_FSYNC, False, "full", id="sync-ioerr-full"),
    pytest.param("truncate", apsw.SQLITE_IOERR_TRUNCATE, False, "safe", id="truncate-ioerr"),
    pytest.param("any", apsw.SQLITE_FULL, False, "normal", id="any-full-normal"),
]


@pytest.mark.parametrize(("op", "error", "torn", "durability"), SWEEPS)
def test_a_transient_io_error_fails_one_call_and_the_retry_leaves_the_same_file(
    template: Path, tmp_path: Path, vfs: FaultVFS, op: Op, error: int, torn: bool,
    durability: str,
) -> None:
    path = tmp_path / "q.db"
    clean, q = _run(template, path, vfs, durability=durability, retry=True)
    q.close()    # the checkpoint at close is part of the sweep
    points = vfs.counts[op]
    assert all(step.outcome == "ok" for step in clean.steps if step.kind != "complete"
               or step.label), clean.steps
    assert not any(step.error for step in clean.steps)
    reference = _dump(str(path))
    check_invariants(str(path))
    assert points > 0
    retried = 0
    for k in range(1, points + 1):
        def arm(k: int = k) -> None:
            vfs.arm(op=op, k=k, error=error, persistent=False, torn=torn)
        scenario, q = _run(template, path, vfs, durability=durability, retry=True, arm=arm)
        context = f"{op} #{k}/{points}: injected {vfs.injected}"
        q.close()
        vfs.reset()
        _errors_are_database_errors(scenario, context)
        assert len(vfs.injected) <= 1, context
        retried += any(step.retried for step in scenario.steps)
        check_file(str(path))
        # Exactly the clean run's file: the failed call stored nothing, its retry all.
        assert _dump(str(path)) == reference, context
    print(f"\n{op}/{apsw.mapping_result_codes[error & 0xFF]}/{durability}: {points} points,"
          f" {retried} raised and were retried")
    # Truncates happen only in the checkpoint at close, whose errors close() absorbs
    # (SQLite keeps the WAL, and the next open recovers from it).
    assert retried > 0 or op == "truncate"


@pytest.mark.parametrize(("op", "error", "torn", "durability"), SWEEPS)
def test_a_persistent_io_error_loses_nothing_acknowledged_and_strands_no_job(
    template: Path, tmp_path: Path, vfs: FaultVFS, op: Op, error: int, torn: bool,
    durability: str,
) -> None:
    path = tmp_path / "q.db"
    _, q = _run(template, path, vfs, durability=durability, retry=False)
    q.close()
    points = vfs.counts[op]
    stats = Stats()
    for k in range(1, points + 1):
        def arm(k: int = k) -> None:
            vfs.arm(op=op, k=k, error=error, persistent=True, torn=torn)
        scenario, q = _run(template, path, vfs, durability=durability, retry=False, arm=arm)
        context = f"{op} #{k}/{points}: first injected {vfs.injected[:1]}"
        _errors_are_database_errors(scenario, context)
        stats.points += 1
        stats.raised += any(step.outcome == "raised" for step in scenario.steps)
        if k % 2 == 0:
            # The disk comes back: the same Queue object works again, no restart needed.
            vfs.reset()
            scenario.add("after", {"k": "after"})
            assert scenario.steps[-1].outcome == "ok", (context, scenario.steps[-1])
            stats.live_recovered += 1
            q.close()
        else:
            q.close()    # closing on the dead disk: the WAL stays for the next open
            vfs.reset()
        try:
            stats.unknown += _check_persistent(str(path), scenario, context)
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from exc
        done = drain(str(path), "q", at=START + 3600)
        for job_id, result in scenario.expected_results.items():
            assert done[job_id].returnvalue == result, (context, "completed twice")
    print(f"\n{op}/{apsw.mapping_result_codes[error & 0xFF]}/{durability}/persistent: {stats}")
    assert stats.points == points
    assert stats.raised > 0 or op == "truncate"


def test_a_failed_open_of_a_new_file_leaves_a_file_the_next_open_can_use(
    tmp_path: Path, vfs: FaultVFS
) -> None:
    """Creating the schema under every write/sync/truncate fault: Queue() raises a
    DatabaseError or works, and the next Queue() on the file works either way."""
    path = tmp_path / "new.db"
    vfs.reset()
    FaultQueue("q", path=path, vfs_name=vfs.vfs_name).close()
    points = vfs.counts["any"]
    raised = 0
    for k in range(1, points + 1):
        for name in ("new.db", "new.db-wal", "new.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        vfs.arm(op="any", k=k, error=apsw.SQLITE_IOERR_WRITE, persistent=True)
        try:
            FaultQueue("q", path=path, vfs_name=vfs.vfs_name).close()
        except localq.DatabaseError as exc:
            assert str(path) in str(exc)
            raised += 1
        vfs.reset()
        with localq.Queue("q", path=path) as q:
            q.add({"k": k})
            assert q.count() == 1
        check_file(str(path))
        assert [job.data for job in read_jobs(str(path)).values()] == [{"k": k}]
    print(f"\ncreate: {points} points, {raised} raised")
    assert raised > 0
