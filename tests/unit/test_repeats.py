"""Repeatable jobs through the database (localq.repeats): schedules, occurrences, removal.

Driven by FakeClock and run_until_idle / get_next_job: no sleeps. DST instants are written
out by hand in UTC (tz database, 2024): Europe/Paris springs forward at 2024-03-31 01:00Z;
America/New_York falls back at 2024-11-03 06:00Z (02:00 EDT -> 01:00 EST).
"""

from __future__ import annotations

import itertools
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import localq
from localq import transitions
from localq.repeats import create_due
from localq.testing import FakeClock, run_until_idle

import databases

T0 = 1767225600.0  # the clock fixture's start: 2026-01-01T00:00:00Z
#: Queue names of the property tests' examples, which share one database.
EXAMPLES = itertools.count()
UTC = timezone.utc


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Epoch seconds of a UTC date written out by hand."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def slot_of(job: localq.Job) -> int:
    """The slot (epoch ms) encoded in an occurrence's id."""
    return int(job.id.rsplit(":", 1)[1])


def occurrences(q: localq.Queue) -> list[localq.Job]:
    """Every job of the queue, oldest slot first."""
    jobs = q.get_jobs(["waiting", "delayed", "active", "completed", "failed"])
    return sorted(jobs, key=slot_of)


def ran(q: localq.Queue) -> list[int]:
    """Run what is runnable now; return the repeat counts of the occurrences that ran."""
    counts: list[int] = []
    run_until_idle(q, lambda job: counts.append(job.opts["repeat"]["count"]))
    return counts


@pytest.fixture
def make_queue(db_path: str) -> Iterator[Any]:
    """Open more queues (same file by default); all are closed at the end."""
    opened: list[localq.Queue] = []

    def make(clock: FakeClock, *, name: str = "q", path: str = db_path,
             **kwargs: Any) -> localq.Queue:
        q = localq.Queue(name, path=path, clock=clock, **kwargs)
        opened.append(q)
        return q

    yield make
    for q in opened:
        q.close()


# -- add ----------------------------------------------------------------------------------

def test_add_creates_the_next_occurrence_as_a_delayed_job(queue: localq.Queue) -> None:
    job = queue.add({"n": 1}, name="tick", repeat={"every": 60})
    assert job.get_state() == "delayed"
    assert job.name == "tick" and job.data == {"n": 1}
    assert job.delay == 60.0 and slot_of(job) == (T0 + 60) * 1000
    key = job.opts["repeat"]["key"]
    assert job.opts["repeat"]["count"] == 1 and job.opts["repeat"]["every"] == 60.0
    assert job.id == transitions.occurrence_id(key, slot_of(job))
    assert job.id.startswith("repeat:")
    assert [j.id for j in queue.get_delayed()] == [job.id]


def test_every_slots_are_multiples_of_the_period_since_the_epoch(
        queue: localq.Queue, clock: FakeClock) -> None:
    clock.advance(7.5)
    job = queue.add(repeat={"every": 10})
    assert slot_of(job) == (T0 + 10) * 1000
    assert job.delay == pytest.approx(2.5)


def test_adding_the_same_schedule_twice_is_a_no_op(queue: localq.Queue) -> None:
    first = queue.add({"v": 1}, name="report", repeat={"cron": "0 * * * *", "tz": "UTC"})
    again = queue.add({"v": 2}, name="report", repeat={"cron": "0 * * * *", "tz": "UTC"})
    assert again.id == first.id
    assert again.data == {"v": 1}  # the stored schedule is kept as it is
    assert len(queue.get_repeatable_jobs()) == 1
    assert queue.get_job_counts("delayed") == {"delayed": 1}


def test_other_names_or_options_are_other_schedules(queue: localq.Queue) -> None:
    queue.add(name="a", repeat={"every": 60})
    queue.add(name="b", repeat={"every": 60})
    queue.add(name="a", repeat={"every": 120})
    queue.add(name="a", repeat={"every": 60, "limit": 2})
    queue.add(name="a", repeat={"every": 60, "job_id": "x"})
    assert len(queue.get_repeatable_jobs()) == 5
    assert len({j.id for j in queue.get_delayed()}) == 5


