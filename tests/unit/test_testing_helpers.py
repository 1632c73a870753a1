"""The helpers for users' tests: the localq_queue fixture (as users get it), run_until_idle."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import localq
from localq.testing import FakeClock, run_until_idle

ROOT = Path(__file__).resolve().parents[2]

#: A user's test file: no conftest, nothing imported for the fixture.
USER_TESTS = '''
import localq
from localq.testing import FakeClock, run_until_idle


def flaky(job):
    if job.attempts_made == 0:
        raise RuntimeError("first attempt fails")
    return job.data["n"] * 2


def test_fixture_gives_a_fresh_queue_on_a_temporary_file(localq_queue, tmp_path):
    assert isinstance(localq_queue, localq.Queue)
    assert localq_queue.path == str(tmp_path / "localq.db")
    assert isinstance(localq_queue.clock, FakeClock)
    assert localq_queue.get_job_counts() == {s: 0 for s in
        ("waiting", "active", "delayed", "completed", "failed", "paused")}


def test_backoff_without_sleeping(localq_queue):
    job = localq_queue.add({"n": 21}, attempts=2, backoff=60)
    assert run_until_idle(localq_queue, flaky) == 1
    assert job.get_state() == "delayed"
    localq_queue.clock.advance(60)
    assert run_until_idle(localq_queue, flaky) == 1
    assert localq_queue.get_job(job.id).returnvalue == 42
'''


@pytest.mark.sqlite_only  # the pytest plugin's localq_queue is a file under tmp_path (README)
def test_fixture_is_available_without_importing_it(localq_queue):
    """This file imports nothing for the fixture: the pytest11 entry point provides it."""
    assert isinstance(localq_queue, localq.Queue) and localq_queue.name == "test"
    localq_queue.add({"n": 1}, delay=30)
    assert run_until_idle(localq_queue, lambda job: job.data["n"]) == 0
    localq_queue.clock.advance(30)
    assert run_until_idle(localq_queue, lambda job: job.data["n"]) == 1


@pytest.mark.sqlite_only  # the pytest plugin's localq_queue is a file under tmp_path (README)
def test_each_test_gets_its_own_file(localq_queue, tmp_path):
    assert Path(localq_queue.path).parent == tmp_path
    assert localq_queue.count() == 0


def _pytest(tmp_path: Path, *args: str, autoload: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTEST_ADDOPTS", None)
    if autoload:
        env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    else:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_user.py"), *args],
                          cwd=tmp_path, env=env, text=True, capture_output=True, timeout=120)


@pytest.mark.sqlite_only  # the pytest plugin's localq_queue is a file under tmp_path (README)
@pytest.mark.slow
def test_user_test_file_with_p_option(tmp_path):
    done = _pytest(tmp_path, "-p", "localq.pytest_plugin", autoload=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_user_test_file_without_the_plugin_has_no_fixture(tmp_path):
    done = _pytest(tmp_path, autoload=False)
    assert done.returncode == 1 and "fixture 'localq_queue' not found" in done.stdout


@pytest.mark.sqlite_only  # the pytest plugin's localq_queue is a file under tmp_path (README)
@pytest.mark.slow
def test_user_test_file_through_the_installed_entry_point(tmp_path):
    installed = [e for e in entry_points(group="pytest11") if e.value == "localq.pytest_plugin"]
    if not installed:
        pytest.skip("localq is not installed (pip install -e .): no pytest11 entry point")
    done = _pytest(tmp_path, autoload=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def flaky(job: localq.Job) -> str:
    if job.attempts_made == 0:
        raise RuntimeError("first attempt fails")
    return "done"


@pytest.mark.sqlite_only  # the docstring's example, run as written, is on a file
def test_module_docstring_example_holds(tmp_path):
    """localq.testing's docstring example, run as written."""
    clock = FakeClock()
    with localq.Queue("t", path=tmp_path / "q.db", clock=clock) as q:
        q.add({"n": 1}, attempts=2, backoff=10)
        assert run_until_idle(q, flaky) == 1
        assert run_until_idle(q, flaky) == 0
        clock.advance(10)
        assert run_until_idle(q, flaky) == 1
        assert q.get_job_counts("completed") == {"completed": 1}


def test_run_until_idle_counts_attempts_and_honours_name(queue: localq.Queue):
    queue.add({}, name="a", attempts=3)  # no backoff: retries run in the same call
    queue.add({}, name="b")
    always = lambda job: (_ for _ in ()).throw(RuntimeError("no"))  # noqa: E731
    assert run_until_idle(queue, always, name="a") == 3
    assert queue.get_job_counts("failed", "waiting") == {"failed": 1, "waiting": 1}
    assert run_until_idle(queue, lambda job: "ok", name="*") == 1


def test_run_until_idle_refuses_a_non_callable(queue: localq.Queue):
    with pytest.raises(localq.ConfigError):
        run_until_idle(queue, "not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", 7, "lone \ud800", "a\x00b"])
def test_run_until_idle_refuses_a_name_no_job_can_have(queue: localq.Queue, name: object,
                                                       backend: str):
    queue.add({}, name="a\x00b" if backend == "sqlite" else "a")
    if name == "a\x00b" and backend == "sqlite":  # SQLite text holds NUL: a real name
        assert run_until_idle(queue, lambda job: "ok", name=name) == 1  # type: ignore[arg-type]
        return
    with pytest.raises(localq.ConfigError, match="name"):
        run_until_idle(queue, lambda job: "ok", name=name)  # type: ignore[arg-type]
    assert queue.get_job_counts("waiting") == {"waiting": 1}
