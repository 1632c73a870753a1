"""Worker behaviour in one process: outcomes, routing, events, pause, close, timeouts, fencing.

Time-dependent rules (backoff, timeouts, lock expiry) follow the queue's FakeClock; the
tests wait for events with a generous limit, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

import pytest

import localq
from localq.lease import is_lease_id
from localq.testing import FakeClock

WAIT = 10.0  # the most a test waits for something that normally takes milliseconds


def fetch(queue: localq.Queue, job_id: str) -> localq.Job:
    """The stored job (it must exist)."""
    job = queue.get_job(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


@pytest.fixture
def q(db_path: str, clock: FakeClock) -> Iterator[localq.Queue]:
    queue = localq.Queue("w", path=db_path, clock=clock)
    try:
        yield queue
    finally:
        queue.close()


def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    done = threading.Event()
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            if predicate():
                done.set()
                return
            deadline.wait(0.005)
    finally:
        timer.cancel()
    raise AssertionError("condition not reached in time")


def test_return_value_completes_the_job(q: localq.Queue) -> None:
    q.process(lambda job: {"double": job.data["n"] * 2})
    job = q.add({"n": 21})
    assert job.finished(timeout=WAIT) == {"double": 42}
    assert fetch(q, job.id).get_state() == "completed"


def test_async_handler_completes_the_job(q: localq.Queue) -> None:
    async def handler(job: localq.Job) -> str:
        await asyncio.sleep(0)
        return f"hello {job.data['who']}"
    q.process(handler, concurrency=2)
    assert q.add({"who": "ada"}).finished(timeout=WAIT) == "hello ada"


def test_handler_given_as_import_string(q: localq.Queue) -> None:
    q.process("builtins:repr")  # resolved by the worker, never by job data
    assert q.add({"a": 1}).finished(timeout=WAIT).startswith("<Job ")


def test_exception_fails_and_retries_after_backoff_on_the_queue_clock(
        q: localq.Queue, clock: FakeClock) -> None:
    calls: list[int] = []

    def flaky(job: localq.Job) -> str:
        calls.append(job.attempts_made)
        if job.attempts_made == 0:
            raise RuntimeError("first attempt fails")
        return "ok"
    q.process(flaky)
    job = q.add({}, attempts=2, backoff=30)
    wait_for(lambda: fetch(q, job.id).get_state() == "delayed")
    assert calls == [0]
    clock.advance(30)  # the retry becomes due: nothing sleeps for real
    assert job.finished(timeout=WAIT) == "ok"
    assert calls == [0, 1]
    assert fetch(q, job.id).attempts_made == 1


def test_unrecoverable_error_fails_at_once_whatever_attempts_remain(q: localq.Queue) -> None:
    def handler(job: localq.Job) -> None:
        raise localq.UnrecoverableError("bad input, do not retry")
    q.process(handler)
    job = q.add({}, attempts=5)
    with pytest.raises(localq.JobFailed, match="bad input"):
        job.finished(timeout=WAIT)
    assert fetch(q, job.id).attempts_made == 1


def test_return_value_that_is_not_json_fails_with_a_clear_reason(q: localq.Queue) -> None:
    q.process(lambda job: {1, 2})
    job = q.add({})
    with pytest.raises(localq.JobFailed) as info:
        job.finished(timeout=WAIT)
    assert "return value" in str(info.value.reason) and "JSON" in str(info.value.reason)


def test_named_worker_takes_only_its_jobs_and_never_fails_the_others(q: localq.Queue) -> None:
    seen: list[str] = []
    q.process(lambda job: seen.append(job.name), name="email")
    other = q.add({}, name="sms")
    mine = q.add({}, name="email")
    mine.finished(timeout=WAIT)
    assert seen == ["email"]
    assert fetch(q, other.id).get_state() == "waiting"


def test_concurrency_runs_that_many_jobs_at_once(q: localq.Queue) -> None:
    barrier = threading.Barrier(4, timeout=WAIT)
    q.process(lambda job: barrier.wait(), concurrency=4)
    jobs = [q.add({"i": i}) for i in range(4)]
    for job in jobs:
        job.finished(timeout=WAIT)  # only possible if the 4 ran together


def test_local_events_of_a_worker(q: localq.Queue) -> None:
    events: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def record(name: str) -> Any:
        def cb(*args: Any) -> None:
            with lock:
                events.append((name, args[1] if len(args) > 1 else None))
        return cb
    for name in ("active", "progress", "completed", "failed", "drained"):
        q.on(name, record(name))

    def handler(job: localq.Job) -> int:
        job.progress(50)
        if job.data.get("fail"):
            raise ValueError("nope")
        return 7
    q.add({})
    q.add({"fail": True})
    q.process(handler)
    wait_for(lambda: ("drained", None) in events)
    names = [name for name, _ in events]
    assert names.count("active") == 2 and names.count("progress") == 2
    assert ("completed", 7) in events
    assert any(name == "failed" and isinstance(arg, ValueError) for name, arg in events)
    assert names.count("drained") == 1 and names[-1] == "drained"


def test_global_events_reach_another_queue_instance(q: localq.Queue, db_path: str,
                                                    clock: FakeClock) -> None:
    other = localq.Queue("w", path=db_path, clock=clock)
    seen: list[tuple[str, tuple[Any, ...]]] = []
    for name in ("active", "completed", "drained"):
        other.on(f"global:{name}", lambda *a, n=name: seen.append((n, a)))
    try:
        job = q.add({})
        q.process(lambda j: "done")
        job.finished(timeout=WAIT)
        wait_for(lambda: [n for n, _ in seen] == ["active", "completed", "drained"])
        assert seen[1] == ("completed", (job.id, "done"))
    finally:
        other.close()


def test_pause_stops_taking_jobs_and_resume_takes_them_again(q: localq.Queue) -> None:
    worker = q.process(lambda job: "ok")
    q.add({}).finished(timeout=WAIT)
    worker.pause()
    job = q.add({})
    assert not worker._busy and fetch(q, job.id).get_state() == "waiting"
    worker.resume()
    assert job.finished(timeout=WAIT) == "ok"


def test_pause_waits_for_a_claim_in_flight(q: localq.Queue,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim that began before pause() may still take a job: pause(wait=True) returns only
    once that job has run, so no job starts after it returned."""
    claiming, go = threading.Event(), threading.Event()
    real_claim = q._claim

    def held_claim(**kwargs: Any) -> localq.Job | None:
        if not go.is_set():
            claiming.set()
            go.wait(WAIT)
        return real_claim(**kwargs)
    monkeypatch.setattr(q, "_claim", held_claim)
    starts: list[str] = []
    worker = q.process(lambda job: starts.append(job.id))
    assert claiming.wait(WAIT)  # the slot's claim has begun
    pauser = threading.Thread(target=worker.pause)
    pauser.start()
    pauser.join(0.3)
    assert pauser.is_alive()  # waiting for the claim in flight
    job = q.add({})
    go.set()
    pauser.join(WAIT)
    assert not pauser.is_alive()
    assert starts == [job.id] and fetch(q, job.id).get_state() == "completed"
    later = q.add({})
    assert fetch(q, later.id).get_state() == "waiting" and starts == [job.id]
    worker.resume()
    assert later.finished(timeout=WAIT) is None


