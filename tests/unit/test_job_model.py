"""Bull's job model through the Queue: order, delays, attempts and backoff, retention, stalls,
admin moves and pause, each one a rule a Bull user relies on."""

from __future__ import annotations

from typing import Any

import pytest

import localq
from localq import UnrecoverableError
from localq.testing import FakeClock


def take(q: localq.Queue) -> localq.Job:
    job = q.get_next_job()
    assert job is not None, "expected a runnable job"
    return job


def drain_order(q: localq.Queue) -> list[Any]:
    out = []
    while (job := q.get_next_job()) is not None:
        out.append(job.data)
        job.move_to_completed(not_fetch=True)
    return out


def ids(jobs: list[localq.Job]) -> list[str]:
    return [j.id for j in jobs]


# -- order ----------------------------------------------------------------------------------

def test_priority_one_is_highest_and_prioritised_jobs_run_first(queue: localq.Queue) -> None:
    queue.add("none-1")
    queue.add("p5", priority=5)
    queue.add("p1", priority=1)
    queue.add("none-2")
    queue.add("p5-b", priority=5)
    assert drain_order(queue) == ["p1", "p5", "p5-b", "none-1", "none-2"]


def test_lifo_jobs_run_newest_first_before_fifo_jobs(queue: localq.Queue) -> None:
    queue.add("f1")
    queue.add("l1", lifo=True)
    queue.add("f2")
    queue.add("l2", lifo=True)
    assert drain_order(queue) == ["l2", "l1", "f1", "f2"]


def test_lifo_within_a_priority(queue: localq.Queue) -> None:
    queue.add("a", priority=2)
    queue.add("b", priority=2, lifo=True)
    queue.add("c", priority=1)
    assert drain_order(queue) == ["c", "b", "a"]


def test_retried_jobs_rejoin_the_tail_in_the_order_they_failed(queue: localq.Queue) -> None:
    first = queue.add("first", attempts=2)
    second = queue.add("second", attempts=2)
    a, b = take(queue), take(queue)
    assert (a.id, b.id) == (first.id, second.id)
    b.move_to_failed("x")   # "second" goes back first ...
    a.move_to_failed("x")   # ... then "first"
    queue.add("third")
    assert drain_order(queue) == ["second", "first", "third"]


def test_promoted_jobs_join_the_tail_in_promotion_order(queue: localq.Queue) -> None:
    late = queue.add("late", delay=10)
    early = queue.add("early", delay=10)
    queue.add("waiting")
    early.promote()
    late.promote()
    assert drain_order(queue) == ["waiting", "early", "late"]


# -- delay ----------------------------------------------------------------------------------

def test_delayed_job_waits_for_its_time(queue: localq.Queue, clock: FakeClock) -> None:
    job = queue.add({"d": 1}, delay=5)
    assert job.get_state() == "delayed" and job.delay == 5
    assert queue.get_next_job() is None
    clock.advance(4.999)
    assert queue.get_next_job() is None
    clock.advance(0.001)
    assert take(queue).id == job.id


def test_due_delayed_jobs_run_in_due_order(queue: localq.Queue, clock: FakeClock) -> None:
    queue.add("b", delay=2)
    queue.add("a", delay=1)
    queue.add("c", delay=3)
    clock.advance(3)
    assert drain_order(queue) == ["a", "b", "c"]


def test_promote_runs_a_delayed_job_now(queue: localq.Queue) -> None:
    job = queue.add(delay=3600)
    job.promote()
    assert job.get_state() == "waiting"
    assert take(queue).id == job.id
    with pytest.raises(localq.InvalidJobState):
        job.promote()


# -- attempts and backoff -------------------------------------------------------------------

def fail_once(q: localq.Queue, err: Any = "boom") -> localq.Job:
    job = take(q)
    job.move_to_failed(err)
    fresh = q.get_job(job.id)
    assert fresh is not None
    return fresh


def test_attempts_without_backoff_retry_at_once(queue: localq.Queue) -> None:
    queue.add(attempts=3)
    for made in (1, 2):
        job = fail_once(queue)
        assert (job.get_state(), job.attempts_made) == ("waiting", made)
    job = fail_once(queue)
    assert (job.get_state(), job.attempts_made, job.failed_reason) == ("failed", 3, "boom")


