"""The rate limiter (localq.limiter): a sliding window of starts, counted in the claim.

Driven by FakeClock: times are exact, so windows are checked to the millisecond.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import localq
from localq.testing import FakeClock

import databases

T0 = 1767225600.0
#: Queue names of the property tests' examples, which share one database.
EXAMPLES = itertools.count()


@pytest.fixture
def make_queue(db_path: str) -> Iterator[Any]:
    """Open queues on db_path with a limiter; all are closed at the end."""
    opened: list[localq.Queue] = []

    def make(clock: FakeClock, limiter: dict[str, Any] | None, name: str = "q") -> localq.Queue:
        q = localq.Queue(name, path=db_path, clock=clock, limiter=limiter)
        opened.append(q)
        return q

    yield make
    for q in opened:
        q.close()


def start_all(q: localq.Queue) -> list[localq.Job]:
    """Take and complete every job the limiter lets start now; return them in start order."""
    started = []
    while (job := q.get_next_job()) is not None:
        started.append(job)
        job.move_to_completed(None, not_fetch=True)
    return started


def start_ms(job: localq.Job) -> int:
    assert job.processed_on is not None
    return round(job.processed_on * 1000)


def assert_no_window_exceeds(starts_ms: list[int], limit: int, duration_ms: int) -> None:
    """No half-open window [x, x + duration) holds more than *limit* starts."""
    ordered = sorted(starts_ms)
    for i in range(len(ordered) - limit):
        assert ordered[i + limit] - ordered[i] >= duration_ms, (i, ordered)


def test_at_most_max_jobs_start_in_any_window(backend: str, db_path: str) -> None:
    # A claim on PostgreSQL is several round trips: fewer examples there (its limiter SQL
    # has the shape of SQLite's, which gets the many examples).
    @settings(max_examples=60 if backend == "sqlite" else 15)
    @given(limit=st.integers(1, 4), duration=st.sampled_from([0.5, 1.0, 2.5]),
           steps=st.lists(st.floats(min_value=0, max_value=1.5), min_size=1, max_size=40))
    def check(limit: int, duration: float, steps: list[float]) -> None:
        clock = FakeClock(T0)
        # One database for every example (a fresh schema each would cost more than the example):
        # a queue of its own per example keeps them apart, limiter windows included. No wakeup
        # is awaited, so no listening thread (polling): its close costs up to 0.5 s per example.
        with localq.Queue(f"q{next(EXAMPLES)}", path=databases.polling(db_path), clock=clock,
                          limiter={"max": limit, "duration": duration}) as q:
            q.add_bulk([{"data": {"i": i}} for i in range(30)])
            starts: list[int] = []
            for step in steps:
                clock.advance(step)
                starts += [start_ms(j) for j in start_all(q)]
                # Truncated, as the queue reads its clock (round() saw a start 0.5 ms early).
                now_ms = int(clock.now() * 1000)
                in_window = [s for s in starts if s > now_ms - duration * 1000]
                # Never idle while there is room: a waiting job starts as soon as it may.
                assert len(in_window) == limit or q.get_job_counts("waiting")["waiting"] == 0
            assert_no_window_exceeds(starts, limit, int(duration * 1000))

    check()


def test_the_window_slides_rather_than_restarting(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 2, "duration": 10})
    q.add_bulk([{"data": {"i": i}} for i in range(5)])
    assert len(start_all(q)) == 2  # at T0
    clock.advance(9)
    assert start_all(q) == []
    clock.advance(1)  # both starts of T0 leave the window at T0 + 10
    assert len(start_all(q)) == 2
    clock.advance(5)  # a fixed window restarted at T0 + 10 would still be full; so is ours
    assert start_all(q) == []
    clock.advance(5)
    assert len(start_all(q)) == 1  # the last job


def test_a_start_frees_its_slot_exactly_one_duration_later(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 2, "duration": 10})
    q.add({})
    assert len(start_all(q)) == 1
    clock.advance(9)
    q.add_bulk([{"data": {"i": i}} for i in range(3)])
    assert len(start_all(q)) == 1  # starts at T0 and T0 + 9
    clock.advance(0.999)
    assert start_all(q) == []
    clock.advance(0.001)
    assert len(start_all(q)) == 1  # T0 left the window; T0 + 9 is still in it
    assert start_all(q) == []


def test_limited_jobs_stay_waiting_in_order_and_none_is_dropped(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 2, "duration": 1})
    for i in range(6):
        q.add({"i": i})
    q.add({"i": "urgent"}, priority=1)
    q.add({"i": "last-in"}, lifo=True)
    expected = [j.id for j in q.get_waiting()]
    started = start_all(q)
    limited = q.get_jobs(["waiting"], asc=True)
    assert len(started) == 2 and len(limited) == 6
    assert {j.get_state() for j in limited} == {"waiting"}  # not delayed, not dropped
    order = [j.id for j in started]
    while len(order) < len(expected):
        clock.advance(1)
        order += [j.id for j in start_all(q)]
    assert order == expected
    assert q.get_job_counts("completed", "waiting", "delayed") == {
        "completed": 8, "waiting": 0, "delayed": 0}


def test_group_key_limits_each_value_and_jobs_without_it_share_a_group(
        make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 1, "duration": 10, "group_key": "account.id"})
    data = [{"account": {"id": "a"}}, {"account": {"id": "a"}}, {"account": {"id": "b"}},
            {}, {"account": {}}, {"account": {"id": 7}}, {"account": {"id": "7"}}]
    jobs = [q.add(d) for d in data]
    first = [j.id for j in start_all(q)]
    assert first == [jobs[0].id, jobs[2].id, jobs[3].id, jobs[5].id]
    assert q._limited_until_ms == (T0 + 10) * 1000
    held = [jobs[1].id, jobs[4].id, jobs[6].id]  # "a" again, no id, and "7" (7 as text)
    assert [j.id for j in q.get_waiting()] == held
    clock.advance(10)
    assert [j.id for j in start_all(q)] == held


def test_a_saturated_group_does_not_hold_back_other_groups(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 2, "duration": 10, "group_key": "g"})
    for _ in range(5):
        q.add({"g": "busy"})
    q.add({"g": "quiet"})
    started = [j.data["g"] for j in start_all(q)]
    assert started == ["busy", "busy", "quiet"]


def test_limited_until_ms_says_when_a_slot_frees(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 2, "duration": 5})
    assert q.get_next_job() is None and q._limited_until_ms is None  # empty, not limited
    q.add_bulk([{"data": {}} for _ in range(4)])
    assert q.get_next_job() is not None
    clock.advance(1)
    assert q.get_next_job() is not None
    assert q._limited_until_ms is None  # that claim succeeded
    clock.advance(1)
    assert q.get_next_job() is None
    assert q._limited_until_ms == (T0 + 5) * 1000  # the oldest start leaves the window
    clock.set(T0 + 5)
    assert q.get_next_job() is not None and q._limited_until_ms is None
    assert q.get_next_job() is None
    assert q._limited_until_ms == (T0 + 6) * 1000


def test_limited_until_ms_is_the_soonest_of_the_saturated_groups(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 1, "duration": 10, "group_key": "g"})
    q.add({"g": "a"})
    q.add({"g": "a"})
    assert len(start_all(q)) == 1
    clock.advance(3)
    q.add({"g": "b"})
    q.add({"g": "b"})
    assert len(start_all(q)) == 1
    assert q._limited_until_ms == (T0 + 10) * 1000


def test_no_limiter_never_reports_a_limit(make_queue: Any) -> None:
    q = make_queue(FakeClock(T0), None)
    q.add_bulk([{"data": {}} for _ in range(3)])
    assert len(start_all(q)) == 3
    assert q._limited_until_ms is None


def test_the_limit_holds_across_queue_instances_on_one_file(make_queue: Any) -> None:
    clock = FakeClock(T0)
    limiter = {"max": 3, "duration": 10}
    q1, q2 = make_queue(clock, limiter), make_queue(clock, limiter)
    q1.add_bulk([{"data": {"i": i}} for i in range(10)])
    taken = []
    for q in (q1, q2, q1, q2, q2):
        job = q.get_next_job()
        taken.append(job is not None)
    assert taken == [True, True, True, False, False]
    assert q2._limited_until_ms == (T0 + 10) * 1000


def test_the_limit_is_per_queue(make_queue: Any) -> None:
    clock = FakeClock(T0)
    limiter = {"max": 1, "duration": 10}
    a, b = make_queue(clock, limiter, "a"), make_queue(clock, limiter, "b")
    a.add_bulk([{"data": {}} for _ in range(2)])
    b.add_bulk([{"data": {}} for _ in range(2)])
    assert len(start_all(a)) == 1 and len(start_all(b)) == 1


def test_complete_and_fetch_next_respects_the_limit(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 1, "duration": 10})
    q.add_bulk([{"data": {"i": i}} for i in range(2)])
    job = q.get_next_job()
    assert job is not None
    assert job.move_to_completed("done") is None  # the next job may not start yet
    assert q._limited_until_ms == (T0 + 10) * 1000
    clock.advance(10)
    nxt = q.get_next_job()
    assert nxt is not None and nxt.data == {"i": 1}


def test_a_retried_job_counts_as_a_new_start(make_queue: Any) -> None:
    clock = FakeClock(T0)
    q = make_queue(clock, {"max": 1, "duration": 10})
    q.add({}, attempts=2)
    job = q.get_next_job()
    assert job is not None
    job.move_to_failed(RuntimeError("boom"))  # retried at once: back to waiting
    assert q.get_next_job() is None
    clock.advance(10)
    assert q.get_next_job() is not None


@pytest.mark.parametrize("limiter", [
    {"max": 0, "duration": 1}, {"max": 1, "duration": 0}, {"max": 1}, {"duration": 1},
    {"max": 1, "duration": 1, "bounce_back": True}, {"max": 1.5, "duration": 1},
    {"max": 1, "duration": 1, "group_key": ""}, {"max": 1, "duration": 1, "group_key": 'a"b'},
    {"max": 1, "duration": 1, "group_key": "a..b"}, "1/s",
])
def test_bad_limiters_are_config_errors(db_path: str, limiter: Any) -> None:
    with pytest.raises(localq.ConfigError):
        localq.Queue("q", path=db_path, limiter=limiter)


class InterleavingClock:
    """A clock that, the first time it is read, lets another queue claim a job (a claim that
    commits between this queue reading the time and taking the write lock, if it can)."""

    def __init__(self, now: float, meanwhile: Any) -> None:
        self._now, self._meanwhile = now, meanwhile

    def now(self) -> float:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            thread = threading.Thread(target=meanwhile)
            thread.start()
            thread.join()
        return self._now


def test_a_claim_reads_the_time_under_the_write_lock(db_path: str, make_queue: Any) -> None:
    limiter = {"max": 2, "duration": 1}
    other_clock = FakeClock(T0 + 0.004)
    other = localq.Queue("q", path=db_path, clock=other_clock, limiter=limiter,
                         settings={"busy_timeout": 0.05})
    try:
        other.add_bulk([{"data": {"i": i}} for i in range(4)])
        assert other.get_next_job() is not None
        other_clock.set(T0 + 0.005)
        assert other.get_next_job() is not None
        other_clock.set(T0 + 1.006)

        def other_claims() -> None:
            try:
                other.get_next_job()  # allowed at T0 + 1.006: both starts have left its window
            except localq.DatabaseError:
                pass  # the lock is held: this queue read the time under it

        q = make_queue(InterleavingClock(T0 + 1.003, other_claims), limiter)
        q.get_next_job()
        starts = [start_ms(j) for j in q.get_active()]
        # Reading T0 + 1.003 before the lock and committing after the T0 + 1.006 claim would
        # put a third start in [T0 + 0.004, T0 + 1.004).
        assert_no_window_exceeds(starts, 2, 1000)
    finally:
        other.close()