def test_pause_waits_for_the_running_job(q: localq.Queue) -> None:
    started, release = threading.Event(), threading.Event()

    def handler(job: localq.Job) -> str:
        started.set()
        release.wait(WAIT)
        return "done"
    worker = q.process(handler)
    job = q.add({})
    assert started.wait(WAIT)
    threading.Timer(0.05, release.set).start()
    worker.pause(wait=True)
    assert fetch(q, job.id).get_state() == "completed"


def test_close_waits_for_running_jobs(q: localq.Queue) -> None:
    started, release = threading.Event(), threading.Event()

    def handler(job: localq.Job) -> str:
        started.set()
        release.wait(WAIT)
        return "finished"
    worker = q.process(handler)
    job = q.add({})
    assert started.wait(WAIT)
    threading.Timer(0.05, release.set).start()
    worker.close()
    assert fetch(q, job.id).returnvalue == "finished"
    assert q.get_workers() == []


def test_close_past_its_timeout_gives_the_job_back_and_refuses_its_late_result(
        q: localq.Queue) -> None:
    started, release = threading.Event(), threading.Event()
    cancelled: list[bool] = []

    def handler(job: localq.Job) -> str:
        started.set()
        release.wait(WAIT)
        cancelled.append(job.is_cancelled())
        return "late"
    worker = q.process(handler)
    job = q.add({})
    assert started.wait(WAIT)
    worker.close(timeout=0)
    assert fetch(q, job.id).get_state() == "waiting"  # runs next, elsewhere
    release.set()
    wait_for(lambda: cancelled == [True])
    assert fetch(q, job.id).get_state() == "waiting"