def test_fixed_backoff_waits_the_same_each_time(queue: localq.Queue, clock: FakeClock) -> None:
    queue.add(attempts=3, backoff=10)
    for _ in range(2):
        job = fail_once(queue)
        assert job.get_state() == "delayed" and job.delay == 10
        clock.advance(9.999)
        assert queue.get_next_job() is None
        clock.advance(0.001)
    assert fail_once(queue).get_state() == "failed"


def test_exponential_backoff_doubles(queue: localq.Queue, clock: FakeClock) -> None:
    queue.add(attempts=4, backoff={"type": "exponential", "delay": 1})
    for wait in (1, 2, 4):
        job = fail_once(queue)
        assert job.get_state() == "delayed" and job.delay == wait
        clock.advance(wait)
    assert fail_once(queue).get_state() == "failed"


def test_custom_backoff_comes_from_the_failing_queues_settings(
        db_path: str, clock: FakeClock) -> None:
    seen: list[tuple[int, str]] = []

    def linear(attempts_made: int, err: BaseException) -> float:
        seen.append((attempts_made, str(err)))
        return 3 * attempts_made

    with localq.Queue("q", path=db_path, clock=clock) as producer, \
            localq.Queue("q", path=db_path, clock=clock,
                         settings={"backoff_strategies": {"linear": linear}}) as worker:
        producer.add(attempts=3, backoff={"type": "linear", "delay": 0})
        job = fail_once(worker, ValueError("v"))
        assert job.get_state() == "delayed" and job.delay == 3
        clock.advance(3)
        assert fail_once(worker, ValueError("w")).delay == 6
    assert seen == [(1, "v"), (2, "w")]


def test_an_unknown_custom_backoff_fails_with_a_reason_saying_so(queue: localq.Queue) -> None:
    queue.add(attempts=5, backoff={"type": "jitter", "delay": 1})
    job = fail_once(queue)
    assert job.get_state() == "failed"
    assert "jitter" in job.failed_reason and "backoff_strategies" in job.failed_reason
    assert job.failed_reason.startswith("boom")


@pytest.mark.parametrize("answer, state", [(-1, "failed"), (0, "waiting")])
def test_custom_backoff_minus_one_fails_now_and_zero_retries_now(
        db_path: str, clock: FakeClock, answer: int, state: str) -> None:
    with localq.Queue("q", path=db_path, clock=clock,
                      settings={"backoff_strategies": {"s": lambda n, e: answer}}) as q:
        q.add(attempts=5, backoff={"type": "s"})
        job = fail_once(q)
        assert job.get_state() == state and job.failed_reason == "boom"


@pytest.mark.parametrize("answer", [-2, float("nan"), "soon", float("inf")])
def test_a_custom_backoff_with_a_bad_answer_fails_the_job_and_says_why(
        db_path: str, clock: FakeClock, answer: Any) -> None:
    with localq.Queue("q", path=db_path, clock=clock,
                      settings={"backoff_strategies": {"s": lambda n, e: answer}}) as q:
        q.add(attempts=5, backoff={"type": "s"})
        job = fail_once(q)
        assert job.get_state() == "failed" and "'s'" in job.failed_reason


def test_a_custom_backoff_that_raises_fails_the_job(db_path: str, clock: FakeClock) -> None:
    def broken(n: int, e: BaseException) -> float:
        raise KeyError("oops")
    with localq.Queue("q", path=db_path, clock=clock,
                      settings={"backoff_strategies": {"s": broken}}) as q:
        q.add(attempts=5, backoff={"type": "s"})
        job = fail_once(q)
        assert job.get_state() == "failed" and "KeyError" in job.failed_reason


def test_discard_makes_this_failure_final(queue: localq.Queue) -> None:
    queue.add(attempts=5)
    job = take(queue)
    job.discard()
    job.move_to_failed(RuntimeError("stop"))
    assert job.get_state() == "failed" and queue.get_job(job.id).attempts_made == 1


def test_unrecoverable_error_fails_at_once(queue: localq.Queue) -> None:
    queue.add(attempts=5, backoff=1)
    job = fail_once(queue, UnrecoverableError("no point"))
    assert job.get_state() == "failed" and job.failed_reason == "no point"


