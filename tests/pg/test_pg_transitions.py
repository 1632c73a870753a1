"""Every move of localq/pg/transitions.py called directly: happy path, each guard, rollback.

Each move runs inside ``PgStore.write`` as the Queue runs it. A refused move leaves the tables
as they were; a rolled-back move leaves no event.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from localq.errors import InvalidJobState, JobNotFound, LockError
from localq.limiter import RateLimit
from localq.pg import transitions as tr
from localq.pg.limiter import limited_until
from localq.pg.store import PgStore

pytestmark = pytest.mark.pg

T0 = 1_767_225_600_000


class Boom(Exception):
    """Raised inside a write block to force a rollback."""


def add(store: PgStore, *, delay_ms: int = 0, job_id: str | None = None, opts: str = "{}",
        priority: int | None = None, lifo: bool = False, name: str = "n", queue: str = "q",
        data: str = '{"x":1}', now: int = T0) -> tuple[Any, bool]:
    with store.write(durable=True) as conn:
        return tr.add_job(conn, queue=queue, name=name, data=data, opts={}, stored_opts=opts,
                          job_id=job_id, priority=priority, delay_ms=delay_ms, lifo=lifo,
                          timestamp_ms=now, now_ms=now)


def claim(store: PgStore, token: str = "tok", names: list[str] | None = None,
          lock_ms: int = 30_000, now: int = T0, limit: RateLimit | None = None,
          queue: str = "q") -> Any:
    with store.write(durable=False) as conn:
        return tr.claim(conn, queue=queue, token=token, owner="me", lock_ms=lock_ms, now_ms=now,
                        names=names, limit=limit)


def complete(store: PgStore, rowid: int, token: str | None = "tok", rv: str = "null",
             now: int = T0) -> None:
    with store.write(durable=False) as conn:
        tr.move_to_completed(conn, rowid=rowid, public=str(rowid), token=token, returnvalue=rv,
                             now_ms=now)


def fail(store: PgStore, rowid: int, *, token: str | None = "tok", delay: int | None = 0,
         now: int = T0, stack: str | None = "trace") -> str:
    with store.write(durable=False) as conn:
        return tr.move_to_failed(conn, rowid=rowid, public=str(rowid), token=token,
                                 reason="boom", stack=stack, retry_delay_ms=delay, now_ms=now)


def events(store: PgStore) -> list[tuple[str, str | None, Any]]:
    return [(e, j, None if d is None else json.loads(d))
            for e, j, d in store.query("SELECT event, job_id, data FROM events ORDER BY id")]


def state(store: PgStore, rowid: int) -> str | None:
    rows = store.query("SELECT state FROM jobs WHERE id = %s", (rowid,))
    return rows[0][0] if rows else None


def column(store: PgStore, rowid: int, col: str) -> Any:
    return store.query(f"SELECT {col} FROM jobs WHERE id = %s", (rowid,))[0][0]


def snapshot(store: PgStore) -> dict[str, list[Any]]:
    return {t: store.query(f"SELECT * FROM {t} ORDER BY 1")
            for t in ("jobs", "events", "job_logs", "queues", "rate_starts")}


def watch(store: PgStore) -> None:
    with store.write(durable=False) as conn:
        tr.watch_queue(conn, queue="q", until_ms=2**62)


# -- add ------------------------------------------------------------------------------------

def test_add_inserts_a_waiting_row_with_consecutive_ids(store: PgStore) -> None:
    row, inserted = add(store)
    assert inserted and row[0] == 1 and row[5] == "waiting" and row[20] == "q"
    assert add(store)[0][0] == 2
    assert events(store) == []  # nobody listens: no "waiting" rows, as on SQLite


def test_add_writes_waiting_events_while_someone_listens(store: PgStore) -> None:
    watch(store)
    add(store)
    assert events(store) == [("waiting", "1", None)]


def test_add_with_delay_inserts_a_delayed_row_and_its_due_time(store: PgStore) -> None:
    row, _ = add(store, delay_ms=5000)
    assert row[5] == "delayed" and row[9] == T0 + 5000
    assert events(store) == [("delayed", "1", (T0 + 5000) / 1000)]


def test_add_with_an_existing_custom_id_returns_it_and_writes_nothing(store: PgStore) -> None:
    first, _ = add(store, job_id="order-1")
    before = snapshot(store)
    again, inserted = add(store, job_id="order-1", delay_ms=999)
    assert not inserted and again == first
    assert snapshot(store) == before


def test_concurrent_adds_of_one_custom_id_make_one_job(store: PgStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def run() -> None:
        barrier.wait()
        results.append(add(store, job_id="same")[1])

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert store.query("SELECT count(*) FROM jobs")[0][0] == 1


def test_add_rolled_back_leaves_neither_row_nor_event(store: PgStore) -> None:
    before = snapshot(store)
    with pytest.raises(Boom):
        with store.write(durable=True) as conn:
            tr.add_job(conn, queue="q", name="n", data="{}", opts={}, stored_opts="{}",
                       job_id=None, priority=None, delay_ms=5, lifo=False, timestamp_ms=0,
                       now_ms=0)
            raise Boom
    assert snapshot(store) == before


def test_ids_are_never_reused_after_the_newest_job_is_removed(store: PgStore) -> None:
    add(store)
    add(store)
    with store.write(durable=True) as conn:
        tr.remove(conn, rowid=2, public="2", token=None, now_ms=T0)
    assert add(store)[0][0] == 3


def test_data_round_trips_exactly(store: PgStore) -> None:
    text = '{"big":1e+100,"z":1,"a":"\\u0000\u00e9","f":1.0}'
    row, _ = add(store, data=text)
    assert row[3] == text


# -- promote_due / promote ------------------------------------------------------------------

def test_promote_due_moves_only_due_jobs_once_in_due_order(store: PgStore) -> None:
    add(store, delay_ms=3000)
    add(store, delay_ms=1000)
    add(store, delay_ms=9000)
    with store.write(durable=False) as conn:
        assert tr.promote_due(conn, queue="q", now_ms=T0 + 5000) == ["2", "1"]
    with store.write(durable=False) as conn:
        assert tr.promote_due(conn, queue="q", now_ms=T0 + 5000) == []
    assert [state(store, i) for i in (1, 2, 3)] == ["waiting", "waiting", "delayed"]
    assert column(store, 2, "seq") < column(store, 1, "seq")
    assert events(store)[-2:] == [("waiting", "2", None), ("waiting", "1", None)]


def test_promote_moves_a_delayed_job_and_refuses_others(store: PgStore) -> None:
    add(store, delay_ms=60_000)
    add(store)
    with store.write(durable=False) as conn:
        tr.promote(conn, rowid=1, public="1", now_ms=T0)
    assert state(store, 1) == "waiting" and column(store, 1, "delay_ms") == 0
    before = snapshot(store)
    with pytest.raises(InvalidJobState) as err, store.write(durable=False) as conn:
        tr.promote(conn, rowid=2, public="2", now_ms=T0)
    assert err.value.expected == "delayed" and err.value.actual == "waiting"
    with pytest.raises(JobNotFound), store.write(durable=False) as conn:
        tr.promote(conn, rowid=99, public="99", now_ms=T0)
    assert snapshot(store) == before


# -- claim ----------------------------------------------------------------------------------

def test_claim_takes_priority_then_fifo_and_lifo_at_the_head(store: PgStore) -> None:
    add(store)                          # 1
    add(store, priority=5)              # 2
    add(store, priority=1)              # 3
    add(store)                          # 4
    add(store, lifo=True, opts='{"lifo":true}')  # 5: head of the no-priority jobs
    order = [claim(store, token=f"t{i}")[0] for i in range(5)]
    assert order == [3, 2, 5, 1, 4]
    assert claim(store) is None


def test_claim_sets_the_lock_and_returns_the_active_row(store: PgStore) -> None:
    add(store)
    row = claim(store, token="abc", lock_ms=1000, now=T0 + 7)
    assert row[5] == "active" and row[18] == "abc" and row[19] == T0 + 1007
    assert row[16] == T0 + 7 and column(store, 1, "lock_owner") == "me"


def test_claim_refuses_a_paused_queue_and_filters_names(store: PgStore) -> None:
    add(store, name="a")
    add(store, name="b")
    with store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=T0)
    assert claim(store) is None
    with store.write(durable=True) as conn:
        tr.resume(conn, queue="q", now_ms=T0)
    assert claim(store, names=["b"])[0] == 2
    assert claim(store, names=["c"]) is None


def test_claim_promotes_due_delayed_jobs_first(store: PgStore) -> None:
    add(store, delay_ms=1000)
    assert claim(store) is None
    assert claim(store, now=T0 + 1000)[0] == 1


def test_claim_writes_active_events_only_while_watched(store: PgStore) -> None:
    add(store)
    add(store)
    claim(store, token="a")
    watch(store)
    claim(store, token="b")
    assert events(store) == [("active", "2", None)]


def test_a_claim_skips_a_row_another_claimer_holds(store: PgStore) -> None:
    add(store)
    add(store)
    with store.write(durable=False) as conn:
        first = tr.claim(conn, queue="q", token="a", owner="x", lock_ms=1, now_ms=T0)
        second = claim(store, token="b")  # another session, while the first is uncommitted
    assert (first[0], second[0]) == (1, 2)


# -- limiter --------------------------------------------------------------------------------

def test_limiter_holds_jobs_back_in_order_and_says_until_when(store: PgStore) -> None:
    limit = RateLimit(2, 1000, None)
    for _ in range(3):
        add(store)
    assert claim(store, token="a", limit=limit)[0] == 1
    assert claim(store, token="b", limit=limit, now=T0 + 10)[0] == 2
    assert claim(store, token="c", limit=limit, now=T0 + 20) is None
    with store.write(durable=False) as conn:
        assert limited_until(conn, limit, "q", T0 + 20) == T0 + 1000
    assert state(store, 3) == "waiting"
    assert claim(store, token="c", limit=limit, now=T0 + 1000)[0] == 3


def test_limiter_groups_have_their_own_windows(store: PgStore) -> None:
    limit = RateLimit(1, 1000, '$."acct"')
    add(store, data='{"acct":"a"}')
    add(store, data='{"acct":"a"}')
    add(store, data='{"acct":"b"}')
    assert claim(store, token="1", limit=limit)[0] == 1
    assert claim(store, token="2", limit=limit)[0] == 3  # group a is full, b is not
    assert claim(store, token="3", limit=limit) is None


# -- locks ----------------------------------------------------------------------------------

def test_extend_locks_pushes_expiry_and_reports_lost_locks(store: PgStore) -> None:
    add(store)
    add(store)
    claim(store, token="a")
    claim(store, token="b")
    with store.write(durable=False) as conn:
        lost = tr.extend_locks(conn, locks=[(1, "a"), (2, "wrong"), (9, "x")], lock_ms=500,
                               now_ms=T0 + 100)
    assert lost == [2, 9]
    assert column(store, 1, "lock_expires_ms") == T0 + 600
    assert column(store, 2, "lock_expires_ms") == T0 + 30_000


# -- complete / fail ------------------------------------------------------------------------

def test_complete_records_the_result_and_its_event(store: PgStore) -> None:
    add(store)
    claim(store)
    complete(store, 1, rv='{"ok":true}', now=T0 + 5)
    assert state(store, 1) == "completed" and column(store, 1, "returnvalue") == '{"ok":true}'
    assert column(store, 1, "lock_token") is None and column(store, 1, "finished_on_ms") == T0 + 5
    assert events(store) == [("completed", "1", {"ok": True})]


def test_complete_guards_token_state_and_existence(store: PgStore) -> None:
    add(store)
    claim(store, token="mine")
    before = snapshot(store)
    with pytest.raises(LockError):
        complete(store, 1, token="other")
    with pytest.raises(JobNotFound):
        complete(store, 42)
    assert snapshot(store) == before
    complete(store, 1, token="mine")
    with pytest.raises(LockError):
        complete(store, 1, token="mine")
    with pytest.raises(InvalidJobState) as err:
        complete(store, 1, token=None)
    assert err.value.actual == "completed" and not isinstance(err.value, LockError)


def test_remove_on_complete_removes_the_row_but_keeps_the_event(store: PgStore) -> None:
    add(store, opts='{"remove_on_complete":true}')
    claim(store)
    complete(store, 1, rv="7")
    assert state(store, 1) is None
    assert events(store) == [("completed", "1", 7)]


def test_remove_on_complete_count_keeps_the_newest(store: PgStore) -> None:
    for _ in range(4):
        add(store, opts='{"remove_on_complete":2}')
    for i in range(4):
        row = claim(store, token=f"t{i}")
        complete(store, row[0], token=f"t{i}", now=T0 + i)
    assert [r[0] for r in store.query("SELECT id FROM jobs ORDER BY id")] == [3, 4]


def test_fail_with_attempts_left_requeues_at_the_tail(store: PgStore) -> None:
    add(store, opts='{"attempts":2}')
    add(store)
    claim(store)
    assert fail(store, 1) == "waiting"
    assert column(store, 1, "seq") > column(store, 2, "seq")
    assert column(store, 1, "attempts_made") == 1
    assert json.loads(column(store, 1, "stacktrace")) == ["trace"]
    assert events(store) == [("failed", "1", "boom"), ("waiting", "1", None)]


def test_fail_with_backoff_delays_and_final_failure_fails(store: PgStore) -> None:
    add(store, opts='{"attempts":2,"stack_trace_limit":1}')
    claim(store)
    assert fail(store, 1, delay=500, now=T0 + 1) == "delayed"
    assert column(store, 1, "run_at_ms") == T0 + 501
    assert claim(store, token="t2", now=T0 + 501)[0] == 1
    assert fail(store, 1, token="t2", now=T0 + 600, stack="second") == "failed"
    assert json.loads(column(store, 1, "stacktrace")) == ["second"]
    assert column(store, 1, "finished_on_ms") == T0 + 600
    assert [e[0] for e in events(store)] == ["failed", "delayed", "waiting", "failed"]


def test_fail_guards_the_token_and_changes_nothing(store: PgStore) -> None:
    add(store)
    claim(store, token="mine")
    before = snapshot(store)
    with pytest.raises(LockError):
        fail(store, 1, token="other")
    assert snapshot(store) == before


def test_remove_on_fail(store: PgStore) -> None:
    add(store, opts='{"remove_on_fail":true}')
    claim(store)
    assert fail(store, 1, delay=None) == "failed"
    assert state(store, 1) is None and events(store) == [("failed", "1", "boom")]


# -- stalled --------------------------------------------------------------------------------

def test_recover_stalled_requeues_at_the_head_then_fails_past_the_limit(store: PgStore) -> None:
    add(store)
    add(store)
    claim(store, token="a", lock_ms=10)
    with store.write(durable=False) as conn:
        assert tr.recover_stalled(conn, queue="q", now_ms=T0 + 5, dead_owners=[],
                                  max_stalled_count=1) == []
    with store.write(durable=False) as conn:
        assert tr.recover_stalled(conn, queue="q", now_ms=T0 + 11, dead_owners=[],
                                  max_stalled_count=1) == [("1", "waiting")]
    assert claim(store, token="b", now=T0 + 20)[0] == 1  # back at the head
    with store.write(durable=False) as conn:
        assert tr.recover_stalled(conn, queue="q", now_ms=T0 + 21, dead_owners=["me"],
                                  max_stalled_count=1) == [("1", "failed")]
        assert tr.recover_stalled(conn, queue="q", now_ms=T0 + 21, dead_owners=["me"],
                                  max_stalled_count=1) == []
    assert column(store, 1, "failed_reason") == tr.STALLED_REASON
    assert [e[0] for e in events(store)] == ["stalled", "waiting", "stalled", "failed"]


# -- writes on any job ----------------------------------------------------------------------

def test_progress_log_and_update_respect_the_lock(store: PgStore) -> None:
    add(store)
    claim(store, token="mine")
    with store.write(durable=False) as conn:
        tr.set_progress(conn, rowid=1, public="1", token="mine", progress="50", now_ms=T0)
        assert tr.add_log(conn, rowid=1, public="1", token="mine", row="a", now_ms=T0) == 1
        assert tr.add_log(conn, rowid=1, public="1", token="mine", row="b", now_ms=T0) == 2
        tr.update_data(conn, rowid=1, public="1", token="mine", data="[1]", now_ms=T0)
    assert column(store, 1, "progress") == "50" and column(store, 1, "data") == "[1]"
    assert events(store) == [("progress", "1", 50)]
    for call in (lambda c: tr.set_progress(c, rowid=1, public="1", token=None, progress="1",
                                           now_ms=T0),
                 lambda c: tr.add_log(c, rowid=1, public="1", token="x", row="c", now_ms=T0),
                 lambda c: tr.update_data(c, rowid=1, public="1", token=None, data="2",
                                          now_ms=T0)):
        with pytest.raises(LockError), store.write(durable=False) as conn:
            call(conn)
    with pytest.raises(JobNotFound), store.write(durable=False) as conn:
        tr.add_log(conn, rowid=5, public="5", token=None, row="c", now_ms=T0)


def test_concurrent_log_appends_count_exactly(store: PgStore) -> None:
    add(store)
    counts: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(10):
            with store.write(durable=False) as conn:
                n = tr.add_log(conn, rowid=1, public="1", token=None, row="r", now_ms=T0)
            with lock:
                counts.append(n)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts) == list(range(1, 41))


def test_retry_and_retry_failed(store: PgStore) -> None:
    for _ in range(3):
        add(store)
    for i in range(3):
        claim(store, token=f"t{i}")
        fail(store, i + 1, token=f"t{i}", delay=None, now=T0 + 10 - i)
    with store.write(durable=True) as conn:
        tr.retry(conn, rowid=1, public="1", now_ms=T0)
    with pytest.raises(InvalidJobState), store.write(durable=True) as conn:
        tr.retry(conn, rowid=1, public="1", now_ms=T0)
    with store.write(durable=True) as conn:
        assert tr.retry_failed(conn, queue="q", count=1, now_ms=T0) == 1
    assert state(store, 3) == "waiting" and state(store, 2) == "failed"
    with store.write(durable=True) as conn:
        assert tr.retry_failed(conn, queue="q", count=None, now_ms=T0) == 1
    assert [claim(store, token=f"r{i}")[0] for i in range(3)] == [1, 3, 2]


# -- removing -------------------------------------------------------------------------------

def test_remove_refuses_a_live_lock_and_removes_logs(store: PgStore) -> None:
    add(store)
    add(store)
    claim(store, token="mine", lock_ms=100)
    with pytest.raises(LockError), store.write(durable=True) as conn:
        tr.remove(conn, rowid=1, public="1", token=None, now_ms=T0)
    with store.write(durable=True) as conn:
        tr.add_log(conn, rowid=2, public="2", token=None, row="x", now_ms=T0)
        tr.remove(conn, rowid=2, public="2", token=None, now_ms=T0)
        tr.remove(conn, rowid=1, public="1", token=None, now_ms=T0 + 101)  # lock expired
    assert store.query("SELECT count(*) FROM jobs")[0][0] == 0
    assert store.query("SELECT count(*) FROM job_logs")[0][0] == 0
    with pytest.raises(JobNotFound), store.write(durable=True) as conn:
        tr.remove(conn, rowid=1, public="1", token=None, now_ms=T0)


def test_clean_empty_and_delete_queue(store: PgStore) -> None:
    for _ in range(3):
        add(store)
    add(store, delay_ms=10)
    add(store, queue="other")
    claim(store)
    complete(store, 1, now=T0 + 1)
    with store.write(durable=True) as conn:
        assert tr.clean(conn, queue="q", state="completed", before_ms=T0 + 1, limit=0,
                        now_ms=T0) == []
        assert tr.clean(conn, queue="q", state="completed", before_ms=T0 + 2, limit=0,
                        now_ms=T0) == ["1"]
        assert tr.clean(conn, queue="q", state="paused", before_ms=T0 + 2, limit=0,
                        now_ms=T0) == []
        assert tr.clean(conn, queue="q", state="wait", before_ms=T0 + 2, limit=1,
                        now_ms=T0) == ["2"]
        assert tr.empty(conn, queue="q") == 2
    add(store)
    claim(store, token="x")
    with pytest.raises(InvalidJobState), store.write(durable=True) as conn:
        tr.delete_queue(conn, queue="q", force=False, now_ms=T0)
    with store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=T0)
        assert tr.delete_queue(conn, queue="q", force=True, now_ms=T0) == 1
    assert store.query("SELECT queue FROM jobs") == [("other",)]
    assert store.query("SELECT count(*) FROM queues")[0][0] == 0


def test_trim_events_keeps_the_newest(store: PgStore) -> None:
    for _ in range(5):
        add(store, delay_ms=1)
    with store.write(durable=False) as conn:
        assert tr.trim_events(conn, keep=2) == 3
    assert [e[1] for e in events(store)] == ["4", "5"]


def test_rowid_of_finds_auto_and_custom_ids(store: PgStore) -> None:
    add(store)
    add(store, job_id="c")
    with store.read() as conn:
        assert tr.rowid_of(conn, "q", "1") == 1
        assert tr.rowid_of(conn, "q", "c") == 2
        assert tr.rowid_of(conn, "q", "2") is None  # a custom-id row has no numeric id
        assert tr.rowid_of(conn, "other", "1") is None
        assert tr.rowid_of(conn, "q", "99999999999999999999") is None


# -- worker moves ---------------------------------------------------------------------------

def test_release_puts_the_job_back_at_the_head_unchanged(store: PgStore) -> None:
    add(store)
    add(store)
    claim(store, token="mine")
    with store.write(durable=False) as conn:
        assert not tr.release(conn, rowid=1, public="1", token="other", now_ms=T0)
        assert tr.release(conn, rowid=1, public="1", token="mine", now_ms=T0)
    assert state(store, 1) == "waiting" and column(store, 1, "attempts_made") == 0
    assert claim(store, token="again")[0] == 1
    assert events(store) == [("waiting", "1", None)]


def test_recover_stalled_by_dead_owner_only(store: PgStore) -> None:
    add(store)
    claim(store, lock_ms=1)
    with store.write(durable=False) as conn:
        assert tr.recover_stalled(conn, queue="q", now_ms=T0 + 99, dead_owners=[],
                                  max_stalled_count=1, check_expired=False) == []
        assert tr.recover_stalled(conn, queue="q", now_ms=T0 + 99, dead_owners=["me"],
                                  max_stalled_count=1, check_expired=False) == [("1", "waiting")]


def test_drained_event_and_worker_rows(store: PgStore) -> None:
    with store.write(durable=False) as conn:
        tr.note_drained(conn, queue="q", now_ms=T0)
        for wid, lease in (("w1", "L1"), ("w2", "L1"), ("w3", "L2")):
            tr.register_worker(conn, worker_id=wid, queue="q", pid=1, host="h", lease=lease,
                               concurrency=2, now_ms=T0)
        tr.register_worker(conn, worker_id="w3", queue="q", pid=2, host="h", lease="L2",
                           concurrency=4, now_ms=T0)
    assert events(store) == [("drained", None, None)]
    assert store.query("SELECT pid, concurrency FROM workers WHERE id = 'w3'") == [(2, 4)]
    with store.write(durable=False) as conn:
        assert tr.unregister_workers(conn, worker_ids=["w3"], leases=["L1"]) == 3
        assert tr.unregister_workers(conn) == 0
