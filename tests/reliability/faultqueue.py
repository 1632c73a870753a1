"""A Queue opened through a :class:`~tests.faults.FaultVFS`, and a scenario that drives it.

The scenario goes through the public API only (``add``, ``add_bulk``, ``get_next_job``,
``move_to_completed`` with and without fetching the next job, ``move_to_failed`` with a retry
and for good). Each step records whether it returned or raised, and what it meant to do, so
that the file can be checked against what was acknowledged afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import localq
from localq._db import Store
from localq.testing import FakeClock

__all__ = ["START", "FaultQueue", "Scenario", "Step"]

#: The FakeClock start of every run (identical runs do identical I/O).
START = 1767225600.0


class FaultQueue(localq.Queue):
    """A Queue whose file is opened through the VFS named *vfs_name*."""

    def __init__(self, *args: Any, vfs_name: str, **kwargs: Any) -> None:
        self._vfs_name = vfs_name
        super().__init__(*args, **kwargs)

    def _open_store(self, durability: str) -> Store:
        return Store(self.path, durability=durability, busy_timeout=self.settings.busy_timeout,
                     vfs=self._vfs_name)


@dataclass
class Step:
    """One API call of the scenario and its outcome."""

    index: int
    kind: str                  # add, add_bulk, claim, complete, complete_fetch, fail, tick
    label: str                 # the job(s) it concerns: an add's key, or the job's id
    outcome: str = "skipped"   # ok, raised, skipped (a step on a job that was not held)
    error: BaseException | None = None
    retried: bool = False      # raised once, then the same call returned (transient fault)


def _pad(key: str, size: int) -> str:
    return (key * (size // len(key) + 1))[:size]


@dataclass
class Scenario:
    """Run the fixed scenario on *queue*; with *retry*, repeat a call that raised, once.

    :ivar steps: every step, in order.
    :ivar adds: add key -> the data stored under it (a bulk batch: key -> list of data).
    :ivar ids: add key -> the job id(s) the call returned (acknowledged adds only).
    :ivar expected_results: job id -> the result a completion acknowledged for it.
    """

    queue: localq.Queue
    clock: FakeClock
    retry: bool
    steps: list[Step] = field(default_factory=list)
    adds: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)
    expected_results: dict[str, Any] = field(default_factory=dict)
    held: localq.Job | None = None

    def run(self) -> None:
        self.add("a1", {"k": "a1"}, attempts=2)
        self.add("a2", {"k": "a2"}, delay=10)
        self.add_bulk("b1", 4, 1500)
        self.claim()                  # a1
        self.fail()                   # a1: attempt 1 of 2, back to waiting
        self.claim()                  # b1/0
        self.complete({"r": 1})
        self.claim()                  # b1/1
        self.complete({"r": 2}, fetch=True)   # ... and claims b1/2 in the same transaction
        self.fail()                   # b1/2: failed for good
        self.add("big", {"k": "big", "pad": _pad("big", 40_000)})   # overflow pages
        self.add("c1", {"k": "c1"}, job_id="custom-1")
        self.tick(11)
        self.claim()                  # promotes a2 first
        self.complete({"r": 3})
        self.add_bulk("b2", 3, 10)

    # -- the steps ----------------------------------------------------------------------------

    def _call(self, kind: str, label: str, call: Callable[[], Any]) -> Any:
        step = Step(len(self.steps), kind, label)
        self.steps.append(step)
        try:
            value = call()
        except localq.LocalqError as exc:
            step.outcome, step.error = "raised", exc
            if not self.retry:
                return None
            value = call()    # a transient fault: the very next call must succeed
            step.retried = True
        step.outcome = "ok"
        return value

    def add(self, key: str, data: dict[str, Any], **opts: Any) -> None:
        self.adds[key] = data
        job = self._call("add", key, lambda: self.queue.add(data, name=key, **opts))
        if job is not None:
            self.ids[key] = job.id

    def add_bulk(self, key: str, count: int, size: int) -> None:
        batch = [{"k": key, "i": i, "pad": _pad(key, size)} for i in range(count)]
        self.adds[key] = batch
        jobs = self._call("add_bulk", key, lambda: self.queue.add_bulk(
            [{"name": key, "data": data} for data in batch]))
        if jobs is not None:
            self.ids[key] = [job.id for job in jobs]

    def claim(self) -> None:
        self.held = self._call("claim", "", self.queue.get_next_job)
        if self.held is not None:
            self.steps[-1].label = self.held.id

    def complete(self, result: Any, *, fetch: bool = False) -> None:
        job = self.held
        if job is None:
            self.steps.append(Step(len(self.steps), "complete", "", "skipped"))
            return
        self.held = None
        nxt = self._call("complete_fetch" if fetch else "complete", job.id,
                         lambda: job.move_to_completed(result, not_fetch=not fetch))
        if self.steps[-1].outcome == "ok":
            self.expected_results[job.id] = result
            if nxt is not None:
                self.held = self.queue.get_job(nxt[1])

    def fail(self) -> None:
        job = self.held
        if job is None:
            self.steps.append(Step(len(self.steps), "fail", "", "skipped"))
            return
        self.held = None
        self._call("fail", job.id, lambda: job.move_to_failed(Exception("boom")))

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.steps.append(Step(len(self.steps), "tick", "", "ok"))
