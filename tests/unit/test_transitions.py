"""Every move of localq/transitions.py called directly: happy path, each guard, and atomicity.

Each move runs inside ``Store.write`` as the Queue runs it. A refused move must leave every
table exactly as it was; a move whose transaction rolls back must leave no event row.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import pytest

import localq
from localq import transitions
from localq.errors import InvalidJobState, JobNotFound, LockError
from localq.testing import FakeClock


class _Transitions:
    """The transitions module of the queue under test: ``localq.transitions`` on SQLite, its
    twin ``localq.pg.transitions`` on PostgreSQL (set per test by :func:`_backend_moves`)."""

    module: Any = transitions

    def __getattr__(self, name: str) -> Any:
        return getattr(_Transitions.module, name)


tr: Any = _Transitions()


@pytest.fixture(autouse=True)
def _backend_moves(queue: localq.Queue) -> Any:
    _Transitions.module = queue._tx
    yield
    _Transitions.module = transitions


Snap = Callable[[localq.Queue], dict[str, list[Any]]]


class Boom(Exception):
    """Raised inside a write block to force a rollback."""


def now(q: localq.Queue) -> int:
    return q._now_ms()


def add(q: localq.Queue, *, delay_ms: int = 0, job_id: str | None = None, opts: str = "{}",
        priority: int | None = None, lifo: bool = False, name: str = "n") -> tuple[Any, bool]:
    with q._store.write(durable=True) as conn:
        return tr.add_job(conn, queue=q.name, name=name, data='{"x":1}', opts={},
                          stored_opts=opts, job_id=job_id, priority=priority, delay_ms=delay_ms,
                          lifo=lifo, timestamp_ms=now(q), now_ms=now(q))


def claim(q: localq.Queue, token: str = "tok", names: list[str] | None = None,
          lock_ms: int = 30_000) -> Any:
    with q._store.write(durable=False) as conn:
        return tr.claim(conn, queue=q.name, token=token, owner="me", lock_ms=lock_ms,
                        now_ms=now(q), names=names)


def events(q: localq.Queue) -> list[tuple[str, str | None, Any]]:
    return [(e, j, None if d is None else json.loads(d))
            for e, j, d in q._store.query("SELECT event, job_id, data FROM events ORDER BY id")]


def state(q: localq.Queue, rowid: int) -> str | None:
    rows = q._store.query("SELECT state FROM jobs WHERE id = :id", {"id": rowid})
    return rows[0][0] if rows else None


def column(q: localq.Queue, rowid: int, col: str) -> Any:
    return q._store.query(f"SELECT {col} FROM jobs WHERE id = :id", {"id": rowid})[0][0]


def watch(q: localq.Queue) -> None:
    """Announce a global listener: only then do add and claim write their events."""
    with q._store.write(durable=False) as conn:
        tr.watch_queue(conn, queue=q.name, until_ms=int(time.time() * 1000) + 3_600_000)


# -- add ------------------------------------------------------------------------------------

def test_add_inserts_a_waiting_row_and_its_event(queue: localq.Queue) -> None:
    watch(queue)
    row, inserted = add(queue)
    assert inserted and row[0] == 1 and row[5] == "waiting"
    assert events(queue) == [("waiting", "1", None)]


def test_add_with_delay_inserts_a_delayed_row_with_its_due_time(queue: localq.Queue) -> None:
    row, _ = add(queue, delay_ms=5000)
    assert row[5] == "delayed" and row[9] == now(queue) + 5000
    assert events(queue) == [("delayed", "1", (now(queue) + 5000) / 1000)]


def test_add_with_an_existing_custom_id_returns_it_and_writes_nothing(
        queue: localq.Queue, snapshot: Snap) -> None:
    first, _ = add(queue, job_id="order-1")
    before = snapshot(queue)
    again, inserted = add(queue, job_id="order-1", delay_ms=999)
    assert not inserted and again == first
    assert snapshot(queue) == before


def test_add_rolled_back_leaves_neither_row_nor_event(queue: localq.Queue, snapshot: Snap) -> None:
    before = snapshot(queue)
    with pytest.raises(Boom):
        with queue._store.write(durable=True) as conn:
            tr.add_job(conn, queue="q", name="n", data="{}", opts={}, stored_opts="{}",
                       job_id=None, priority=None, delay_ms=0, lifo=False, timestamp_ms=0,
                       now_ms=0)
            raise Boom
    assert snapshot(queue) == before


# -- promote_due / promote ------------------------------------------------------------------

def test_promote_due_moves_only_due_jobs_once(queue: localq.Queue, clock: FakeClock) -> None:
    add(queue, delay_ms=1000)
    add(queue, delay_ms=5000)
    clock.advance(1)
    with queue._store.write(durable=False) as conn:
        assert tr.promote_due(conn, queue="q", now_ms=now(queue)) == ["1"]
    with queue._store.write(durable=False) as conn:
        assert tr.promote_due(conn, queue="q", now_ms=now(queue)) == []
    assert (state(queue, 1), state(queue, 2)) == ("waiting", "delayed")
    assert events(queue)[-1] == ("waiting", "1", None)


def test_promote_moves_a_delayed_job_and_refuses_others(queue: localq.Queue,
                                                        snapshot: Snap) -> None:
    add(queue, delay_ms=60_000)
    add(queue)
    with queue._store.write(durable=False) as conn:
        tr.promote(conn, rowid=1, public="1", now_ms=now(queue))
    assert state(queue, 1) == "waiting" and column(queue, 1, "delay_ms") == 0
    before = snapshot(queue)
    with pytest.raises(InvalidJobState) as err, queue._store.write(durable=False) as conn:
        tr.promote(conn, rowid=2, public="2", now_ms=now(queue))
    assert err.value.expected == "delayed" and err.value.actual == "waiting"
    with pytest.raises(JobNotFound), queue._store.write(durable=False) as conn:
        tr.promote(conn, rowid=99, public="99", now_ms=now(queue))
    assert snapshot(queue) == before


# -- claim / extend_locks -------------------------------------------------------------------

def test_claim_locks_the_next_job_and_emits_active(queue: localq.Queue) -> None:
    watch(queue)
    add(queue)
    row = claim(queue, token="t1", lock_ms=10_000)
    assert row[0] == 1 and row[5] == "active"
    assert row[18] == "t1" and row[19] == now(queue) + 10_000 and row[16] == now(queue)
    assert column(queue, 1, "lock_owner") == "me"
    assert events(queue)[-1] == ("active", "1", None)


def test_claim_of_an_empty_queue_changes_nothing(queue: localq.Queue, snapshot: Snap) -> None:
    add(queue, delay_ms=10_000)
    before = snapshot(queue)
    assert claim(queue) is None
    assert snapshot(queue) == before


def test_claim_takes_nothing_while_paused(queue: localq.Queue, snapshot: Snap) -> None:
    add(queue)
    with queue._store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=now(queue))
    before = snapshot(queue)
    assert claim(queue) is None
    assert snapshot(queue) == before


def test_claim_takes_only_the_names_asked_for(queue: localq.Queue) -> None:
    add(queue, name="a")
    add(queue, name="b")
    assert claim(queue, names=["b"])[0] == 2
    assert claim(queue, names=["b"]) is None
    assert claim(queue, names=["x", "a"])[0] == 1


def test_claim_promotes_a_due_delayed_job_itself(queue: localq.Queue, clock: FakeClock) -> None:
    add(queue, delay_ms=1000)
    assert claim(queue) is None
    clock.advance(1)
    assert claim(queue)[0] == 1


def test_extend_locks_reports_lost_locks(queue: localq.Queue) -> None:
    add(queue)
    add(queue)
    claim(queue, token="a")
    with queue._store.write(durable=False) as conn:
        lost = tr.extend_locks(conn, locks=[(1, "a"), (2, "b"), (9, "c")], lock_ms=99_000,
                               now_ms=now(queue))
    assert lost == [2, 9]
    assert column(queue, 1, "lock_expires_ms") == now(queue) + 99_000


# -- move_to_completed ----------------------------------------------------------------------

def complete(q: localq.Queue, rowid: int = 1, token: str | None = "tok", rv: str = "42") -> None:
    with q._store.write(durable=False) as conn:
        tr.move_to_completed(conn, rowid=rowid, public=str(rowid), token=token, returnvalue=rv,
                             now_ms=now(q))


def test_move_to_completed_records_the_result_and_releases_the_lock(queue: localq.Queue) -> None:
    add(queue)
    claim(queue)
    complete(queue)
    row = queue._store.query("SELECT state, returnvalue, finished_on_ms, lock_token, lock_owner,"
                             " lock_expires_ms FROM jobs WHERE id = 1")[0]
    assert row == ("completed", "42", now(queue), None, None, None)
    assert events(queue)[-1] == ("completed", "1", 42)


@pytest.mark.parametrize("token, error", [("other", LockError), (None, None)])
def test_move_to_completed_checks_the_token_unless_ignore_lock(
        queue: localq.Queue, snapshot: Snap, token: str | None, error: Any) -> None:
    add(queue)
    claim(queue, token="tok")
    before = snapshot(queue)
    if error is None:  # ignore_lock: any holder
        complete(queue, token=token)
        assert state(queue, 1) == "completed"
        return
    with pytest.raises(error):
        complete(queue, token=token)
    assert snapshot(queue) == before


@pytest.mark.parametrize("token, error", [("tok", LockError), (None, InvalidJobState)])
def test_move_to_completed_of_a_job_that_is_not_active_changes_nothing(
        queue: localq.Queue, snapshot: Snap, token: str | None, error: type) -> None:
    add(queue)
    before = snapshot(queue)
    with pytest.raises(error) as err:
        complete(queue, token=token)
    assert err.value.actual == "waiting"
    assert snapshot(queue) == before


def test_move_to_completed_of_a_missing_job_is_job_not_found(queue: localq.Queue) -> None:
    with pytest.raises(JobNotFound):
        complete(queue, rowid=7)


def test_lock_error_is_an_invalid_job_state() -> None:
    assert issubclass(LockError, InvalidJobState)


# -- move_to_failed -------------------------------------------------------------------------

def fail(q: localq.Queue, rowid: int = 1, token: str | None = "tok",
         delay: int | None = 0, stack: str | None = "trace") -> str:
    with q._store.write(durable=False) as conn:
        return tr.move_to_failed(conn, rowid=rowid, public=str(rowid), token=token,
                                 reason="bad", stack=stack, retry_delay_ms=delay, now_ms=now(q))


@pytest.mark.parametrize("delay, expected, follow", [
    (0, "waiting", ("waiting", "1", None)),
    (5000, "delayed", ("delayed", "1", None)),
    (None, "failed", None),
])
def test_move_to_failed_retries_or_fails(queue: localq.Queue, delay: int | None, expected: str,
                                         follow: Any) -> None:
    add(queue, opts='{"attempts":3}')
    claim(queue)
    assert fail(queue, delay=delay) == expected
    row = queue._store.query("SELECT state, attempts_made, failed_reason, stacktrace, lock_token,"
                             " finished_on_ms, run_at_ms FROM jobs WHERE id = 1")[0]
    assert row[:5] == (expected, 1, "bad", '["trace"]', None)
    assert (row[5] is not None) == (expected == "failed")
    if expected == "delayed":
        assert row[6] == now(queue) + 5000
    evs = events(queue)
    tail = evs[-2:] if follow else evs[-1:]
    assert tail[0] == ("failed", "1", "bad")
    if follow:
        assert tail[1][:2] == follow[:2]


def test_move_to_failed_fails_for_good_when_attempts_are_used(queue: localq.Queue) -> None:
    add(queue, opts='{"attempts":2}')
    claim(queue)
    assert fail(queue) == "waiting"
    claim(queue)
    assert fail(queue) == "failed"
    assert column(queue, 1, "attempts_made") == 2


def test_move_to_failed_guards_like_move_to_completed(queue: localq.Queue,
                                                      snapshot: Snap) -> None:
    add(queue)
    before = snapshot(queue)
    with pytest.raises(LockError):
        fail(queue)
    with pytest.raises(InvalidJobState):
        fail(queue, token=None)
    with pytest.raises(JobNotFound):
        fail(queue, rowid=5)
    claim(queue, token="tok")
    held = snapshot(queue)
    with pytest.raises(LockError):
        fail(queue, token="stolen")
    assert snapshot(queue) == held
    assert before["jobs"][0][0] == 1


@pytest.mark.parametrize("limit, kept", [(None, 3), (2, 2), (0, 0), (1, 1)])
def test_move_to_failed_keeps_stack_trace_limit_entries(queue: localq.Queue, limit: int | None,
                                                        kept: int) -> None:
    opts = {"attempts": 5} if limit is None else {"attempts": 5, "stack_trace_limit": limit}
    add(queue, opts=json.dumps(opts))
    for i in range(3):
        claim(queue)
        with queue._store.write(durable=False) as conn:
            tr.move_to_failed(conn, rowid=1, public="1", token="tok", reason="r",
                              stack=f"s{i}", retry_delay_ms=0, now_ms=now(queue))
    stack = json.loads(column(queue, 1, "stacktrace"))
    assert stack == [f"s{i}" for i in range(3)][3 - kept:] if kept else stack == []


# -- recover_stalled ------------------------------------------------------------------------

def recover(q: localq.Queue, dead: tuple[str, ...] = (), max_stalled: int = 1) -> Any:
    with q._store.write(durable=False) as conn:
        return tr.recover_stalled(conn, queue=q.name, now_ms=now(q), dead_owners=list(dead),
                                  max_stalled_count=max_stalled)


def test_recover_stalled_takes_back_expired_locks_only(queue: localq.Queue,
                                                       clock: FakeClock) -> None:
    add(queue)
    add(queue)
    claim(queue, token="a", lock_ms=1000)
    claim(queue, token="b", lock_ms=60_000)
    assert recover(queue) == []
    clock.advance(1.001)
    assert recover(queue) == [("1", "waiting")]
    assert recover(queue) == []  # idempotent
    assert column(queue, 1, "stalled_count") == 1 and column(queue, 1, "lock_token") is None
    assert state(queue, 2) == "active"
    assert [e for e in events(queue) if e[0] == "stalled"] == [("stalled", "1", None)]


def test_recover_stalled_takes_back_jobs_of_dead_owners(queue: localq.Queue) -> None:
    add(queue)
    claim(queue)
    assert recover(queue, dead=("someone-else",)) == []
    assert recover(queue, dead=("someone-else", "me")) == [("1", "waiting")]


def test_recover_stalled_puts_the_job_at_the_head_of_waiting(queue: localq.Queue,
                                                             clock: FakeClock) -> None:
    add(queue)
    claim(queue, lock_ms=1000)
    add(queue)
    clock.advance(2)
    recover(queue)
    assert claim(queue)[0] == 1


def test_recover_stalled_fails_past_max_stalled_count(queue: localq.Queue,
                                                      clock: FakeClock) -> None:
    add(queue)
    for expected in ("waiting", "waiting", "failed"):
        claim(queue, lock_ms=1000)
        clock.advance(2)
        assert recover(queue, max_stalled=2) == [("1", expected)]
    assert column(queue, 1, "failed_reason") == "job stalled more than allowable limit"
    assert column(queue, 1, "attempts_made") == 0  # a stall is not an attempt, as in Bull
    assert events(queue)[-1] == ("failed", "1", "job stalled more than allowable limit")


# -- progress / log / update ----------------------------------------------------------------

WRITES: dict[str, Callable[..., Any]] = {
    "set_progress": lambda conn, **kw: tr.set_progress(conn, progress="50", **kw),
    "add_log": lambda conn, **kw: tr.add_log(conn, row="hello", **kw),
    "update_data": lambda conn, **kw: tr.update_data(conn, data='{"y":2}', **kw),
}


@pytest.mark.parametrize("move", sorted(WRITES))
def test_job_writes_need_the_token_while_active(queue: localq.Queue, snapshot: Snap,
                                                clock: FakeClock, move: str) -> None:
    add(queue)
    claim(queue, token="tok", lock_ms=1000)
    before = snapshot(queue)
    for token in (None, "other"):
        with pytest.raises(LockError), queue._store.write(durable=False) as conn:
            WRITES[move](conn, rowid=1, public="1", token=token, now_ms=now(queue))
        assert snapshot(queue) == before
    with queue._store.write(durable=False) as conn:
        WRITES[move](conn, rowid=1, public="1", token="tok", now_ms=now(queue))
    # An expired lock no longer protects the job from writers without a token.
    clock.advance(2)
    with queue._store.write(durable=False) as conn:
        WRITES[move](conn, rowid=1, public="1", token=None, now_ms=now(queue))


@pytest.mark.parametrize("move", sorted(WRITES))
def test_job_writes_on_a_missing_job_are_job_not_found(queue: localq.Queue, move: str) -> None:
    with pytest.raises(JobNotFound), queue._store.write(durable=False) as conn:
        WRITES[move](conn, rowid=3, public="3", token=None, now_ms=now(queue))


def test_job_writes_with_a_stale_token_after_completion_are_refused(queue: localq.Queue) -> None:
    add(queue)
    claim(queue, token="tok")
    complete(queue)
    with pytest.raises(LockError), queue._store.write(durable=False) as conn:
        tr.set_progress(conn, rowid=1, public="1", token="tok", progress="1", now_ms=now(queue))


def test_set_progress_and_add_log_store_their_values(queue: localq.Queue) -> None:
    add(queue)
    with queue._store.write(durable=False) as conn:
        tr.set_progress(conn, rowid=1, public="1", token=None, progress='{"p":1}',
                        now_ms=now(queue))
        assert tr.add_log(conn, rowid=1, public="1", token=None, row="a", now_ms=now(queue)) == 1
        assert tr.add_log(conn, rowid=1, public="1", token=None, row="b", now_ms=now(queue)) == 2
    assert column(queue, 1, "progress") == '{"p":1}'
    assert events(queue)[-1] == ("progress", "1", {"p": 1})


# -- retry / retry_failed -------------------------------------------------------------------

def test_retry_moves_a_failed_job_to_waiting(queue: localq.Queue, snapshot: Snap) -> None:
    add(queue)
    claim(queue)
    fail(queue, delay=None)
    with queue._store.write(durable=False) as conn:
        tr.retry(conn, rowid=1, public="1", now_ms=now(queue))
    assert state(queue, 1) == "waiting" and column(queue, 1, "attempts_made") == 1
    assert column(queue, 1, "failed_reason") is None
    before = snapshot(queue)
    with pytest.raises(InvalidJobState) as err, queue._store.write(durable=False) as conn:
        tr.retry(conn, rowid=1, public="1", now_ms=now(queue))
    assert (err.value.expected, err.value.actual) == ("failed", "waiting")
    with pytest.raises(JobNotFound), queue._store.write(durable=False) as conn:
        tr.retry(conn, rowid=2, public="2", now_ms=now(queue))
    assert snapshot(queue) == before


def test_retry_failed_takes_the_oldest_failures_first(queue: localq.Queue,
                                                      clock: FakeClock) -> None:
    for _ in range(3):
        add(queue)
    for rowid in (2, 3, 1):
        claim(queue, token=f"t{rowid}")
        row = queue._store.query("SELECT id FROM jobs WHERE lock_token = :t", {"t": f"t{rowid}"})
        fail(queue, rowid=row[0][0], token=f"t{rowid}", delay=None)
        clock.advance(1)
    failed_order = [r[0] for r in queue._store.query(
        "SELECT id FROM jobs ORDER BY finished_on_ms")]
    with queue._store.write(durable=False) as conn:
        assert tr.retry_failed(conn, queue="q", count=2, now_ms=now(queue)) == 2
    assert [state(queue, i) for i in failed_order] == ["waiting", "waiting", "failed"]


# -- remove / clean / empty / delete_queue --------------------------------------------------

def remove(q: localq.Queue, rowid: int = 1, token: str | None = None) -> None:
    with q._store.write(durable=True) as conn:
        tr.remove(conn, rowid=rowid, public=str(rowid), token=token, now_ms=now(q))


def test_remove_deletes_the_job_and_its_logs(queue: localq.Queue) -> None:
    add(queue)
    with queue._store.write(durable=False) as conn:
        tr.add_log(conn, rowid=1, public="1", token=None, row="x", now_ms=now(queue))
    remove(queue)
    assert state(queue, 1) is None
    assert queue._store.query("SELECT count(*) FROM job_logs")[0][0] == 0
    assert events(queue)[-1] == ("removed", "1", None)
    with pytest.raises(JobNotFound):
        remove(queue)


def test_remove_refuses_a_live_lock_but_not_its_holder_or_an_expired_one(
        queue: localq.Queue, snapshot: Snap, clock: FakeClock) -> None:
    add(queue)
    add(queue)
    claim(queue, token="tok", lock_ms=1000)
    claim(queue, token="tok2", lock_ms=1000)
    before = snapshot(queue)
    with pytest.raises(LockError):
        remove(queue, 1)
    with pytest.raises(LockError):
        remove(queue, 1, token="other")
    assert snapshot(queue) == before
    remove(queue, 1, token="tok")
    clock.advance(2)
    remove(queue, 2)
    assert queue._store.query("SELECT count(*) FROM jobs")[0][0] == 0


def test_clean_removes_old_jobs_of_one_state(queue: localq.Queue, clock: FakeClock) -> None:
    for _ in range(3):
        add(queue)
    for i in (1, 2):
        claim(queue, token=f"t{i}")
        complete(queue, rowid=i, token=f"t{i}")
        clock.advance(10)
    with queue._store.write(durable=False) as conn:
        ids = tr.clean(conn, queue="q", state="completed", before_ms=now(queue) - 15_000,
                       limit=0, now_ms=now(queue))
    assert ids == ["1"]
    with queue._store.write(durable=False) as conn:
        ids = tr.clean(conn, queue="q", state="wait", before_ms=now(queue), limit=0,
                       now_ms=now(queue))
    assert ids == ["3"] and state(queue, 2) == "completed"


def test_clean_removes_active_jobs_only_when_their_lock_expired(queue: localq.Queue,
                                                                clock: FakeClock) -> None:
    add(queue)
    claim(queue, lock_ms=1000)
    clock.advance(0.5)

    def clean_active() -> list[str]:
        with queue._store.write(durable=False) as conn:
            return tr.clean(conn, queue="q", state="active", before_ms=now(queue), limit=0,
                            now_ms=now(queue))
    assert clean_active() == []
    clock.advance(1)
    assert clean_active() == ["1"]


def test_clean_honours_its_limit_oldest_first(queue: localq.Queue) -> None:
    for _ in range(5):
        add(queue)
    with queue._store.write(durable=False) as conn:
        ids = tr.clean(conn, queue="q", state="waiting", before_ms=now(queue) + 1, limit=2,
                       now_ms=now(queue))
    assert ids == ["1", "2"]


def test_empty_removes_waiting_and_delayed_only(queue: localq.Queue) -> None:
    add(queue)
    add(queue, delay_ms=1000)
    add(queue)
    add(queue)
    claim(queue)
    with queue._store.write(durable=False) as conn:
        assert tr.empty(conn, queue="q") == 3
    assert [r[0] for r in queue._store.query("SELECT state FROM jobs")] == ["active"]


def test_delete_queue_refuses_live_active_jobs_unless_forced(queue: localq.Queue,
                                                             snapshot: Snap) -> None:
    add(queue)
    add(queue)
    claim(queue)
    with queue._store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=now(queue))
    before = snapshot(queue)
    with pytest.raises(InvalidJobState), queue._store.write(durable=True) as conn:
        tr.delete_queue(conn, queue="q", force=False, now_ms=now(queue))
    assert snapshot(queue) == before
    with queue._store.write(durable=True) as conn:
        assert tr.delete_queue(conn, queue="q", force=True, now_ms=now(queue)) == 2
    assert queue._store.query("SELECT count(*) FROM jobs")[0][0] == 0
    assert queue._store.query("SELECT count(*) FROM queues")[0][0] == 0


def test_moves_touch_only_their_own_queue(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("a", path=db_path, clock=clock) as a, \
            localq.Queue("b", path=db_path, clock=clock) as b:
        add(a)
        add(b)
        with a._store.write(durable=True) as conn:
            assert tr.empty(conn, queue="a") == 1
            tr.pause(conn, queue="a", now_ms=now(a))
        assert claim(a) is None
        assert claim(b)[0] == 2


# -- pause / resume / trim_events -----------------------------------------------------------

def test_pause_and_resume_flip_the_flag_and_emit(queue: localq.Queue) -> None:
    with queue._store.write(durable=True) as conn:
        tr.resume(conn, queue="q", now_ms=now(queue))  # resuming a queue never paused is fine
        tr.pause(conn, queue="q", now_ms=now(queue))
        tr.pause(conn, queue="q", now_ms=now(queue))
    assert queue._store.query("SELECT name, paused FROM queues") == [("q", 1)]
    with queue._store.write(durable=True) as conn:
        tr.resume(conn, queue="q", now_ms=now(queue))
    assert queue._store.query("SELECT name, paused FROM queues") == [("q", 0)]
    assert [e[0] for e in events(queue)] == ["resumed", "paused", "paused", "resumed"]


def test_add_and_claim_write_no_event_while_nobody_listens(queue: localq.Queue,
                                                           clock: FakeClock) -> None:
    add(queue)
    claim(queue)
    add(queue, delay_ms=1000)  # delayed is always recorded (it carries the due time)
    assert [e[0] for e in events(queue)] == ["delayed"]
    watch(queue)
    add(queue)
    assert [e[0] for e in events(queue)] == ["delayed", "waiting"]


def test_trim_events_keeps_the_newest(queue: localq.Queue) -> None:
    watch(queue)
    for _ in range(10):
        add(queue)
    with queue._store.write(durable=False) as conn:
        assert tr.trim_events(conn, keep=3) == 7
    assert [r[0] for r in queue._store.query("SELECT job_id FROM events")] == ["8", "9", "10"]


# -- every move: its event row exists iff the move committed -------------------------------

def _prepare_active(q: localq.Queue) -> None:
    add(q)
    claim(q, token="tok", lock_ms=1000)


MOVES: dict[str, tuple[Callable[[localq.Queue], None], Callable[[Any, localq.Queue], Any], str]] = {
    "add": (lambda q: None,
            lambda c, q: tr.add_job(c, queue="q", name="n", data="{}", opts={},
                                    stored_opts="{}", job_id=None, priority=None, delay_ms=0,
                                    lifo=False, timestamp_ms=0, now_ms=now(q)), "waiting"),
    "claim": (lambda q: add(q),
              lambda c, q: tr.claim(c, queue="q", token="t", owner="o", lock_ms=1,
                                    now_ms=now(q)), "active"),
    "promote_due": (lambda q: add(q, delay_ms=1),
                    lambda c, q: tr.promote_due(c, queue="q", now_ms=now(q) + 1), "waiting"),
    "promote": (lambda q: add(q, delay_ms=100),
                lambda c, q: tr.promote(c, rowid=1, public="1", now_ms=now(q)), "waiting"),
    "complete": (_prepare_active,
                 lambda c, q: tr.move_to_completed(c, rowid=1, public="1", token="tok",
                                                   returnvalue="1", now_ms=now(q)), "completed"),
    "fail": (_prepare_active,
             lambda c, q: tr.move_to_failed(c, rowid=1, public="1", token="tok", reason="r",
                                            stack=None, retry_delay_ms=None, now_ms=now(q)),
             "failed"),
    "recover_stalled": (_prepare_active,
                        lambda c, q: tr.recover_stalled(c, queue="q", now_ms=now(q) + 5000,
                                                        dead_owners=[], max_stalled_count=1),
                        "stalled"),
    "set_progress": (lambda q: add(q),
                     lambda c, q: tr.set_progress(c, rowid=1, public="1", token=None,
                                                  progress="5", now_ms=now(q)), "progress"),
    "remove": (lambda q: add(q),
               lambda c, q: tr.remove(c, rowid=1, public="1", token=None, now_ms=now(q)),
               "removed"),
    "pause": (lambda q: None, lambda c, q: tr.pause(c, queue="q", now_ms=now(q)), "paused"),
    "resume": (lambda q: None, lambda c, q: tr.resume(c, queue="q", now_ms=now(q)), "resumed"),
}


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("move", sorted(MOVES))
def test_each_move_writes_its_event_in_its_own_transaction(
        queue: localq.Queue, snapshot: Snap, move: str, commit: bool) -> None:
    prepare, run, event = MOVES[move]
    watch(queue)
    prepare(queue)
    before = snapshot(queue)
    try:
        with queue._store.write(durable=False) as conn:
            run(conn, queue)
            if not commit:
                raise Boom
    except Boom:
        pass
    after = snapshot(queue)
    new_events = [e[2] for e in after["events"][len(before["events"]):]]
    if commit:
        assert event in new_events
    else:
        assert after == before
