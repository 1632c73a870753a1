"""Security: what the file can make localq do, and what localq does to the file system.

The trust boundary (README "Reliability"): whoever can write the queue file can enqueue
jobs for the handlers that workers registered, and nothing more. So localq never unpickles
or evaluates stored data, binds every stored value as an SQL parameter, does not let a
trigger or view planted in the file call functions (``trusted_schema=OFF``), opens no
symlink, and creates its files readable and writable by the owner only.
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import localq
from localq.testing import FakeClock
from tests.api_tour import MARK, tour

PACKAGE = Path(localq.__file__).resolve().parent
#: Every module, localq/pg/ (the PostgreSQL backend) included.
MODULES = sorted(PACKAGE.rglob("*.py"))
#: The file-system and SQLite-file promises below (the tracer, trusted_schema, symlinks,
#: modes); their PostgreSQL twin for bound values is in tests/pg/test_pg_reliability.py.
FILES_ONLY = pytest.mark.sqlite_only

#: Modules that may turn a string into code: runner.resolve_handler imports the
#: "module:function" that the worker's own caller passed (API.md sandbox), never job data.
IMPORTLIB_ALLOWED = {"runner.py"}
#: The calls that import by name, and names that would mean their argument came from a job.
IMPORTERS = {"import_module", "resolve_handler", "__import__"}
JOB_NAMES = {"job", "data", "opts", "row", "payload", "returnvalue"}
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle",
                     "jsonpickle", "sqlite3", "_sqlite3"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _trees() -> Iterator[tuple[str, ast.AST]]:
    assert len(MODULES) > 10
    for module in MODULES:
        yield module.name, ast.parse(module.read_text(encoding="utf-8"), str(module))


def _calls(names: set[str]) -> Iterator[tuple[str, ast.Call, str]]:
    """Every call in localq of a function or method named in *names*: (module, node, name)."""
    for module, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called in names:
                yield module, node, called


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    return []


def test_localq_never_imports_pickle_marshal_or_sqlite3() -> None:
    """JSON only (huey#818, rq#2389), and apsw only: the stdlib sqlite3 module's close()
    releases POSIX locks other connections of the process hold (howtocorrupt §2.2)."""
    found = [(name, mod) for name, tree in _trees() for node in ast.walk(tree)
             for mod in _imported(node) if mod in FORBIDDEN_MODULES]
    assert found == []


def test_localq_never_evaluates_strings_and_imports_by_name_only_in_the_worker() -> None:
    calls, importlib_users = [], set()
    for name, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in FORBIDDEN_CALLS:
                calls.append((name, node.func.id, node.lineno))
            if "importlib" in _imported(node):
                importlib_users.add(name)
    assert calls == []
    assert importlib_users <= IMPORTLIB_ALLOWED, importlib_users


def test_what_the_worker_imports_never_comes_from_a_job() -> None:
    """Every call that imports by name takes an argument that no job touched."""
    importers = []
    for name, node, called in _calls(IMPORTERS):
        used = {n.id for arg in node.args for n in ast.walk(arg) if isinstance(n, ast.Name)}
        used |= {n.attr for arg in node.args for n in ast.walk(arg)
                 if isinstance(n, ast.Attribute)}
        importers.append((name, called, sorted(used)))
        assert not used & JOB_NAMES, (name, node.lineno, called, used)
    assert {name for name, _, _ in importers} >= {"runner.py", "worker.py"}, importers


def test_localq_never_opens_or_deletes_the_wal_or_shm_itself() -> None:
    """Deleting ``-wal`` loses committed jobs (test_bad_files); only SQLite touches them."""
    touching = {"open", "remove", "unlink", "truncate", "rename", "replace"}
    offenders = []
    for name, node, _ in _calls(touching):
        strings = [c.value for arg in node.args for c in ast.walk(arg)
                   if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        if any(s.endswith(("-wal", "-shm", "-journal")) for s in strings):
            offenders.append((name, node.lineno))
    assert offenders == []


# --- every value bound -----------------------------------------------------------------------



@FILES_ONLY
def test_every_value_reaches_sqlite_as_a_bound_parameter(tmp_path: Path) -> None:
    """Trace every statement localq runs while it handles values carrying a marker: the
    marker shows up in the bindings, never in the SQL text."""
    statements: list[str] = []
    bound: list[Any] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        statements.append(sql)
        bound.append(bindings)
        return True

    clock = FakeClock(1767225600.0)
    with localq.Queue(f"q-{MARK}", path=tmp_path / "q.db", clock=clock) as q:
        q._store.connection().exec_trace = trace
        tour(q, clock)
        q._store.connection().exec_trace = None
    assert len(statements) > 30
    assert [sql for sql in statements if MARK in sql] == []
    assert any(MARK in repr(b) for b in bound), "the tracer saw no marked value"


# --- trusted_schema=OFF ----------------------------------------------------------------------

@FILES_ONLY
def test_a_function_called_by_a_trigger_planted_in_the_file_never_runs(tmp_path: Path) -> None:
    """Whoever writes the file may plant triggers; with ``trusted_schema=OFF`` they cannot
    call any function that is not marked innocuous (an extension's, an application's)."""
    path = tmp_path / "q.db"
    localq.Queue("q", path=path).close()
    planter = apsw.Connection(str(path))
    planter.execute("CREATE TRIGGER planted AFTER INSERT ON jobs BEGIN"
                    " SELECT sentinel(new.data); END")
    planter.execute("CREATE VIEW planted_view AS SELECT sentinel(data) FROM jobs")
    planter.close()
    calls: list[Any] = []

    with localq.Queue("q", path=path) as q:
        conn = q._store.connection()
        assert conn.execute("PRAGMA trusted_schema").fetchall() == [(0,)]
        # A function not flagged SQLITE_INNOCUOUS, as an extension or an app might register.
        conn.create_scalar_function("sentinel", lambda value: calls.append(value))
        with pytest.raises(localq.DatabaseError) as caught:
            q.add({"n": 1})
        assert str(path) in str(caught.value)
        with pytest.raises(apsw.SQLError):
            conn.execute("SELECT * FROM planted_view").fetchall()
        assert q.count() == 0
    assert calls == []

    # The control: a connection that trusts the schema runs the planted trigger.
    trusting = apsw.Connection(str(path))
    trusting.execute("PRAGMA trusted_schema=ON")
    trusting.create_scalar_function("sentinel", lambda value: calls.append(value))
    trusting.execute("INSERT INTO jobs (queue, name, data, opts, state, priority, seq,"
                     " timestamp_ms) VALUES ('q', 'n', '{}', '{}', 'waiting', 1, 1, 0)")
    trusting.close()
    assert calls == ["{}"]


# --- symlinks --------------------------------------------------------------------------------

def _stamp(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@FILES_ONLY
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_symlinked_database_path_is_refused_and_its_target_untouched(
    tmp_path: Path, dangling: bool
) -> None:
    target = tmp_path / "target"
    if not dangling:
        target.write_text("precious")
        before = _stamp(target)
    link = tmp_path / "q.db"
    link.symlink_to(target)
    with pytest.raises(localq.ConfigError, match="symlink") as caught:
        localq.Queue("q", path=link)
    assert str(link) in str(caught.value)
    if dangling:
        assert not target.exists(), "a dangling symlink was followed and its target created"
    else:
        assert _stamp(target) == before


@FILES_ONLY
@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-queue", "existing-queue"])
def test_a_symlinked_wal_or_shm_is_never_written_through(
    tmp_path: Path, suffix: str, existing: bool
) -> None:
    path = tmp_path / "q.db"
    if existing:
        with localq.Queue("q", path=path) as q:
            q.add({"n": 1})
    target = tmp_path / "target"
    target.write_text("precious")
    before = _stamp(target)
    Path(f"{path}{suffix}").symlink_to(target)
    try:
        with localq.Queue("q", path=path) as q:
            q.add({"n": 2})
    except localq.DatabaseError as exc:
        assert str(path) in str(exc)
        assert f"{path}{suffix}' is a symlink" in str(exc)
    assert _stamp(target) == before


# --- file modes ------------------------------------------------------------------------------

@pytest.fixture(params=[0o022, 0o002, 0o000], ids=["umask-022", "umask-002", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@FILES_ONLY
def test_the_database_wal_and_shm_are_owner_only_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "q.db"
    with localq.Queue("q", path=path) as q:
        q.add({"n": 1})
        for name in ("q.db", "q.db-wal", "q.db-shm"):
            mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
            assert mode == 0o600, f"{name} is {mode:o} under umask {umask:03o}"