def test_occurrence_ids_depend_only_on_the_schedule_and_the_slot(
        tmp_path: Path, make_queue: Any) -> None:
    clock = FakeClock(T0)
    a = make_queue(clock)  # on each backend in turn ...
    b = make_queue(clock, path=str(tmp_path / "b.db"))  # ... against a file of its own
    opts = {"cron": "*/5 * * * *", "tz": "Europe/Paris"}
    assert a.add(name="x", repeat=opts).id == b.add(name="x", repeat=opts).id
    assert a.add(name="y", repeat=opts).id != a.add(name="x", repeat=opts).id


def test_top_level_job_id_is_the_schedule_job_id(queue: localq.Queue) -> None:
    job = queue.add(job_id="nightly", repeat={"every": 60})
    assert job.opts["repeat"]["job_id"] == "nightly"
    assert job.id.startswith("repeat:")  # the occurrence has its own id
    assert queue.add(repeat={"every": 60, "job_id": "nightly"}).id == job.id
    assert queue.remove_repeatable({"every": 60, "job_id": "nightly"}) is True
    assert queue.get_repeatable_jobs() == []


@pytest.mark.parametrize("options", [
    {"repeat": {"every": 60, "cron": "* * * * *"}},
    {"repeat": {"every": 0}},
    {"repeat": {"cron": "61 * * * *"}},
    {"repeat": {"cron": "* * * * *", "tz": "Mars/Olympus"}},
    {"repeat": {"every": 60, "end_date": T0 - 1}},
    {"repeat": {"every": 3600, "end_date": T0 + 10}},  # no slot before the end
    {"repeat": {"every": 60}, "delay": 5},
    {"repeat": {"every": 60}, "timestamp": T0},
    {"repeat": {"every": 60, "job_id": "a"}, "job_id": "b"},
    {"repeat": {"every": 60, "bogus": 1}},
])
def test_bad_repeat_options_are_config_errors_and_store_nothing(
        queue: localq.Queue, options: dict[str, Any]) -> None:
    with pytest.raises(localq.ConfigError):
        queue.add({}, **options)
    assert queue.get_repeatable_jobs() == []
    assert queue.count() == 0


def test_repeat_is_refused_in_add_bulk(queue: localq.Queue) -> None:
    with pytest.raises(localq.ConfigError, match="add_bulk"):
        queue.add_bulk([{"data": {}, "opts": {"repeat": {"every": 1}}}])


# -- occurrences --------------------------------------------------------------------------

def test_one_occurrence_runs_per_slot(queue: localq.Queue, clock: FakeClock) -> None:
    queue.add(repeat={"every": 10})
    assert ran(queue) == []  # nothing is due yet
    for n in range(1, 6):
        clock.advance(10)
        assert ran(queue) == [n]
    slots = [slot_of(j) for j in occurrences(queue)]
    assert slots == [(T0 + 10 * n) * 1000 for n in range(1, 7)]
    assert [j.get_state() for j in occurrences(queue)] == ["completed"] * 5 + ["delayed"]


def test_slots_missed_while_nothing_ran_are_skipped(queue: localq.Queue,
                                                    clock: FakeClock) -> None:
    first = queue.add(repeat={"every": 10})
    clock.advance(10 * 1000 + 3)  # a thousand periods with nothing running
    assert ran(queue) == [1]  # the one pending occurrence runs, once
    jobs = occurrences(queue)
    assert [j.id for j in jobs][0] == first.id and len(jobs) == 2
    pending = jobs[1]
    assert pending.get_state() == "delayed" and pending.opts["repeat"]["count"] == 2
    assert slot_of(pending) == (T0 + 10 * 1001) * 1000  # the next slot after now
    assert create_due(queue) == []  # nothing more is due


