"""Latency figures of localq workers, with real worker processes.

Prints one JSON line per figure (DESIGN.md "Figures to reach"):

* ``recovery``: seconds from SIGKILL of a worker process holding jobs until every one of its
  jobs is out of ``active`` (back to waiting, or taken again by the surviving worker);
  measured both when the killed process is a follower and when it is the scheduler leader;
* ``pickup``: ms from ``add()`` returning in this process until the handler starts in an idle
  worker process (p50 / p99);
* ``delayed_lag``: ms from a delayed job's due time until its handler starts (p50 / p99);
* ``idle_cpu``: percent of one core used by an idle worker process (from /proc).

Run from the repository root: ``python -m benchmarks.latency`` (``--quick`` for a smoke run).
Standalone on purpose: it does not depend on the rest of ``benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import apsw

import localq

__all__ = ["FIGURES", "format_rows", "main", "measure"]

# The worker process: processes QUEUE of DB and appends "job_id start_time pid" per job to LOG.
# Jobs with data {"hold": s} sleep s seconds (to be killed mid-job).
_WORKER = r"""
import os, sys, time
import localq
db, queue, log, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
def handler(job):
    os.write(fd, f"{job.id} {time.time():.6f} {os.getpid()}\n".encode())
    hold = job.data.get("hold") if isinstance(job.data, dict) else None
    if hold:
        time.sleep(hold)
    return None
q = localq.Queue(queue, path=db, durability="normal",
                 settings={"max_stalled_count": 1000})
w = localq.Worker(q, handler, concurrency=concurrency, autorun=False)
print("ready", flush=True)
w.run()
"""


def _spawn_worker(db: str, queue: str, log: str, concurrency: int = 1) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, db, queue, log, str(concurrency)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"worker did not start: {line!r}")
    return proc


def _stop(proc: subprocess.Popen[str], *, kill: bool = False) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _starts(log: str) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with open(log) as fh:
            for line in fh:
                job_id, when, _pid = line.split()
                out.setdefault(job_id, float(when))
    except FileNotFoundError:
        pass
    return out


def _wait_for(predicate: Any, timeout: float, step: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def _ro(db: str) -> apsw.Connection:
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(5000)
    return conn


def recovery(tmp: str, rounds: int) -> dict[str, Any]:
    """Kill a worker holding jobs; time until its jobs are no longer active under its lease."""
    figures: dict[str, list[float]] = {"follower": [], "leader": []}
    for r in range(rounds):
        for victim in ("follower", "leader"):
            db = os.path.join(tmp, f"rec{r}{victim}.db")
            log = os.path.join(tmp, f"rec{r}{victim}.log")
            q = localq.Queue("rec", path=db, durability="normal")
            first = _spawn_worker(db, "rec", log, concurrency=2)
            time.sleep(0.3)  # the first process becomes the scheduler leader
            second = _spawn_worker(db, "rec", log, concurrency=2)
            for _ in range(4):
                q.add({"hold": 30})
            conn = _ro(db)

            def active_owners() -> list[tuple[str, int]]:
                found = conn.execute("SELECT lock_owner, count(*) FROM jobs WHERE state = 'active'"
                                     " GROUP BY lock_owner").fetchall()
                return [(str(o), int(c)) for o, c in found]  # type: ignore[arg-type]
            _wait_for(lambda: sum(n for _, n in active_owners()) == 4, 20)
            target = first if victim == "leader" else second
            owner = next(o for o, _ in active_owners() if o.startswith(f"{target.pid}-"))
            target.kill()
            t0 = time.monotonic()
            target.wait()
            ok = _wait_for(lambda: not conn.execute(
                "SELECT 1 FROM jobs WHERE state = 'active' AND lock_owner = ?", (owner,)
            ).fetchall(), 30, 0.001)
            figures[victim].append(time.monotonic() - t0 if ok else float("inf"))
            conn.close()
            for proc in (first, second):
                _stop(proc, kill=True)
            q.close()
    return {"figure": "recovery", "unit": "s", "target": "<= 1 s",
            "follower_killed_max": round(max(figures["follower"]), 3),
            "leader_killed_max": round(max(figures["leader"]), 3),
            "median": round(statistics.median(figures["follower"] + figures["leader"]), 3),
            "rounds": rounds}


def pickup(tmp: str, n: int) -> dict[str, Any]:
    """Time from add() returning here to the handler starting in an idle worker process."""
    db, log = os.path.join(tmp, "pickup.db"), os.path.join(tmp, "pickup.log")
    q = localq.Queue("pick", path=db)
    worker = _spawn_worker(db, "pick", log)
    time.sleep(0.5)
    added: dict[str, float] = {}
    try:
        for _ in range(n):
            job = q.add({})
            added[job.id] = time.time()
            _wait_for(lambda: job.id in _starts(log), 5, 0.001)
            time.sleep(0.01)  # let the worker go idle again
    finally:
        _stop(worker)
        q.close()
    starts = _starts(log)
    lat = [max(0.0, (starts[i] - t) * 1000) for i, t in added.items() if i in starts]
    return {"figure": "pickup", "unit": "ms", "target": "p50 <= 5, p99 <= 50", "n": len(lat),
            "p50": round(_pct(lat, 50), 3), "p99": round(_pct(lat, 99), 3),
            "max": round(max(lat), 3), "durability": "safe"}


def delayed_lag(tmp: str, n: int) -> dict[str, Any]:
    """Time from a delayed job's due time to its handler starting in a worker process."""
    db, log = os.path.join(tmp, "lag.db"), os.path.join(tmp, "lag.log")
    q = localq.Queue("lag", path=db)
    worker = _spawn_worker(db, "lag", log)
    due: dict[str, float] = {}
    try:
        for i in range(n):
            delay = 0.05 + (i * 37 % 100) / 200.0  # 0.05 - 0.55 s, spread
            job = q.add({}, delay=delay)
            due[job.id] = job.timestamp + delay
            time.sleep(0.02)
        _wait_for(lambda: len(_starts(log)) >= n, 30, 0.01)
    finally:
        _stop(worker)
        q.close()
    starts = _starts(log)
    lag = [(starts[i] - t) * 1000 for i, t in due.items() if i in starts]
    return {"figure": "delayed_lag", "unit": "ms", "target": "p99 <= 50", "n": len(lag),
            "p50": round(_pct(lag, 50), 3), "p99": round(_pct(lag, 99), 3),
            "max": round(max(lag), 3)}


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(tmp: str, seconds: float) -> dict[str, Any]:
    """CPU used by an idle worker process (it is also its queue's scheduler leader)."""
    db, log = os.path.join(tmp, "idle.db"), os.path.join(tmp, "idle.log")
    q = localq.Queue("idle", path=db)
    worker = _spawn_worker(db, "idle", log)
    try:
        q.add({})
        _wait_for(lambda: len(_starts(log)) >= 1, 5)
        time.sleep(1.0)
        before, t0 = _cpu_seconds(worker.pid), time.monotonic()
        time.sleep(seconds)
        after, elapsed = _cpu_seconds(worker.pid), time.monotonic() - t0
    finally:
        _stop(worker)
        q.close()
    if before is None or after is None:
        return {"figure": "idle_cpu", "unit": "%", "skipped": "no /proc on this platform"}
    return {"figure": "idle_cpu", "unit": "% of one core", "target": "<= 1",
            "value": round(100.0 * (after - before) / elapsed, 3), "seconds": seconds}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the figures, one JSON line each; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", choices=["recovery", "pickup", "delayed_lag", "idle_cpu"],
                        action="append", help="measure only these figures")
    args = parser.parse_args(argv)
    measure(args.only or list(FIGURES), quick=args.quick)
    return 0


