"""``localq worker QUEUE module:function``: until-idle runs, graceful SIGTERM, sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import localq
from localq import cli

ROOT = Path(__file__).resolve().parents[2]

USER_MODULE = '''
import time

def double(job):
    return job.data["n"] * 2

def slow(job):
    open(job.data["started"], "w").close()
    time.sleep(job.data["seconds"])
    return "finished"

def broken(job):
    raise ValueError("nope")
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's handler module in the current directory, as `localq worker` finds it."""
    (tmp_path / "userjobs_cli.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_worker_until_idle_runs_runnable_jobs_and_exits_0(capsys, user_module, db_path):
    with localq.Queue("nums", path=db_path) as q:
        jobs = [q.add({"n": n}) for n in range(5)]
        later = q.add({"n": 99}, delay=3600)
    code = cli.main(["--db", db_path, "worker", "nums", "userjobs_cli:double", "--until-idle",
                     "--concurrency", "2"])
    out, err = capsys.readouterr()
    assert code == 0 and out == ""
    assert "5 completed, 0 failed attempts" in err
    with localq.Queue("nums", path=db_path) as q:
        assert [q.get_job(j.id).returnvalue for j in jobs] == [0, 2, 4, 6, 8]
        assert q.get_job(later.id).get_state() == "delayed"  # not runnable now: left alone


def test_worker_failures_are_job_failures_not_cli_errors(capsys, user_module, db_path):
    with localq.Queue("nums", path=db_path) as q:
        job = q.add({"n": 1})
    assert cli.main(["--db", db_path, "worker", "nums", "userjobs_cli:broken",
                     "--until-idle"]) == 0
    assert "0 completed, 1 failed attempts" in capsys.readouterr().err
    with localq.Queue("nums", path=db_path) as q:
        assert q.get_job(job.id).failed_reason == "nope"


def test_worker_concurrency_must_be_positive(capsys, user_module, db_path):
    assert cli.main(["--db", db_path, "worker", "nums", "userjobs_cli:double",
                     "--concurrency", "0"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--concurrency must be >= 1" in err


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.multiprocess
def test_worker_stops_gracefully_on_sigterm(user_module, db_path):
    started = user_module / "started"
    with localq.Queue("slow", path=db_path) as q:
        job = q.add({"started": str(started), "seconds": 1.0})
    proc = subprocess.Popen([sys.executable, "-m", "localq", "--db", db_path, "worker", "slow",
                             "userjobs_cli:slow"], cwd=user_module, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # mid-job: the running job finishes first
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "1 completed" in err
    with localq.Queue("slow", path=db_path) as q:
        assert q.get_job(job.id).returnvalue == "finished"


@pytest.mark.multiprocess
def test_worker_sandbox_runs_jobs_in_child_processes(user_module, db_path):
    with localq.Queue("nums", path=db_path) as q:
        jobs = [q.add({"n": n}) for n in range(3)]
    done = subprocess.run([sys.executable, "-m", "localq", "--db", db_path, "worker", "nums",
                           "userjobs_cli:double", "--sandbox", "--until-idle"],
                          cwd=user_module, env=_env(), text=True, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with localq.Queue("nums", path=db_path) as q:
        assert [q.get_job(j.id).returnvalue for j in jobs] == [0, 2, 4]