def test_occurrences_are_ordinary_jobs_with_the_other_options(
        queue: localq.Queue, clock: FakeClock) -> None:
    queue.add({"x": 1}, repeat={"every": 10}, attempts=2, backoff=5, priority=3,
              remove_on_complete=True)
    calls: list[int] = []

    def flaky(job: localq.Job) -> str:
        calls.append(job.attempts_made)
        if job.attempts_made == 0:
            raise RuntimeError("first attempt fails")
        return "ok"

    clock.advance(10)
    assert run_until_idle(queue, flaky) == 1
    failed_once = occurrences(queue)[0]
    assert failed_once.get_state() == "delayed" and failed_once.attempts_made == 1
    assert failed_once.opts["attempts"] == 2
    assert queue._store.query("SELECT DISTINCT priority FROM jobs") == [(3,)]
    clock.advance(5)
    assert run_until_idle(queue, flaky) == 1
    assert calls == [0, 1]
    assert queue.get_job(failed_once.id) is None  # remove_on_complete applied
    assert [j.opts["repeat"]["count"] for j in queue.get_delayed()] == [2]


def test_cron_with_tz_follows_the_wall_clock_across_spring_forward(make_queue: Any) -> None:
    clock = FakeClock(at(2024, 3, 29, 12))
    q = make_queue(clock)
    q.add(repeat={"cron": "30 2 * * *", "tz": "Europe/Paris"})
    expected = [at(2024, 3, 30, 1, 30),  # 02:30 CET
                at(2024, 3, 31, 1, 0),   # 02:30 does not exist: moved to 03:00 CEST
                at(2024, 4, 1, 0, 30)]   # 02:30 CEST
    for n, when in enumerate(expected, start=1):
        assert slot_of(q.get_delayed()[0]) == when * 1000
        clock.set(when)
        assert ran(q) == [n]


def test_cron_with_tz_runs_a_repeated_wall_time_once_at_fall_back(make_queue: Any) -> None:
    clock = FakeClock(at(2024, 11, 2, 12))
    q = make_queue(clock)
    q.add(repeat={"cron": "30 1 * * *", "tz": "America/New_York"})
    expected = [at(2024, 11, 3, 5, 30),  # 01:30 EDT; 01:30 EST an hour later is skipped
                at(2024, 11, 4, 6, 30)]  # 01:30 EST
    for n, when in enumerate(expected, start=1):
        assert slot_of(q.get_delayed()[0]) == when * 1000
        clock.set(when + 3600.5)  # past the repeated hour
        assert ran(q) == [n]


