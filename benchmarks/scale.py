"""Scale figures of DESIGN.md "Figures to reach": localq with many jobs.

* ``add_bulk``: ``add_bulk`` of BIG jobs in batches of 1000 (default durability), seconds;
* ``get_job_counts``: ``q.get_job_counts()`` on that queue of BIG jobs, median ms
  (target <= 50 ms);
* ``claim``: ``q.get_next_job()`` with SMALL waiting jobs and with BIG waiting jobs, median
  microseconds each, and their ratio (target <= 1.3); claims alternate between the two
  queues in rounds, and each round puts back as many jobs as it took;
* ``worker_rss``: one worker process drains N jobs (a real ``Worker`` with its scheduler);
  its resident set size after the first 1000 jobs and its largest since (target: grows
  < 10 MB);
* ``wal``: the largest size of the ``-wal`` file seen while those N jobs ran, and its size
  at the end (target < 64 MB).

``python -m benchmarks.scale`` runs small sizes (BIG = 20,000, N = 5,000) in well under a
minute; ``--full`` runs DESIGN.md's (BIG = 1,000,000, N = 100,000: a few minutes and about
1 GB of disk). Prints one JSON line per figure, then a table; ``--json PATH`` writes them.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import apsw

import localq
from benchmarks.common import environment, make_tempdir

SMALL = 1_000
BATCH = 1000
#: (BIG, N): jobs in the big queue, jobs the worker process drains.
QUICK = (20_000, 5_000)
FULL = (1_000_000, 100_000)
_CLAIM_ROUNDS = 10
_CLAIMS_PER_ROUND = 50
_PAYLOAD = {"to": "user@example.com", "template": "welcome", "n": 0}


def _fill(q: localq.Queue, n: int) -> float:
    """Add *n* jobs with add_bulk in batches of 1000; return the seconds it took."""
    start = time.perf_counter()
    for first in range(0, n, BATCH):
        q.add_bulk([{"data": dict(_PAYLOAD, n=i)}
                    for i in range(first, min(n, first + BATCH))])
    return time.perf_counter() - start


def _claims(q: localq.Queue, count: int) -> list[float]:
    """Time *count* claims (get_next_job); complete each job outside the clock and put one
    job back, so the number of waiting jobs stays where it was."""
    out = []
    clock = time.perf_counter
    for _ in range(count):
        t = clock()
        job = q.get_next_job()
        out.append(clock() - t)
        if job is None:
            raise RuntimeError("the queue ran dry during the claim benchmark")
        job.move_to_completed(None, not_fetch=True)
    q.add_bulk([{"data": dict(_PAYLOAD)} for _ in range(count)])
    return out


def _median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1e3


def big_queue(workdir: str, big: int) -> list[dict[str, Any]]:
    """add_bulk of *big* jobs, get_job_counts on them, and the claim cost against SMALL."""
    rows: list[dict[str, Any]] = []
    small_q = localq.Queue("small", path=os.path.join(workdir, "small.db"))
    big_q = localq.Queue("big", path=os.path.join(workdir, "big.db"))
    try:
        seconds = _fill(big_q, big)
        rows.append({"figure": "add_bulk", "jobs": big, "batch": BATCH, "seconds": seconds,
                     "jobs_per_s": big / seconds, "durability": "safe", "target": None})
        _fill(small_q, SMALL)
        counts = []
        for _ in range(20):
            t = time.perf_counter()
            found = big_q.get_job_counts()
            counts.append(time.perf_counter() - t)
        rows.append({"figure": "get_job_counts", "jobs": sum(found.values()),
                     "median_ms": _median_ms(counts), "max_ms": max(counts) * 1e3,
                     "target": "<= 50 ms", "met": _median_ms(counts) <= 50})
        small_t: list[float] = []
        big_t: list[float] = []
        for _ in range(_CLAIM_ROUNDS):  # interleaved: a noisy spell hits both alike
            small_t += _claims(small_q, _CLAIMS_PER_ROUND)
            big_t += _claims(big_q, _CLAIMS_PER_ROUND)
        ratio = statistics.median(big_t) / statistics.median(small_t)
        rows.append({"figure": "claim", "small_jobs": SMALL, "big_jobs": big,
                     "small_median_us": statistics.median(small_t) * 1e6,
                     "big_median_us": statistics.median(big_t) * 1e6,
                     "claims": len(big_t), "ratio": ratio, "target": "ratio <= 1.3",
                     "met": ratio <= 1.3})
    finally:
        small_q.close()
        big_q.close()
    return rows


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _drain(path: str, n: int, report: str) -> None:
    """The worker process: drain *n* jobs with a real Worker, sampling RSS and the WAL."""
    q = localq.Queue("scale", path=path)
    samples: list[tuple[int, int, int]] = []  # (jobs done, rss, wal bytes)
    done = [0]

    def completed(job: localq.Job, result: Any) -> None:
        done[0] += 1
        if done[0] % 1000 == 0:
            samples.append((done[0], _rss_bytes(), q._store.wal_size()))

    q.on("completed", completed)
    start = time.perf_counter()
    localq.Worker(q, _noop, autorun=False).run(until_idle=True)
    seconds = time.perf_counter() - start
    counts = q.get_job_counts()
    q.close()
    with open(report, "w", encoding="utf-8") as f:
        json.dump({"samples": samples, "seconds": seconds, "counts": counts}, f)


def _noop(job: localq.Job) -> None:
    return None


def worker_memory_and_wal(workdir: str, n: int) -> list[dict[str, Any]]:
    """Drain *n* jobs in a worker process; report its RSS growth and the WAL's size."""
    path = os.path.join(workdir, "scale.db")
    q = localq.Queue("scale", path=path)
    _fill(q, n)
    q.close()
    report = os.path.join(workdir, "drain.json")
    wal_max = [0]
    stop = threading.Event()

    def watch_wal() -> None:  # a stat every 10 ms: the WAL's peak, between two samples too
        while not stop.wait(0.01):
            try:
                wal_max[0] = max(wal_max[0], os.stat(path + "-wal").st_size)
            except OSError:
                pass

    watcher = threading.Thread(target=watch_wal, daemon=True)
    watcher.start()
    proc = multiprocessing.get_context("spawn").Process(target=_drain, args=(path, n, report))
    proc.start()
    proc.join()
    stop.set()
    watcher.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"the worker process exited with {proc.exitcode}")
    with open(report, encoding="utf-8") as f:
        data = json.load(f)
    samples = data["samples"]
    try:
        wal_end = os.stat(path + "-wal").st_size
    except OSError:
        wal_end = 0
    rows: list[dict[str, Any]] = []
    if samples:
        base = samples[0][1]
        peak = max(s[1] for s in samples)
        growth = (peak - base) / 2**20
        rows.append({"figure": "worker_rss", "jobs": n, "rss_after_1000_mb": base / 2**20,
                     "rss_max_mb": peak / 2**20, "rss_end_mb": samples[-1][1] / 2**20,
                     "growth_mb": growth, "jobs_per_s": n / data["seconds"],
                     "completed": data["counts"]["completed"], "target": "growth < 10 MB",
                     "met": growth < 10})
    wal_peak = max([wal_max[0]] + [s[2] for s in samples])
    rows.append({"figure": "wal", "jobs": n, "max_mb": wal_peak / 2**20,
                 "end_mb": wal_end / 2**20, "target": "< 64 MB", "met": wal_peak < 64 * 2**20})
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Render the scale figures as lines of text, target and verdict last."""
    lines = []
    for row in rows:
        figure = row["figure"]
        if figure == "add_bulk":
            text = (f"add_bulk of {row['jobs']:,} jobs (batches of {row['batch']}):"
                    f" {row['seconds']:.1f} s, {row['jobs_per_s']:,.0f} jobs/s")
        elif figure == "get_job_counts":
            text = (f"get_job_counts() on {row['jobs']:,} jobs: median {row['median_ms']:.1f} ms"
                    f" (max {row['max_ms']:.1f})")
        elif figure == "claim":
            text = (f"claim with {row['small_jobs']:,} waiting: {row['small_median_us']:.0f} us;"
                    f" with {row['big_jobs']:,}: {row['big_median_us']:.0f} us;"
                    f" ratio {row['ratio']:.2f}")
        elif figure == "worker_rss":
            text = (f"worker RSS over {row['jobs']:,} jobs: {row['rss_after_1000_mb']:.1f} MB"
                    f" after 1,000, max {row['rss_max_mb']:.1f} MB, growth"
                    f" {row['growth_mb']:.1f} MB ({row['jobs_per_s']:,.0f} jobs/s)")
        else:
            text = (f"WAL while {row['jobs']:,} jobs ran: max {row['max_mb']:.1f} MB,"
                    f" {row['end_mb']:.1f} MB at the end")
        if row.get("target"):
            text += f"  [{row['target']}: {'met' if row['met'] else 'MISSED'}]"
        lines.append(text)
    return "\n".join(lines)


def run(workdir: str, full: bool, sizes: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Measure every figure under *workdir*; return the rows (also printed as JSON lines).

    :param sizes: (BIG, N) instead of :data:`FULL` or :data:`QUICK`.
    """
    big, n = sizes or (FULL if full else QUICK)
    rows: list[dict[str, Any]] = []
    for part in (big_queue, worker_memory_and_wal):
        for row in part(workdir, big if part is big_queue else n):
            row.update(apsw=apsw.apsw_version(), sqlite=apsw.sqlite_lib_version())
            print(json.dumps(row, sort_keys=True), flush=True)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scale figures; return 0 (no figure is asserted)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="DESIGN.md's sizes: 1,000,000 and 100,000 jobs (minutes)")
    parser.add_argument("--big", type=int, help="jobs in the big queue (overrides the size)")
    parser.add_argument("--jobs", type=int, help="jobs the worker process drains (overrides)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    parser.add_argument("--tmpdir", metavar="DIR", help="parent of the temporary directory")
    args = parser.parse_args(argv)
    big, n = FULL if args.full else QUICK
    big, n = args.big or big, args.jobs or n
    if big < SMALL or n < 1000:
        parser.error(f"--big must be at least {SMALL} and --jobs at least 1000")
    workdir = make_tempdir(args.tmpdir)
    try:
        rows = run(workdir, args.full, (big, n))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"environment": environment(), "scale": rows}, f, indent=1,
                      sort_keys=True)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
