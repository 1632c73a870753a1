"""Wall-clock jumps (NTP steps, a suspended laptop, a VM restored from a snapshot) and clock
skew between processes: no job runs twice to completion, none runs early, none is stranded.

Two Queue instances on one database stand for two processes, each with its own FakeClock.
Every test runs on both backends (``db_path``): the promises are the job model's, not the
file's.
A forward jump past ``lock_duration`` makes the stalled-job check take a job back while its
holder still runs it: the holder is then fenced (``LockError``, nothing recorded). A
backward jump delays what is due by at most the jump: a delayed job never runs before its
time, and an orphaned lock expires at most ``jump + lock_duration`` later. Under skew, the
process whose clock runs ahead decides for all: it may promote a delayed job that is early
by another's clock, never one that no clock has reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import localq
from localq.testing import FakeClock, run_until_idle
from tests.store_checks import check_invariants, check_store

T0 = 1767225600.0
LOCK = 10.0


Pair = tuple[localq.Queue, FakeClock, localq.Queue, FakeClock]


def _queue(path: str, clock: FakeClock) -> localq.Queue:
    return localq.Queue("q", path=path, clock=clock, settings={"lock_duration": LOCK})


@pytest.fixture
def pair(db_path: str) -> Iterator[Pair]:
    a_clock, b_clock = FakeClock(T0), FakeClock(T0)
    a, b = _queue(db_path, a_clock), _queue(db_path, b_clock)
    try:
        yield a, a_clock, b, b_clock
    finally:
        a.close()
        b.close()


def test_a_forward_jump_past_the_lock_fences_the_stale_holder(
    db_path: str, pair: Pair
) -> None:
    a, a_clock, b, b_clock = pair
    a.add({"n": 1}, job_id="j")
    held = a.get_next_job()
    assert held is not None
    for clock in (a_clock, b_clock):
        clock.advance(2 * LOCK)            # the whole host's clock steps forward
    assert b._recover_stalled() == [("j", "waiting")]
    assert held.get_state() == "waiting"
    with pytest.raises(localq.LockError):
        held.progress(50)
    taken = b.get_next_job()
    assert taken is not None and taken.id == "j"
    with pytest.raises(localq.LockError):
        held.move_to_completed("stale", not_fetch=True)
    with pytest.raises(localq.LockError):
        held.log("stale")
    with pytest.raises(localq.LockError):
        held.update({"stale": True})
    taken.move_to_completed("fresh", not_fetch=True)
    with pytest.raises(localq.LockError):
        held.move_to_failed("stale")
    done = a.get_job("j")
    assert done is not None and done.returnvalue == "fresh" and done.data == {"n": 1}
    assert a.get_job_logs("j")["count"] == 0
    check_invariants(db_path)


def test_a_process_whose_clock_runs_ahead_can_take_a_job_but_not_complete_it_twice(
    db_path: str, pair: Pair
) -> None:
    a, a_clock, b, b_clock = pair
    a.add({"n": 1}, job_id="j")
    held = a.get_next_job()
    assert held is not None
    b_clock.advance(LOCK + 1)              # skew: B believes A's lock has expired
    assert run_until_idle(b, lambda job: "by b") == 1
    with pytest.raises(localq.LockError):
        held.move_to_completed("by a", not_fetch=True)
    assert a.get_job("j").returnvalue == "by b"  # type: ignore[union-attr]
    check_invariants(db_path)


def test_a_backward_jump_never_runs_a_delayed_job_early(
    pair: Pair
) -> None:
    a, a_clock, _, _ = pair
    a.add({"n": 1}, delay=30, job_id="later")
    a.add({"n": 2}, attempts=2, backoff=30, job_id="retry")
    job = a.get_next_job()
    assert job is not None and job.id == "retry"
    job.move_to_failed("first attempt")     # retried in 30 s
    a_clock.advance(-3600)                  # the clock steps back an hour
    for _ in range(3):
        a_clock.advance(1200)
        assert a.get_next_job() is None, a_clock.now() - T0
    a_clock.set(T0 + 29)
    assert a.get_next_job() is None
    a_clock.set(T0 + 30)                    # due again by the clock, never before
    assert {run_until_idle(a, lambda j: j.id)} == {2}


def test_a_backward_jump_delays_the_recovery_of_an_orphaned_lock_by_at_most_the_jump(
    pair: Pair
) -> None:
    a, a_clock, b, b_clock = pair
    a.add({"n": 1}, job_id="orphan")
    assert a.get_next_job() is not None     # ... and its holder dies without finishing
    a.close()
    b_clock.advance(-3600)
    b_clock.advance(3600 + LOCK)
    assert b._recover_stalled() == []        # the lock expires at T0 + LOCK, not before
    b_clock.advance(0.002)
    assert b._recover_stalled() == [("orphan", "waiting")]
    assert run_until_idle(b, lambda job: "recovered") == 1


# --- random jumps and skew -------------------------------------------------------------------

_step = st.one_of(
    st.tuples(st.just("jump"), st.sampled_from("ab"),
              st.one_of(st.floats(-3600, 3600), st.sampled_from([LOCK + 0.5, -LOCK, 2 * LOCK]))),
    st.tuples(st.just("claim"), st.sampled_from("ab"), st.just(0)),
    st.tuples(st.just("complete"), st.sampled_from("ab"), st.integers(0, 3)),
    st.tuples(st.just("fail"), st.sampled_from("ab"), st.integers(0, 3)),
    st.tuples(st.just("recover"), st.sampled_from("ab"), st.just(0)),
)


@pytest.mark.slow
@settings(max_examples=60)
@given(delays=st.lists(st.sampled_from([0, 0, 5, 30, 600]), min_size=1, max_size=6),
       steps=st.lists(_step, max_size=40))
def test_random_clock_jumps_and_skew_never_complete_a_job_twice_or_strand_one(
    db_path: str, pair: Pair, delays: list[int], steps: list[tuple[str, str, Any]],
) -> None:
    # One database for all examples (a PostgreSQL schema costs more than an example),
    # emptied here; ids are never reused, so events of earlier examples name no job of this one.
    a, a_clock, b, b_clock = pair
    clocks = {"a": a_clock, "b": b_clock}
    queues = {"a": a, "b": b}
    for clock in clocks.values():
        clock.set(T0)
    a.obliterate(force=True)
    held: dict[str, list[localq.Job]] = {"a": [], "b": []}
    due = {a.add({"i": i}, delay=d, attempts=2).id: T0 + d if d else 0.0
           for i, d in enumerate(delays)}
    acked: dict[str, str] = {}
    latest = T0
    for kind, who, arg in steps:
        q, clock = queues[who], clocks[who]
        if kind == "jump":
            latest = max(latest, clock.advance(arg))
        elif kind == "recover":
            q._recover_stalled()
        elif kind == "claim":
            job = q.get_next_job()
            if job is not None:
                # Under skew, a process whose clock runs ahead promotes a job for all:
                # "early" can only mean before every clock ever said it was due.
                assert latest >= due[job.id], "a delayed job ran early"
                held[who].append(job)
        elif held[who]:
            job = held[who].pop(arg % len(held[who]))
            try:
                if kind == "complete":
                    job.move_to_completed(f"{who}", not_fetch=True)
                    assert job.id not in acked, "completed twice"
                    acked[job.id] = who
                else:
                    job.move_to_failed("boom")
            except localq.LockError:
                pass                      # fenced: its lock was taken back meanwhile
    # Nothing stranded: once every clock is past every jump, all jobs finish.
    end = max(c.now() for c in clocks.values()) + 7200
    for clock in clocks.values():
        clock.set(end)
    run_until_idle(a, lambda job: "drained")
    counts = a.get_job_counts()
    assert counts["waiting"] == counts["active"] == counts["delayed"] == 0, counts
    check_store(db_path)
    jobs = check_invariants(db_path)        # one completed event per completed job
    assert set(jobs) == set(due)
    for job_id, who in acked.items():
        assert jobs[job_id].state == "completed" and jobs[job_id].returnvalue == who