def test_cron_without_tz_records_the_local_zone(queue: localq.Queue,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    queue.add(repeat={"cron": "0 9 * * *"})
    (schedule,) = queue.get_repeatable_jobs()
    assert schedule["tz"] == "Asia/Tokyo"
    assert schedule["next"] == at(2026, 1, 2, 0)  # 09:00 in Tokyo is 00:00Z


def test_limit_caps_the_number_of_occurrences(queue: localq.Queue, clock: FakeClock) -> None:
    first = queue.add(repeat={"every": 10, "limit": 3})
    seen = []
    for _ in range(6):
        clock.advance(10)
        seen += ran(queue)
    assert seen == [1, 2, 3]
    (schedule,) = queue.get_repeatable_jobs()
    assert schedule["count"] == 3 and schedule["next"] is None
    assert schedule["next_job_id"] is None
    assert queue.get_delayed() == []
    # Adding it again starts nothing: it returns the last occurrence.
    last = queue.add(repeat={"every": 10, "limit": 3})
    assert last.opts["repeat"]["count"] == 3 and last.get_state() == "completed"
    assert last.id != first.id and len(occurrences(queue)) == 3


def test_limit_one_runs_once(queue: localq.Queue, clock: FakeClock) -> None:
    queue.add(repeat={"cron": "* * * * *", "tz": "UTC", "limit": 1})
    clock.advance(3600)
    assert ran(queue) == [1]
    clock.advance(3600)
    assert ran(queue) == []


def test_start_date_delays_the_first_slot(queue: localq.Queue, clock: FakeClock) -> None:
    every = queue.add(name="every", repeat={"every": 60, "start_date": T0 + 3600 + 30})
    assert slot_of(every) == (T0 + 3660) * 1000  # aligned, and not before the start
    start = datetime(2026, 1, 2, tzinfo=UTC)
    cron = queue.add(name="cron", repeat={"cron": "*/15 * * * *", "tz": "UTC",
                                          "start_date": start})
    assert slot_of(cron) == at(2026, 1, 2) * 1000
    clock.set(T0 + 3660)
    assert ran(queue) == [1]
    assert slot_of(queue.get_delayed()[0]) == (T0 + 3720) * 1000


def test_end_date_ends_the_schedule(queue: localq.Queue, clock: FakeClock) -> None:
    queue.add(repeat={"every": 60, "end_date": T0 + 150})
    seen = []
    for _ in range(5):
        clock.advance(60)
        seen += ran(queue)
    assert seen == [1, 2]  # slots T0+60 and T0+120; T0+180 is after the end
    (schedule,) = queue.get_repeatable_jobs()
    assert schedule["next"] is None and schedule["end_date"] == T0 + 150


def test_claiming_an_occurrence_creates_the_next_without_a_scheduler(
        queue: localq.Queue, clock: FakeClock) -> None:
    queue.add(repeat={"every": 10})
    clock.advance(25)
    job = queue.get_next_job()  # no _scheduler_tick: the claim advances the schedule
    assert job is not None and job.opts["repeat"]["count"] == 1
    (pending,) = queue.get_delayed()
    assert pending.opts["repeat"]["count"] == 2 and slot_of(pending) == (T0 + 30) * 1000
    job.move_to_completed("done", not_fetch=True)


def test_adding_again_returns_the_occurrence_that_waits_to_start(
        queue: localq.Queue, clock: FakeClock) -> None:
    first = queue.add(repeat={"every": 10})
    clock.advance(15)
    assert queue.add(repeat={"every": 10}).id == first.id  # due, not started: still pending
    assert len(occurrences(queue)) == 1
    first.promote()
    job = queue.get_next_job()
    assert job is not None and job.id == first.id
    again = queue.add(repeat={"every": 10})  # the claim created the next one
    assert again.get_state() == "delayed" and slot_of(again) == (T0 + 20) * 1000


def test_a_paused_queue_piles_up_no_occurrences(queue: localq.Queue,
                                                clock: FakeClock) -> None:
    first = queue.add(repeat={"every": 10})
    queue.pause()
    for _ in range(100):
        clock.advance(10)
        assert create_due(queue) == []  # the pending one has not started: none other
    assert [j.id for j in occurrences(queue)] == [first.id]
    (schedule,) = queue.get_repeatable_jobs()
    assert schedule["next"] == T0 + 10 and schedule["next_job_id"] == first.id
    next_look = queue._store.query("SELECT next_ms FROM repeats")[0][0]
    assert next_look == (T0 + 1010) * 1000  # the scheduler sleeps until the next slot
    queue.resume()
    assert ran(queue) == [1]  # once, then the schedule goes on from the next slot
    clock.advance(10)
    assert ran(queue) == [2]


def test_an_occurrence_started_early_lets_the_scheduler_create_the_next(
        queue: localq.Queue, clock: FakeClock) -> None:
    first = queue.add(repeat={"every": 10})
    first.promote()
    assert ran(queue) == [1]  # before its slot: nothing else is due
    assert len(occurrences(queue)) == 1
    clock.advance(10)
    (created,) = create_due(queue)
    assert created.opts["repeat"]["count"] == 2 and slot_of(created) == (T0 + 20) * 1000


def test_empty_leaves_schedules_and_a_slot_is_never_created_twice(
        queue: localq.Queue, clock: FakeClock) -> None:
    first = queue.add(repeat={"every": 10})
    assert queue.empty() == 1
    assert len(queue.get_repeatable_jobs()) == 1
    again = queue.add(repeat={"every": 10})  # the pending one is gone: the next slot instead
    assert slot_of(again) == slot_of(first) + 10_000
    clock.advance(20)
    assert ran(queue) == [2]
    assert queue.get_job(first.id) is None


def test_scheduler_goes_on_after_its_pending_occurrence_was_removed(
        queue: localq.Queue, clock: FakeClock) -> None:
    first = queue.add(repeat={"every": 10})
    first.remove()
    clock.advance(10)
    assert ran(queue) == []  # that slot's job is gone; the next one is created
    clock.advance(10)
    assert ran(queue) == [2]


def test_obliterate_removes_schedules(queue: localq.Queue) -> None:
    queue.add(repeat={"every": 10})
    queue.obliterate()
    assert queue.get_repeatable_jobs() == [] and queue.count() == 0


def test_occurrences_emit_global_delayed_events(queue: localq.Queue) -> None:
    job = queue.add(repeat={"every": 10})
    rows = queue._store.query("SELECT event, job_id, data FROM events WHERE queue = 'q'")
    assert rows == [("delayed", job.id, str((T0 + 10)))]


# -- get_repeatable_jobs ------------------------------------------------------------------

def test_get_repeatable_jobs_describes_each_schedule(queue: localq.Queue) -> None:
    queue.add(name="hourly", repeat={"cron": "0 * * * *", "tz": "Europe/Paris",
                                     "end_date": T0 + 86400, "job_id": "h"})
    queue.add(name="fast", repeat={"every": 1.5, "limit": 10})
    fast, hourly = queue.get_repeatable_jobs()  # soonest first
    assert fast == {
        "key": "fast::::1500::10", "name": "fast", "cron": None, "every": 1.5, "tz": None,
        "limit": 10, "start_date": None, "end_date": None, "job_id": None,
        "next": T0 + 1.5, "count": 1,
        "next_job_id": transitions.occurrence_id("fast::::1500::10", int((T0 + 1.5) * 1000)),
    }
    assert hourly["cron"] == "0 * * * *" and hourly["every"] is None
    assert hourly["tz"] == "Europe/Paris" and hourly["job_id"] == "h"
    assert hourly["next"] == T0 + 3600 and hourly["end_date"] == T0 + 86400
    assert hourly["key"] == f"hourly:h:{int((T0 + 86400) * 1000)}:Europe/Paris:0 * * * *"
    assert queue.get_job(hourly["next_job_id"]) is not None


# -- removal ------------------------------------------------------------------------------

def test_remove_repeatable_removes_the_pending_occurrence(queue: localq.Queue,
                                                          clock: FakeClock) -> None:
    removed: list[str] = []
    queue.on("removed", lambda job: removed.append(job.id))
    job = queue.add(name="n", repeat={"every": 10})
    assert queue.remove_repeatable({"every": 10}, name="n") is True
    assert removed == [job.id]
    assert queue.get_job(job.id) is None and queue.get_repeatable_jobs() == []
    clock.advance(1000)
    assert ran(queue) == []
    assert queue.remove_repeatable({"every": 10}, name="n") is False


def test_remove_repeatable_defaults_to_the_queue_default_name(make_queue: Any) -> None:
    q = make_queue(FakeClock(T0), default_job_options={"name": "beat"})
    q.add(repeat={"every": 10})
    assert q.remove_repeatable({"every": 10, "tz": None}) is True


def test_remove_repeatable_by_key_also_removes_a_waiting_occurrence_and_a_retry(
        queue: localq.Queue, clock: FakeClock) -> None:
    queue.add(repeat={"every": 10}, attempts=3, backoff=100)
    clock.advance(10)

    def fail(job: localq.Job) -> None:
        raise RuntimeError("boom")

    assert run_until_idle(queue, fail) == 1  # now a retry waits for its backoff
    clock.advance(10)
    occurrences(queue)[1].promote()  # slot 2 waits to run
    states = [j.get_state() for j in occurrences(queue)]
    assert states == ["delayed", "waiting"]
    key = queue.get_repeatable_jobs()[0]["key"]
    assert queue.remove_repeatable_by_key(key) is True
    assert occurrences(queue) == []
    clock.advance(1000)
    assert ran(queue) == []


def test_an_active_occurrence_finishes_but_is_not_retried_after_removal(
        queue: localq.Queue, clock: FakeClock) -> None:
    queue.add(repeat={"every": 10}, attempts=3)
    clock.advance(10)
    job = queue.get_next_job()
    assert job is not None
    assert queue.remove_repeatable({"every": 10}) is True
    assert queue.get_job(job.id) is not None  # the running one is left alone
    job.move_to_failed(RuntimeError("boom"))
    assert job.get_state() == "failed"  # attempts remained, but no run after removal
    assert ran(queue) == []


def test_a_stalled_occurrence_is_not_run_again_after_removal(queue: localq.Queue,
                                                             clock: FakeClock) -> None:
    queue.add(repeat={"every": 10})
    clock.advance(10)
    job = queue.get_next_job()
    assert job is not None
    queue.remove_repeatable({"every": 10})
    clock.advance(queue.settings.lock_duration + 1)
    assert queue._recover_stalled() == [(job.id, "failed")]
    failed = queue.get_job(job.id)
    assert failed is not None and failed.failed_reason == transitions.REMOVED_SCHEDULE_REASON
    assert ran(queue) == []


def test_a_schedule_added_again_after_removal_runs_again(queue: localq.Queue,
                                                         clock: FakeClock) -> None:
    queue.add(repeat={"every": 10})
    queue.remove_repeatable({"every": 10})
    job = queue.add(repeat={"every": 10})
    assert job.get_state() == "delayed" and job.opts["repeat"]["count"] == 1
    clock.advance(10)
    assert ran(queue) == [1]


def test_remove_repeatable_checks_its_arguments(queue: localq.Queue) -> None:
    with pytest.raises(localq.ConfigError):
        queue.remove_repeatable({"every": 10, "cron": "* * * * *"})
    with pytest.raises(localq.ConfigError):
        queue.remove_repeatable_by_key(42)  # type: ignore[arg-type]
    with pytest.raises(localq.ConfigError):
        queue.remove_repeatable({"every": 10}, name="")


def test_a_schedule_past_its_end_date_is_still_removable(queue: localq.Queue,
                                                         clock: FakeClock) -> None:
    queue.add(repeat={"every": 10, "end_date": T0 + 25})
    clock.advance(100)
    assert queue.remove_repeatable({"every": 10, "end_date": T0 + 25}) is True


# -- several schedulers -------------------------------------------------------------------

def check_one_job_per_slot(q: localq.Queue) -> list[int]:
    """Assert the schedule's occurrences are 1..n, one per slot, slots increasing."""
    jobs = occurrences(q)
    counts = [j.opts["repeat"]["count"] for j in jobs]
    assert counts == list(range(1, len(jobs) + 1))
    slots = [slot_of(j) for j in jobs]
    assert slots == sorted(set(slots))
    (schedule,) = q.get_repeatable_jobs()
    assert schedule["count"] == len(jobs)
    return slots


def start_early(q: localq.Queue) -> None:
    """Run the pending occurrences now, before their slots (so the claims create nothing)."""
    for job in q.get_delayed():
        job.promote()
    while (job := q.get_next_job()) is not None:
        job.move_to_completed(None, not_fetch=True)


def test_two_schedulers_interleaved_create_one_job_per_slot(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q1, q2 = make_queue(clock), make_queue(clock)
    q1.add(repeat={"every": 10})
    for step in range(30):
        start_early(q1)
        clock.advance(10)
        first, second = (q1, q2) if step % 2 else (q2, q1)
        assert len(create_due(first)) == 1
        assert create_due(second) == []
    slots = check_one_job_per_slot(q1)
    assert len(slots) == 31


def test_a_scheduler_with_an_older_clock_creates_nothing_after_a_newer_one(
        make_queue: Any) -> None:
    ahead, behind = FakeClock(T0), FakeClock(T0)
    q_ahead, q_behind = make_queue(ahead), make_queue(behind)
    q_ahead.add(repeat={"every": 10})
    start_early(q_ahead)
    ahead.advance(25)
    behind.advance(12)  # read the time before the other scheduler committed
    assert len(create_due(q_ahead)) == 1
    assert create_due(q_behind) == []
    assert check_one_job_per_slot(q_ahead) == [(T0 + 10) * 1000, (T0 + 30) * 1000]


def test_two_schedulers_in_threads_create_one_job_per_slot(make_queue: Any) -> None:
    clock = FakeClock(T0)
    queues = [make_queue(clock) for _ in range(2)]
    queues[0].add(repeat={"every": 10})
    queues[0].add(name="b", repeat={"cron": "* * * * *", "tz": "UTC"})
    created: list[str] = []
    for _ in range(40):
        start_early(queues[1])
        clock.advance(20)
        barrier = threading.Barrier(2)

        def tick(q: localq.Queue) -> None:
            barrier.wait()
            created.extend(j.id for j in create_due(q))

        threads = [threading.Thread(target=tick, args=(q,)) for q in queues]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(created) == len(set(created)) == 40 + 13  # every 20 s: 40 slots, 13 minutes
    jobs = queues[0].get_jobs(["delayed", "completed"])
    for schedule in queues[0].get_repeatable_jobs():
        prefix = schedule["next_job_id"].rsplit(":", 1)[0] + ":"
        mine = sorted(slot_of(j) for j in jobs if j.id.startswith(prefix))
        assert len(mine) == len(set(mine)) == schedule["count"]
        assert mine[-1] == schedule["next"] * 1000


def test_schedule_invariants_hold_under_any_interleaving(backend: str, db_path: str) -> None:
    # PostgreSQL round trips: fewer examples there (SQLite gets the many).
    @settings(max_examples=40 if backend == "sqlite" else 15)
    @given(st.lists(st.tuples(st.sampled_from(["advance", "tick1", "tick2", "run", "add"]),
                              st.floats(min_value=0, max_value=95)), max_size=30))
    def check(steps: list[tuple[str, float]]) -> None:
        clock = FakeClock(T0)
        # One database for every example (a fresh schema each would cost more than the example):
        # a queue of its own per example keeps them apart. No wakeup is awaited, so no
        # listening thread (polling): its close costs up to 0.5 s per example.
        name = f"q{next(EXAMPLES)}"
        with localq.Queue(name, path=databases.polling(db_path), clock=clock) as q1, \
                localq.Queue(name, path=databases.polling(db_path), clock=clock) as q2:
            q1.add(repeat={"every": 7, "limit": 12})
            for op, amount in steps:
                if op == "advance":
                    clock.advance(amount)
                elif op == "tick1":
                    create_due(q1)
                elif op == "tick2":
                    create_due(q2)
                elif op == "run":
                    run_until_idle(q2, lambda job: None)
                else:
                    q2.add(repeat={"every": 7, "limit": 12})
                jobs = occurrences(q1)
                assert len(jobs) <= 12
                slots = check_one_job_per_slot(q1)
                assert all(s % 7000 == 0 for s in slots)
                # Each occurrence was created for a slot after the previous one's creation time.
                assert all(j.timestamp * 1000 < slot_of(j) for j in jobs)
                future = [j for j in jobs if slot_of(j) > clock.now() * 1000]
                assert len(future) <= 1
                unstarted = [j for j in jobs if j.processed_on is None]
                assert len(unstarted) <= 1  # missed slots are skipped, not piled up

    check()
