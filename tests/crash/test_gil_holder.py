"""A handler that holds the GIL past its lock: its late result is refused, the job runs again.

``re.fullmatch(r'(a+)+$', 'a' * n + 'b')`` backtracks for seconds without releasing the GIL,
so no other thread of that worker process runs: not the lock renewal, not the scheduler. The
job's lock expires, another process takes the job back and runs it, and when the regex
finally returns, the first worker's completion is refused (``LockError``, reported as an
``error`` event) and changes nothing. Both cases are tested: the stuck process being the
scheduler leader, and being a follower. On both backends: a process stuck in the GIL keeps its
lease (a file lock, or a session the server still sees open), so only the lock expiry brings
the job back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import localq
from tests.processes import leader_is_held
from tests.store_checks import check_invariants, check_store

pytestmark = [pytest.mark.crash, pytest.mark.multiprocess, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("chaos_worker.py")
ROOT = Path(__file__).resolve().parents[2]
LOCK = 1.0
SETTINGS = {"lock_duration": LOCK, "stalled_interval": 0.2, "max_stalled_count": 5}


def _regex_size(at_least: float) -> int:
    """The n for which the regex surely takes *at_least* seconds here: the time doubles per
    character; the fastest of three measurements, so that a busy machine errs on the long side."""
    n = 18
    took = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        re.fullmatch(r"(a+)+$", "a" * n + "b")
        took = min(took, max(time.perf_counter() - started, 1e-4))
    while took < at_least and n < 32:
        n, took = n + 1, took * 2
    return n


def _log(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(db: str, log: Path, name: str = "*") -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CHAOS_SLOTS": "1", "CHAOS_NAME": name}
        proc = subprocess.Popen([sys.executable, str(SCRIPT), db, str(log),
                                 json.dumps(SETTINGS)], stdout=subprocess.PIPE, text=True,
                                env=env)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("holder_leads", [True, False], ids=["holder-is-leader", "holder-follows"])
def test_a_late_completion_after_holding_the_gil_is_refused_and_the_job_runs_again(
    db_path: str, tmp_path: Path, spawn: Callable[..., subprocess.Popen[str]],
    holder_leads: bool
) -> None:
    db, log = db_path, tmp_path / "runs.log"
    n = _regex_size(5 * LOCK)
    with localq.Queue("q", path=db, settings=SETTINGS) as q:
        if not holder_leads:
            # The first process leads the scheduler; it takes only jobs named "other", so
            # the slow job goes to the holder, a follower.
            spawn(db, log, name="other")
            assert _wait(lambda: leader_is_held(db, "q"), 10)
        holder = spawn(db, log)
        # The holder must lead before the regex starts: with the GIL held, its scheduler
        # thread could not take the leadership any more.
        assert _wait(lambda: leader_is_held(db, "q"), 10)
        q.add({"regex": n, "once": str(tmp_path / "regex-ran")}, job_id="slow")
        assert _wait(lambda: any(p[:2] == ["start", "slow"] for p in _log(log)), 10)
        holder_pid = next(p[3] for p in _log(log) if p[:2] == ["start", "slow"])
        assert holder_pid == str(holder.pid)
        spawn(db, log)                      # a rescuer, to run the job once it is taken back

        def completed() -> bool:
            job = q.get_job("slow")
            return job is not None and job.get_state() == "completed"
        finished = _wait(completed, 30)
        # The holder's renewal thread may report the lost lock (the error line) as soon as
        # the regex lets go of the GIL, before the handler logs its end: wait for both.
        holder_done_line = ["done", "slow", "1", holder_pid]
        holder_end = [holder_done_line, ["error", holder_pid, "LockError"]]
        _wait(lambda: all(line in _log(log) for line in holder_end), 30)
        lines = _log(log)
        done = q.get_job("slow")
    assert finished, lines
    assert done is not None
    check_store(db)
    check_invariants(db)               # one completed event: never completed twice
    starts = [i for i, p in enumerate(lines) if p[:2] == ["start", "slow"]]
    assert holder_done_line in lines, lines
    holder_done = lines.index(holder_done_line)
    # Taken back and run again while the holder was still stuck in the regex: the lock
    # expired after LOCK seconds, the regex takes five times as long.
    assert len(starts) >= 2 and starts[1] < holder_done, lines
    assert done.returnvalue["held_gil"] is False, f"the late completion was recorded: {lines}"
    assert ["error", holder_pid, "LockError"] in lines, lines
