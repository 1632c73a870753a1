"""PgStore: opening, schema versioning, durability, errors, wakeups, reconnection, fork."""

from __future__ import annotations

import os
import time
import warnings
from typing import Callable

import psycopg
import pytest

from localq.errors import ConfigError, DatabaseError, LockError
from localq.pg import schema
from localq.pg import transitions as tr
from localq.pg.store import PgStore
from localq.pg.url import parse_url, redact
from pg_server import drop_schema, schema_url

pytestmark = pytest.mark.pg

T0 = 1_767_225_600_000


def add(store: PgStore, queue: str = "q") -> None:
    with store.write(durable=True) as conn:
        tr.add_job(conn, queue=queue, name="n", data="{}", opts={}, stored_opts="{}", job_id=None,
                   priority=None, delay_ms=0, lifo=False, timestamp_ms=T0, now_ms=T0)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def admin(url: str) -> psycopg.Connection:
    return psycopg.connect(parse_url(url).conninfo, autocommit=True)


# -- opening and versions -------------------------------------------------------------------

def test_first_open_creates_the_versioned_schema_and_reopening_keeps_it(pg_url: str) -> None:
    store = PgStore(pg_url)
    add(store)
    meta = dict(store.query("SELECT key, value FROM localq_meta"))
    assert meta == {"app": "localq", "schema_version": str(schema.SCHEMA_VERSION)}
    store.close()
    again = PgStore(pg_url)
    assert again.query("SELECT count(*) FROM jobs")[0][0] == 1
    again.close()


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    PgStore(pg_url).close()
    with admin(pg_url) as conn:
        conn.execute(f"UPDATE {parse_url(pg_url).schema}.localq_meta SET value = '99'"
                     " WHERE key = 'schema_version'")
    with pytest.raises(DatabaseError, match="version 99, newer than this localq"):
        PgStore(pg_url)


def test_a_schema_holding_other_tables_is_refused_and_left_alone(pg_url: str) -> None:
    name = parse_url(pg_url).schema
    with admin(pg_url) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"CREATE TABLE {name}.jobs (x int)")
    with pytest.raises(DatabaseError, match="not localq's: pass another schema"):
        PgStore(pg_url)
    with admin(pg_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM pg_tables WHERE schemaname = '{name}'"
                            ).fetchone() == (1,)


def test_other_schemas_of_the_database_are_untouched(pg_server_url: str, pg_url: str) -> None:
    with admin(pg_server_url) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS other_app")
        conn.execute("CREATE TABLE IF NOT EXISTS other_app.jobs (x int)")
        conn.execute("INSERT INTO other_app.jobs VALUES (1)")
    try:
        store = PgStore(pg_url)
        add(store)
        store.close()
        with admin(pg_server_url) as conn:
            assert conn.execute("SELECT * FROM other_app.jobs").fetchall() == [(1,)]
    finally:
        drop_schema(pg_server_url, "other_app")


def test_an_unreachable_server_names_the_url_without_its_password() -> None:
    url = "postgresql://ada:s3cret@127.0.0.1:1/db?schema=x"
    with pytest.raises(DatabaseError) as err:
        PgStore(url)
    assert "s3cret" not in str(err.value) and "ada:***@127.0.0.1:1/db" in str(err.value)
    assert "cannot connect to the PostgreSQL server" in str(err.value)
    assert "s3cret" not in redact("postgresql://h/db?password=s3cret")


@pytest.mark.parametrize("query", ["schema=Bad-Name", "pool_size=1", "listen=maybe",
                                   "poll_interval=x"])
def test_bad_localq_url_parameters_are_config_errors(query: str) -> None:
    with pytest.raises(ConfigError):
        PgStore(f"postgresql://u:pw@127.0.0.1:1/db?{query}")


def test_unknown_parameters_go_to_libpq(pg_server_url: str, pg_url: str) -> None:
    store = PgStore(pg_url + "&application_name=ignored&connect_timeout=5")
    add(store)
    store.close()


# -- transactions and durability ------------------------------------------------------------

@pytest.mark.parametrize("mode, durable, expected", [
    ("safe", True, "on"), ("safe", False, "off"), ("full", False, "on"), ("full", True, "on"),
    ("normal", True, "off"), ("normal", False, "off")])
def test_durability_maps_to_synchronous_commit(pg_url: str, mode: str, durable: bool,
                                               expected: str) -> None:
    store = PgStore(pg_url, durability=mode)
    for _ in range(2):  # the cached session setting must follow each transaction's need
        with store.write(durable=not durable) as conn:
            conn.execute("SELECT 1")
        with store.write(durable=durable) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == (expected,)
    store.close()


def test_a_failed_block_rolls_back_and_its_error_passes_unchanged(store: PgStore) -> None:
    with pytest.raises(LockError):
        with store.write(durable=True) as conn:
            tr.add_job(conn, queue="q", name="n", data="{}", opts={}, stored_opts="{}",
                       job_id=None, priority=None, delay_ms=0, lifo=False, timestamp_ms=T0,
                       now_ms=T0)
            raise LockError("refused")
    assert store.query("SELECT count(*) FROM jobs")[0][0] == 0
    add(store)  # the pooled session is usable again


def test_a_sql_error_is_a_database_error(store: PgStore) -> None:
    with pytest.raises(DatabaseError, match="database error"):
        with store.write(durable=True) as conn:
            conn.execute("SELECT 1/0")
    add(store)


