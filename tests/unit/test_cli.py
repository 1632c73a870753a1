"""The ``localq`` command line: every command through main(argv), bad input, subprocesses."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import localq
from localq import cli
from localq.options import JobOptions
from localq.testing import run_until_idle

import databases
from pg_server import drop_schema, schema_url

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fail_first(job: localq.Job) -> str:
    if job.data.get("fail"):
        job.log("giving up")
        raise RuntimeError(f"boom {job.data['n']}")
    return f"ok {job.data['n']}"


@contextlib.contextmanager
def _filled(path: str) -> Iterator[str]:
    """Queue "emails" holding a job in each state, and an empty paused "reports", at *path*.

    The queue that took the active job stays open until the end, as a live worker would:
    a closed instance's jobs are recovered by the next stalled-job check.
    """
    # These queues await no wakeup: no listening thread on PostgreSQL, whose close takes up
    # to half a second (the commands under test open the plain URL).
    setup = databases.polling(path)
    with localq.Queue("emails", path=setup) as q:
        q.add({"n": 1})                                  # completed
        q.add({"n": 2, "fail": True}, attempts=1)         # failed
        run_until_idle(q, fail_first)
    with localq.Queue("emails", path=setup) as holder:
        holder.add({"n": 3}, name="long")                 # active, with progress and a log
        job = holder.get_next_job()
        assert job is not None and job.id == "3"
        job.progress(40)
        job.log("halfway")
        holder.add({"n": 4}, priority=2)                  # waiting
        holder.add({"n": 5}, delay=3600, job_id="later")  # delayed
        with localq.Queue("reports", path=setup) as r:
            r.pause()
        yield path


@pytest.fixture
def db(db_path: str) -> Iterator[str]:
    """A database (file or schema) filled by :func:`_filled`, for one test."""
    with _filled(db_path) as path:
        yield path


@dataclasses.dataclass
class _Shared:
    """Databases kept for a whole module, and what closes and drops them at its end."""

    stack: contextlib.ExitStack[None]
    paths: dict[str, str] = dataclasses.field(default_factory=dict)


@pytest.fixture(scope="module")
def _shared() -> Iterator[_Shared]:
    with contextlib.ExitStack() as stack:
        yield _Shared(stack)


@pytest.fixture
def refused_db(backend: str, _shared: _Shared, tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> str:
    """The database of ``db``, shared by this module's tests of refused commands (each changes
    nothing): one per backend, as a fresh PostgreSQL schema costs about 0.4 s."""
    if backend not in _shared.paths:
        if backend == "sqlite":
            path = str(tmp_path_factory.mktemp("refused") / "q.db")
        else:
            server = request.getfixturevalue("pg_server_url")
            schema = f"t_{uuid.uuid4().hex[:16]}"
            path = schema_url(server, schema)
            _shared.stack.callback(drop_schema, server, schema)  # after its queues close
        _shared.paths[backend] = _shared.stack.enter_context(_filled(path))
    return _shared.paths[backend]


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- reading ------------------------------------------------------------------------------

def test_queues_lists_every_queue_with_its_pause_flag(capsys, db):
    code, out, _ = run(capsys, "--db", db, "queues")
    assert code == 0
    assert lines(out)[0].split() == ["QUEUE", "PAUSED", "JOBS"]
    assert lines(out)[1].split() == ["emails", "no", "5"]
    assert lines(out)[2].split() == ["reports", "yes", "0"]
    code, out, _ = run(capsys, "--db", db, "queues", "--json")
    assert json.loads(out) == [{"queue": "emails", "is_paused": False, "jobs": 5},
                               {"queue": "reports", "is_paused": True, "jobs": 0}]


def test_stats_counts_every_state_of_every_queue_or_one(capsys, db):
    code, out, _ = run(capsys, "--db", db, "stats", "--json")
    assert code == 0
    emails, reports = json.loads(out)
    assert emails == {"queue": "emails", "is_paused": False, "waiting": 1, "active": 1,
                      "delayed": 1, "completed": 1, "failed": 1, "paused": 0, "workers": 0}
    assert reports["is_paused"] is True
    code, out, _ = run(capsys, "stats", "emails", "--db", db)  # --db after the command too
    assert code == 0
    assert lines(out)[1].split() == ["emails", "1", "1", "1", "1", "1", "0", "0"]


def test_stats_and_queues_on_an_empty_database_say_so(capsys, db_path):
    localq.Queue("q", path=db_path).close()  # a localq database with no queue yet
    for command in ("stats", "queues"):
        code, out, _ = run(capsys, "--db", db_path, command)
        assert (code, out.strip()) == (0, "no queues in this database")


def test_stats_counts_live_workers(capsys, db):
    with localq.Queue("reports", path=db) as r:
        r.process(lambda job: None, concurrency=2)
        code, out, _ = run(capsys, "--db", db, "stats", "--json")
        workers = [(s["queue"], s["workers"]) for s in json.loads(out)]
        assert workers == [("emails", 0), ("reports", 1)]


def test_db_comes_from_localq_path_when_no_flag(capsys, db, monkeypatch):
    monkeypatch.setenv("LOCALQ_PATH", db)
    code, out, _ = run(capsys, "stats", "emails", "--json")
    assert code == 0 and json.loads(out)[0]["completed"] == 1


def test_jobs_lists_states_in_run_order_with_ids(capsys, db):
    code, out, _ = run(capsys, "--db", db, "jobs", "emails", "--json")
    assert code == 0
    jobs = json.loads(out)
    assert [(j["state"], j["data"]["n"]) for j in jobs] == [
        ("active", 3), ("waiting", 4), ("delayed", 5), ("failed", 2), ("completed", 1)]
    assert all(isinstance(j["id"], str) for j in jobs)
    assert jobs[2]["id"] == "later"
    code, out, _ = run(capsys, "--db", db, "jobs", "emails")
    table = lines(out)
    assert table[0].split()[:3] == ["ID", "STATE", "NAME"]
    assert "[" not in table[1] and "40" in table[1]  # active job's progress
    assert "boom 2" in out  # a failed job shows its reason


def test_jobs_state_filter_and_limit(capsys, db):
    code, out, _ = run(capsys, "--db", db, "jobs", "emails", "--state", "failed",
                       "--state", "wait", "--json")
    assert [j["state"] for j in json.loads(out)] == ["failed", "waiting"]
    code, out, _ = run(capsys, "--db", db, "jobs", "emails", "--limit", "2", "--json")
    assert len(json.loads(out)) == 2
    code, out, _ = run(capsys, "--db", db, "jobs", "reports")
    assert code == 0 and "no jobs" in out


def test_paused_queue_lists_waiting_jobs_as_paused(capsys, db):
    with localq.Queue("reports", path=db) as r:
        r.add({"n": 9})
    code, out, _ = run(capsys, "--db", db, "jobs", "reports", "--json")
    assert [j["state"] for j in json.loads(out)] == ["paused"]


def test_show_describes_one_job(capsys, db):
    code, out, _ = run(capsys, "--db", db, "show", "emails", "2")
    assert code == 0
    assert "failed reason boom 2" in " ".join(out.split())
    assert "RuntimeError: boom 2" in out  # the stack trace of the last attempt
    assert "1 rows (localq logs emails 2)" in out
    code, out, _ = run(capsys, "--db", db, "show", "emails", "later", "--json")
    (job,) = json.loads(out)
    assert job["id"] == "later" and job["state"] == "delayed" and job["delay"] == 3600


def test_show_reports_the_derived_state(capsys, db):
    with localq.Queue("emails", path=db) as q:
        q.pause()
    code, out, _ = run(capsys, "--db", db, "show", "emails", "4", "--json")
    assert json.loads(out)[0]["state"] == "paused"


def test_logs_prints_rows(capsys, db):
    code, out, _ = run(capsys, "--db", db, "logs", "emails", "3")
    assert code == 0 and out == "halfway\n"
    code, out, _ = run(capsys, "--db", db, "logs", "emails", "3", "--json")
    assert json.loads(out) == [{"id": "3", "index": 0, "row": "halfway"}]
    code, out, _ = run(capsys, "--db", db, "logs", "emails", "1")
    assert "no log rows" in out


# -- writing ------------------------------------------------------------------------------

def test_add_passes_every_flag_to_the_job(capsys, db_path):
    db = db_path  # nothing there yet: add creates the file (or schema)
    code, out, _ = run(capsys, "--db", db, "add", "mail", '{"to": "ada"}', "--name", "send",
                       "--delay", "30", "--priority", "3", "--attempts", "4", "--backoff",
                       '{"type": "exponential", "delay": 2}', "--timeout", "9", "--lifo",
                       "--job-id", "m-1", "--json")
    assert code == 0
    (shown,) = json.loads(out)
    assert shown["id"] == "m-1" and shown["state"] == "delayed"
    with localq.Queue("mail", path=db) as q:
        job = q.get_job("m-1")
        assert job is not None and job.data == {"to": "ada"} and job.name == "send"
        assert (job.opts["attempts"], job.opts["timeout"], job.opts["lifo"],
                job.delay) == (4, 9.0, True, 30.0)
        # read from the row: job.opts["priority"] is None on main until the core fix lands
        assert q._store.query("SELECT priority FROM jobs WHERE job_id = 'm-1'") == [(3,)]
        assert job.opts["backoff"] == {"type": "exponential", "delay": 2.0}
    code, out, _ = run(capsys, "--db", db, "add", "mail", "[1, 2]", "--backoff", "5")
    assert code == 0 and re.fullmatch(r"job \d+ in queue 'mail': waiting\n", out)
    code, out, _ = run(capsys, "--db", db, "add", "mail", "{}", "--job-id", "m-1")
    assert code == 0 and "delayed" in out  # an existing id: nothing added, that job shown


def test_add_flags_are_job_options_fields():
    """huey's consumer_options idea: the CLI's job flags come from JobOptions' fields."""
    fields = {f.name: f for f in dataclasses.fields(JobOptions)}
    assert set(cli.ADD_FLAGS) <= set(fields)
    parser = cli.build_parser()
    add = parser._subparsers._group_actions[0].choices["add"]  # type: ignore[union-attr]
    flags = {s for a in add._actions for s in a.option_strings}
    flags -= {"-h", "--help", "--db", "--json"}
    assert flags == {cli.flag_name(f) for f in cli.ADD_FLAGS}
    for action in add._actions:
        if action.dest in cli.ADD_FLAGS:
            assert action.default is None  # unset flags leave JobOptions' own defaults
    assert cli.flag_name("job_id") == "--job-id"


