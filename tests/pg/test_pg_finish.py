"""Complete-and-fetch in one statement (localq/pg/finish.py + the server-side function).

The function must do exactly what the Python moves did in one transaction: every scenario
runs on two schemas built the same way, once through ``complete_and_fetch`` and once through
the moves (``move_to_completed`` + ``claim``), and every table, the returned row and the
notifications must come out identical. The round trips are counted on the wire (libpq's
trace of the pooled session): one for the common case.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from typing import Any, Callable, Iterator

import psycopg
import pytest

import localq
from localq.errors import InvalidJobState, JobNotFound, LockError
from localq.pg import finish, repeats
from localq.pg import transitions as tr
from localq.pg.store import PgStore
from localq.pg.url import parse_url
from localq.repeat import parse_repeat
from localq.testing import FakeClock
from pg_server import drop_schema, schema_url
from test_pg_transitions import T0

pytestmark = pytest.mark.pg

Setup = Callable[[PgStore], None]


def as_moves(store: PgStore, *, rowid: int, public: str, token: str | None,
             returnvalue: str, now_ms: int, claim: dict[str, Any] | None) -> Any:
    """What the function replaces: move_to_completed and claim in one transaction."""
    done = {"rowid": rowid, "public": public, "token": token, "returnvalue": returnvalue}
    return finish._as_moves(store, done, now_ms, claim)


class Twin:
    """One store and a session LISTENing to its schema's channel."""

    def __init__(self, server: str) -> None:
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self.store = PgStore(schema_url(server, self.schema))
        self.listener = psycopg.connect(server, autocommit=True)
        self.channel = f"localq_{self.schema}"
        self.listener.execute(f'LISTEN "{self.channel}"')

    def notes(self) -> list[str]:
        """The payloads notified since the last call (a sentinel marks the end)."""
        self.listener.execute("SELECT pg_notify(%s, 'end')", (self.channel,))
        out = []
        for note in self.listener.notifies():
            if note.payload == "end":
                return out
            out.append(note.payload)
        raise AssertionError("unreachable")  # pragma: no cover

    def tables(self) -> dict[str, list[Any]]:
        """Every row, with queue positions as ranks and events in id order without ids:
        sequences are not rolled back, so a refused try leaves gaps (and nothing else)."""
        out = {t: self.store.query(f"SELECT * FROM {t} ORDER BY 1, 2")
               for t in ("queues", "repeats", "job_logs")}
        out["jobs"] = [r[:8] + r[9:] for r in self.store.query(
            "SELECT *, rank() OVER (ORDER BY seq) FROM jobs ORDER BY id")]
        out["events"] = self.store.query("SELECT queue, event, job_id, data, ts_ms FROM events"
                                         " ORDER BY id")
        return out

    def close(self) -> None:
        self.listener.close()
        self.store.close()


@pytest.fixture
def twins(pg_server_url: str) -> Iterator[tuple[Twin, Twin]]:
    pair = (Twin(pg_server_url), Twin(pg_server_url))
    try:
        yield pair
    finally:
        for twin in pair:
            twin.close()
            drop_schema(pg_server_url, twin.schema)


def add(store: PgStore, *, name: str = "n", delay_ms: int = 0, priority: int | None = None,
        lifo: bool = False, opts: str = "{}", job_id: str | None = None,
        now: int = T0) -> int:
    with store.write(durable=True) as conn:
        row, _ = tr.add_job(conn, queue="q", name=name, data='{"x":1}', opts={},
                            stored_opts=opts, job_id=job_id, priority=priority,
                            delay_ms=delay_ms, lifo=lifo, timestamp_ms=now, now_ms=now)
    return int(row[0])


def take(store: PgStore, token: str = "running", now: int = T0) -> int:
    with store.write(durable=False) as conn:
        row = tr.claim(conn, queue="q", token=token, owner="me", lock_ms=30_000, now_ms=now)
    assert row is not None
    return int(row[0])


def claim_args(names: list[str] | None = None) -> dict[str, Any]:
    return {"queue": "q", "token": "next", "owner": "me", "lock_ms": 30_000, "names": names,
            "limit": None}


