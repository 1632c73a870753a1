"""What every reliability test checks after the damage: the file, and the jobs in it.

:func:`check_file` and :func:`check_invariants` are those of :mod:`tests.store_checks`
(both backends); :func:`drain` proves that no job is stranded: with the clock past every lock and
delay, every job ends completed or failed.
"""

from __future__ import annotations

from typing import Any

import localq
from localq.testing import FakeClock, run_until_idle
from tests.store_checks import JobRow, check_file, check_invariants, read_jobs

__all__ = ["JobRow", "check_file", "check_invariants", "drain", "read_jobs"]


def drain(path: str, queue: str, *, at: float, result: Any = "drained") -> dict[str, JobRow]:
    """Reopen *path* with the clock at *at* (past every lock and delay) and run every
    runnable job, failing nothing; return the jobs, all of them completed or failed."""
    with localq.Queue(queue, path=path, clock=FakeClock(at)) as q:
        run_until_idle(q, lambda job: result)
        counts = q.get_job_counts()
    unfinished = {s: counts[s] for s in ("waiting", "active", "delayed", "paused") if counts[s]}
    assert unfinished == {}, counts
    jobs = check_invariants(path)
    assert {job.state for job in jobs.values()} <= {"completed", "failed"}
    return jobs
