"""The Job API of API.md: the seed's methods one for one, the is_<state> helpers, to_dict."""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

import localq
from localq.testing import FakeClock

Snap = Callable[[localq.Queue], dict[str, list[Any]]]


def take(q: localq.Queue) -> localq.Job:
    job = q.get_next_job()
    assert job is not None
    return job


# -- progress / log / update ----------------------------------------------------------------

def test_progress_stores_numbers_and_objects(queue: localq.Queue) -> None:
    job = queue.add()
    assert job.progress() == 0
    assert job.progress(42) is None
    assert job.progress() == 42 and queue.get_job(job.id).progress() == 42
    job.progress({"step": "b", "pct": 0.5})
    assert queue.get_job(job.id).progress() == {"step": "b", "pct": 0.5}


def test_progress_of_the_lock_holder_and_refusal_of_others(db_path: str,
                                                           clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock) as a, \
            localq.Queue("q", path=db_path, clock=clock) as b:
        a.add()
        held = take(a)
        held.progress(10)
        a.get_job(held.id).progress(20)  # any Job object of the holding instance
        with pytest.raises(localq.LockError):
            b.get_job(held.id).progress(30)
        assert b.get_job(held.id).progress() == 20


def test_progress_rejects_non_json_and_keeps_the_old_value(queue: localq.Queue) -> None:
    job = queue.add()
    job.progress(1)
    with pytest.raises(localq.SerializationError, match="progress"):
        job.progress(float("nan"))
    assert queue.get_job(job.id).progress() == 1


def test_log_appends_rows_and_counts_them(queue: localq.Queue) -> None:
    job = queue.add()
    assert [job.log(f"r{i}") for i in range(3)] == [1, 2, 3]
    assert queue.get_job_logs(job.id)["logs"] == ["r0", "r1", "r2"]
    with pytest.raises(localq.ConfigError, match="str"):
        job.log(5)  # type: ignore[arg-type]
    assert queue.get_job_logs(job.id)["count"] == 3


def test_logs_of_two_jobs_stay_apart(queue: localq.Queue) -> None:
    a, b = queue.add(), queue.add()
    a.log("a")
    b.log("b")
    assert queue.get_job_logs(a.id)["logs"] == ["a"]
    assert queue.get_job_logs(b.id)["logs"] == ["b"]


def test_update_replaces_the_data(queue: localq.Queue, snapshot: Snap) -> None:
    job = queue.add({"a": 1, "b": 2})
    job.update({"c": 3})
    assert job.data == {"c": 3} and queue.get_job(job.id).data == {"c": 3}
    before = snapshot(queue)
    with pytest.raises(localq.SerializationError):
        job.update({"bad": {1}})
    assert snapshot(queue) == before and job.data == {"c": 3}


def test_writes_to_a_removed_job_are_job_not_found(queue: localq.Queue) -> None:
    job = queue.add()
    job.remove()
    for call in (lambda: job.progress(1), lambda: job.log("x"), lambda: job.update({}),
                 job.remove, job.retry, job.promote):
        with pytest.raises(localq.JobNotFound):
            call()


# -- remove / retry / promote / discard -----------------------------------------------------

def test_remove_takes_the_job_and_its_logs(queue: localq.Queue) -> None:
    removed: list[str] = []
    queue.on("removed", lambda job: removed.append(job.id))
    job = queue.add()
    job.log("x")
    job.remove()
    assert queue.get_job(job.id) is None and removed == [job.id]
    assert queue._store.query("SELECT count(*) FROM job_logs")[0][0] == 0


def test_remove_of_an_active_job(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock, settings={"lock_duration": 5}) as a, \
            localq.Queue("q", path=db_path, clock=clock) as b:
        a.add()
        a.add()
        first, second = take(a), take(a)
        with pytest.raises(localq.LockError):
            b.get_job(first.id).remove()
        first.remove()  # the holder may remove it
        clock.advance(6)  # the lock of the second expired: its worker is gone
        b.get_job(second.id).remove()
        assert a.get_job_counts("active") == {"active": 0}


def test_retry_of_a_failed_job_keeps_attempts_made(queue: localq.Queue) -> None:
    job = queue.add(attempts=1)
    take(queue).move_to_failed("x")
    failed = queue.get_job(job.id)
    failed.retry()
    fresh = queue.get_job(job.id)
    assert fresh.get_state() == "waiting" and fresh.attempts_made == 1
    assert fresh.failed_reason is None and fresh.finished_on is None
    for not_failed in (fresh, queue.add()):
        with pytest.raises(localq.InvalidJobState, match="failed"):
            not_failed.retry()


def test_promote_only_promotes_delayed_jobs(queue: localq.Queue) -> None:
    job = queue.add(delay=10)
    job.promote()
    assert job.get_state() == "waiting" and job.delay == 0
    with pytest.raises(localq.InvalidJobState, match="delayed") as err:
        job.promote()
    assert (err.value.job_id, err.value.expected, err.value.actual) == (job.id, "delayed",
                                                                        "waiting")


