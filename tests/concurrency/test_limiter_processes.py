"""The rate limiter with two real processes claiming from one queue.

Each process takes jobs with ``limiter={"max": 5, "duration": 1}`` and, when held back,
sleeps until ``Queue._limited_until_ms`` as a worker does. The start times are the ones
the claims recorded (``processed_on``, read under the write lock). On both backends.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

import localq

pytestmark = pytest.mark.multiprocess

LIMITER = {"max": 5, "duration": 1}


def claim_loop(path: str, out: str, stop: Any) -> None:
    """Child: take and complete jobs until *stop* is set; log the ids it took."""
    taken = []
    with localq.Queue("limited", path=path, limiter=LIMITER) as q:
        while not stop.is_set():
            job = q.get_next_job(timeout=0.05)
            if job is not None:
                taken.append(job.id)
                job.move_to_completed(None, not_fetch=True)
            elif q._limited_until_ms is not None:
                time.sleep(min(0.5, max(0.0, q._limited_until_ms / 1000 - time.time())))
    Path(out).write_text(json.dumps(taken))


def test_two_processes_start_at_most_max_jobs_in_any_window(db_path: str,
                                                            tmp_path: Path) -> None:
    path = db_path
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with localq.Queue("limited", path=path, limiter=LIMITER) as q:
        q.add_bulk([{"data": {"i": i}} for i in range(100)])
        outs = [str(tmp_path / f"taken{i}.json") for i in range(2)]
        procs = [ctx.Process(target=claim_loop, args=(path, out, stop)) for out in outs]
        for p in procs:
            p.start()
        try:
            time.sleep(3.5)
        finally:
            stop.set()
            for p in procs:
                p.join(timeout=30)
        assert [p.exitcode for p in procs] == [0, 0]
        started = q.get_jobs(["completed", "active"])
        waiting = q.get_job_counts("waiting")["waiting"]

    taken = [json.loads(Path(out).read_text()) for out in outs]
    ids = taken[0] + taken[1]
    assert len(ids) == len(set(ids)) == len(started)
    assert len(started) + waiting == 100  # limited jobs wait; none is dropped
    assert all(len(t) > 0 for t in taken), "one process never started a job"
    starts = sorted(round(j.processed_on * 1000) for j in started if j.processed_on)
    assert len(starts) >= 10, f"only {len(starts)} starts in 3.5 s at 5 per second"
    for i in range(len(starts) - 5):
        window = starts[i: i + 6]
        assert window[-1] - window[0] >= 1000, f"6 starts within 1 s: {window}"
