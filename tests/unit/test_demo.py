"""``localq demo``: the job mix, the handler, and the whole demo with two worker processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import localq
from localq import cli, demo
from localq.testing import run_until_idle

ROOT = Path(__file__).resolve().parents[2]


def test_job_mix_has_delays_priorities_retries_doomed_jobs_and_progress():
    jobs = demo.make_jobs(300, seed=1)
    assert len(jobs) == 300 and jobs == demo.make_jobs(300, seed=1)  # deterministic
    kinds = Counter(j["name"] for j in jobs)
    assert set(kinds) == {"thumbnail", "email", "report", "import"}
    assert sum(1 for j in jobs if j["opts"].get("delay")) >= 20
    assert sum(1 for j in jobs if j["opts"].get("priority") == 1) >= 10
    assert sum(1 for j in jobs if j["data"].get("fail_attempts") == 1) >= 10  # retried, then ok
    assert all(j["data"]["fail_attempts"] >= j["opts"]["attempts"]
               for j in jobs if j["name"] == "import")                       # fail for good
    assert all(j["data"]["steps"] > 1 for j in jobs if j["name"] == "report")


def test_handle_reports_progress_logs_and_fails_the_first_attempts(queue: localq.Queue):
    report = queue.add({"kind": "report", "ms": 0, "steps": 4})
    flaky = queue.add({"kind": "email", "ms": 0, "fail_attempts": 1, "reason": "SMTP"},
                      attempts=2)
    seen: list[object] = []
    queue.on("progress", lambda job, value: seen.append(value))
    assert run_until_idle(queue, demo.handle) == 3
    assert seen == [25, 50, 75, 100]
    done = queue.get_job(report.id)
    assert done is not None and done.returnvalue == {"kind": "report", "pid": os.getpid()}
    assert queue.get_job_logs(report.id)["count"] == 1
    retried = queue.get_job(flaky.id)
    assert retried is not None and retried.get_state() == "completed"
    assert retried.attempts_made == 1 and retried.failed_reason == "SMTP"


def test_demo_refuses_a_file_whose_demo_queue_has_jobs(capsys, db_path):
    with localq.Queue("demo", path=db_path) as q:
        q.add({})
    assert cli.main(["--db", db_path, "demo", "--jobs", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("localq: error: queue 'demo'") and "already has jobs" in err


@pytest.mark.multiprocess
def test_demo_runs_unattended_with_two_worker_processes(tmp_path, db_path, backend):
    db = str(tmp_path / "demo.db") if backend == "sqlite" else db_path.replace(
        "postgres@", "postgres:s3cret@", 1)  # the workers need it; no output may show it
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))  # the logs' directory
    done = subprocess.run([sys.executable, "-m", "localq", "--db", db, "demo", "--jobs", "30",
                           "--interval", "0.2"], env=env, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert re.search(r"demo waiting=\d+ active=\d+", out)  # plain live lines, no terminal
    assert "\x1b" not in out
    match = re.search(r"30 jobs finished in [\d.]+ s by 2 worker processes \(pid (\d+): "
                      r"(\d+) jobs, pid (\d+): (\d+) jobs\)", out)
    assert match, out
    assert match.group(1) != match.group(3)
    assert "s3cret" not in out + done.stderr
    if backend == "sqlite":
        assert f"localq --db {db} stats" in out
    logs = sorted(tmp_path.glob("localq-demo-*/worker-*.log"))
    assert len(logs) == 2 and f"Remove the logs with: rm -r {logs[0].parent}" in out
    with localq.Queue("demo", path=db) as q:
        counts = q.get_job_counts()
        assert counts["completed"] + counts["failed"] == 30
        assert counts["completed"] == int(match.group(2)) + int(match.group(4))
        pids = {j.returnvalue["pid"] for j in q.get_completed()}
        assert pids <= {int(match.group(1)), int(match.group(3))}
        assert os.getpid() not in pids  # the jobs ran in the worker processes
    stats = subprocess.run([sys.executable, "-m", "localq", "--db", db, "stats", "--json"],
                           env=env, text=True, capture_output=True, timeout=60)
    assert json.loads(stats.stdout)[0]["completed"] == counts["completed"]