def test_a_row_locked_too_long_is_a_database_error_naming_busy_timeout(pg_url: str) -> None:
    store = PgStore(pg_url, busy_timeout=0.2)
    add(store)
    with admin(pg_url) as other:
        other.execute("BEGIN")
        other.execute(f"SELECT * FROM {store.schema}.jobs FOR UPDATE")
        with pytest.raises(DatabaseError, match="busy_timeout"):
            with store.write(durable=True) as conn:
                tr.update_data(conn, rowid=1, public="1", token=None, data="1", now_ms=T0)
        other.execute("ROLLBACK")
    store.close()


def test_a_closed_store_refuses_work(store: PgStore) -> None:
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(DatabaseError, match="closed"):
        store.query("SELECT 1")


def test_terminated_pooled_sessions_are_replaced_transparently(pg_url: str) -> None:
    store = PgStore(pg_url)
    add(store)
    with admin(pg_url) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'localq' AND pid <> pg_backend_pid()")
    add(store)
    assert store.query("SELECT count(*) FROM jobs")[0][0] == 2
    store.close()


# -- wakeups --------------------------------------------------------------------------------

def test_data_version_changes_when_another_process_makes_a_job_runnable(pg_url: str) -> None:
    watcher, writer = PgStore(pg_url), PgStore(pg_url)
    seen = watcher.data_version()
    add(writer)
    eventually(lambda: watcher.data_version() != seen)
    seen = watcher.data_version()
    with writer.write(durable=False) as conn:
        tr.claim(conn, queue="q", token="t", owner="o", lock_ms=1000, now_ms=T0)
    with writer.write(durable=False) as conn:
        tr.move_to_completed(conn, rowid=1, public="1", token="t", returnvalue="1", now_ms=T0)
    eventually(lambda: watcher.data_version() != seen)
    watcher.close()
    writer.close()


def test_the_listener_reconnects_relistens_and_wakes_waiters(pg_url: str) -> None:
    watcher, writer = PgStore(pg_url), PgStore(pg_url)
    watcher.data_version()
    notifier = watcher._notifier
    assert notifier.sessions == 1
    before = watcher.data_version()
    with admin(pg_url) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'localq-listen'")
    eventually(lambda: notifier.sessions == 2)
    assert watcher.data_version() > before  # waiters look again after a reconnection
    seen = watcher.data_version()
    add(writer)
    eventually(lambda: watcher.data_version() != seen)
    watcher.close()
    writer.close()


def test_without_listen_the_version_moves_at_the_poll_interval(pg_url: str) -> None:
    store = PgStore(pg_url + "&listen=off&poll_interval=0.02")
    seen = store.data_version()
    eventually(lambda: store.data_version() != seen, timeout=2.0)
    with admin(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_activity"
                            " WHERE application_name = 'localq-listen'").fetchone() == (0,)
    store.close()


# -- fork -----------------------------------------------------------------------------------

def test_a_forked_child_opens_its_own_sessions_and_leaves_the_parents_alone(
        store: PgStore) -> None:
    add(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with the pool's threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            add(store)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    add(store)
    assert store.query("SELECT count(*) FROM jobs")[0][0] == 3


@pytest.mark.crash
def test_a_forked_child_does_not_keep_a_killed_parents_transaction_open(
        store: PgStore, pg_url: str) -> None:
    """A worker SIGKILLed inside a transaction, whose forked child lives on: the server must
    see the session end at once (its row locks would block the recovery of its jobs, up to
    idle_in_transaction_session_timeout), so the child must not keep the socket open."""
    import signal
    import subprocess
    import sys

    from tests.processes import ROOT
    add(store)
    code = (
        "import os, sys, time\n"
        "from localq.pg.store import PgStore\n"
        f"store = PgStore({pg_url!r})\n"
        "with store.write(durable=False) as conn:\n"
        "    conn.execute('SELECT id FROM jobs FOR UPDATE').fetchall()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.close(1); time.sleep(30); os._exit(0)\n"
        "    print(pid, flush=True)\n"
        "    time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        with admin(pg_url) as conn:
            locked = "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid'" \
                     " AND pid <> pg_backend_pid() AND granted"
            assert conn.execute(locked).fetchone()[0] >= 1  # the parent holds its row lock
            parent.send_signal(signal.SIGKILL)
            parent.wait()
            os.kill(child, 0)  # the child still runs...
            # ...and the server has ended the parent's session: its lock is gone.
            eventually(lambda: conn.execute(locked).fetchone()[0] == 0, timeout=10)
        with store.write(durable=False) as conn:
            assert conn.execute("SELECT id FROM jobs FOR UPDATE NOWAIT").fetchall()
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        os.kill(child, signal.SIGKILL)


def test_schema_url_helper_appends_parameters() -> None:
    assert schema_url("postgresql://h/db", "s") == "postgresql://h/db?schema=s"
    assert schema_url("postgresql://h/db?a=1", "s") == "postgresql://h/db?a=1&schema=s"


def test_query_accepts_sqlite_style_parameters(store: PgStore) -> None:
    add(store)
    with store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=T0)
    assert store.query("SELECT 1 FROM queues WHERE name = :q AND paused = 1", {"q": "q"}) == [(1,)]
    assert store.query("SELECT count(*) FROM jobs WHERE queue = :q AND name LIKE 'n%'"
                       " AND id::text = :id", {"q": "q", "id": "1"}) == [(1,)]
    assert store.wal_size() == 0
    store.checkpoint(truncate=True)


def test_a_server_older_than_14_is_refused_with_what_to_do(store: PgStore) -> None:
    from localq.pg.store import MIN_SERVER_VERSION, check_server_version

    check_server_version(MIN_SERVER_VERSION, "x")  # 14.0 is enough
    with store.connection() as conn:
        check_server_version(conn.info.server_version, store.path)  # the test server is
    with pytest.raises(DatabaseError, match=r"PostgreSQL 13\.12; localq needs 14 or newer"):
        check_server_version(130012, "postgresql://h/db")
