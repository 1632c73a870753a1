"""Opening files: foreign, garbage, truncated, empty and newer files; file modes; the schema
initialisation race between processes."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import apsw
import pytest

import localq
from localq import schema

#: The file format and its opening (PostgreSQL's schema checks: tests/pg/test_pg_store.py).
pytestmark = pytest.mark.sqlite_only


def fingerprint(path: Path) -> tuple[bytes, int, list[str]]:
    """The file's bytes, its mtime and the names in its directory."""
    return path.read_bytes(), os.stat(path).st_mtime_ns, sorted(os.listdir(path.parent))


def refuse(path: Path, *words: str) -> localq.DatabaseError:
    with pytest.raises(localq.DatabaseError) as info:
        localq.Queue("q", path=path)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert info.value.path == str(path)
    return info.value


def make_foreign(path: Path, *, wal: bool = False) -> None:
    conn = apsw.Connection(str(path))
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
        # Leave committed frames in the -wal file, as a crashed or busy app would.
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.close()


def make_localq(path: Path) -> None:
    with localq.Queue("q", path=path) as q:
        for i in range(200):
            q.add({"i": i, "pad": "x" * 200})


# -- foreign and broken files ---------------------------------------------------------------

def test_another_apps_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    make_foreign(path)
    before = fingerprint(path)
    refuse(path, "not a localq database", str(path))
    assert fingerprint(path) == before


def test_another_apps_wal_file_is_refused_without_checkpointing_it(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    make_foreign(path, wal=True)
    assert (tmp_path / "app.db-wal").stat().st_size > 0
    before = fingerprint(path)
    wal_before = (tmp_path / "app.db-wal").read_bytes()
    refuse(path, "not a localq database")
    import gc
    gc.collect()  # a connection left to the garbage collector would checkpoint on close
    assert fingerprint(path)[:2] == before[:2]
    assert (tmp_path / "app.db-wal").read_bytes() == wal_before
    # the other app still reads its row
    conn = apsw.Connection(str(path))
    assert conn.execute("SELECT body FROM notes").fetchall() == [("keep me",)]
    conn.close()


def test_a_garbage_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(8192))
    before = fingerprint(path)
    refuse(path, "corrupt or not a database", "backup")
    assert fingerprint(path) == before


def test_a_text_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    before = fingerprint(path)
    refuse(path)
    assert fingerprint(path) == before


@pytest.mark.parametrize("keep", [50, 100, 4096, 0.5])
def test_a_truncated_localq_file_is_refused(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "q.db"
    make_localq(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep) if keep < 1 else int(keep))
    before = fingerprint(path)
    refuse(path, str(path))
    assert fingerprint(path) == before


