"""localq itself as backends of the workloads, one per durability mode.

``run.py`` loads :data:`BACKENDS` when this module imports.  Rows:

- ``localq`` (``durability="safe"``, the default), ``localq-full`` and
  ``localq-normal``: W1 ``q.add`` one by one, W2 ``q.add_bulk`` in batches of
  1000, W3 one real :class:`localq.Worker` draining the queue with a no-op
  handler (``Worker(q, handler, autorun=False).run(until_idle=True)``: lock
  renewal, scheduler, events and the complete-and-fetch-next transaction, Bull's
  full bookkeeping), W4 one producer ``q.add`` and two worker *processes*, each
  a real ``Worker``, counting what the ``completed`` event reported.
- ``localq-manual`` (and its ``-full`` / ``-normal`` twins): W3 through the
  manual API, ``get_next_job()`` then ``job.move_to_completed()`` (which takes the
  next job in the same transaction) and ``q.get_job(id)`` of that next job, as a
  user of the public API writes it.

Each mode sits in the row group of the raw row its DESIGN.md target compares with:
``safe`` adds are fsynced (W1, W2, W4 beside ``raw-full``) while its processing
steps are not (W3 beside ``raw``); ``full`` rows beside ``raw-full``, ``normal``
rows beside ``raw``.  Pages per job count every connection the queue opened
(the worker's threads included), read from ``SQLITE_DBSTATUS_CACHE_WRITE``.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import apsw

import localq
from benchmarks.common import (
    Backend,
    Claim,
    ConsumerContext,
    Result,
    Settings,
    Target,
    latency_ms,
    sync_name,
    write_consumer_report,
)
from benchmarks.workloads import join_notes, make_result, opened, prefill

_QUEUE = "bench"
#: Row label of each mode (``Backend.mode``) -> the ``durability`` argument.
_DURABILITY = {"SAFE": "safe", "FULL": "full", "NORMAL": "normal"}


class LocalqAdapter:
    """One ``localq.Queue`` on ``workdir/localq.db`` with a fixed durability mode."""

    def __init__(self, path: str, mode: str) -> None:
        self.queue = localq.Queue(_QUEUE, path=path, durability=_DURABILITY[mode])
        #: Every connection the queue opens, kept alive: a worker thread's connection
        #: would otherwise close with its thread and take its page count along.
        self._conns: list[apsw.Connection] = []
        store = self.queue._store
        open_connection = store._open

        def _open() -> apsw.Connection:
            conn = open_connection()
            self._conns.append(conn)
            return conn

        store._open = _open  # type: ignore[method-assign]
        self._conns.append(store.connection())
        self._next: localq.Job | None = None

    def prepare(self, data: str) -> Any:
        """Decode a payload before the clock: ``q.add`` takes a value, not JSON text."""
        return json.loads(data)

    def add(self, data: Any) -> None:
        # W4's producer stamps its payloads inside the loop, as text.
        self.queue.add(json.loads(data) if isinstance(data, str) else data)

    def add_bulk(self, items: Sequence[Any]) -> None:
        self.queue.add_bulk([{"data": item} for item in items])

    def claim(self) -> Claim | None:
        """The manual path: the job fetched by the last ack, else ``get_next_job()``.

        ``Claim.data`` stays ``None``: W3 never reads it, and W4 uses
        :func:`consume` (a real Worker), not the generic claim/ack loop.
        """
        job, self._next = self._next or self.queue.get_next_job(), None
        return None if job is None else Claim(token=job, data=None)

    def ack(self, claim: Claim) -> None:
        """Complete the job and keep the next one it fetched in the same transaction."""
        job = cast(localq.Job, claim.token)
        nxt = job.move_to_completed(None)
        if nxt is not None:
            self._next = self.queue.get_job(nxt[1])

    def settings(self) -> Settings:
        """Read back the synchronous level of a durable and a processing commit.

        Each is an empty ``BEGIN IMMEDIATE``/``COMMIT`` on this thread's connection (it
        writes no page); ``"SAFE"`` is FULL for the first and NORMAL for the second.
        """
        store = self.queue._store
        levels = []
        for durable in (True, False):
            with store.write(durable=durable) as conn:
                (level,), = conn.execute("PRAGMA synchronous").fetchall()
            levels.append(sync_name(cast(int, level)))
        conn = store.connection()
        (mode,), = conn.execute("PRAGMA journal_mode").fetchall()
        sync = "SAFE" if levels == ["FULL", "NORMAL"] else (
            levels[0] if levels[0] == levels[1] else "/".join(levels))
        return Settings(journal_mode=str(mode), synchronous=sync)

    def pages_written(self) -> int | None:
        """Pages written to the WAL by every connection of the queue so far."""
        return sum(_cache_writes(c) for c in self._conns)

    def close(self) -> None:
        self.queue.close()


def _cache_writes(conn: apsw.Connection) -> int:
    # The queue's scheduler and renewal threads keep using their own connections while the
    # run is measured; apsw refuses a call on a connection another thread is inside of, for
    # the few microseconds that thread needs.
    for _ in range(1000):
        try:
            return int(conn.status(apsw.SQLITE_DBSTATUS_CACHE_WRITE)[0])
        except apsw.ThreadingViolationError:
            time.sleep(0.001)
    return int(conn.status(apsw.SQLITE_DBSTATUS_CACHE_WRITE)[0])


def _path(workdir: str) -> str:
    return os.path.join(workdir, "localq.db")


def open_safe(workdir: str, sync: str) -> LocalqAdapter:
    """Open the queue with the default durability (``sync`` is the row group's level)."""
    return LocalqAdapter(_path(workdir), "SAFE")


def open_full(workdir: str, sync: str) -> LocalqAdapter:
    """Open the queue with ``durability="full"``."""
    return LocalqAdapter(_path(workdir), "FULL")


def open_normal(workdir: str, sync: str) -> LocalqAdapter:
    """Open the queue with ``durability="normal"``."""
    return LocalqAdapter(_path(workdir), "NORMAL")


def _noop(job: localq.Job) -> None:
    return None


def w3_worker(backend: Backend, workdir: str, n: int, sync: str) -> Result:
    """W3 through the real run path: one ``Worker`` drains ``n`` waiting jobs.

    p50/p99 are of the time between two consecutive ``completed`` events (one
    claim + handler + complete-and-fetch-next per job).
    """
    prefill(backend, workdir, n)
    with opened(backend, workdir, sync) as adapter:
        ad = cast(LocalqAdapter, adapter)
        clock = time.perf_counter
        stamps: list[float] = []
        ad.queue.on("completed", lambda job, result: stamps.append(clock()))
        pages0 = ad.pages_written()
        start = clock()
        localq.Worker(ad.queue, _noop, autorun=False).run(until_idle=True)
        seconds = clock() - start
        result = make_result(backend, adapter, "W3", n, seconds, pages0=pages0)
        left = ad.queue.get_job_counts()
    gaps = [b - a for a, b in zip([start] + stamps, stamps)]
    result.p50_ms, result.p99_ms = latency_ms(gaps)
    done = left["completed"]
    result.note = join_notes("Worker.run(until_idle=True)",
                             f"completed {done} of {n}" if done != n else "", result.note)
    return result


def w3_manual(backend: Backend, workdir: str, n: int, sync: str) -> Result:
    """W3 through the manual API (the generic claim/ack drain over :class:`LocalqAdapter`)."""
    from benchmarks.workloads import w3_drain
    result = w3_drain(backend, workdir, n, sync)
    result.note = join_notes("get_next_job + move_to_completed(fetch) + get_job", result.note)
    return result


def consume(ctx: ConsumerContext) -> None:
    """A W4 consumer process: a real ``Worker``, counting ``completed`` events.

    A job is recorded when its ``completed`` event fires, i.e. after its completion
    committed, so a job recorded twice was recorded completed twice.  Once the
    producer is done, ``worker.run(until_idle=True)`` ends the worker when a claim
    started after that finds nothing runnable.
    """
    mode = cast(str, ctx.backend.mode)
    queue = localq.Queue(_QUEUE, path=_path(ctx.workdir), durability=_DURABILITY[mode])
    seqs: list[int] = []
    latencies: list[float] = []
    last: list[float] = []
    clock = time.perf_counter

    def completed(job: localq.Job, result: Any) -> None:
        now = clock()
        seqs.append(job.data["seq"])
        # perf_counter is one clock for all processes on Linux (see run_consumer).
        latencies.append(now - job.data["t"])
        last[:] = [now]

    queue.on("completed", completed)
    worker = localq.Worker(queue, _noop)
    try:
        ctx.ready.set()
        ctx.producer_done.wait()
        worker.run(until_idle=True)
    finally:
        queue.close()
    write_consumer_report(ctx.report_path, seqs, latencies, last[0] if last else None)


_DRIVER = f"localq {localq.__version__} on apsw {apsw.apsw_version()}"
_ALL = ("W1", "W2", "W3", "W4")


def _backend(name: str, mode: str, opener: Any, levels: Mapping[str, tuple[str, ...]],
             targets: Mapping[str, Target], note: str, manual: bool = False) -> Backend:
    return Backend(
        name=name, family="localq", open=opener, driver=_DRIVER,
        sqlite_version=apsw.sqlite_lib_version(), supports_bulk=not manual,
        consumer=consume, note=note, mode=mode, levels=levels,
        workloads={"W3": w3_manual if manual else w3_worker}, targets=targets)


_SAFE_LEVELS = {"W1": ("FULL",), "W2": ("FULL",), "W3": ("NORMAL",), "W4": ("FULL",)}

BACKENDS = [
    _backend("localq", "SAFE", open_safe, _SAFE_LEVELS, {
        "W1": Target("FULL", 0.8), "W2": Target("FULL", 0.5), "W3": Target("NORMAL", 1.0),
        "W4": Target("FULL", 2.0, exact=True)},
        "durability='safe' (default): adds fsynced, processing steps not; W3 by a Worker"),
    _backend("localq-full", "FULL", open_full, {w: ("FULL",) for w in _ALL}, {},
             "durability='full': every commit fsynced"),
    _backend("localq-normal", "NORMAL", open_normal, {w: ("NORMAL",) for w in _ALL}, {
        "W1": Target("NORMAL", 0.7), "W4": Target("NORMAL", 1.0, exact=True)},
        "durability='normal': no commit fsynced"),
    _backend("localq-manual", "SAFE", open_safe, {"W3": ("NORMAL",)}, {},
             "W3 by get_next_job / move_to_completed (fetch) / get_job", manual=True),
    _backend("localq-full-manual", "FULL", open_full, {"W3": ("FULL",)}, {}, "", manual=True),
    _backend("localq-normal-manual", "NORMAL", open_normal, {"W3": ("NORMAL",)}, {}, "",
             manual=True),
]
