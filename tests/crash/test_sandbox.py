"""Sandboxed processors: jobs in spawned child processes, crashes and timeouts."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

import localq

pytestmark = [pytest.mark.multiprocess, pytest.mark.crash]

WAIT = 30.0  # spawning a child takes a few hundred ms on a busy machine


def fetch(queue: localq.Queue, job_id: str) -> localq.Job:
    """The stored job (it must exist)."""
    job = queue.get_job(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


@pytest.fixture
def q(db_path: str) -> Iterator[localq.Queue]:
    queue = localq.Queue("sb", path=db_path, durability="normal")
    try:
        yield queue
    finally:
        queue.close()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_sandboxed_job_reaches_the_real_job_through_the_parent(q: localq.Queue) -> None:
    q.process("tests.sandbox_jobs:work", sandbox=True)
    job = q.add({"n": 1})
    result = job.finished(timeout=WAIT)
    assert result["pid"] != os.getpid() and result["rows"] == 1
    stored = fetch(q, job.id)
    assert stored.progress() == 50 and stored.data == {"n": 1, "seen": True}
    assert q.get_job_logs(job.id)["logs"] == [f"in child {result['pid']}"]


def test_a_function_handler_and_a_coroutine_run_sandboxed(q: localq.Queue) -> None:
    from tests.sandbox_jobs import async_work
    q.process(async_work, sandbox=True)
    assert q.add({"n": 3}).finished(timeout=WAIT) == "async 3"


def test_a_child_that_dies_fails_its_job_at_once_and_is_replaced(q: localq.Queue) -> None:
    q.process("tests.sandbox_jobs:work", sandbox=True)
    crash = q.add({"exit": 3})
    with pytest.raises(localq.JobFailed, match="process exited with code 3"):
        crash.finished(timeout=WAIT)
    after = q.add({"n": 2})
    assert after.finished(timeout=WAIT)["rows"] == 1  # a new child took over
    assert fetch(q, crash.id).attempts_made == 1


def test_handler_errors_keep_their_child_traceback_and_unrecoverable_wins(
        q: localq.Queue) -> None:
    q.process("tests.sandbox_jobs:work", sandbox=True)
    plain = q.add({"raise": "boom"})
    final = q.add({"unrecoverable": True}, attempts=5)
    bad = q.add({"set": True})
    with pytest.raises(localq.JobFailed, match="boom"):
        plain.finished(timeout=WAIT)
    assert "sandbox_jobs.py" in fetch(q, plain.id).stacktrace[0]
    with pytest.raises(localq.JobFailed, match="give up"):
        final.finished(timeout=WAIT)
    assert fetch(q, final.id).attempts_made == 1
    with pytest.raises(localq.JobFailed, match="return value"):
        bad.finished(timeout=WAIT)


def test_a_timeout_kills_the_child(q: localq.Queue) -> None:
    q.process("tests.sandbox_jobs:work", sandbox=True)
    warm = q.add({"n": 0}).finished(timeout=WAIT)
    slow = q.add({"sleep": 60}, timeout=0.5)
    with pytest.raises(localq.JobFailed, match="timed out"):
        slow.finished(timeout=WAIT)
    assert _wait_dead(warm["pid"])
    assert q.add({"n": 1}).finished(timeout=WAIT)["pid"] != warm["pid"]


def _wait_dead(pid: int) -> bool:
    from tests.processes import wait_for
    return wait_for(lambda: not alive(pid), 10, 0.01)
