"""The PostgreSQL counterparts of the SQLite-file reliability promises (tests/reliability).

A file that is not a localq queue, a disk or I/O failure, a file anyone can write: on a
server these become a schema that is not localq's (or is newer), a session that goes away
in the middle of a transaction, a statement or lock timeout set by the server, a URL that
names the wrong role, database or host, and statements that must bind every value. Each
case: a :class:`localq.DatabaseError` (or ConfigError) that says what to do, nothing stored
or half stored, and the queue works again once the cause is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import localq
from localq.cli import main
from localq.pg.store import PgStore
from localq.pg.url import parse_url
from localq.testing import FakeClock
from tests.api_tour import MARK, tour

pytestmark = pytest.mark.pg

Snapshot = Callable[[localq.Queue], dict[str, list[Any]]]
T0 = 1767225600.0


@pytest.fixture
def admin(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A session of another client on the test's schema (search_path set to it)."""
    url = parse_url(pg_url)
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {url.schema}")
        conn.execute(f"SET search_path = {url.schema}")
        yield conn


def _tables(admin: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    """Every row of every table of the admin session's schema."""
    names = [r[0] for r in admin.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        " ORDER BY tablename").fetchall()]
    return {n: sorted(map(repr, admin.execute(f"SELECT * FROM {n}").fetchall())) for n in names}


# -- a schema that is not a localq queue --------------------------------------------------------

