"""Workers SIGKILLed at random while jobs fail and retry: nothing lost, nothing recorded
twice, and no job run more often than its attempts and stalls allow.

tests/crash/test_kill_workers.py kills workers running jobs that always succeed; here a third
of the attempts fail, jobs have 3 attempts and a stall budget, and every run of a handler is
logged, so that executions can be counted against what the rows say. On both backends.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import localq
from tests.store_checks import check_invariants, check_store, read_jobs, stalls

pytestmark = [pytest.mark.crash, pytest.mark.multiprocess, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("chaos_worker.py")
ROOT = Path(__file__).resolve().parents[2]
ATTEMPTS = 3
MAX_STALLED = 3
SETTINGS = {"lock_duration": 2.0, "stalled_interval": 0.5, "max_stalled_count": MAX_STALLED,
            "max_events": 1_000_000}
CHAOS_SECONDS = 4.0 * int(os.environ.get("LOCALQ_STRESS", "1"))
#: Seconds between two kills, and the kills there must have been, per backend: a worker on
#: PostgreSQL takes longer to start (driver, sessions, lease), and killed at SQLite's pace it
#: would mostly die before taking a job.
PAUSE = {"sqlite": (0.05, 0.15), "postgres": (0.15, 0.35)}
MIN_KILLS = {"sqlite": 20, "postgres": 8}


def _spawn(db: str, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SCRIPT), db, str(log),
                             json.dumps(SETTINGS)], stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_random_kills_with_failing_attempts_lose_nothing_and_run_nothing_too_often(
    db_path: str, backend: str, tmp_path: Path,
) -> None:
    db, log = db_path, tmp_path / "runs.log"
    n = 150
    with localq.Queue("q", path=db, durability="normal", settings=SETTINGS) as q:
        q.add_bulk([{"data": {"fail": 0.3, "sleep": 0.04}, "opts": {"attempts": ATTEMPTS}}
                    for _ in range(n)])
        workers = [_spawn(db, log) for _ in range(3)]
        rnd = random.Random(20260101)
        kills = 0
        try:
            deadline = time.monotonic() + CHAOS_SECONDS
            while time.monotonic() < deadline:
                time.sleep(rnd.uniform(*PAUSE[backend]))
                victim = rnd.randrange(len(workers))
                _kill(workers[victim])
                kills += 1
                workers[victim] = _spawn(db, log)
            end = time.monotonic() + 90
            while time.monotonic() < end:
                counts = q.get_job_counts()
                if counts["completed"] + counts["failed"] == n:
                    break
                time.sleep(0.05)
        finally:
            for proc in workers:
                _kill(proc)
        counts = q.get_job_counts()
    assert counts["waiting"] == counts["active"] == counts["delayed"] == 0, counts   # 0 lost
    check_store(db)
    jobs = check_invariants(db)           # 0 completed twice, attempts_made <= attempts
    assert len(jobs) == n and kills >= MIN_KILLS[backend]

    stalled_counts = stalls(db)
    runs: Counter[str] = Counter()
    done = set()
    for line in log.read_text().splitlines():
        parts = line.split()
        if parts[0] == "start":
            runs[parts[1]] += 1
        elif parts[0] == "done":
            done.add((parts[1], int(parts[2])))
    over = {}
    for job_id, job in jobs.items():
        stalled = stalled_counts[job_id]
        assert stalled <= MAX_STALLED + 1, (job_id, stalled)
        # Each run ended in a completion, a recorded failure, or a stall (killed or fenced).
        allowed = job.attempts_made + stalled + (job.state == "completed")
        if runs[job_id] > allowed:
            over[job_id] = (runs[job_id], allowed)
        if job.state == "completed":
            assert (job_id, job.returnvalue["attempt"]) in done
        else:
            assert job.attempts_made == ATTEMPTS or stalled > MAX_STALLED, (job_id, job)
    assert over == {}, "jobs run more often than their attempts and stalls allow"
    extra = sum(runs.values()) - sum(j.attempts_made + (j.state == "completed")
                                     for j in jobs.values())
    failed = sum(j.state == "failed" for j in jobs.values())
    print(f"\n{backend} chaos with retries: {kills} kills, {sum(runs.values())} runs,"
          f" {extra} re-runs after a stall, {failed} failed for good")
    assert len(read_jobs(db)) == n
