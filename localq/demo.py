"""``localq demo``: a few hundred jobs, two worker processes, one SQLite file, watched live.

The demo adds jobs with a mix of delays, priorities, failures that are retried (and a few
that fail for good) and progress updates; starts two ``localq worker`` processes (real OS
processes, sharing nothing but the file); shows the live view until every job has finished;
then prints a summary and how to inspect the file, which it keeps.

Job data decides what :func:`handle` does (how long it works, how many attempts fail, how
many progress steps it reports); the code is fixed, as for every localq worker.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from .states import STATES
from .cli_watch import Frame, Sampler, live
from .errors import ConfigError, LocalqError

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue

__all__ = ["QUEUE", "add_demo_options", "handle", "make_jobs", "run_demo"]

#: The queue the demo fills.
QUEUE = "demo"
_UNFINISHED = ("waiting", "active", "delayed", "paused")


def handle(job: Job) -> dict[str, Any]:
    """The demo's job handler (``localq.demo:handle``): work, report progress, maybe fail.

    Data keys: ``kind``, ``ms`` (work time), ``steps`` (progress updates),
    ``fail_attempts`` (how many first attempts raise), ``reason``.
    """
    data = job.data
    if job.attempts_made < data.get("fail_attempts", 0):
        raise RuntimeError(data.get("reason", "flaky"))
    steps = max(1, int(data.get("steps", 1)))
    for step in range(1, steps + 1):
        time.sleep(data.get("ms", 20) / 1000.0 / steps)
        if steps > 1:
            job.progress(round(100 * step / steps))
    if steps > 1:
        job.log(f"{data['kind']}: {steps} steps in {data.get('ms', 20)} ms, pid {os.getpid()}")
    return {"kind": data.get("kind"), "pid": os.getpid()}


def make_jobs(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Return *n* ``add_bulk`` entries: mostly short jobs, some delayed, some urgent, some
    flaky (retried with backoff), a few doomed, and reports that show progress."""
    rnd = random.Random(seed)
    jobs = []
    for i in range(n):
        roll = rnd.random()
        opts: dict[str, Any] = {"attempts": 3,
                                "backoff": {"type": "exponential", "delay": 0.2}}
        data: dict[str, Any] = {"n": i}
        if roll < 0.10:
            data.update(kind="report", ms=rnd.randint(400, 900), steps=10)
        elif roll < 0.14:
            data.update(kind="import", ms=20, fail_attempts=3,
                        reason="source file is corrupt (fails every attempt)")
        elif roll < 0.34:
            data.update(kind="email", ms=rnd.randint(10, 40),
                        fail_attempts=1 if rnd.random() < 0.4 else 0,
                        reason="SMTP timeout (the retry succeeds)")
        else:
            data.update(kind="thumbnail", ms=rnd.randint(20, 70))
        if rnd.random() < 0.15:
            opts["delay"] = round(rnd.uniform(0.5, 4.0), 2)
        if rnd.random() < 0.10:
            opts["priority"] = 1
        jobs.append({"name": data["kind"], "data": data, "opts": opts})
    return jobs