def both(twins: tuple[Twin, Twin], setup: Setup, *, token: str | None = "running",
         claim: dict[str, Any] | None = None, now: int = T0 + 5_000,
         then: Setup | None = None) -> Any:
    """Build *setup* on both twins, take the first job (with token "running"), run *then*,
    and complete the job with *token*: with the function on one twin and with the moves on
    the other; return the function's result after checking that both twins ended the
    same."""
    results = []
    for twin, run in zip(twins, (finish.complete_and_fetch, as_moves)):
        setup(twin.store)
        rowid = take(twin.store)
        if then is not None:
            then(twin.store)
        twin.notes()
        try:
            got: Any = run(twin.store, rowid=rowid, public=str(rowid), token=token,
                           returnvalue='{"ok":true}', now_ms=now, claim=claim)
        except (LockError, InvalidJobState, JobNotFound) as exc:
            got = exc
        results.append((got, twin.tables(), twin.notes()))
    (fn, fn_tables, fn_notes), (moves, moves_tables, moves_notes) = results
    if isinstance(moves, Exception):
        assert type(fn) is type(moves) and str(fn) == str(moves)
        assert vars(fn) == vars(moves)
    else:
        assert fn == moves
    assert fn_tables == moves_tables
    assert fn_notes == moves_notes
    return fn


# -- the same job as the moves take ---------------------------------------------------------

def _priorities(store: PgStore) -> None:
    add(store)
    add(store, priority=5)
    add(store, priority=1)
    add(store, priority=1)


def _lifo(store: PgStore) -> None:
    add(store)
    add(store)
    add(store, lifo=True)
    add(store)


def _due_delayed_first(store: PgStore) -> None:
    add(store)
    add(store, priority=9)
    add(store, delay_ms=1_000, priority=1)     # due at the claim: promoted, then taken
    add(store, delay_ms=2_000, lifo=True)      # due too, promoted in due order
    add(store, delay_ms=60_000, priority=1)    # not due: stays delayed


def _pause(store: PgStore) -> None:
    add(store, delay_ms=1_000)  # promoted although paused (as the moves do)
    with store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=T0)


def _names(store: PgStore) -> None:
    add(store, name="a")
    add(store, name="b", priority=1)
    add(store, name="c")
    add(store, name="a")


def _watched(store: PgStore) -> None:
    add(store)
    add(store, job_id="custom")
    with store.write(durable=False) as conn:
        tr.watch_queue(conn, queue="q", until_ms=2**62)


def _alone(store: PgStore) -> None:
    add(store)


@pytest.mark.parametrize("setup, names, then, expect", [
    (_priorities, None, None, 4), (_lifo, None, None, 1), (_due_delayed_first, None, None, 3),
    (_priorities, None, _pause, None), (_names, ["c", "a"], None, 1), (_names, [], None, None),
    (_watched, None, None, 2), (_alone, None, None, None),
], ids=["priority", "lifo", "due-delayed", "paused", "names", "no-names", "watched", "empty"])
def test_the_function_takes_what_the_moves_take(twins: tuple[Twin, Twin], setup: Setup,
                                                names: list[str] | None, then: Setup | None,
                                                expect: int | None) -> None:
    row = both(twins, setup, claim=claim_args(names), then=then)
    assert (None if row is None else row[0]) == expect
    if row is not None:
        assert row[5] == "active" and row[18] == "next"


def claim_moves(store: PgStore, *, now_ms: int, claim: dict[str, Any],
                drained: bool = False) -> Any:
    """What fetch_next replaces: claim (and note_drained) in one transaction."""
    return finish._as_moves(store, None, now_ms, claim, drained=drained)


def _empty_watched(store: PgStore) -> None:
    with store.write(durable=False) as conn:
        tr.watch_queue(conn, queue="q", until_ms=2**62)


@pytest.mark.parametrize("setup, names, drained, expect", [
    (_priorities, None, False, 3), (_lifo, None, False, 3), (_due_delayed_first, None, False, 3),
    (_names, ["c"], False, 3), (_watched, None, True, 1), (_empty_watched, None, True, None),
], ids=["priority", "lifo", "due-delayed", "names", "watched", "drained"])
def test_a_claim_alone_takes_what_the_claim_move_takes(twins: tuple[Twin, Twin],
                                                       setup: Setup, names: list[str] | None,
                                                       drained: bool,
                                                       expect: int | None) -> None:
    got = []
    for twin, run in zip(twins, (finish.fetch_next, claim_moves)):
        setup(twin.store)
        twin.notes()
        row = run(twin.store, now_ms=T0 + 5_000, claim=claim_args(names), drained=drained)
        got.append((row, twin.tables(), twin.notes()))
    assert got[0] == got[1]
    assert (None if got[0][0] is None else got[0][0][0]) == expect
    if drained and expect is None:
        assert got[0][1]["events"][-1][1] == "drained"


