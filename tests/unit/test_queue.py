"""The Queue API of API.md: add and its options, add_bulk, manual processing, queries, events,
lifecycle."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import localq
from localq.testing import FakeClock

Snap = Callable[[localq.Queue], dict[str, list[Any]]]


def take(q: localq.Queue) -> localq.Job:
    job = q.get_next_job()
    assert job is not None
    return job


# -- add ------------------------------------------------------------------------------------

def test_add_returns_a_waiting_job_with_defaults(queue: localq.Queue, clock: FakeClock) -> None:
    job = queue.add()
    assert (job.id, job.name, job.data, job.get_state()) == ("1", "__default__", {}, "waiting")
    assert job.timestamp == clock.now() and job.attempts_made == 0 and job.delay == 0
    assert job.queue is queue and job.failed_reason is None and job.stacktrace == []
    assert job.returnvalue is None and job.processed_on is None and job.finished_on is None
    assert job.opts["attempts"] == 1 and job.opts["priority"] is None


def test_add_stores_every_option_and_job_opts_shows_them(queue: localq.Queue) -> None:
    opts: dict[str, Any] = dict(
        name="mail", priority=3, delay=2.5, attempts=4,
        backoff={"type": "exponential", "delay": 1.5},
        lifo=True, timeout=9.0, job_id="mail-1", remove_on_complete=5,
        remove_on_fail={"age": 60.0, "count": 3}, stack_trace_limit=2, timestamp=1234.5)
    added = queue.add({"to": "ada"}, **opts)
    for job in (added, queue.get_job("mail-1")):
        assert job.id == "mail-1" and job.name == "mail" and job.data == {"to": "ada"}
        assert job.timestamp == 1234.5 and job.delay == 2.5
        for key, value in opts.items():
            assert job.opts[key] == value, key


def test_add_backoff_as_a_number_is_fixed(queue: localq.Queue) -> None:
    assert queue.add(backoff=2).opts["backoff"] == {"type": "fixed", "delay": 2.0}


def test_add_accepts_timedelta_durations(queue: localq.Queue) -> None:
    from datetime import timedelta
    job = queue.add(delay=timedelta(minutes=1))
    assert job.delay == 60 and job.get_state() == "delayed"


def test_add_emits_waiting_locally(queue: localq.Queue) -> None:
    seen: list[str] = []
    queue.on("waiting", seen.append)
    job = queue.add()
    queue.add(delay=1)  # delayed: not waiting
    assert seen == [job.id]


def test_default_job_options_apply_and_per_call_options_win(db_path: str,
                                                            clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock,
                      default_job_options={"attempts": 3, "priority": 7, "name": "dflt"}) as q:
        a = q.add()
        b = q.add(attempts=1, name="mine")
        assert (a.opts["attempts"], a.opts["priority"], a.name) == (3, 7, "dflt")
        assert (b.opts["attempts"], b.opts["priority"], b.name) == (1, 7, "mine")


def test_data_round_trips_as_json(queue: localq.Queue) -> None:
    values = [None, 0, -1.5, "é✓", [1, [2, {"a": None}]], {"nested": {"deep": [True, False]}},
              2**62]
    for value in values:
        job = queue.add(value)
        assert queue.get_job(job.id).data == ({} if value is None else value)


# -- add_bulk -------------------------------------------------------------------------------

def test_add_bulk_adds_all_in_order(queue: localq.Queue) -> None:
    jobs = queue.add_bulk([{"data": 1}, {"name": "n", "data": 2, "opts": {"delay": 1}},
                           {}, {"opts": {"job_id": "x"}}, {"opts": {"job_id": "x"}}])
    assert [j.id for j in jobs] == ["1", "2", "3", "x", "x"]
    assert [j.get_state() for j in jobs] == ["waiting", "delayed", "waiting", "waiting",
                                             "waiting"]
    assert jobs[1].name == "n" and jobs[2].data == {}
    assert queue.get_job_counts("waiting", "delayed") == {"waiting": 3, "delayed": 1}
    assert queue.add().id == "5"


@pytest.mark.parametrize("bad, error", [
    ({"data": {1, 2}}, localq.SerializationError),
    ({"data": float("nan")}, localq.SerializationError),
    ({"opts": {"priority": 0}}, localq.ConfigError),
    ({"opts": {"nope": 1}}, localq.ConfigError),
    ({"opts": {"repeat": {"every": 1}}}, localq.ConfigError),
    ({"extra": 1}, localq.ConfigError),
    ({"opts": "fast"}, localq.ConfigError),
    ("not a dict", localq.ConfigError),
])
def test_add_bulk_with_a_bad_entry_in_the_middle_stores_nothing(
        queue: localq.Queue, snapshot: Snap, bad: Any, error: type) -> None:
    queue.add()
    before = snapshot(queue)
    with pytest.raises(error):
        queue.add_bulk([{"data": 1}, {"data": 2}, bad, {"data": 4}])
    assert snapshot(queue) == before


def test_add_bulk_of_nothing_adds_nothing(queue: localq.Queue) -> None:
    assert queue.add_bulk([]) == []
    assert queue.count() == 0


# -- manual processing ----------------------------------------------------------------------

def test_get_next_job_locks_the_job_for_this_queue(queue: localq.Queue, clock: FakeClock) -> None:
    added = queue.add({"n": 1})
    job = take(queue)
    assert (job.id, job.data, job.get_state()) == (added.id, {"n": 1}, "active")
    assert job.processed_on == clock.now()
    assert queue.get_next_job() is None


def test_get_next_job_takes_a_due_delayed_job_with_no_scheduler(queue: localq.Queue,
                                                                clock: FakeClock) -> None:
    job = queue.add(delay=30)
    clock.advance(30)
    assert take(queue).id == job.id


def test_get_next_job_waits_up_to_its_timeout_for_a_job(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock) as q, \
            localq.Queue("q", path=db_path, clock=clock) as producer:
        assert q.get_next_job(timeout=0.05) is None
        timer = threading.Timer(0.05, lambda: producer.add("late"))
        timer.start()
        job = q.get_next_job(timeout=10)
        timer.join()
        assert job is not None and job.data == "late"


def test_move_to_completed_returns_the_next_job_locked(queue: localq.Queue) -> None:
    queue.add("a")
    queue.add("b")
    first = take(queue)
    assert first.move_to_completed("r1") == ("b", "2")
    nxt = queue.get_job("2")
    assert nxt.get_state() == "active"
    assert nxt.move_to_completed("r2") is None
    assert first.returnvalue == "r1" and first.get_state() == "completed"
    assert queue.get_job("1").returnvalue == "r1"


def test_move_to_completed_not_fetch_leaves_the_next_job_waiting(queue: localq.Queue) -> None:
    queue.add("a")
    queue.add("b")
    assert take(queue).move_to_completed(not_fetch=True) is None
    assert queue.get_job("2").get_state() == "waiting"


def test_move_to_completed_fetch_respects_pause(queue: localq.Queue) -> None:
    queue.add("a")
    queue.add("b")
    job = take(queue)
    queue.pause()
    assert job.move_to_completed() is None
    assert queue.get_job("2").get_state() == "paused"


def test_active_listener_may_use_the_queue_when_the_next_job_is_fetched(
        queue: localq.Queue) -> None:
    # The local "active" event of the job fetched by move_to_completed must fire after the
    # transaction, or a listener that reads the queue runs inside it.
    seen: list[Any] = []
    queue.on("active", lambda job: seen.append((job.id, queue.get_job_counts()["active"])))
    queue.add()
    queue.add()
    take(queue).move_to_completed()
    assert seen == [("1", 1), ("2", 1)]


def test_a_second_queue_instance_cannot_finish_a_job_it_did_not_take(
        db_path: str, clock: FakeClock, snapshot: Snap) -> None:
    with localq.Queue("q", path=db_path, clock=clock) as a, \
            localq.Queue("q", path=db_path, clock=clock) as b:
        a.add()
        held = take(a)
        other = b.get_job(held.id)
        before = snapshot(a)
        with pytest.raises(localq.LockError):
            other.move_to_completed("x")
        with pytest.raises(localq.LockError):
            other.move_to_failed("x")
        with pytest.raises(localq.LockError):
            other.progress(5)
        with pytest.raises(localq.LockError):
            other.remove()
        assert snapshot(a) == before
        # Any Job object of the instance that took it may finish it.
        a.get_job(held.id).move_to_completed("ok", not_fetch=True)
        assert held.get_state() == "completed"


def test_ignore_lock_completes_a_job_held_elsewhere(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock) as a, \
            localq.Queue("q", path=db_path, clock=clock) as b:
        a.add()
        held = take(a)
        b.get_job(held.id).move_to_completed("forced", ignore_lock=True, not_fetch=True)
        assert held.finished(timeout=1) == "forced"
        with pytest.raises(localq.LockError):
            held.move_to_completed("late")


def test_finishing_a_job_that_was_never_taken_is_a_lock_error(queue: localq.Queue) -> None:
    job = queue.add()
    with pytest.raises(localq.LockError, match="get_next_job"):
        job.move_to_completed()
    with pytest.raises(localq.InvalidJobState):
        job.move_to_completed(ignore_lock=True)
    assert job.get_state() == "waiting"


def test_a_non_json_result_leaves_the_job_active(queue: localq.Queue) -> None:
    queue.add()
    job = take(queue)
    with pytest.raises(localq.SerializationError):
        job.move_to_completed({1, 2})
    assert job.get_state() == "active"
    job.move_to_completed([1, 2], not_fetch=True)
    assert job.finished(timeout=1) == [1, 2]


# -- state and queries ----------------------------------------------------------------------

def test_get_state_derives_paused_and_stuck(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("q", path=db_path, clock=clock, settings={"lock_duration": 5}) as q:
        waiting = q.add()
        delayed = q.add(delay=100)
        active = q.add()
        assert [waiting.get_state(), delayed.get_state()] == ["waiting", "delayed"]
        take(q)
        take(q)
        assert active.get_state() == "active"
        q.pause()
        q.add()
        assert q.get_job("4").get_state() == "paused" and active.get_state() == "active"
        clock.advance(5.001)
        assert active.get_state() == "stuck"
        assert delayed.get_state() == "delayed"


def test_get_state_of_a_removed_job_is_none(queue: localq.Queue) -> None:
    job = queue.add()
    job.remove()
    assert job.get_state() is None
    assert not any([job.is_waiting(), job.is_active(), job.is_completed(), job.is_failed(),
                    job.is_delayed(), job.is_paused(), job.is_stuck()])


def test_get_jobs_ranges_are_inclusive_and_per_state(queue: localq.Queue,
                                                     clock: FakeClock) -> None:
    for i in range(5):
        queue.add(i)
    for i in range(3):
        queue.add(10 + i, delay=3 - i)   # due 3, 2, 1 s from now
    assert [j.data for j in queue.get_jobs("waiting", 0, 1, asc=True)] == [0, 1]
    assert [j.data for j in queue.get_jobs("waiting", 1, 3, asc=True)] == [1, 2, 3]
    assert [j.data for j in queue.get_jobs("waiting", 0, 1)] == [4, 3]
    assert [j.data for j in queue.get_jobs("waiting", 3, -1, asc=True)] == [3, 4]
    assert [j.data for j in queue.get_jobs("waiting", 0, -2, asc=True)] == [0, 1, 2, 3]
    assert [j.data for j in queue.get_jobs("waiting", 4, 2)] == []
    assert [j.data for j in queue.get_jobs("waiting", 9, 12)] == []
    # per state: the range applies to each state, results concatenated in the given order
    both = queue.get_jobs(["delayed", "waiting"], 0, 0, asc=True)
    assert [j.data for j in both] == [12, 0]
    assert [j.data for j in queue.get_jobs(["wait"], 0, 0, asc=True)] == [0]


def test_get_jobs_negative_start_counts_from_the_end(queue: localq.Queue) -> None:
    for i in range(5):
        queue.add(i)
    assert [j.data for j in queue.get_jobs("waiting", -2, -1, asc=True)] == [3, 4]
    assert [j.data for j in queue.get_jobs("waiting", -3, -2, asc=True)] == [2, 3]
    assert [j.data for j in queue.get_jobs("waiting", -9, 0, asc=True)] == [0]


def test_get_state_helpers_list_in_their_documented_order(queue: localq.Queue,
                                                          clock: FakeClock) -> None:
    queue.add("w1")
    queue.add("w2", priority=1)
    queue.add("d-late", delay=20)
    queue.add("d-soon", delay=10)
    for data in ("c1", "c2", "f1", "f2"):
        queue.add(data, priority=1)
    assert [j.data for j in queue.get_waiting()] == ["w2", "c1", "c2", "f1", "f2", "w1"]
    for _ in range(5):
        job = take(queue)
        clock.advance(1)
        if job.data.startswith("c"):
            job.move_to_completed(not_fetch=True)
        elif job.data.startswith("f"):
            job.move_to_failed("x")
    assert [j.data for j in queue.get_waiting()] == ["w1"]
    assert [j.data for j in queue.get_active()] == ["w2"]
    assert [j.data for j in queue.get_delayed()] == ["d-soon", "d-late"]
    assert [j.data for j in queue.get_completed()] == ["c2", "c1"]
    assert [j.data for j in queue.get_failed()] == ["f2", "f1"]
    assert [j.data for j in queue.get_completed(0, 0)] == ["c2"]
    queue.pause()
    assert [j.data for j in queue.get_waiting()] == ["w1"]
    assert [j.data for j in queue.get_jobs("paused")] == ["w1"]
    assert queue.get_jobs("waiting") == []


def test_get_job_counts_and_count(queue: localq.Queue) -> None:
    for _ in range(3):
        queue.add()
    queue.add(delay=5)
    take(queue).move_to_completed(not_fetch=True)
    take(queue)
    counts = queue.get_job_counts()
    assert counts == {"waiting": 1, "active": 1, "delayed": 1, "completed": 1, "failed": 0,
                      "paused": 0}
    assert queue.get_job_counts("completed", "wait") == {"completed": 1, "waiting": 1}
    assert queue.count() == 2
    queue.pause()
    assert queue.get_job_counts("waiting", "paused") == {"waiting": 0, "paused": 1}
    assert queue.count() == 2


def test_get_job_by_id_and_unknown_ids(queue: localq.Queue) -> None:
    job = queue.add(job_id="abc")
    assert queue.get_job("abc").id == job.id
    assert queue.get_job("nope") is None and queue.get_job("99") is None
    assert queue.add().id == "2"
    assert queue.get_job(2).id == "2"


@pytest.mark.parametrize("odd", ["01", "²", "٢", " 2", "2 ", "+2", "-1", "0", ""])
def test_get_job_with_an_id_that_only_looks_numeric_finds_nothing(queue: localq.Queue,
                                                                  odd: str) -> None:
    queue.add()
    queue.add()
    assert queue.get_job(odd) is None
    with pytest.raises(localq.JobNotFound):
        queue.get_job_logs(odd)


@pytest.mark.sqlite_only  # apsw statement tracing
def test_get_state_is_one_read(queue: localq.Queue) -> None:
    job = queue.add()
    conn = queue._store.connection()
    statements: list[str] = []

    def trace(cursor: Any, sql: str, bindings: Any) -> bool:
        statements.append(sql)
        return True

    conn.exec_trace = trace
    try:
        assert job.get_state() == "waiting"
    finally:
        conn.exec_trace = None
    assert len(statements) == 1 and statements[0].lstrip().startswith("SELECT")


def test_get_job_logs_pages(queue: localq.Queue) -> None:
    job = queue.add()
    for i in range(5):
        assert job.log(f"row {i}") == i + 1
    assert queue.get_job_logs(job.id) == {"logs": [f"row {i}" for i in range(5)], "count": 5}
    assert queue.get_job_logs(job.id, 1, 2) == {"logs": ["row 1", "row 2"], "count": 5}
    assert queue.get_job_logs(job.id, 0, 1, asc=False)["logs"] == ["row 4", "row 3"]
    assert queue.get_job_logs(job.id, 3)["logs"] == ["row 3", "row 4"]
    assert queue.get_job_logs(job.id, -2, -1)["logs"] == ["row 3", "row 4"]
    with pytest.raises(localq.JobNotFound):
        queue.get_job_logs("missing")


# -- events ---------------------------------------------------------------------------------

def test_local_events_on_off_once(queue: localq.Queue) -> None:
    seen: list[Any] = []

    def on_completed(job: localq.Job, result: Any) -> None:
        seen.append(("completed", job.id, result))

    queue.on("completed", on_completed)
    queue.once("active", lambda job: seen.append(("active-once", job.id)))
    queue.on("failed", lambda job, err: seen.append(("failed", job.id, str(err))))
    queue.on("progress", lambda job, p: seen.append(("progress", job.id, p)))
    queue.on("paused", lambda: seen.append(("paused",)))
    queue.on("resumed", lambda: seen.append(("resumed",)))
    queue.on("removed", lambda job: seen.append(("removed", job.id)))
    for _ in range(3):
        queue.add()
    job = take(queue)
    job.progress(50)
    job.move_to_completed("r", not_fetch=True)
    queue.off("completed", on_completed)
    take(queue).move_to_completed("r2", not_fetch=True)
    take(queue).move_to_failed(RuntimeError("bad"))
    queue.pause()
    queue.resume()
    queue.get_job("3").remove()
    assert seen == [("active-once", "1"), ("progress", "1", 50), ("completed", "1", "r"),
                    ("failed", "3", "bad"), ("paused",), ("resumed",), ("removed", "3")]


def test_a_raising_listener_is_logged_not_raised(queue: localq.Queue,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def broken(job_id: str) -> None:
        raise RuntimeError("listener bug")

    queue.on("waiting", broken)
    job = queue.add()
    assert job.get_state() == "waiting"
    assert "listener" in caplog.text


def test_global_events_from_another_instance_arrive_in_order(db_path: str,
                                                             clock: FakeClock) -> None:
    got: list[Any] = []
    done = threading.Event()
    with localq.Queue("q", path=db_path, clock=clock) as listener, \
            localq.Queue("q", path=db_path, clock=clock) as actor, \
            localq.Queue("other", path=db_path, clock=clock) as stranger:
        for name in ("waiting", "active", "progress", "completed", "failed", "delayed",
                     "removed", "paused", "resumed"):
            listener.on(f"global:{name}", lambda *a, n=name: got.append((n, *a)))
        listener.on("global:resumed", lambda: done.set())
        stranger.add()  # another queue's events are not delivered
        actor.add("a")
        job = take(actor)
        job.progress({"pct": 10})
        job.move_to_completed({"ok": 1}, not_fetch=True)
        actor.add("b", attempts=2, backoff=5)
        take(actor).move_to_failed("nope")
        actor.get_job("3").remove()
        actor.pause()
        actor.resume()
        assert done.wait(10), got
    run_at = clock.now() + 5
    assert got == [("waiting", "2"), ("active", "2"), ("progress", "2", {"pct": 10}),
                   ("completed", "2", {"ok": 1}), ("waiting", "3"), ("active", "3"),
                   ("failed", "3", "nope"), ("delayed", "3", run_at), ("removed", "3"),
                   ("paused",), ("resumed",)]


def test_unknown_events_and_bad_callbacks_are_config_errors(queue: localq.Queue) -> None:
    with pytest.raises(localq.ConfigError, match="unknown event"):
        queue.on("complete", print)
    with pytest.raises(localq.ConfigError):
        queue.on("global:error", print)
    with pytest.raises(localq.ConfigError, match="callable"):
        queue.on("completed", "print")  # type: ignore[arg-type]
    queue.off("completed", print)  # never registered: fine


# -- lifecycle ------------------------------------------------------------------------------

def test_close_is_idempotent_and_the_context_manager_closes(db_path: str) -> None:
    with localq.Queue("q", path=db_path) as q:
        q.add()
        q.on("global:waiting", lambda job_id: None)
    q.close()
    q.close()
    with pytest.raises(localq.LocalqError, match="closed"):
        q.add()


def test_queues_of_one_file_are_independent(db_path: str, clock: FakeClock) -> None:
    with localq.Queue("a", path=db_path, clock=clock) as a, \
            localq.Queue("b", path=db_path, clock=clock) as b:
        a.add()
        a.pause()
        b.add()
        assert not b.is_paused()
        assert b.get_job_counts("waiting") == {"waiting": 1}
        assert take(b).id == "2"
        assert a.get_next_job() is None


def test_path_defaults_to_localq_path_env(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALQ_PATH", db_path)
    with localq.Queue("q") as q:
        assert q.path == db_path  # the test server's URL has no password to hide
        job = q.add({"n": 1})
    with localq.Queue("q", path=db_path) as q:
        assert q.get_job(job.id) is not None


@pytest.mark.sqlite_only  # the default is a file in the working directory
def test_path_defaults_to_localq_db_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALQ_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    with localq.Queue("q") as q:
        assert q.path == str(tmp_path / "localq.db")


@pytest.mark.sqlite_only  # a PathLike is a file; a PostgreSQL URL is a str
def test_path_may_be_a_pathlike(tmp_path: Path) -> None:
    with localq.Queue("q", path=tmp_path / "p.db") as q:
        assert q.add().get_state() == "waiting"


@pytest.mark.sqlite_only  # the pytest plugin's fixture is a file under tmp_path (README)
def test_the_localq_queue_fixture_gives_a_fresh_queue_with_a_fake_clock(
        localq_queue: localq.Queue) -> None:
    assert localq_queue.count() == 0
    job = localq_queue.add(delay=60)
    localq_queue.clock.advance(60)  # type: ignore[attr-defined]
    assert take(localq_queue).id == job.id