def test_a_zero_length_file_becomes_a_fresh_queue(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.touch(mode=0o600)
    with localq.Queue("q", path=path) as q:
        assert q.add().id == "1"
        assert q._store.query("PRAGMA journal_mode")[0][0] == "wal"
    with localq.Queue("q", path=path) as q:
        assert q.count() == 1


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    make_localq(path)
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    conn.close()
    before = fingerprint(path)
    refuse(path, "newer", "upgrade localq", str(schema.SCHEMA_VERSION + 1))
    assert fingerprint(path) == before


def test_a_file_is_marked_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    make_localq(path)
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA application_id").fetchall()[0][0] == schema.APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchall()[0][0] == schema.SCHEMA_VERSION
    conn.close()
    with localq.Queue("q", path=path) as q:
        assert q.count() == 200
        assert q.add().id == "201"


# -- file modes -----------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_database_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "q.db"
        with localq.Queue("q", path=path) as q:
            q.add()
            for suffix in ("", "-wal", "-shm"):
                mode = stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
                assert mode == 0o600, f"{path}{suffix} has mode {oct(mode)}"
    finally:
        os.umask(old)


# -- two processes creating one file --------------------------------------------------------

ROUNDS = 20


def _open_and_add(paths: list[str], barrier: Any, results: Any, i: int) -> None:
    for path in paths:
        barrier.wait()
        try:
            with localq.Queue("q", path=path) as q:
                q.add({"from": i})
            results.put((path, i, "ok"))
        except BaseException as exc:  # report, do not hang the parent
            results.put((path, i, f"{type(exc).__name__}: {exc}"))


@pytest.mark.multiprocess
def test_processes_creating_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    # Each round, every process opens the same new file at the same moment: the schema
    # initialisation race (file creation, the switch to WAL, the migration).
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    paths = [str(tmp_path / f"race{r}.db") for r in range(ROUNDS)]
    procs = [ctx.Process(target=_open_and_add, args=(paths, barrier, results, i))
             for i in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(n * ROUNDS)]
    for p in procs:
        p.join(30)
    assert [o for o in outcomes if o[2] != "ok"] == []
    for path in paths:
        with localq.Queue("q", path=path) as q:
            assert sorted(j.data["from"] for j in q.get_waiting()) == list(range(n))


# -- migrations and plans -------------------------------------------------------------------

def test_a_version_1_file_is_migrated_in_place_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(schema.MIGRATIONS[0])
    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID:d}")
    conn.execute("PRAGMA user_version=1")
    conn.execute("COMMIT")
    conn.close()
    with localq.Queue("q", path=path) as q:  # written by localq at version 1
        assert q._store.query("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION
        assert q.add({"n": 1}).id == "1"
        job = q.get_next_job()
        assert job is not None
        job.move_to_completed("ok")
        assert q.get_job_counts()["completed"] == 1
        indexes = {r[0] for r in q._store.query(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs'")}
    assert {"jobs_completed", "jobs_failed"} <= indexes and "jobs_finished" not in indexes


def parsed_state_rule(conn: apsw.Connection) -> str:
    """The state rule *conn* enforces (its own parsed schema, as its refusal names it)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(apsw.ConstraintError) as info:
            conn.execute("UPDATE jobs SET state = 'paused' WHERE id = 2")
    finally:
        conn.execute("ROLLBACK")
    return str(info.value)


def test_the_state_rule_is_respelled_without_a_temporary_b_tree_and_still_holds(
        tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    make_localq(path)  # then put the rule back as version 1 wrote it
    conn = apsw.Connection(str(path))
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    conn.execute("BEGIN IMMEDIATE")
    (cookie,), = conn.execute("PRAGMA schema_version").fetchall()
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_schema SET sql = replace(sql, :new, :old) WHERE name = 'jobs'",
                 {"new": schema.STATE_CHECK, "old": schema.STATE_CHECK_IN})
    conn.execute(f"PRAGMA schema_version={int(cookie) + 1}")  # type: ignore[arg-type]
    conn.execute("PRAGMA writable_schema=OFF")
    conn.execute("COMMIT")
    conn.close()  # the connection that edits the schema keeps the text it had parsed
    conn = apsw.Connection(str(path))  # stands for another process, open all along
    assert "state IN (" in parsed_state_rule(conn)
    with localq.Queue("q", path=path) as q:
        assert "state IN (" not in q._store.query(
            "SELECT sql FROM sqlite_schema WHERE name = 'jobs'")[0][0]
        assert q.count() == 200
        job = q.get_next_job()
        assert job is not None and job.data["i"] == 0
        job.move_to_completed(None)
        assert q._store.query("PRAGMA integrity_check") == [("ok",)]
        for reader in (q._store.connection(), conn):
            assert "state = 'waiting' OR state = 'delayed'" in parsed_state_rule(reader)
        assert q._store.query("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION
    conn.close()


@pytest.mark.parametrize("state", ["waiting", "delayed", "active", "completed", "failed"])
def test_every_per_state_read_and_clean_uses_its_partial_index(tmp_path: Path,
                                                               state: str) -> None:
    """Counting, listing and cleaning one state must not scan or sort every job: with a
    million waiting jobs, counting the completed ones scanned the table (300 ms)."""
    from localq import queries, transitions
    from localq.listing import LIST_ORDER

    with localq.Queue("q", path=tmp_path / "q.db") as q:
        where = f"queue = +:q AND {transitions.STATE_IS[state]}"
        order = LIST_ORDER[state][1]
        statements = [
            queries._STATE_COUNT[state],
            f"SELECT id FROM jobs WHERE {where} ORDER BY {order} LIMIT 10",
            f"SELECT id FROM jobs WHERE {where} ORDER BY "
            + ", ".join(f"{c.strip()} DESC" for c in order.split(",")) + " LIMIT 10",
        ]
        for sql in statements:
            plan = " / ".join(r[3] for r in q._store.query("EXPLAIN QUERY PLAN " + sql,
                                                            {"q": "q"}))
            assert "INDEX jobs_" in plan and "SCAN" not in plan, (sql, plan)
            # Active jobs are few (the workers' concurrency): sorting them is cheap, and their
            # index serves the lock-expiry sweeps instead.
            assert state == "active" or "TEMP B-TREE" not in plan, (sql, plan)