def test_an_idle_look_writes_nothing_unless_someone_listens_for_drained(
        twins: tuple[Twin, Twin]) -> None:
    twin = twins[0]
    _due_delayed_first(twin.store)
    with twin.store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=T0)
    before, _ = twin.tables(), twin.notes()
    assert finish.fetch_next(twin.store, now_ms=T0, claim=claim_args(), drained=True) is None
    assert twin.tables() == before and twin.notes() == []


def test_without_a_claim_it_only_completes(twins: tuple[Twin, Twin]) -> None:
    assert both(twins, _priorities, claim=None) is None
    assert twins[0].store.query("SELECT state FROM jobs ORDER BY id") == [
        ("waiting",), ("waiting",), ("completed",), ("waiting",)]  # nothing taken


# -- retention ------------------------------------------------------------------------------

def _retained(policy: Any) -> Setup:
    def setup(store: PgStore) -> None:
        opts = json.dumps({"remove_on_complete": policy})
        for age in (30_000, 20_000, 10_000):  # three completed jobs, finished `age` ago
            rowid = add(store, opts=opts, now=T0 - age)
            with store.write(durable=False) as conn:
                tr.claim(conn, queue="q", token="t", owner="me", lock_ms=1, now_ms=T0 - age)
                tr.move_to_completed(conn, rowid=rowid, public=str(rowid), token="t",
                                     returnvalue="1", now_ms=T0 - age)
        add(store, opts=opts)
        add(store)
    return setup


@pytest.mark.parametrize("policy, kept", [
    (True, 0), (False, 4), (1, 1), (0, 0), ({"age": 15}, 2), ({"age": 15.0009}, 2),
    ({"count": 2}, 2), ({"age": 25, "count": 1}, 1), ({"age": 100}, 4),
])
def test_remove_on_complete_applies_as_in_the_moves(twins: tuple[Twin, Twin], policy: Any,
                                                    kept: int) -> None:
    row = both(twins, _retained(policy), claim=claim_args())
    assert row is not None and row[0] == 5
    completed = twins[0].store.query("SELECT count(*) FROM jobs WHERE state = 'completed'")
    assert completed[0][0] == kept
    # The completed event is written even when the row went (job.finished() reads it).
    assert twins[0].store.query("SELECT count(*) FROM events WHERE event = 'completed'"
                                " AND job_id = '4'")[0][0] == 1


# -- guards ---------------------------------------------------------------------------------

@pytest.mark.parametrize("token, error", [("someone-else", LockError), (None, None)])
def test_a_refused_completion_changes_and_takes_nothing(twins: tuple[Twin, Twin],
                                                        token: str | None,
                                                        error: type | None) -> None:
    got = both(twins, _priorities, token=token, claim=claim_args())
    if error is None:  # ignore_lock: completes whoever holds it
        assert got is not None and got[0] == 4
        return
    assert isinstance(got, error) and got.actual == "active"
    assert twins[0].store.query("SELECT state FROM jobs WHERE lock_token = 'next'") == []


def test_guard_errors_match_the_moves(twins: tuple[Twin, Twin]) -> None:
    errors = []
    for twin, run in zip(twins, (finish.complete_and_fetch, as_moves)):
        store = twin.store
        add(store)
        add(store)
        rowid = take(store)
        run(store, rowid=rowid, public="1", token="running", returnvalue="1", now_ms=T0,
            claim=None)
        before = twin.tables()
        twin.notes()
        got = []
        for token, rid in (("running", 1), (None, 1), ("running", 99), (None, 99)):
            with pytest.raises((LockError, InvalidJobState, JobNotFound)) as info:
                run(store, rowid=rid, public=str(rid), token=token, returnvalue="2",
                    now_ms=T0, claim=claim_args())
            got.append((type(info.value), str(info.value), vars(info.value)))
        assert twin.tables() == before and twin.notes() == []
        errors.append(got)
    assert errors[0] == errors[1]
    assert [e[0] for e in errors[0]] == [LockError, InvalidJobState, JobNotFound, JobNotFound]
    assert errors[0][0][2]["actual"] == "completed"


# -- repeat occurrences: the schedule advances in the claim's transaction --------------------

def _occurrence_next(store: PgStore) -> None:
    add(store)
    spec = parse_repeat({"every": 1}, now_ms=T0)
    template = json.dumps({"data": "{}", "opts": {}, "priority": 1})
    with store.write(durable=True) as conn:
        repeats.add_schedule(conn, queue="q", name="tick", spec=spec, template=template,
                             now_ms=T0)


