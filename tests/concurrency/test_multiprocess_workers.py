"""Several worker processes on one database: shared work, exactly-once completion, live
workers. On both backends."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import localq
from tests.processes import read_log, rows, spawn_worker, stop, wait_for

pytestmark = pytest.mark.multiprocess


def test_worker_processes_share_the_jobs_and_complete_each_once(
        db_path: str, tmp_path: object) -> None:
    db, log = db_path, f"{tmp_path}/w.log"
    q = localq.Queue("mp", path=db, durability="normal", settings={"max_events": 100_000})
    workers = [spawn_worker(db, "mp", log, "--concurrency", "2") for _ in range(2)]
    n = 300
    added = {}
    try:
        for i in range(n):
            job = q.add({"i": i})
            added[job.id] = time.time()
        assert wait_for(lambda: q.get_job_counts("completed")["completed"] == n, 60, 0.02)
    finally:
        stop(*workers)
        q.close()
    starts = [x for x in read_log(log) if x.kind == "start"]
    by_job = Counter(x.job for x in starts)
    assert set(by_job) == set(added) and max(by_job.values()) == 1
    assert {x.pid for x in starts} == {w.pid for w in workers}  # both took jobs
    completions = Counter(r[0] for r in rows(db, "SELECT job_id FROM events"
                                                 " WHERE event = 'completed'"))
    assert len(completions) == n and set(completions.values()) == {1}


def test_get_workers_lists_every_live_process_and_forgets_dead_ones(
        db_path: str, backend: str, tmp_path: object) -> None:
    db, log = db_path, f"{tmp_path}/w.log"
    q = localq.Queue("live", path=db)
    a = spawn_worker(db, "live", log, "--concurrency", "3")
    b = spawn_worker(db, "live", log)
    try:
        listed = {w["pid"]: w["concurrency"] for w in q.get_workers()}
        assert listed == {a.pid: 3, b.pid: 1}
        stop(a)
        # A SQLite lease file is free at once when its process is gone; a PostgreSQL lease
        # must be seen free twice, the lease grace (1 s) apart, before its owner is dead.
        grace = 0 if backend == "sqlite" else 15
        assert wait_for(lambda: [w["pid"] for w in q.get_workers()] == [b.pid], grace, 0.05)
    finally:
        stop(a, b)
        q.close()