def test_failure_reason_and_stack_from_an_exception(queue: localq.Queue) -> None:
    queue.add(attempts=2)
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        job = fail_once(queue, exc)
    assert job.failed_reason == "bad value"
    assert len(job.stacktrace) == 1 and "ValueError: bad value" in job.stacktrace[0]
    job = fail_once(queue, {"message": "as dict"})
    assert job.failed_reason == "as dict" and len(job.stacktrace) == 1


@pytest.mark.parametrize("limit, kept", [(None, 3), (0, 0), (2, 2)])
def test_stack_trace_limit(queue: localq.Queue, limit: int | None, kept: int) -> None:
    queue.add(attempts=3, stack_trace_limit=limit)
    for i in range(3):
        job = take(queue)
        job.move_to_failed(RuntimeError(f"e{i}"))
    job = queue.get_job(job.id)
    assert len(job.stacktrace) == kept
    if kept:
        assert "e2" in job.stacktrace[-1]


# -- job_id ---------------------------------------------------------------------------------

def test_job_id_dedupe_returns_the_existing_job(queue: localq.Queue) -> None:
    first = queue.add({"v": 1}, job_id="order-7")
    again = queue.add({"v": 2}, job_id="order-7", delay=99)
    assert (again.id, again.data, again.get_state()) == ("order-7", {"v": 1}, "waiting")
    assert queue.get_job_counts() == {**queue.get_job_counts(), "waiting": 1, "delayed": 0}
    assert first.id == "order-7"


def test_job_id_dedupe_holds_after_the_job_finished(queue: localq.Queue) -> None:
    queue.add(job_id="once")
    take(queue).move_to_completed("r")
    assert queue.add(job_id="once").get_state() == "completed"


def test_a_removed_custom_id_can_be_used_again(queue: localq.Queue) -> None:
    queue.add({"v": 1}, job_id="x").remove()
    assert queue.add({"v": 2}, job_id="x").data == {"v": 2}