#: Every figure, in the order they run.
FIGURES = ("recovery", "pickup", "delayed_lag", "idle_cpu")


def measure(wanted: Sequence[str], *, quick: bool) -> list[dict[str, Any]]:
    """Measure the *wanted* figures, printing each as one JSON line; return them."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="localq-latency-") as tmp:
        for figure in wanted:
            if figure == "recovery":
                row = recovery(tmp, 1 if quick else 3)
            elif figure == "pickup":
                row = pickup(tmp, 10 if quick else 200)
            elif figure == "delayed_lag":
                row = delayed_lag(tmp, 5 if quick else 60)
            else:
                row = idle_cpu(tmp, 1.0 if quick else 5.0)
            row.update(apsw=apsw.apsw_version(), sqlite=apsw.sqlite_lib_version(),
                       localq=localq.__version__)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Render the figures as lines of text with their targets."""
    lines = []
    for row in rows:
        figure = row["figure"]
        if figure == "recovery":
            text = (f"recovery after SIGKILL: follower {row['follower_killed_max']:.3f} s, leader"
                    f" {row['leader_killed_max']:.3f} s (max of {row['rounds']})")
            met = max(row["follower_killed_max"], row["leader_killed_max"]) <= 1.0
        elif figure in ("pickup", "delayed_lag"):
            text = (f"{figure.replace('_', ' ')}: p50 {row['p50']:.2f} ms, p99 {row['p99']:.2f} ms"
                    f" (n={row['n']})")
            met = row["p99"] <= 50 and (figure != "pickup" or row["p50"] <= 5)
        elif "value" in row:
            text = f"idle worker CPU: {row['value']:.2f} % of one core over {row['seconds']:g} s"
            met = row["value"] <= 1
        else:
            lines.append(f"{figure}: {row.get('skipped', 'not measured')}")
            continue
        lines.append(f"{text}  [{row['target']}: {'met' if met else 'MISSED'}]")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