def test_when_current_jobs_finished_waits_for_running_jobs(q: localq.Queue) -> None:
    started, release = threading.Event(), threading.Event()

    def handler(job: localq.Job) -> None:
        started.set()
        release.wait(WAIT)
    q.process(handler)
    job = q.add({})
    assert started.wait(WAIT)
    with pytest.raises(TimeoutError):
        q.when_current_jobs_finished(timeout=0)
    release.set()
    q.when_current_jobs_finished(timeout=WAIT)
    assert fetch(q, job.id).get_state() == "completed"


def test_get_workers_lists_live_workers_only_and_the_scheduler_deletes_dead_rows(
        q: localq.Queue) -> None:
    worker = q.process(lambda job: None, concurrency=3)
    with q._store.write(durable=False) as conn:
        conn.execute("INSERT INTO workers (id, queue, pid, host, started_ms, concurrency, lease)"
                     " VALUES ('ghost', 'w', 1, 'h', 0, 1, '999999-0123456789abcdef')")
    # On PostgreSQL a lease must stay free for a grace period (a server restart frees every
    # lease at once) before its owner counts as dead: look until the ghost is gone.
    wait_for(lambda: "ghost" not in [w["id"] for w in q.get_workers()])
    listed = q.get_workers()
    assert [(w["id"], w["concurrency"]) for w in listed] == [(worker.id, 3)]
    assert set(listed[0]) == {"id", "pid", "host", "started", "concurrency"}
    q._scheduler._sweep()  # due every 30 s: run it now
    assert not q._store.query("SELECT 1 FROM workers WHERE id = 'ghost'")


def test_get_workers_only_reads(q: localq.Queue) -> None:
    with q._store.write(durable=False) as conn:
        conn.execute("INSERT INTO workers (id, queue, pid, host, started_ms, concurrency, lease)"
                     " VALUES ('ghost', 'w', 1, 'h', 0, 1, '999999-0123456789abcdef')")
    wait_for(lambda: q.get_workers() == [])  # no scheduler runs: no worker was started
    assert q._store.query("SELECT id FROM workers") == [("ghost",)]


def test_queue_close_closes_its_workers(db_path: str, clock: FakeClock) -> None:
    queue = localq.Queue("w", path=db_path, clock=clock)
    worker = queue.process(lambda job: None)
    queue.close()
    assert not worker.is_running()


def test_worker_close_ends_its_idle_slots(db_path: str, clock: FakeClock) -> None:
    # A wake-up lost between an idle slot's stop check and its watcher read left the slot
    # asleep for drain_delay (an hour here) after close() gave up joining it (5 s later).
    # The window is wide only at a queue's first read on PostgreSQL, which starts LISTEN,
    # and then the loss came about one time in two: four fresh queues.
    for _ in range(4):
        with localq.Queue("w", path=db_path, clock=clock,
                          settings={"drain_delay": 3600}) as queue:
            worker = queue.process(lambda job: None)
            worker.close()
            assert not [t for t in worker._threads if t.is_alive()], "a slot outlived close()"


def test_run_until_idle_returns_when_nothing_is_runnable_now(q: localq.Queue) -> None:
    done: list[str] = []
    for i in range(5):
        q.add({"i": i})
    q.add({}, delay=60)  # in the future: does not keep the worker running
    worker = localq.Worker(q, lambda job: done.append(job.id), concurrency=2, autorun=False)
    worker.run(until_idle=True)
    assert len(done) == 5 and not worker.is_running()