def test_a_repeat_occurrence_is_claimed_with_its_schedule_advanced(
        twins: tuple[Twin, Twin]) -> None:
    row = both(twins, _occurrence_next, claim=claim_args(), now=T0 + 1_500)
    assert row is not None and row[1].startswith("repeat:")
    store = twins[0].store
    pending = store.query("SELECT job_id, state FROM jobs WHERE repeat_key IS NOT NULL"
                          " ORDER BY id")
    assert len(pending) == 2 and pending[1][1] == "delayed"  # the next slot exists
    assert store.query("SELECT count FROM repeats")[0][0] == 2


# -- one round trip, counted on the wire ----------------------------------------------------

def _round_trips(q: localq.Queue, call: Callable[[], Any]) -> int:
    """Run *call* with libpq tracing the one pooled session it can use (the queue's pool
    holds two at most, and the other one is held here); return how many ReadyForQuery
    messages came back: one per round trip, as each exchange ends with it."""
    store = q._store
    with tempfile.TemporaryFile("w+") as trace:
        with store.connection() as held:  # type: ignore[attr-defined]
            with store.connection() as conn:  # type: ignore[attr-defined]
                assert conn is not held
                conn.pgconn.trace(trace.fileno())
            try:
                call()
            finally:
                with store.connection() as again:  # type: ignore[attr-defined]
                    assert again is conn
                    conn.pgconn.untrace()
        trace.seek(0)
        text = trace.read()
    return sum(1 for line in text.splitlines() if "\tReadyForQuery" in line)


def test_complete_and_fetch_is_one_round_trip(pg_url: str) -> None:
    clock = FakeClock(T0 / 1000)
    with localq.Queue("q", path=f"{pg_url}&pool_size=2", clock=clock) as q:
        q.add_bulk([{"data": {"i": i}, "opts": {"remove_on_complete": 5}} for i in range(3)])
        late = q.add({"late": 1}, delay=1)
        job = q.get_next_job()
        assert job is not None
        clock.advance(2)
        got: list[Any] = []
        assert _round_trips(q, lambda: got.append(job.move_to_completed("done"))) == 1
        assert got == [({"i": 1}, "2")]
        assert job.get_state() == "completed" and late.get_state() == "waiting"
        # Completing without fetching, and a claim alone, are the same single statement.
        nxt = q.get_job("2")
        assert _round_trips(q, lambda: nxt.move_to_completed(None, not_fetch=True)) == 1
        assert _round_trips(q, lambda: got.append(q.get_next_job())) == 1
        assert got[-1].id == "3"

        # The counter sees every exchange: a transaction of one statement is three.
        def one_statement_transaction() -> None:
            with q._store.write(durable=False) as conn:
                conn.execute("SELECT 1")
        one_statement_transaction()
        assert _round_trips(q, one_statement_transaction) == 3


def test_a_version_1_schema_gains_the_function_on_first_open(pg_server_url: str) -> None:
    from localq.pg import schema

    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
            conn.execute(f'SET search_path = "{name}"')
            conn.execute(schema.MIGRATIONS[0])
            conn.execute("INSERT INTO localq_meta VALUES ('app', 'localq'),"
                         " ('schema_version', '1')")
            conn.execute("INSERT INTO jobs (queue, name, data, opts, state, priority, seq,"
                         " timestamp_ms) VALUES ('q', 'n', '{}', '{}', 'waiting', 2147483648,"
                         " nextval('job_seq'), 0)")
        with localq.Queue("q", path=schema_url(pg_server_url, name)) as q:
            q.add({"second": True})
            job = q.get_next_job()
            assert job is not None and job.id == "1"
            assert job.move_to_completed("ok") == ({"second": True}, "2")
            assert q._store.query("SELECT value FROM localq_meta"
                                  " WHERE key = 'schema_version'") == [("2",)]
    finally:
        drop_schema(pg_server_url, name)


def test_a_dead_pooled_session_is_replaced_under_the_one_statement(pg_url: str) -> None:
    with localq.Queue("q", path=pg_url) as q:
        q.add_bulk([{"data": 1}, {"data": 2}])
        job = q.get_next_job()
        assert job is not None
        with psycopg.connect(parse_url(pg_url).conninfo, autocommit=True) as admin:
            pids = [r[0] for r in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'localq'"
                " AND pid <> pg_backend_pid()")]
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
                          (pids,))
            while admin.execute("SELECT count(*) FROM pg_stat_activity"
                                " WHERE pid = ANY(%s::int[])", (pids,)).fetchone() != (0,):
                pass  # the sessions end within milliseconds
        assert job.move_to_completed("ok") == (2, "2")
        assert job.get_state() == "completed"