@pytest.mark.parametrize("case", ["foreign jobs table", "foreign localq_meta", "newer version"])
def test_a_schema_that_is_not_a_usable_localq_queue_is_refused_and_left_untouched(
    pg_url: str, admin: psycopg.Connection[Any], case: str,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """The twin of tests/reliability/test_bad_files.py: another application's tables of the
    same names, or a localq schema from a newer localq, are refused before anything is
    written (no table created, no row changed), by the library and by the CLI."""
    if case == "foreign jobs table":
        admin.execute("CREATE TABLE jobs (id int PRIMARY KEY, state text)")
        admin.execute("INSERT INTO jobs VALUES (1, 'theirs'), (2, 'waiting')")
        expected = "not localq's: pass another schema"
    elif case == "foreign localq_meta":
        admin.execute("CREATE TABLE localq_meta (key text PRIMARY KEY, value text)")
        admin.execute("INSERT INTO localq_meta VALUES ('app', 'other'), ('schema_version', '1')")
        expected = "not localq's: pass another schema"
    else:
        with localq.Queue("q", path=pg_url) as q:
            q.add({"n": 1}, job_id="kept")
        admin.execute("UPDATE localq_meta SET value = '99' WHERE key = 'schema_version'")
        expected = "newer than this localq"
    before = _tables(admin)
    with pytest.raises(localq.DatabaseError, match=expected) as caught:
        localq.Queue("q", path=pg_url)
    assert caught.value.path is not None and caught.value.path in str(caught.value)
    assert main(["--db", pg_url, "stats"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("localq: error:") and expected in err
    assert _tables(admin) == before


# -- the session goes away in the middle of a transaction ---------------------------------------

def _run_blocked(admin: psycopg.Connection[Any], call: Callable[[], Any], *,
                 terminate: bool) -> BaseException | None:
    """Run *call* in a thread until its statement waits on a lock *admin*'s open transaction
    holds; then end that session (``pg_terminate_backend``) if *terminate*, else let the
    server's timeout end the statement. Return what *call* raised (admin rolls back after)."""
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            call()
            outcome["raised"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["raised"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    me = admin.info.backend_pid
    deadline = time.monotonic() + 20
    while terminate:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY("
                             "pg_blocking_pids(pid))", (me,)).fetchall()
        if rows:
            admin.execute("SELECT pg_terminate_backend(%s)", (rows[0][0],))
            break
        assert time.monotonic() < deadline and thread.is_alive(), "the call never waited"
        time.sleep(0.01)
    thread.join(30)
    assert not thread.is_alive()
    admin.execute("ROLLBACK")
    return outcome["raised"]


def _hold_job_id(admin: psycopg.Connection[Any], job_id: str) -> None:
    """Begin a transaction that inserts (uncommitted) a job with *job_id*: an add of the same
    id waits for it."""
    admin.execute("BEGIN")
    admin.execute("INSERT INTO jobs (queue, job_id, name, data, opts, state, priority, seq,"
                  " timestamp_ms) VALUES ('q', %s, 'n', '{}', '{}', 'waiting', 1, 0, 0)",
                  (job_id,))


def _hold_row(admin: psycopg.Connection[Any], q: localq.Queue, job_id: str) -> None:
    """Begin a transaction that locks job *job_id*'s row."""
    job = q.get_job(job_id)
    assert job is not None
    admin.execute("BEGIN")
    admin.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job._rowid,))


@pytest.mark.parametrize("op", ["add", "add_bulk", "complete", "fail"])
def test_a_session_ended_mid_transaction_stores_nothing_and_the_queue_recovers(
    pg_url: str, admin: psycopg.Connection[Any], snapshot: Snapshot, op: str
) -> None:
    """pg_terminate_backend (an administrator, a failover, a network cut) ends localq's
    session while its transaction waits: the call raises a DatabaseError naming the server,
    no row of the transaction is stored (not the first jobs of a batch, not an event), and
    the same call succeeds on a fresh session once the lock is gone."""
    with localq.Queue("q", path=pg_url, clock=FakeClock(T0)) as q:
        q.add({"n": 0}, job_id="held")
        active = q.get_next_job()
        assert active is not None
        calls: dict[str, Callable[[], Any]] = {
            "add": lambda: q.add({"n": 1}, job_id="x"),
            "add_bulk": lambda: q.add_bulk([{"data": 1}, {"data": 2},
                                            {"data": 3, "opts": {"job_id": "x"}}]),
            "complete": lambda: active.move_to_completed("done", not_fetch=True),
            "fail": lambda: active.move_to_failed("boom"),
        }
        before = snapshot(q)
        if op.startswith("add"):
            _hold_job_id(admin, "x")
        else:
            _hold_row(admin, q, "held")
        raised = _run_blocked(admin, calls[op], terminate=True)
        assert isinstance(raised, localq.DatabaseError), raised
        assert q.path in str(raised)
        assert snapshot(q) == before
        calls[op]()
        state = {"complete": "completed", "fail": "failed"}.get(op)
        if state is not None:
            assert q.get_job("held").get_state() == state  # type: ignore[union-attr]
        else:
            assert q.get_job("x") is not None and q.count() == (1 if op == "add" else 3)


@pytest.mark.parametrize("limit", ["statement_timeout", "busy_timeout"])
def test_a_statement_cut_by_a_server_timeout_names_the_setting_and_stores_nothing(
    pg_url: str, admin: psycopg.Connection[Any], snapshot: Snapshot, limit: str
) -> None:
    """A ``statement_timeout`` set by the server's administrator (here by the URL's libpq
    ``options``), or localq's own lock wait limit, ends a statement that waits too long:
    a DatabaseError naming the setting to change, nothing stored, and the call works later."""
    url, settings = pg_url, {}
    if limit == "statement_timeout":
        url += "&options=-c%20statement_timeout%3D300"
    else:
        settings = {"busy_timeout": 0.3}
    with localq.Queue("q", path=url, clock=FakeClock(T0), settings=settings) as q:
        q.add({"n": 0}, job_id="first")
        before = snapshot(q)
        _hold_job_id(admin, "x")
        raised = _run_blocked(admin, lambda: q.add({"n": 1}, job_id="x"), terminate=False)
        assert isinstance(raised, localq.DatabaseError), raised
        fix = {"statement_timeout": "the server's statement_timeout",
               "busy_timeout": "raise settings['busy_timeout']"}[limit]
        assert fix in str(raised) and "nothing of this call was stored" in str(raised), raised
        assert snapshot(q) == before
        q.add({"n": 1}, job_id="x")
        assert q.count() == 2


# -- a URL naming the wrong role, database or host ----------------------------------------------

def _with(url: str, *, user: str | None = None, password: str | None = None,
          port: int | None = None, db: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user or parts.username or 'postgres'}"
    if password:
        netloc += f":{password}"
    netloc += f"@{host}:{port or parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, f"/{db}" if db else parts.path, parts.query, ""))


@pytest.mark.parametrize("wrong", ["role", "database", "port"])
def test_a_url_naming_the_wrong_role_database_or_port_is_one_clear_error(
    pg_url: str, wrong: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening fails at once with a DatabaseError naming the URL (password hidden) and the
    parts to check; the CLI prints it as one line and exits 1. (The test server trusts
    every login, so a wrong password is refused the same way as a wrong role: a FATAL
    at login, not tested separately here.)"""
    url = {"role": _with(pg_url, user="no_such_role", password="s3cret"),
           "database": _with(pg_url, password="s3cret", db="no_such_db"),
           "port": _with(pg_url, password="s3cret", port=1)}[wrong]
    with pytest.raises(localq.DatabaseError) as caught:
        localq.Queue("q", path=url)
    message = str(caught.value)
    assert "s3cret" not in message and ":***@" in message
    assert "cannot connect to the PostgreSQL server" in message
    assert "check the host, port, user, password and database of the URL" in message
    assert {"role": "no_such_role", "database": "no_such_db", "port": ":1"}[wrong] in message
    assert main(["--db", url, "stats"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("localq: error: cannot connect"), err
    assert "s3cret" not in err


# -- every value bound --------------------------------------------------------------------------



class _Recording(psycopg.Cursor[Any]):
    """A cursor recording the SQL text of every statement and its parameters."""

    seen: list[tuple[str, Any]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        text = query if isinstance(query, str) else query.as_string(self.connection)
        self.seen.append((text, params))
        return super().execute(query, params, **kwargs)


class _RecordingStore(PgStore):
    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        super()._configure(conn)
        conn.cursor_factory = _Recording


class _RecordingQueue(localq.Queue):
    def _open_store(self, durability: str) -> Any:
        from localq.pg.url import resolve
        return _RecordingStore(resolve(self.path), durability=durability,
                               busy_timeout=self.settings.busy_timeout)


def test_every_value_reaches_postgresql_as_a_bound_parameter(pg_url: str) -> None:
    """The twin of test_security's SQLite tracer: values carrying a marker (quotes, comment
    starts, psycopg's and PostgreSQL's placeholders) reach the server as parameters, never
    in the statement text (psycopg's default cursor binds them server-side)."""
    _Recording.seen = []
    clock = FakeClock(T0)
    with _RecordingQueue(f"q-{MARK}", path=pg_url, clock=clock) as q:
        tour(q, clock)
    seen = _Recording.seen
    assert len(seen) > 30
    assert [text for text, _ in seen if MARK in text] == []
    assert any(MARK in repr(params) for _, params in seen), "no marked value was recorded"