def test_timeout_fails_the_job_and_the_handler_sees_it_was_cancelled(
        q: localq.Queue, clock: FakeClock) -> None:
    started, seen = threading.Event(), threading.Event()

    def handler(job: localq.Job) -> str:
        if job.attempts_made:
            return "second attempt"
        started.set()
        while not job.is_cancelled():
            seen.wait(0.01)
        seen.set()
        return "too late"
    q.process(handler)
    job = q.add({}, timeout=5, attempts=2)
    assert started.wait(WAIT)
    clock.advance(6)
    assert seen.wait(WAIT)
    assert job.finished(timeout=WAIT) == "second attempt"  # retried: attempts apply
    stored = fetch(q, job.id)
    assert "timed out" in stored.failed_reason and stored.attempts_made == 1


def test_timeout_cancels_a_coroutine_handler(q: localq.Queue, clock: FakeClock) -> None:
    cancelled = threading.Event()
    started = threading.Event()

    async def handler(job: localq.Job) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
    q.process(handler)
    job = q.add({}, timeout=1)
    assert started.wait(WAIT)
    clock.advance(2)
    with pytest.raises(localq.JobFailed, match="timed out"):
        job.finished(timeout=WAIT)
    assert cancelled.wait(WAIT)


def test_a_worker_that_lost_its_lock_cannot_complete(q: localq.Queue, db_path: str,
                                                     clock: FakeClock) -> None:
    errors: list[BaseException] = []
    q.on("error", errors.append)
    started, release = threading.Event(), threading.Event()
    cancelled: list[bool] = []

    def handler(job: localq.Job) -> str:
        started.set()
        release.wait(WAIT)
        cancelled.append(job.is_cancelled())
        return "stale"
    q.process(handler)
    job = q.add({})
    assert started.wait(WAIT)
    rival = localq.Queue("w", path=db_path, clock=clock)
    try:
        clock.advance(q.settings.lock_duration + 1)  # the lock expires unrenewed
        assert rival._recover_stalled() == [(job.id, "waiting")]
        taken = rival.get_next_job()
        assert taken is not None and taken.id == job.id
        assert q._renew_locks() == [job._rowid]  # renewal finds the lock lost
        release.set()
        wait_for(lambda: len(errors) >= 2)
        assert all(isinstance(e, localq.LockError) for e in errors)
        assert cancelled == [True]
        assert fetch(q, job.id).get_state() == "active"  # still the rival's
        taken.move_to_completed("fresh", not_fetch=True)
        assert fetch(q, job.id).returnvalue == "fresh"
        completions = q._store.query("SELECT count(*) FROM events WHERE event = 'completed'"
                                     " AND job_id = :j", {"j": job.id})
        assert completions[0][0] == 1
    finally:
        rival.close()


def test_lock_renewal_pushes_the_expiry_forward(q: localq.Queue, clock: FakeClock) -> None:
    job = q.get_next_job() if q.add({}) else None
    assert job is not None
    before = q._store.query("SELECT lock_expires_ms FROM jobs WHERE id = :i",
                            {"i": job._rowid})[0][0]
    clock.advance(10)
    assert q._renew_locks() == []
    after = q._store.query("SELECT lock_expires_ms FROM jobs WHERE id = :i",
                           {"i": job._rowid})[0][0]
    assert after == before + 10_000


def test_manual_claims_record_the_process_lease_as_owner(q: localq.Queue) -> None:
    q.add({})
    job = q.get_next_job()
    assert job is not None
    owner = q._store.query("SELECT lock_owner FROM jobs WHERE id = :i", {"i": job._rowid})
    assert owner[0][0] == q._owner and is_lease_id(q._owner)


def test_bad_worker_arguments_are_config_errors(q: localq.Queue) -> None:
    with pytest.raises(localq.ConfigError):
        q.process(lambda job: None, concurrency=0)
    with pytest.raises(localq.ConfigError):
        q.process(42)  # type: ignore[arg-type]
    with pytest.raises(localq.ConfigError):
        q.process("no_such_module_xyz:handler")
    with pytest.raises(localq.ConfigError):
        q.process(lambda job: None, sandbox=True)  # a lambda cannot be imported by a child