def test_discard_applies_to_the_job_object_that_fails(queue: localq.Queue) -> None:
    queue.add(attempts=3)
    job = take(queue)
    job.discard()
    job.move_to_failed("final")
    assert job.get_state() == "failed"


# -- finished -------------------------------------------------------------------------------

def test_finished_returns_the_result_or_raises_the_failure(queue: localq.Queue) -> None:
    ok, bad = queue.add(), queue.add()
    take(queue).move_to_completed({"r": 1}, not_fetch=True)
    take(queue).move_to_failed(ValueError("kaput"))
    assert ok.finished() == {"r": 1}
    with pytest.raises(localq.JobFailed) as err:
        bad.finished()
    assert (err.value.job_id, err.value.reason) == (bad.id, "kaput")
    assert "kaput" in str(err.value)


def test_finished_times_out(queue: localq.Queue) -> None:
    job = queue.add()
    with pytest.raises(TimeoutError, match=job.id):
        job.finished(timeout=0.05)


def test_finished_of_a_job_removed_unfinished_is_job_not_found(queue: localq.Queue) -> None:
    job = queue.add()
    job.remove()
    with pytest.raises(localq.JobNotFound):
        job.finished(timeout=1)


def test_finished_waits_across_queue_instances(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock) as producer, \
            localq.Queue("q", path=db_path, clock=clock) as worker:
        job = producer.add(remove_on_complete=True)
        result: list[Any] = []
        waiter = threading.Thread(target=lambda: result.append(job.finished(timeout=10)))
        waiter.start()
        take(worker).move_to_completed("from the worker", not_fetch=True)
        waiter.join(10)
        assert result == ["from the worker"]


def test_finished_sees_a_retried_failure_as_unfinished(queue: localq.Queue) -> None:
    job = queue.add(attempts=2, remove_on_fail=True)
    take(queue).move_to_failed("first try")
    with pytest.raises(TimeoutError):
        job.finished(timeout=0.05)
    take(queue).move_to_completed("second try", not_fetch=True)
    assert job.finished(timeout=1) == "second try"


# -- state helpers and attributes -----------------------------------------------------------

def test_is_state_helpers(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock, settings={"lock_duration": 1}) as q:
        helpers = ("is_waiting", "is_active", "is_delayed", "is_completed", "is_failed",
                   "is_paused", "is_stuck")

        def true_helpers(job: localq.Job) -> list[str]:
            return [h for h in helpers if getattr(job, h)()]

        waiting, delayed = q.add(), q.add(delay=5)
        done, failed = q.add(), q.add()
        assert true_helpers(waiting) == ["is_waiting"]
        assert true_helpers(delayed) == ["is_delayed"]
        active = take(q)
        assert true_helpers(active) == ["is_active"]
        q.get_next_job().move_to_completed(not_fetch=True)
        q.get_next_job().move_to_failed("x")
        assert true_helpers(done) == ["is_completed"] and true_helpers(failed) == ["is_failed"]
        clock.advance(2)
        assert true_helpers(active) == ["is_stuck"]
        active.remove()
        q.add()
        q.pause()
        assert true_helpers(q.get_job("5")) == ["is_paused"]


def test_attributes_after_processing(queue: localq.Queue, clock: FakeClock) -> None:
    added = queue.add({"x": 1}, name="job-name", attempts=2)
    clock.advance(1)
    take(queue).move_to_failed("first")
    clock.advance(1)
    job = take(queue)
    clock.advance(1)
    job.move_to_completed("done", not_fetch=True)
    final = queue.get_job(added.id)
    assert final.name == "job-name" and final.attempts_made == 1
    assert final.returnvalue == "done" and final.finished_on == clock.now()
    assert final.processed_on == clock.now() - 1 and final.timestamp == clock.now() - 3
    assert final.failed_reason == "first"  # kept after a later success, as in Bull


def test_to_dict_and_from_dict_round_trip(queue: localq.Queue) -> None:
    job = queue.add({"k": [1, 2]}, name="n", priority=4, attempts=3, job_id="c-1",
                    backoff={"type": "fixed", "delay": 2})
    job.progress(7)
    snap = queue.get_job(job.id)
    d = snap.to_dict()
    import json
    assert json.loads(json.dumps(d)) == d
    assert d["id"] == "c-1" and d["data"] == {"k": [1, 2]} and d["opts"]["priority"] == 4
    assert d["progress"] == 7 and d["state"] == "waiting" and d["queue"] == "q"
    back = localq.Job.from_dict(queue, d)
    assert back.to_dict() == d
    assert back.get_state() == "waiting"  # from_dict names the stored job
    numeric = queue.add("plain")
    assert localq.Job.from_dict(queue, numeric.to_dict()).to_dict() == numeric.to_dict()
    with pytest.raises(localq.ConfigError, match="id"):
        localq.Job.from_dict(queue, {"name": "x"})
    with pytest.raises(localq.SerializationError):
        localq.Job.from_dict(queue, {"id": "1", "name": "x", "data": {1, 2}})


def test_job_not_found_str_and_key_error() -> None:
    err = localq.JobNotFound("42")
    assert isinstance(err, KeyError) and isinstance(err, localq.LocalqError)
    assert "42" in str(err) and not str(err).startswith('"')
