"""Files that are not a healthy localq queue: a clear error, never a driver exception, and
never a write to a file that is not ours.

Each case opens ``localq.Queue`` on the file and, where the open succeeds, uses it. Every
call returns or raises a :class:`localq.LocalqError` subclass whose message names the path.
A file that is not ours keeps its bytes, its mtime and its directory (no ``-wal``, ``-shm``
or ``-journal`` left behind).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import apsw
import pytest

import localq
from localq import fscheck, schema
from tests.reliability.checks import check_file, check_invariants

# SQLite-file promises (foreign, corrupt, truncated files; the WAL; network file systems);
# their PostgreSQL twins are in tests/pg/test_pg_reliability.py and tests/pg/test_pg_store.py.
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parents[2]


def _fingerprint(path: Path) -> tuple[Any, ...]:
    """The file's bytes, mtime and mode, and what else is in its directory."""
    stat = path.stat()
    return (hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_mtime_ns, stat.st_mode,
            sorted(os.listdir(path.parent)))


def _use(q: localq.Queue) -> list[str]:
    """Call the queue's main reads and writes; return the ones that raised."""
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("count", q.count),
        ("get_job_counts", q.get_job_counts),
        ("get_jobs", lambda: q.get_jobs(["waiting", "active", "delayed", "completed", "failed"])),
        ("get_job", lambda: q.get_job("3")),
        ("add", lambda: q.add({"new": True})),
        ("get_next_job", q.get_next_job),
        ("clean", lambda: q.clean(0, "completed")),
    ]
    raised = []
    for name, call in calls:
        try:
            result = call()
            if name == "get_next_job" and result is not None:
                result.move_to_completed("ok", not_fetch=True)
        except localq.LocalqError as exc:
            assert isinstance(exc, localq.DatabaseError), (name, exc)
            assert q.path in str(exc), (name, exc)
            raised.append(name)
    return raised


def _refused(path: Path, match: str) -> localq.LocalqError:
    before = _fingerprint(path)
    with pytest.raises(localq.LocalqError, match=match) as caught:
        localq.Queue("q", path=path)
    assert str(path) in str(caught.value)
    assert _fingerprint(path) == before, "a file that is not ours was changed"
    return caught.value


# --- files that are not ours ---------------------------------------------------------------


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_another_applications_sqlite_file_is_refused_and_left_untouched(
    tmp_path: Path, journal_mode: str
) -> None:
    path = tmp_path / "app.db"
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchall()
    conn.execute("CREATE TABLE jobs(id INTEGER PRIMARY KEY, payload TEXT)")
    conn.execute("INSERT INTO jobs(payload) VALUES ('theirs')")
    conn.close()
    error = _refused(path, "is not a localq database")
    assert isinstance(error, localq.DatabaseError)
    assert error.path == str(path)