def test_custom_ids_are_per_queue(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("a", path=db_path, clock=clock) as a, \
            localq.Queue("b", path=db_path, clock=clock) as b:
        a.add({"q": "a"}, job_id="same")
        assert b.add({"q": "b"}, job_id="same").data == {"q": "b"}
        assert a.get_job("same").data == {"q": "a"}


# -- retention ------------------------------------------------------------------------------

def complete_all(q: localq.Queue, clock: FakeClock | None = None) -> None:
    while (job := q.get_next_job()) is not None:
        job.move_to_completed(job.data, not_fetch=True)
        if clock is not None:
            clock.advance(1)


def test_remove_on_complete_true_removes_the_job_but_finished_still_answers(
        queue: localq.Queue) -> None:
    job = queue.add({"n": 1}, remove_on_complete=True)
    take(queue).move_to_completed({"ok": True})
    assert queue.get_job(job.id) is None and job.get_state() is None
    assert job.finished(timeout=1) == {"ok": True}


def test_remove_on_fail_true_removes_the_job_but_finished_still_raises(
        queue: localq.Queue) -> None:
    job = queue.add(remove_on_fail=True, attempts=2)
    take(queue).move_to_failed("first")
    assert queue.get_job(job.id) is not None  # retried, not final: kept
    take(queue).move_to_failed("second")
    assert queue.get_job(job.id) is None
    with pytest.raises(localq.JobFailed) as err:
        job.finished(timeout=1)
    assert err.value.reason == "second" and "second" in str(err.value)


def test_remove_on_complete_keeps_the_newest_n(queue: localq.Queue, clock: FakeClock) -> None:
    for i in range(5):
        queue.add(i, remove_on_complete=2)
    complete_all(queue, clock)
    assert [j.data for j in queue.get_completed()] == [4, 3]


def test_remove_on_complete_zero_keeps_none(queue: localq.Queue) -> None:
    job = queue.add(remove_on_complete=0)
    take(queue).move_to_completed(1)
    assert queue.get_job(job.id) is None and job.finished(timeout=1) == 1


def test_remove_on_complete_by_age_and_count(queue: localq.Queue, clock: FakeClock) -> None:
    for i in range(4):
        queue.add(i, remove_on_complete={"age": 2.5, "count": 10})
    complete_all(queue, clock)   # finished at t, t+1, t+2, t+3; clock now at t+4
    queue.add(99, remove_on_complete={"age": 2.5, "count": 10})
    complete_all(queue)          # at t+4: jobs older than 2.5 s (t, t+1) go
    assert [j.data for j in queue.get_completed()] == [99, 3, 2]
    queue.add(100, remove_on_complete={"count": 1})
    complete_all(queue)
    assert [j.data for j in queue.get_completed()] == [100]


def test_remove_on_fail_keeps_the_newest_n(queue: localq.Queue, clock: FakeClock) -> None:
    for i in range(4):
        queue.add(i, remove_on_fail=1)
    while (job := queue.get_next_job()) is not None:
        job.move_to_failed("x")
        clock.advance(1)
    assert [j.data for j in queue.get_failed()] == [3]
    assert queue.get_job_counts("completed", "failed") == {"completed": 0, "failed": 1}


def test_retention_only_touches_its_own_queue(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("a", path=db_path, clock=clock) as a, \
            localq.Queue("b", path=db_path, clock=clock) as b:
        b.add("b")
        complete_all(b)
        a.add("a", remove_on_complete=0)
        complete_all(a)
        assert b.get_job_counts("completed") == {"completed": 1}


# -- stalled jobs ---------------------------------------------------------------------------

@pytest.fixture
def short_lock(db_path: str, clock: FakeClock) -> Any:
    q = localq.Queue("q", path=db_path, clock=clock,
                     settings={"lock_duration": 10, "max_stalled_count": 1})
    yield q
    q.close()


def test_expired_lock_is_stuck_then_recovered_to_waiting(short_lock: localq.Queue,
                                                         clock: FakeClock) -> None:
    stalled: list[str] = []
    short_lock.on("stalled", lambda job: stalled.append(job.id))
    job = short_lock.add()
    held = take(short_lock)
    assert held.get_state() == "active"
    clock.advance(10.001)
    assert held.get_state() == "stuck" and held.is_stuck()
    assert short_lock._recover_stalled() == [(job.id, "waiting")]
    assert job.get_state() == "waiting" and stalled == [job.id]
    assert short_lock.get_job(job.id).stalled_count == 1
    # The first holder lost the job: its result is refused and changes nothing.
    again = take(short_lock)
    with pytest.raises(localq.LockError):
        held.move_to_completed("late")
    assert again.get_state() == "active"
    again.move_to_completed("on time")
    assert job.finished(timeout=1) == "on time"


def test_stalling_more_than_max_stalled_count_fails_with_bulls_reason(
        short_lock: localq.Queue, clock: FakeClock) -> None:
    job = short_lock.add(attempts=5)
    failed: list[Any] = []
    short_lock.on("failed", lambda j, err: failed.append((j.id, err)))
    for expected in ("waiting", "failed"):
        take(short_lock)
        clock.advance(11)
        assert short_lock._recover_stalled() == [(job.id, expected)]
    assert job.get_state() == "failed"
    assert short_lock.get_job(job.id).failed_reason == "job stalled more than allowable limit"
    assert failed == [(job.id, "job stalled more than allowable limit")]
    with pytest.raises(localq.JobFailed, match="stalled"):
        job.finished(timeout=1)


def test_a_live_lock_is_not_recovered(short_lock: localq.Queue, clock: FakeClock) -> None:
    short_lock.add()
    take(short_lock)
    clock.advance(10)  # exactly at expiry: still held
    assert short_lock._recover_stalled() == []


# -- admin: clean / empty / obliterate / retry_jobs -----------------------------------------

def test_clean_removes_by_status_and_grace(queue: localq.Queue, clock: FakeClock) -> None:
    cleaned: list[Any] = []
    queue.on("cleaned", lambda job_ids, status: cleaned.append((job_ids, status)))
    for i in range(3):
        queue.add(i)
    complete_all(queue, clock)  # finished at t, t+1, t+2
    assert queue.clean(1.5) == ["1", "2"]
    assert cleaned == [(["1", "2"], "completed")]
    assert queue.clean(0, "failed") == []
    assert [j.id for j in queue.get_completed()] == ["3"]


def test_clean_with_a_limit(queue: localq.Queue, clock: FakeClock) -> None:
    for i in range(4):
        queue.add(i)
    clock.advance(1)
    assert len(queue.clean(0, "wait", limit=3)) == 3
    assert queue.count() == 1


def test_clean_paused_removes_the_waiting_jobs_of_a_paused_queue(queue: localq.Queue,
                                                                 clock: FakeClock) -> None:
    queue.add()
    clock.advance(1)
    assert queue.clean(0, "paused") == []  # not paused: no job is in the paused state
    queue.pause()
    assert queue.clean(0, "waiting") == []  # paused: no job is in the waiting state
    assert queue.clean(0, "paused") == ["1"]


def test_empty_leaves_active_completed_and_failed(queue: localq.Queue) -> None:
    for state in ("a", "c", "f"):
        queue.add(state)
    jobs = [take(queue) for _ in range(3)]
    jobs[1].move_to_completed()
    jobs[2].move_to_failed("x")
    queue.add("w")
    queue.add("d", delay=10)
    queue.empty()
    counts = queue.get_job_counts()
    assert counts == {"waiting": 0, "active": 1, "delayed": 0, "completed": 1, "failed": 1,
                      "paused": 0}


def test_obliterate_needs_force_with_active_jobs_then_leaves_an_empty_queue(
        queue: localq.Queue) -> None:
    queue.add()
    queue.add(delay=5)
    take(queue)
    queue.pause()
    with pytest.raises(localq.LocalqError, match="force"):
        queue.obliterate()
    assert queue.get_job_counts()["active"] == 1
    queue.obliterate(force=True)
    assert sum(queue.get_job_counts().values()) == 0 and not queue.is_paused()
    job = queue.add("after")
    assert take(queue).id == job.id


def test_retry_jobs_requeues_oldest_failures_first(queue: localq.Queue,
                                                   clock: FakeClock) -> None:
    for i in range(3):
        queue.add(i)
    while (job := queue.get_next_job()) is not None:
        job.move_to_failed("x")
        clock.advance(1)
    assert queue.retry_jobs(count=2) == 2
    assert [j.data for j in queue.get_waiting()] == [0, 1]
    assert queue.retry_jobs() == 1
    assert queue.retry_jobs() == 0
    assert drain_order(queue) == [0, 1, 2]


# -- pause / resume -------------------------------------------------------------------------

def test_pause_holds_every_job_and_resume_releases_them(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock) as q, \
            localq.Queue("q", path=db_path, clock=clock) as other:
        job = q.add()
        delayed = q.add(delay=1)
        q.pause()
        assert other.is_paused()
        clock.advance(2)
        assert job.get_state() == "paused" and job.is_paused()
        assert other.get_next_job() is None and q.get_next_job() is None
        # As in Bull, a delayed job that comes due while paused joins the paused jobs.
        assert delayed.get_state() == "paused"
        counts = q.get_job_counts()
        assert (counts["waiting"], counts["paused"], counts["delayed"]) == (0, 2, 0)
        assert q.count() == 2
        other.resume()
        assert not q.is_paused()
        assert job.get_state() == "waiting"
        assert take(other).id == job.id


def test_pause_lets_running_jobs_finish(queue: localq.Queue) -> None:
    queue.add()
    job = take(queue)
    queue.pause()
    job.move_to_completed("done")
    assert job.get_state() == "completed"


# -- ids ------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["remove", "remove_on_complete", "empty", "clean",
                                 "obliterate"])
def test_ids_are_never_reused_after_the_newest_job_is_removed(queue: localq.Queue,
                                                              clock: FakeClock, how: str) -> None:
    queue.add()
    newest = queue.add(remove_on_complete=how == "remove_on_complete")
    if how == "remove":
        newest.remove()
    elif how == "remove_on_complete":
        queue.get_job("1").remove()
        take(queue).move_to_completed()
    elif how == "empty":
        queue.empty()
    elif how == "clean":
        clock.advance(1)
        queue.clean(0, "waiting")
    else:
        queue.obliterate()
    assert queue.get_job(newest.id) is None
    assert queue.add().id == "3"


def test_ids_are_never_reused_across_queues_of_one_file(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("a", path=db_path, clock=clock) as a, \
            localq.Queue("b", path=db_path, clock=clock) as b:
        a.add()
        b.add().remove()
        assert a.add().id == "3"
