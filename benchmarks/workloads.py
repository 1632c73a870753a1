"""The workloads W1-W4 of DESIGN.md's "Figures to reach", over any :class:`Adapter`.

Each workload takes ``(backend, workdir, n, sync)``, runs in a fresh ``workdir``, and
returns a :class:`Result`.  Payloads are built before the clock starts except in W4,
where the producer stamps each one with its add time.  Time is ``time.perf_counter``.
"""
from __future__ import annotations

import json
import multiprocessing
import multiprocessing.process
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any
from contextlib import contextmanager

from benchmarks.common import (
    Adapter,
    Backend,
    Claim,
    ConsumerContext,
    Result,
    latency_ms,
    make_payload,
    write_consumer_report,
)

#: W2 batch size, as DESIGN.md defines the workload.
BULK_BATCH = 1000
#: Number of W4 consumer processes.
W4_CONSUMERS = 2
#: Sleep between two empty claims in the generic consumer loop.  1 ms keeps a
#: polling consumer from stealing the producer's core on a 2-core machine while
#: adding at most ~1 ms to a job's pickup.
POLL_S = 0.001
#: Seconds to wait for spawned consumers to open the backend.
_READY_TIMEOUT_S = 60.0


@contextmanager
def opened(backend: Backend, workdir: str, sync: str) -> Iterator[Adapter]:
    """Open ``backend`` and check the pragmas in force are the ones asked for.

    A backend with a fixed ``mode`` must report that mode instead of ``sync``.

    :raises RuntimeError: if the adapter runs under another journal mode or
        synchronous level, which would make its row lie.
    """
    adapter = backend.open(workdir, sync)
    expected = backend.mode or sync
    try:
        settings = adapter.settings()
        if settings.synchronous != expected or settings.journal_mode.lower() != "wal":
            raise RuntimeError(
                f"{backend.name} runs with journal_mode={settings.journal_mode} "
                f"synchronous={settings.synchronous}, asked for WAL/{expected}")
        yield adapter
    finally:
        adapter.close()


def make_result(backend: Backend, adapter: Adapter, workload: str, n: int, seconds: float,
                concurrency: str = "1", pages0: int | None = None) -> Result:
    """Return the :class:`Result` of a run: rates, settings read back, pages per job."""
    settings = adapter.settings()
    pages1 = adapter.pages_written()
    pages = None if pages0 is None or pages1 is None else (pages1 - pages0) / max(n, 1)
    return Result(
        workload=workload, backend=backend.name, n=n,
        synchronous=settings.synchronous, journal_mode=settings.journal_mode.lower(),
        concurrency=concurrency, ops_per_s=n / seconds if seconds > 0 else 0.0,
        seconds=seconds, pages_per_op=pages, driver=backend.driver,
        sqlite_version=backend.sqlite_version, backend_note=backend.note)


def prepared(adapter: Adapter, payloads: list[str]) -> list[Any]:
    """Return the payloads as the adapter's ``add`` takes them (its optional ``prepare``)."""
    prepare = getattr(adapter, "prepare", None)
    return payloads if prepare is None else [prepare(p) for p in payloads]


def join_notes(*notes: str) -> str:
    """Join the non-empty notes of a row with "; "."""
    return "; ".join(note for note in notes if note)


def w1_add(backend: Backend, workdir: str, n: int, sync: str) -> Result:
    """W1: add ``n`` jobs one by one, each add its own transaction."""
    texts = [make_payload(i) for i in range(n)]
    with opened(backend, workdir, sync) as adapter:
        payloads = prepared(adapter, texts)
        pages0 = adapter.pages_written()
        lat: list[float] = []
        clock = time.perf_counter
        start = clock()
        for data in payloads:
            t = clock()
            adapter.add(data)
            lat.append(clock() - t)
        seconds = clock() - start
        result = make_result(backend, adapter, "W1", n, seconds, pages0=pages0)
    result.p50_ms, result.p99_ms = latency_ms(lat)
    return result


def w2_add_bulk(backend: Backend, workdir: str, n: int, sync: str) -> Result:
    """W2: add ``n`` jobs in batches of :data:`BULK_BATCH`, one transaction each."""
    batch = min(BULK_BATCH, n)
    texts = [make_payload(i) for i in range(n)]
    with opened(backend, workdir, sync) as adapter:
        payloads = prepared(adapter, texts)
        batches = [payloads[i:i + batch] for i in range(0, n, batch)]
        pages0 = adapter.pages_written()
        lat: list[float] = []
        clock = time.perf_counter
        start = clock()
        for items in batches:
            t = clock()
            adapter.add_bulk(items)
            lat.append(clock() - t)
        seconds = clock() - start
        result = make_result(backend, adapter, "W2", n, seconds, pages0=pages0)
    result.p50_ms, result.p99_ms = latency_ms(lat)
    result.batch = batch
    return result


def prefill(backend: Backend, workdir: str, n: int) -> None:
    """Add ``n`` jobs before a timed drain, at NORMAL: filling is not what W3 measures."""
    adapter = backend.open(workdir, "NORMAL")
    try:
        payloads = prepared(adapter, [make_payload(i) for i in range(n)])
        if backend.supports_bulk:
            for i in range(0, n, BULK_BATCH):
                adapter.add_bulk(payloads[i:i + BULK_BATCH])
        else:
            for data in payloads:
                adapter.add(data)
    finally:
        adapter.close()


