"""Several real processes claiming by hand from one database while a producer adds.

Each worker process opens its own Queue, takes jobs with ``get_next_job`` and finishes them
with ``move_to_completed`` (half the time fetching the next job in the same transaction).
Afterwards: every job completed exactly once, by the one process that claimed it; none lost;
a SQLite file passes ``PRAGMA integrity_check``. On both backends.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from typing import Any

import pytest

import localq

N_JOBS = 300
N_WORKERS = 3


def _produce(path: str, start: Any) -> None:
    start.wait()
    with localq.Queue("mp", path=path) as q:
        for i in range(0, N_JOBS, 10):
            if i % 20:
                q.add_bulk([{"data": {"i": j}} for j in range(i, i + 10)])
            else:
                for j in range(i, i + 10):
                    q.add({"i": j}, priority=1 if j % 7 == 0 else None)


def _work(path: str, me: int, start: Any, produced: Any, results: Any) -> None:
    claimed: list[str] = []
    completed: list[str] = []
    errors: list[str] = []
    start.wait()
    with localq.Queue("mp", path=path) as q:
        job = None
        while True:
            if job is None:
                job = q.get_next_job(timeout=0.2)
                if job is None:
                    if produced.is_set() and q.count() == 0:
                        break
                    continue
            claimed.append(job.id)
            time.sleep(0.001)  # a handler's work: other workers claim meanwhile
            try:
                nxt = job.move_to_completed({"by": me}, not_fetch=len(claimed) % 2 == 0)
            except localq.LocalqError as exc:
                errors.append(f"{job.id}: {type(exc).__name__}: {exc}")
                job = None
                continue
            completed.append(job.id)
            job = None if nxt is None else q.get_job(nxt[1])
            if nxt is not None and (job is None or job.data != nxt[0]):
                errors.append(f"fetched {nxt} but stored job is {job}")
    results.put((me, claimed, completed, errors))


@pytest.mark.multiprocess
def test_processes_claiming_by_hand_share_one_database_without_loss_or_duplicates(
        db_path: str, backend: str) -> None:
    path = db_path
    localq.Queue("mp", path=path).close()  # created once, so the race is about claims
    ctx = multiprocessing.get_context("spawn")
    # Everybody starts together, so no worker misses the run while it is still importing.
    start, produced, results = ctx.Barrier(N_WORKERS + 1), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_work, args=(path, i, start, produced, results))
               for i in range(N_WORKERS)]
    producer = ctx.Process(target=_produce, args=(path, start))
    for p in [*workers, producer]:
        p.start()
    producer.join(120)
    assert producer.exitcode == 0
    produced.set()
    reports = [results.get(timeout=120) for _ in workers]
    for p in workers:
        p.join(30)
        assert p.exitcode == 0

    claims = Counter(job_id for _, claimed, _, _ in reports for job_id in claimed)
    done = Counter(job_id for _, _, completed, _ in reports for job_id in completed)
    assert [e for *_, errors in reports for e in errors] == []
    assert [j for j, n in claims.items() if n > 1] == [], "a job was held by two claims"
    assert [j for j, n in done.items() if n > 1] == [], "a job was completed twice"
    assert len(done) == N_JOBS, "a job was lost"

    with localq.Queue("mp", path=path) as q:
        counts = q.get_job_counts()
        assert counts["completed"] == N_JOBS and sum(counts.values()) == N_JOBS
        by = {j.id: j.returnvalue["by"] for j in q.get_completed()}
        for me, _, completed, _ in reports:
            assert all(by[job_id] == me for job_id in completed)
        assert sorted(j.data["i"] for j in q.get_completed()) == list(range(N_JOBS))
        events = Counter(r[0] for r in q._store.query(
            "SELECT job_id FROM events WHERE queue = 'mp' AND event = 'completed'"))
        assert set(events.values()) == {1}
        if backend == "sqlite":
            assert q._store.query("PRAGMA integrity_check") == [("ok",)]
    shares = sorted(len(completed) for _, _, completed, _ in reports)
    # Not a correctness rule (SQLite's busy handler is not fair), but without two active
    # claimers the test would not have tested sharing.
    assert shares[-2] > 0, f"only one worker got jobs: {shares}"