def add_demo_options(parser: argparse.ArgumentParser) -> None:
    """Add the ``localq demo`` options to *parser*."""
    parser.add_argument("--jobs", type=int, default=300, metavar="N",
                        help="how many jobs (default 300)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, metavar="N",
                        help="jobs at once in each worker process (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the job mix")
    parser.add_argument("--interval", type=float, default=None, metavar="S",
                        help="seconds between refreshes (default 0.25 on a terminal, else 1)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="give up after S seconds (default 120)")
    parser.add_argument("--plain", action="store_true",
                        help="plain text even if rich is installed")


def _start_workers(path: str, args: argparse.Namespace,
                   logdir: str) -> list[subprocess.Popen[bytes]]:
    # The children import this very copy of localq, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # The queue by $LOCALQ_PATH, not --db: a PostgreSQL URL's password (q.path shows it
    # hidden) must reach the workers, and not the process list.
    from .pg.url import resolve
    env = dict(os.environ, LOCALQ_PATH=resolve(path), PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    procs = []
    for i in range(args.workers):
        with open(os.path.join(logdir, f"worker-{i + 1}.log"), "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "localq", "worker", QUEUE,
                 "localq.demo:handle", "--concurrency", str(args.concurrency)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the worker finishes its running jobs, then exits
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=15))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def _check(args: argparse.Namespace) -> None:
    for flag, value, low, high in (("--jobs", args.jobs, 1, 100_000),
                                   ("--workers", args.workers, 1, 32),
                                   ("--concurrency", args.concurrency, 1, 256)):
        if not low <= value <= high:
            raise ConfigError(f"{flag} must be {low}-{high}, not {value}")
    interval = 0 if args.interval is None else args.interval
    if not 0 < args.timeout <= 86400 or not 0 <= interval <= 60:
        raise ConfigError("--timeout must be 0-86400 s and --interval 0-60 s")


def summary(q: Queue, added: list[dict[str, Any]], elapsed: float, failed_cursor: int,
            pids: list[int], logdir: str) -> str:
    """Return the demo's closing report: outcomes read back from the file, the job mix
    from *added* (the ``add_bulk`` entries)."""
    done, failed = q.get_completed(), q.get_failed()
    jobs = done + failed
    starts = [j.processed_on for j in jobs if j.processed_on]
    ends = [j.finished_on for j in jobs if j.finished_on]
    span = max(ends) - min(starts) if starts and ends else 0.0
    attempts_failed = q._q.count_events_after(q._store, QUEUE, "failed", failed_cursor)[0]
    per_pid = {pid: sum(1 for j in done if isinstance(j.returnvalue, dict)
                        and j.returnvalue.get("pid") == pid) for pid in pids}
    delayed = sum(1 for e in added if e["opts"].get("delay"))
    urgent = sum(1 for e in added if e["opts"].get("priority") == 1)
    reports = sum(1 for e in added if e["name"] == "report")
    db = shlex.quote(q.path)
    example = (failed or done or jobs)[0].id if jobs else "1"
    rate = f"{len(done) / span:.0f} jobs/s" if span > 0 else "-"
    return "\n".join([
        f"localq demo: {len(added)} jobs finished in {elapsed:.1f} s by {len(pids)} worker"
        f" processes ({', '.join(f'pid {p}: {n} jobs' for p, n in per_pid.items())})",
        f"  completed    {len(done)}",
        f"  failed       {len(failed)} (every attempt failed; kept for inspection)",
        f"  retried      {attempts_failed - len(failed)} failed attempts retried after a backoff",
        f"  delayed      {delayed} jobs waited 0.5-4 s before they could run",
        f"  urgent       {urgent} jobs with priority 1 ran before the others",
        f"  progress     {reports} report jobs showed progress in 10 steps",
        f"  throughput   {rate} (first start to last finish, {span:.1f} s)",
        "",
        f"The queue file is kept: {q.path}   (worker logs: {logdir})",
        "Inspect it:",
        f"  localq --db {db} stats",
        f"  localq --db {db} jobs {QUEUE} --state failed",
        f"  localq --db {db} show {QUEUE} {example}",
        f"  localq --db {db} watch {QUEUE}",
        ("Remove it with: rm -r " if os.path.dirname(q.path) == logdir
         else "Remove the logs with: rm -r ") + shlex.quote(logdir),
    ])


def run_demo(args: argparse.Namespace) -> int:
    """Run ``localq demo`` and return its exit status (0 when every job has finished)."""
    from .queue import Queue
    _check(args)
    # Only an explicit --db is used: $LOCALQ_PATH may name the user's real queue file.
    explicit = getattr(args, "db", None)
    logdir = tempfile.mkdtemp(prefix="localq-demo-")
    path = explicit or os.path.join(logdir, "demo.db")
    with Queue(QUEUE, path=path) as q:
        if q.get_jobs(list(STATES), 0, 0):
            raise ConfigError(f"queue {QUEUE!r} in {q.path!r} already has jobs: run the demo"
                              " without --db, or with a new file")
        q.resume()
        failed_cursor = q._q.count_events_after(q._store, QUEUE, "failed", -1)[1]
        added = make_jobs(args.jobs, args.seed)
        q.add_bulk(added)
        start = time.monotonic()
        procs = _start_workers(q.path, args, logdir)
        interval = args.interval if args.interval is not None else (
            0.25 if sys.stdout.isatty() else 1.0)

        def finished(frame: Frame) -> bool:
            if not any(frame.total(s) for s in _UNFINISHED):
                return True
            if all(p.poll() is not None for p in procs):
                raise LocalqError(f"the worker processes exited before the jobs were done:"
                                  f" see the logs in {logdir}")
            if time.monotonic() - start > args.timeout:
                raise LocalqError(f"the demo did not finish within {args.timeout:g} s:"
                                  f" see the logs in {logdir}")
            return False

        try:
            live(Sampler(q, [QUEUE]).sample, sys.stdout, interval=interval, plain=args.plain,
                 title=f"localq demo ({args.workers} worker processes)", stop=finished)
        finally:
            codes = _stop_workers(procs)
        elapsed = time.monotonic() - start
        print()
        print(summary(q, added, elapsed, failed_cursor, [p.pid for p in procs], logdir))
    if any(codes):
        print(f"localq: warning: worker exit codes {codes}: see {logdir}", file=sys.stderr)
    return 0
