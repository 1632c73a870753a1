"""Repeatable jobs with two real processes, each running the scheduler and taking jobs.

Each process loops ``q._scheduler_tick()`` (what the workers' scheduler thread does) and
``q.get_next_job()`` / ``move_to_completed`` on a 0.2 s ``every`` schedule. Then the parent
removes the schedule while both keep going. On both backends.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import localq

pytestmark = pytest.mark.multiprocess

EVERY = 0.2
REPEAT = {"every": EVERY}


def run_and_schedule(path: str, out: str, stop: Any) -> None:
    """Child: tick the scheduler and run occurrences until *stop* is set; log each run."""
    runs = []
    with localq.Queue("beat", path=path) as q:
        while not stop.is_set():
            q._scheduler_tick()
            job = q.get_next_job(timeout=0.02)
            if job is None:
                continue
            runs.append({"id": job.id, "count": job.opts["repeat"]["count"]})
            job.move_to_completed(None, not_fetch=True)
    Path(out).write_text(json.dumps(runs))


def occurrence_rows(q: localq.Queue, key: str) -> dict[str, str]:
    rows = q._store.query("SELECT job_id, state FROM jobs WHERE queue = :q AND repeat_key = :k",
                          {"q": q.name, "k": key})
    return {job_id: state for job_id, state in rows}


def test_two_processes_run_each_slot_once_and_nothing_after_removal(
        db_path: str, tmp_path: Path) -> None:
    path = db_path
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    with localq.Queue("beat", path=path) as q:
        first = q.add({"n": 1}, repeat=REPEAT)
        key = first.opts["repeat"]["key"]
        outs = [str(tmp_path / f"runs{i}.json") for i in range(2)]
        procs = [ctx.Process(target=run_and_schedule, args=(path, out, stop)) for out in outs]
        for p in procs:
            p.start()
        try:
            time.sleep(3.0)
            assert q.remove_repeatable(REPEAT) is True
            at_removal = occurrence_rows(q, key)
            time.sleep(1.0)
        finally:
            stop.set()
            for p in procs:
                p.join(timeout=30)
        assert [p.exitcode for p in procs] == [0, 0]
        at_end = occurrence_rows(q, key)
        assert q.get_repeatable_jobs() == []

    runs = [json.loads(Path(out).read_text()) for out in outs]
    every_run = runs[0] + runs[1]
    ids = [r["id"] for r in every_run]
    slots = Counter(int(i.rsplit(":", 1)[1]) for i in ids)
    assert slots and max(slots.values()) == 1, "a slot ran twice"
    assert len(every_run) >= 5, f"only {len(every_run)} runs in 3 s of a 0.2 s schedule"
    assert all(len(r) > 0 for r in runs), "one process never took an occurrence"
    assert all(s % int(EVERY * 1000) == 0 for s in slots)
    counts = Counter(r["count"] for r in every_run)
    assert max(counts.values()) == 1, "two occurrences were created with one count"
    # Removal left nothing to run: no pending occurrence then, and none created since; so
    # every run afterwards would be a second run of an id, which the Counter rules out.
    assert not {s for s in at_removal.values()} & {"waiting", "delayed"}
    assert set(at_end) <= set(at_removal)
    assert set(ids) <= set(at_removal)
    assert set(at_end.values()) == {"completed"}