def w3_drain(backend: Backend, workdir: str, n: int, sync: str) -> Result:
    """W3: one consumer drains ``n`` waiting jobs, claim then ack, no-op handler."""
    prefill(backend, workdir, n)
    with opened(backend, workdir, sync) as adapter:
        pages0 = adapter.pages_written()
        lat: list[float] = []
        drained = 0
        clock = time.perf_counter
        start = clock()
        while True:
            t = clock()
            claim = adapter.claim()
            if claim is None:
                break
            adapter.ack(claim)
            lat.append(clock() - t)
            drained += 1
        seconds = clock() - start
        result = make_result(backend, adapter, "W3", n, seconds, pages0=pages0)
    result.p50_ms, result.p99_ms = latency_ms(lat)
    if drained != n:
        result.note = join_notes(f"drained {drained} of {n}", result.note)
    return result


def run_consumer(ctx: ConsumerContext) -> None:
    """The generic W4 consumer: poll claim, ack, record, until the producer is done.

    It records each job's ``seq`` only after ``ack`` returned, so a job reported
    twice was acked twice.  ``producer_done`` is read *before* each claim: a claim
    that finds nothing after the producer finished proves the queue is empty, where
    reading it after an empty claim could miss the last add.
    """
    adapter = ctx.backend.open(ctx.workdir, ctx.sync)
    seqs: list[int] = []
    latencies: list[float] = []
    last_ack: float | None = None
    clock = time.perf_counter
    ctx.ready.set()
    try:
        while True:
            done = ctx.producer_done.is_set()
            claim: Claim | None = adapter.claim()
            if claim is None:
                if done:
                    break
                time.sleep(ctx.poll_s)
                continue
            adapter.ack(claim)
            # perf_counter is CLOCK_MONOTONIC on Linux (QueryPerformanceCounter on
            # Windows, mach_absolute_time on macOS): one clock for all processes,
            # so the producer's add time can be subtracted here.
            last_ack = clock()
            job = json.loads(claim.data or "null")
            seqs.append(job["seq"])
            latencies.append(last_ack - job["t"])
    finally:
        adapter.close()
    write_consumer_report(ctx.report_path, seqs, latencies, last_ack)


def consumer_main(ctx: ConsumerContext) -> None:
    """Entry point of a spawned W4 consumer: the backend's own or the generic loop.

    An exception is also written beside the report, so the producer's row says
    what went wrong (a peer's "database is locked") and not only an exit code.
    """
    try:
        (ctx.backend.consumer or run_consumer)(ctx)
    except BaseException as exc:
        with open(ctx.report_path + ".error", "w", encoding="utf-8") as f:
            f.write(f"{type(exc).__name__}: {exc}")
        raise


def _wait_ready(ctxs: Sequence[ConsumerContext],
                procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Wait until every consumer has the backend open; fail fast if one died."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    for ctx, proc in zip(ctxs, procs):
        while not ctx.ready.wait(0.05):
            if not proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"consumer {ctx.index} did not open the backend "
                                   f"(exit code {proc.exitcode})")


def _consumer_error(ctx: ConsumerContext) -> str:
    try:
        with open(ctx.report_path + ".error", encoding="utf-8") as f:
            return ": " + f.read()
    except FileNotFoundError:
        return ""


def w4_end_to_end(backend: Backend, workdir: str, n: int, sync: str,
                  consumers: int = W4_CONSUMERS, poll_s: float = POLL_S) -> Result:
    """W4: this process adds ``n`` jobs one by one while consumer processes drain them.

    ops/s runs from the first add to the last ack in any consumer.  ``lost`` counts
    jobs no consumer acked, ``completed_twice`` the acks beyond one per job.

    :raises RuntimeError: if a consumer fails to start or exits with an error.
    """
    mp = multiprocessing.get_context("spawn")
    done = mp.Event()
    # The producer opens first, so the store and its schema exist before the
    # consumers open it (peers that create tables on open race otherwise).
    with opened(backend, workdir, sync) as adapter:
        ctxs = [ConsumerContext(backend=backend, workdir=workdir, sync=sync, index=i,
                                report_path=os.path.join(workdir, f"consumer-{i}.json"),
                                ready=mp.Event(), producer_done=done, poll_s=poll_s)
                for i in range(consumers)]
        procs = [mp.Process(target=consumer_main, args=(c,), name=f"w4-consumer-{c.index}")
                 for c in ctxs]
        for p in procs:
            p.start()
        try:
            _wait_ready(ctxs, procs)
            clock = time.perf_counter
            start = clock()
            for i in range(n):
                adapter.add(make_payload(i, clock()))
            add_seconds = clock() - start
            done.set()
            # Generous: a peer that serialises badly may need minutes, never hours.
            deadline = time.monotonic() + 120 + n / 100
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
        finally:
            done.set()
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join()
        failed = [f"{p.name} exited with {p.exitcode}{_consumer_error(c)}"
                  for c, p in zip(ctxs, procs) if p.exitcode != 0]
        if failed:
            raise RuntimeError("; ".join(failed))
        seqs: list[int] = []
        latencies: list[float] = []
        end = start
        for c in ctxs:
            with open(c.report_path, encoding="utf-8") as f:
                report = json.load(f)
            seqs += report["seqs"]
            latencies += report["latencies"]
            if report["last_ack"] is not None:
                end = max(end, report["last_ack"])
        result = make_result(backend, adapter, "W4", n, end - start,
                             concurrency=f"1+{consumers}")
    distinct = len(set(seqs))
    result.lost = n - distinct
    result.completed_twice = len(seqs) - distinct
    result.p50_ms, result.p99_ms = latency_ms(latencies)
    result.note = join_notes(f"adds alone {n / add_seconds:,.0f}/s", result.note)
    return result


#: Workload name -> function, in the order they run.
WORKLOADS = {"W1": w1_add, "W2": w2_add_bulk, "W3": w3_drain, "W4": w4_end_to_end}