def test_retry_one_job_and_all(capsys, db):
    with localq.Queue("emails", path=db) as q:
        q.add({"n": 6, "fail": True}, name="flaky")
        assert run_until_idle(q, fail_first, name="flaky") == 1
    code, out, _ = run(capsys, "--db", db, "retry", "emails", "2")
    assert code == 0 and "failed -> waiting" in out
    code, out, _ = run(capsys, "--db", db, "retry", "emails", "--all")
    assert code == 0 and "re-queued 1 failed jobs" in out
    with localq.Queue("emails", path=db) as q:
        assert q.get_job_counts("failed", "waiting") == {"failed": 0, "waiting": 3}


def test_remove_promote_clean_pause_resume(capsys, db):
    assert run(capsys, "--db", db, "promote", "emails", "later")[0] == 0
    assert run(capsys, "--db", db, "remove", "emails", "4")[0] == 0
    code, out, _ = run(capsys, "--db", db, "clean", "emails", "--grace", "0", "--json")
    assert code == 0 and json.loads(out) == [{"id": "1"}]
    code, out, _ = run(capsys, "--db", db, "clean", "emails", "--grace", "0", "--state",
                       "failed")
    assert out.startswith("removed 1 failed jobs")
    code, out, _ = run(capsys, "--db", db, "pause", "emails")
    assert code == 0 and "paused" in out
    with localq.Queue("emails", path=db) as q:
        assert q.is_paused()
        assert q.get_job("4") is None and q.get_job("later").get_state() == "paused"
        assert q.get_job_counts("completed", "failed") == {"completed": 0, "failed": 0}
    assert run(capsys, "--db", db, "resume", "emails")[0] == 0
    with localq.Queue("emails", path=db) as q:
        assert not q.is_paused()