def test_another_applications_hot_wal_is_neither_checkpointed_nor_removed(tmp_path: Path) -> None:
    """Its owner died with commits in ``-wal``: refusing the file must not fold them into it."""
    path = tmp_path / "app.db"
    code = ("import apsw, os, sys; c = apsw.Connection(sys.argv[1]);"
            " c.execute('PRAGMA journal_mode=wal').fetchall();"
            " c.execute('CREATE TABLE t(x)'); c.execute('INSERT INTO t VALUES (1)'); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    wal = Path(f"{path}-wal")
    wal_before = hashlib.sha256(wal.read_bytes()).hexdigest()
    assert wal.stat().st_size > 0
    _refused(path, "is not a localq database")
    assert hashlib.sha256(wal.read_bytes()).hexdigest() == wal_before


def test_an_empty_sqlite_file_of_someone_else_with_an_application_id_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA application_id=1234").fetchall()
    conn.close()
    _refused(path, "is not a localq database")


@pytest.mark.parametrize("content", [
    pytest.param(b"name,age\nada,36\n" * 200, id="csv"),
    pytest.param(random.Random(7).randbytes(8192), id="random-bytes"),
    pytest.param(b"SQLite format 3\x00" + random.Random(8).randbytes(8176),
                 id="sqlite-header-then-junk"),
])
def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    error = _refused(path, "corrupt or not a database")
    assert isinstance(error, localq.DatabaseError)
    assert isinstance(error.__cause__, apsw.Error)


def test_a_zero_length_file_becomes_a_new_queue(tmp_path: Path) -> None:
    """SQLite reads an empty file as an empty database, and so does localq: it is also what
    a crash between creating the file and writing the schema leaves behind."""
    path = tmp_path / "q.db"
    path.touch()
    with localq.Queue("q", path=path) as q:
        q.add({"n": 1})
        assert q.count() == 1
    check_file(str(path))


# --- our files, damaged ------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpointed localq file: 40 jobs with 3 kB of data (one leaf page each), some done."""
    path = tmp_path_factory.mktemp("bad-files") / "healthy.db"
    with localq.Queue("q", path=path) as q:
        q.add_bulk([{"data": {"i": i, "pad": "p" * 3000}} for i in range(40)])
        for _ in range(5):
            job = q.get_next_job()
            assert job is not None
            job.move_to_completed({"ok": True}, not_fetch=True)
    assert not Path(f"{path}-wal").exists()
    return path


def test_a_newer_schema_is_refused_without_writing_to_the_file(
    healthy: Path, tmp_path: Path
) -> None:
    path = tmp_path / "q.db"
    shutil.copyfile(healthy, path)
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}").fetchall()
    conn.close()
    error = _refused(path, "newer than this localq")
    assert f"version {schema.SCHEMA_VERSION + 1}" in str(error) and "upgrade localq" in str(error)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_a_truncated_file_raises_a_clear_error(
    healthy: Path, tmp_path: Path, keep: float
) -> None:
    path = tmp_path / "q.db"
    shutil.copyfile(healthy, path)
    os.truncate(path, int(path.stat().st_size * keep) // 4096 * 4096)
    try:
        q = localq.Queue("q", path=path)
    except localq.DatabaseError as exc:
        assert str(path) in str(exc) and "corrupt" in str(exc)
        return
    with q:
        assert _use(q), "a truncated file was used without an error"


def _overwrite(path: Path, page: int, start: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek((page - 1) * 4096 + start)
        f.write(data)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["random", "zeros"])
def test_an_overwritten_page_anywhere_gives_database_errors_never_a_driver_exception(
    healthy: Path, tmp_path: Path, pattern: str
) -> None:
    """Every page but the header page, overwritten whole or in the middle (where a row's
    value sits, which SQLite does not check): each call returns or raises DatabaseError."""
    pages = healthy.stat().st_size // 4096
    path = tmp_path / "q.db"
    rnd = random.Random(pattern)
    damaged = 0
    for page in range(2, pages + 1):
        for start, size in ((0, 4096), (1500, 1000)):
            shutil.copyfile(healthy, path)
            data = rnd.randbytes(size) if pattern == "random" else bytes(size)
            _overwrite(path, page, start, data)
            try:
                q = localq.Queue("q", path=path)
            except localq.DatabaseError as exc:
                assert str(path) in str(exc)
                damaged += 1
                continue
            with q:
                damaged += bool(_use(q))
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(f"\n{pattern}: {2 * (pages - 1)} overwrites, {damaged} reported as damage")
    assert damaged > pages // 2


def test_a_zeroed_row_value_is_reported_as_corruption_not_as_a_json_error(
    healthy: Path, tmp_path: Path
) -> None:
    """Zero-filled ranges (what virtiofs and power loss on some disks leave) keep the
    b-tree valid and turn a stored JSON value into text with NUL bytes."""
    path = tmp_path / "q.db"
    shutil.copyfile(healthy, path)
    conn = apsw.Connection(str(path))
    page = conn.execute("SELECT pageno FROM dbstat WHERE name = 'jobs' AND pagetype = 'leaf'"
                        " ORDER BY pageno LIMIT 1 OFFSET 20").fetchall()[0][0]
    conn.close()
    _overwrite(path, page, 2000, bytes(500))
    with localq.Queue("q", path=path) as q:
        with pytest.raises(localq.DatabaseError, match="is corrupt: a stored value") as caught:
            q.get_jobs(["waiting"])
        assert str(path) in str(caught.value)
        with pytest.raises(localq.DatabaseError, match="is corrupt"):
            while q.get_next_job() is not None:
                pass


# --- a deleted -wal after a crash ----------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys
    import localq
    q = localq.Queue("q", path=sys.argv[1])
    ids = [q.add({"after_checkpoint": i}).id for i in range(30)]
    print(" ".join(ids), flush=True)
    sys.stdin.read()      # hold the hot WAL until killed
""")


@pytest.mark.crash
def test_deleting_the_wal_after_a_crash_loses_the_commits_since_the_last_checkpoint(
    healthy: Path, tmp_path: Path
) -> None:
    """What the README warns about: the jobs committed since the last checkpoint live only
    in ``-wal``; deleting it after a crash silently drops them. The file stays consistent
    and opens without error. localq never deletes ``-wal`` itself."""
    path = tmp_path / "q.db"
    shutil.copyfile(healthy, path)
    before = check_invariants(str(path))
    with subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}) as child:
        try:
            added = (child.stdout.readline() if child.stdout else "").split()
            assert len(added) == 30
            assert Path(f"{path}-wal").stat().st_size > 0
            with localq.Queue("q", path=path) as q:   # the jobs are there while the WAL is
                assert q.count() == len(before) - 5 + 30
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    Path(f"{path}-wal").unlink()
    with localq.Queue("q", path=path) as q:
        assert q.count() == len(before) - 5
        assert all(q.get_job(job_id) is None for job_id in added)
        q.add({"again": True})
    check_file(str(path))
    assert set(check_invariants(str(path))) - set(before) == {str(int(max(before, key=int)) + 1)}


# --- a network filesystem -------------------------------------------------------------------


@pytest.fixture
def on_nfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make tmp_path look like an NFS mount to localq's filesystem check."""
    real = os.path.realpath(tmp_path)
    line = f"36 25 0:50 / {real} rw,relatime shared:1 - nfs4 server:/export rw,vers=4.2\n"
    root = "25 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
    monkeypatch.setattr(fscheck, "_read_mountinfo", lambda: root + line)
    return tmp_path


def test_a_queue_on_a_network_filesystem_is_refused_before_anything_is_created(
    on_nfs: Path,
) -> None:
    path = on_nfs / "q.db"
    with pytest.raises(localq.ConfigError, match="nfs4") as caught:
        localq.Queue("q", path=path)
    message = str(caught.value)
    assert str(path) in message and "allow_network_fs" in message and "WAL" in message
    assert os.listdir(on_nfs) == []


def test_the_override_opens_a_queue_on_a_network_filesystem_with_a_warning(
    on_nfs: Path,
) -> None:
    path = on_nfs / "q.db"
    with pytest.warns(RuntimeWarning, match="nfs4"):
        q = localq.Queue("q", path=path, settings={"allow_network_fs": True})
    with q:
        q.add({"n": 1})
        assert q.count() == 1
