"""A hypothesis state machine driving one queue against a plain Python model of Bull's rules.

Rules: add (delay, priority, attempts, backoff, lifo, job_id), claim, complete (with or
without fetching the next job), fail, finishing with a lost lock, retry, promote, remove,
pause, resume, clock advance, stalled-job recovery. After every step: every job is in
exactly one state, the counts equal the model's, a job is active iff it holds a lock token,
attempts_made <= attempts, and (checked in the claim rules) the claimed job is the one the
model's priority / FIFO / LIFO order names, never a completed one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

import localq
from localq.testing import FakeClock

LOCK_S = 10.0
MAX_STALLED = 1
NO_PRIORITY = 2**31


@dataclass
class ModelJob:
    """What the model knows of one job."""

    id: str
    rowid: int
    lifo: bool
    priority: Optional[int]
    attempts: int
    backoff: float
    state: str = "waiting"
    key: int = 0             # position among waiting jobs of one priority (smaller first)
    due: float = 0.0         # delayed: when it may run
    lock_expires: float = 0.0
    attempts_made: int = 0
    stalled: int = 0
    retries: int = 0         # manual retry() calls: each allows one more attempt, as in Bull

    def order(self) -> tuple[int, int]:
        return (NO_PRIORITY if self.priority is None else self.priority, self.key)


class QueueMachine(RuleBasedStateMachine):
    """One Queue, emptied for each example, and the model it must agree with."""

    #: One queue for every example (opening a file costs more than a whole example, a fresh
    #: PostgreSQL schema far more), emptied by obliterate() between examples; set by the test
    #: function.
    q: localq.Queue
    clock: FakeClock

    def __init__(self) -> None:
        super().__init__()
        self.clock.set(1_000_000.0)
        self.q.obliterate(force=True)
        self.jobs: dict[str, ModelJob] = {}
        self.held: dict[str, localq.Job] = {}     # claimed by us, lock still ours
        self.lost: list[localq.Job] = []          # claimed by us, lock taken back
        self.completed_ever: set[int] = set()     # rowids: a custom id may be used again
        self.paused = False
        self.counter = 0
        self.max_rowid = 0

    # -- model helpers ----------------------------------------------------------------------

    def _position(self, job: ModelJob, head: bool = False) -> None:
        self.counter += 1
        job.key = -self.counter if (job.lifo or head) else self.counter

    def _now(self) -> float:
        return self.clock.now()

    def _promote_due(self) -> None:
        due = sorted((j for j in self.jobs.values()
                      if j.state == "delayed" and j.due <= self._now()),
                     key=lambda j: (j.due, j.rowid))
        for job in due:
            job.state = "waiting"
            self._position(job)

    def _expected_claim(self) -> Optional[ModelJob]:
        self._promote_due()  # also while paused: due jobs then join the paused ones, as in Bull
        if self.paused:
            return None
        waiting = [j for j in self.jobs.values() if j.state == "waiting"]
        return min(waiting, key=ModelJob.order) if waiting else None

    def _claimed(self, expected: Optional[ModelJob], got: Optional[localq.Job]) -> None:
        if expected is None:
            assert got is None, f"claimed {got} but the model has nothing runnable"
            return
        assert got is not None, f"expected to claim {expected.id}, got nothing"
        assert got.id == expected.id, f"claimed {got.id}, model order says {expected.id}"
        assert got._rowid not in self.completed_ever, "a completed job was claimed again"
        expected.state = "active"
        expected.lock_expires = self._now() + LOCK_S
        self.held[got.id] = got

    def _in(self, *states: str) -> list[ModelJob]:
        return sorted((j for j in self.jobs.values() if j.state in states),
                      key=lambda j: j.rowid)

    # -- rules ------------------------------------------------------------------------------

    @rule(delay=st.sampled_from([0, 0, 0, 2, 5]),
          priority=st.sampled_from([None, None, 1, 2, 3]),
          attempts=st.integers(1, 3),
          backoff=st.sampled_from([0, 0, 3]),
          lifo=st.booleans(),
          job_id=st.sampled_from([None, None, None, "a", "b"]))
    def add(self, delay: float, priority: Optional[int], attempts: int, backoff: float,
            lifo: bool, job_id: Optional[str]) -> None:
        existing = self.jobs.get(job_id) if job_id else None
        job = self.q.add({"n": self.counter}, delay=delay, priority=priority,
                         attempts=attempts, backoff=backoff or None, lifo=lifo, job_id=job_id)
        if existing is not None:
            assert job.id == existing.id and job._rowid == existing.rowid
            return
        assert job._rowid > self.max_rowid, "a job id was reused"
        self.max_rowid = job._rowid
        model = ModelJob(job.id, job._rowid, lifo, priority, attempts, backoff)
        assert job.id not in self.jobs
        if delay:
            model.state, model.due = "delayed", self._now() + delay
        else:
            self._position(model)
        self.jobs[job.id] = model

    @rule()
    def claim(self) -> None:
        expected = self._expected_claim()
        self._claimed(expected, self.q.get_next_job())

    @precondition(lambda self: self.held)
    @rule(i=st.integers(0, 100), fetch=st.booleans())
    def complete(self, i: int, fetch: bool) -> None:
        job_id = sorted(self.held)[i % len(self.held)]
        job = self.held.pop(job_id)
        nxt = job.move_to_completed({"r": job_id}, not_fetch=not fetch)
        model = self.jobs[job_id]
        model.state = "completed"
        self.completed_ever.add(model.rowid)
        if fetch:
            expected = self._expected_claim()
            got = None if nxt is None else self.q.get_job(nxt[1])
            self._claimed(expected, got)
            if got is not None:
                assert nxt is not None and nxt[0] == got.data
        else:
            assert nxt is None

    @precondition(lambda self: self.held)
    @rule(i=st.integers(0, 100), discard=st.booleans())
    def fail(self, i: int, discard: bool) -> None:
        job_id = sorted(self.held)[i % len(self.held)]
        job = self.held.pop(job_id)
        if discard:
            job.discard()
        job.move_to_failed(RuntimeError("no"))
        model = self.jobs[job_id]
        model.attempts_made += 1
        if discard or model.attempts_made >= model.attempts:
            model.state = "failed"
        elif model.backoff:
            model.state, model.due = "delayed", self._now() + model.backoff
        else:
            model.state = "waiting"
            self._position(model)

    @precondition(lambda self: self.lost)
    @rule(i=st.integers(0, 100), complete=st.booleans())
    def finish_with_a_lost_lock(self, i: int, complete: bool) -> None:
        job = self.lost[i % len(self.lost)]
        before = self.q._store.query("SELECT * FROM jobs ORDER BY id")
        with pytest.raises(localq.LockError):
            if complete:
                job.move_to_completed("late", not_fetch=True)
            else:
                job.move_to_failed("late")
        assert self.q._store.query("SELECT * FROM jobs ORDER BY id") == before

    @precondition(lambda self: any(j.state == "failed" for j in self.jobs.values()))
    @rule(i=st.integers(0, 100))
    def retry(self, i: int) -> None:
        failed = self._in("failed")
        model = failed[i % len(failed)]
        self.q.get_job(model.id).retry()
        model.retries += 1
        model.state = "waiting"
        self._position(model)

    @precondition(lambda self: any(j.state == "delayed" for j in self.jobs.values()))
    @rule(i=st.integers(0, 100))
    def promote(self, i: int) -> None:
        delayed = self._in("delayed")
        model = delayed[i % len(delayed)]
        self.q.get_job(model.id).promote()
        model.state = "waiting"
        self._position(model)

    @rule(i=st.integers(0, 100), state=st.sampled_from(["waiting", "delayed", "completed",
                                                        "failed"]))
    def invalid_moves_change_nothing(self, i: int, state: str) -> None:
        candidates = self._in(state)
        if not candidates:
            return
        model = candidates[i % len(candidates)]
        job = self.q.get_job(model.id)
        before = self.q._store.query("SELECT * FROM jobs ORDER BY id")
        if state != "failed":
            with pytest.raises(localq.InvalidJobState):
                job.retry()
        if state != "delayed":
            with pytest.raises(localq.InvalidJobState):
                job.promote()
        with pytest.raises(localq.LockError):
            job.move_to_completed("x")
        assert self.q._store.query("SELECT * FROM jobs ORDER BY id") == before

    @precondition(lambda self: any(j.state != "active" for j in self.jobs.values()))
    @rule(i=st.integers(0, 100))
    def remove(self, i: int) -> None:
        idle = self._in("waiting", "delayed", "completed", "failed")
        model = idle[i % len(idle)]
        self.q.get_job(model.id).remove()
        del self.jobs[model.id]
        self.lost = [job for job in self.lost if job._rowid != model.rowid]

    @rule()
    def pause(self) -> None:
        self.q.pause()
        self.paused = True

    @rule()
    def resume(self) -> None:
        self.q.resume()
        self.paused = False

    @rule(seconds=st.sampled_from([0.5, 1, 3, 6, LOCK_S + 1]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def recover_stalled(self) -> None:
        taken = self.q._recover_stalled()
        expected = []
        for model in sorted(self._in("active"), key=lambda j: -j.rowid):
            if model.lock_expires >= self._now():
                continue
            model.stalled += 1
            if model.stalled > MAX_STALLED:
                model.state = "failed"
            else:
                model.state = "waiting"
                self._position(model, head=True)
            expected.append((model.id, model.state))
            self.lost.append(self.held.pop(model.id))
        assert taken == expected

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def states_and_counts_agree_with_the_model(self) -> None:
        listed: dict[str, list[str]] = {}
        for state in ("waiting", "paused", "active", "delayed", "completed", "failed"):
            for job in self.q.get_jobs(state):
                listed.setdefault(job.id, []).append(state)
        assert all(len(s) == 1 for s in listed.values()), f"in two states: {listed}"
        assert set(listed) == set(self.jobs), "a job was lost or appeared"
        for job_id, model in self.jobs.items():
            shown = "paused" if model.state == "waiting" and self.paused else model.state
            assert listed[job_id] == [shown], (job_id, listed[job_id], shown)
        counts = self.q.get_job_counts()
        for state in ("active", "delayed", "completed", "failed"):
            assert counts[state] == len(self._in(state)), state
        waiting = len(self._in("waiting"))
        assert (counts["waiting"], counts["paused"]) == ((0, waiting) if self.paused
                                                         else (waiting, 0))
        assert self.q.count() == waiting + counts["delayed"]

    @invariant()
    def active_iff_locked_and_attempts_bounded(self) -> None:
        # opts decoded here, not with SQL JSON functions: the same query runs on both backends
        rows = self.q._store.query(
            "SELECT id, state, lock_token IS NOT NULL, lock_expires_ms IS NOT NULL,"
            " attempts_made, opts, stalled_count FROM jobs")
        models = {m.rowid: m for m in self.jobs.values()}
        for rowid, state, locked, expires, made, opts, stalled in rows:
            attempts = json.loads(opts).get("attempts", 1)
            assert (state == "active") == bool(locked) == bool(expires), (rowid, state)
            model = models[rowid]
            assert (made, stalled) == (model.attempts_made, model.stalled), rowid
            # attempts bound the automatic retries; a manual retry() adds one attempt
            assert made <= attempts + model.retries, (rowid, made, attempts)

    @invariant()
    def run_order_matches_the_model(self) -> None:
        waiting = sorted(self._in("waiting"), key=ModelJob.order)
        assert [j.id for j in self.q.get_waiting()] == [j.id for j in waiting]


#: The share of the profile's examples run on PostgreSQL: a step there costs ~10 round trips
#: to the server (the invariants read every state), 4x a step on a file; 40 examples of 40
#: steps (default profile) keep its run near 15 s while exploring the same rules.
PG_SHARE = 0.4


# Hypothesis stops shrinking a failure after 300 s: let it report instead of timing out.
@pytest.mark.timeout(420)
def test_queue_agrees_with_the_model(backend: str, db_path: str) -> None:
    QueueMachine.clock = FakeClock(1_000_000.0)
    with localq.Queue("sm", path=db_path, clock=QueueMachine.clock,
                      durability="normal", settings={"lock_duration": LOCK_S,
                                                     "max_stalled_count": MAX_STALLED}) as q:
        QueueMachine.q = q
        examples = settings.default.max_examples  # type: ignore[union-attr]
        if backend == "postgres":
            examples = max(10, int(examples * PG_SHARE))
        run_state_machine_as_test(
            QueueMachine, settings=settings(max_examples=examples, stateful_step_count=40,
                                            deadline=None))