def test_help_and_version_exit_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("queues", "stats", "jobs", "show", "logs", "add", "retry", "remove",
                    "promote", "clean", "pause", "resume", "worker", "watch", "demo"):
        assert command in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"localq {localq.__version__}"


# -- bad input: one line on stderr, exit 1, nothing on stdout ------------------------------

BAD: list[tuple[str, list[str], str]] = [
    ("bad json", ["add", "emails", "{to: ada}"], "not valid JSON"),
    ("NaN in json", ["add", "emails", '{"x": NaN}'], "not strict JSON"),
    ("non-finite delay", ["add", "emails", "{}", "--delay", "inf"], "finite"),
    ("bad float", ["add", "emails", "{}", "--delay", "soon"], "invalid float value"),
    ("priority 0", ["add", "emails", "{}", "--priority", "0"], "priority must be >= 1"),
    ("attempts 0", ["add", "emails", "{}", "--attempts", "0"], "attempts must be >= 1"),
    ("bad backoff", ["add", "emails", "{}", "--backoff", "{"], "not valid JSON"),
    ("digit job id", ["add", "emails", "{}", "--job-id", "42"], "reserved"),
    ("bad queue name", ["add", "no such!", "{}"], "bad queue name"),
    ("unknown job", ["show", "emails", "999"], "no job '999'"),
    ("unknown job logs", ["logs", "emails", "nope"], "no job 'nope'"),
    ("unknown job remove", ["remove", "emails", "999"], "no job"),
    ("promote waiting", ["promote", "emails", "4"], "not delayed"),
    ("retry waiting", ["retry", "emails", "4"], "not failed"),
    ("remove active", ["remove", "emails", "3"], "lock"),
    ("retry nothing", ["retry", "emails"], "one of the arguments"),
    ("retry both", ["retry", "emails", "2", "--all"], "not allowed with"),
    ("unknown queue", ["stats", "nosuch"], "no queue 'nosuch'"),
    ("unknown queue jobs", ["jobs", "nosuch"], "no queue 'nosuch'"),
    ("bad state", ["jobs", "emails", "--state", "done"], "invalid choice"),
    ("bad limit", ["jobs", "emails", "--limit", "0"], "--limit must be >= 1"),
    ("limit not int", ["jobs", "emails", "--limit", "ten"], "invalid int value"),
    ("negative grace", ["clean", "emails", "--grace", "-1"], "grace must be >= 0"),
    ("clean no grace", ["clean", "emails"], "--grace"),
    ("unknown command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("no command", [], "a command is required"),
    ("missing argument", ["show", "emails"], "required: ID"),
    ("unknown option", ["stats", "--verbose"], "unrecognized arguments"),
    ("handler spec", ["worker", "emails", "no_colon"], "must look like 'package.module:function'"),
    ("handler module", ["worker", "emails", "no_such_module_xyz:run"], "ModuleNotFoundError"),
    ("handler attr", ["worker", "emails", "json:no_such_fn"], "AttributeError"),
    ("handler not callable", ["worker", "emails", "json:__name__"], "not callable"),
    ("watch interval", ["watch", "--interval", "-1"], "--interval"),
    ("demo jobs", ["demo", "--jobs", "0"], "--jobs must be"),
]


@pytest.mark.parametrize("argv,expected", [(a, e) for _, a, e in BAD],
                         ids=[name for name, _, _ in BAD])
def test_bad_input_is_one_line_and_exit_1(capsys, refused_db, argv, expected):
    code, out, err = run(capsys, "--db", refused_db, *argv)
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("localq: error: ") and expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize("which", ["missing", "unreachable", "unusable", "foreign"])
def test_bad_database_paths_are_one_line_errors(capsys, backend, db_path, tmp_path, which):
    # missing: no file (or schema) there yet; unreachable: no such directory (or server);
    # unusable: a directory (or a bad URL parameter); foreign: another application's.
    sqlite = backend == "sqlite"
    if which == "foreign":
        databases.make_foreign(db_path)
    before = databases.contents(db_path)
    path = {"unreachable": str(tmp_path / "no" / "dir" / "q.db") if sqlite
            else "postgresql://localq@127.0.0.1:1/none",
            "unusable": str(tmp_path) if sqlite else db_path + "&pool_size=1",
            }.get(which, db_path)
    code, out, err = run(capsys, "--db", path, "stats")
    assert (code, out, len(err.splitlines())) == (1, "", 1), err
    assert err.startswith("localq: error: ")
    assert databases.contents(db_path) == before  # reading never creates a file or schema
    assert os.listdir(tmp_path) == ([] if which != "foreign" or not sqlite else ["q.db"])
    if which == "missing":
        assert "no localq database" in err and "localq add" in err
    if which == "foreign":
        assert "not a localq database" in err if sqlite else "not localq's" in err


# -- through the installed entry points, in a subprocess ------------------------------------

def _script(*argv: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("LOCALQ_PATH", None)
    if db:
        env["LOCALQ_PATH"] = db
    return subprocess.run([sys.executable, "-m", "localq", *argv], env=env, text=True,
                          capture_output=True, timeout=60)


def test_python_m_localq_runs_commands(db):
    done = _script("stats", "--json", db=db)
    assert done.returncode == 0 and done.stderr == ""
    assert [s["queue"] for s in json.loads(done.stdout)] == ["emails", "reports"]
    done = _script("--db", db, "add", "emails", '{"n": 7}')
    assert done.returncode == 0 and "waiting" in done.stdout
    done = _script("--db", db, "jobs", "emails", "--json")
    assert any(j["data"] == {"n": 7} for j in json.loads(done.stdout))


#: Refused before the database plays a part (argparse, JSON, a file path): one backend is
#: enough for these, each a process start.
_NO_DB = pytest.mark.sqlite_only


@pytest.mark.parametrize("argv", [
    pytest.param(["add", "emails", "not json"], marks=_NO_DB), ["show", "emails", "999"],
    pytest.param(["jobs", "emails", "--limit", "x"], marks=_NO_DB),
    pytest.param(["nosuchcommand"], marks=_NO_DB),
    pytest.param(["--db", "/nonexistent-dir/q.db", "stats"], marks=_NO_DB),
])
def test_python_m_localq_bad_input_has_no_traceback(refused_db, argv):
    done = _script(*argv, db=refused_db)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("localq: error: ")
    assert "Traceback" not in done.stderr


def test_foreign_file_is_not_touched(backend, db_path):
    databases.make_foreign(db_path)
    before = databases.contents(db_path)
    done = _script("--db", db_path, "add", "q", "{}")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "not a localq database" in done.stderr if backend == "sqlite" \
        else "not localq's" in done.stderr
    assert databases.contents(db_path) == before


@pytest.mark.sqlite_only  # stdout handling, not storage: one backend is enough
def test_output_to_a_closed_pipe_is_quiet(db):
    env = dict(os.environ, PYTHONPATH=str(ROOT), LOCALQ_PATH=db)
    with localq.Queue("emails", path=db) as q:
        q.add_bulk([{"data": {"n": i}} for i in range(3000)])
    proc = subprocess.Popen([sys.executable, "-m", "localq", "jobs", "emails", "--limit",
                             "3000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()  # the reader goes away, like `| head`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err


def test_every_command_is_in_the_readme():
    text = (ROOT / "README.rst").read_text()
    for command in cli.build_parser()._subparsers._group_actions[0].choices:  # type: ignore
        assert f" {command}" in text, command
