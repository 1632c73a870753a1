"""localq on PostgreSQL against plain psycopg: ``python -m benchmarks.pg_bench [--n 500]``.

Every workload runs twice in the same run, on the same server: once through localq
(``Queue(path="postgresql://...?schema=...")``) and once as the same operations written
directly with psycopg (:mod:`benchmarks.pg_baseline`); each configuration gets a fresh
schema of its own, dropped at the end.  A row's ``ratio`` is localq's jobs/s divided by the
baseline's: the price of localq's bookkeeping (events, attempts, leases, options) per job.

* W1 add one by one, localq durability ``safe`` against ``synchronous_commit = on`` and
  ``normal`` against ``off``;
* W2 ``add_bulk`` of batches of 1000 (baseline: ``executemany`` in one transaction);
* W3 one consumer drains n waiting jobs: ``get_next_job()`` + ``move_to_completed(
  not_fetch=True)`` against the claim ``UPDATE ... SKIP LOCKED`` + ack, two transactions;
  localq ``safe`` commits these processing steps with ``synchronous_commit = off``, so
  the baseline runs with ``off`` too;
* W4 one producer (adds as in W1 ``safe`` / ``on``) and two consumer *processes*
  (multiprocessing ``spawn``), end to end, with the jobs lost and completed twice;
* W5 one consumer drains n waiting jobs as a worker does: each completion takes the next
  job in the same transaction (``settle(..., fetch=True)``, the Worker's call) against the
  ack of one job and the claim of the next in one statement; ``synchronous_commit = off``
  as in W3.

Without ``--url`` (or ``$LOCALQ_TEST_PG_URL``) a private server is started with the
server's durable defaults (fsync on), unlike the test server, whose fsync is off.
Prints one JSON line per configuration, then the table.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import multiprocessing.synchronize
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

import localq
from benchmarks.common import percentile
from benchmarks.pg_baseline import Baseline
from localq.pg.url import parse_url
from localq.runner import settle

#: Fast enough for the 90 s budget on the shared 2-core machine with fsync on.
DEFAULT_N = 1000
BATCH = 1000
_POLL_S = 0.002
_ENV_URL = "LOCALQ_TEST_PG_URL"
#: (workload, localq durability, baseline synchronous_commit) in run order.
CONFIGS = (("W1", "safe", "on"), ("W1", "normal", "off"), ("W2", "safe", "on"),
           ("W3", "safe", "off"), ("W4", "safe", "on/off"), ("W5", "safe", "off"))


class _Localq:
    """localq through the same four calls as :class:`Baseline`."""

    def __init__(self, url: str, schema: str, durability: str) -> None:
        self.q = localq.Queue("bench", path=f"{url}{'&' if '?' in url else '?'}schema={schema}",
                              durability=durability)

    def add(self, data: str) -> None:
        self.q.add(json.loads(data))

    def add_bulk(self, items: Sequence[str]) -> None:
        self.q.add_bulk([{"data": json.loads(d)} for d in items])

    def claim(self) -> tuple[Any, str] | None:
        job = self.q.get_next_job()
        return None if job is None else (job, json.dumps(job.data))

    def ack(self, job: Any) -> None:
        job.move_to_completed(None, not_fetch=True)

    def ack_and_claim(self, job: Any) -> tuple[Any, str] | None:
        nxt = settle(self.q, job, True, None, fetch=True)
        return None if nxt is None else (nxt, json.dumps(nxt.data))

    def close(self) -> None:
        self.q.close()


def _open(system: str, url: str, schema: str, level: str) -> Any:
    if system == "localq":
        return _Localq(url, schema, level)
    return Baseline(url, schema, level)


def _payload(i: int) -> str:
    return json.dumps({"seq": i, "to": f"user{i}@example.com", "body": "x" * 64})


def _timed(calls: Sequence[Callable[[], Any]]) -> tuple[float, list[float]]:
    lat: list[float] = []
    clock = time.perf_counter
    start = clock()
    for call in calls:
        t = clock()
        call()
        lat.append(clock() - t)
    return clock() - start, lat


def _w1(h: Any, n: int) -> tuple[int, float, list[float]]:
    items = [_payload(i) for i in range(n)]
    seconds, lat = _timed([lambda d=d: h.add(d) for d in items])  # type: ignore[misc]
    return n, seconds, lat


def _w2(h: Any, n: int) -> tuple[int, float, list[float]]:
    items = [_payload(i) for i in range(n)]
    batches = [items[i:i + BATCH] for i in range(0, n, BATCH)]
    seconds, lat = _timed([lambda b=b: h.add_bulk(b) for b in batches])  # type: ignore[misc]
    return n, seconds, lat


def _w3(h: Any, n: int) -> tuple[int, float, list[float]]:
    items = [_payload(i) for i in range(n)]
    for i in range(0, n, BATCH):
        h.add_bulk(items[i:i + BATCH])
    lat: list[float] = []
    clock = time.perf_counter
    start = clock()
    while True:
        t = clock()
        claim = h.claim()
        if claim is None:
            break
        h.ack(claim[0])
        lat.append(clock() - t)
    return len(lat), clock() - start, lat


def _w5(h: Any, n: int) -> tuple[int, float, list[float]]:
    items = [_payload(i) for i in range(n)]
    for i in range(0, n, BATCH):
        h.add_bulk(items[i:i + BATCH])
    lat: list[float] = []
    clock = time.perf_counter
    start = clock()
    claim = h.claim()
    while claim is not None:
        t = clock()
        claim = h.ack_and_claim(claim[0])
        lat.append(clock() - t)
    return len(lat), clock() - start, lat


def consume(system: str, url: str, schema: str, level: str, report: str,
            ready: multiprocessing.synchronize.Event,
            done: multiprocessing.synchronize.Event) -> None:
    """W4 consumer process: claim and ack until the producer is done and the queue empty.

    ``done`` is read *before* each claim, so an empty claim after it proves the queue
    drained; each job's ``seq`` is recorded after its ack returned.
    """
    h = _open(system, url, schema, level)
    seqs: list[int] = []
    try:
        ready.set()
        while True:
            finished = done.is_set()
            claim = h.claim()
            if claim is None:
                if finished:
                    break
                time.sleep(_POLL_S)
                continue
            h.ack(claim[0])
            seqs.append(int(json.loads(claim[1])["seq"]))
    finally:
        h.close()
    Path(report).write_text(json.dumps(seqs))


def _w4(system: str, url: str, schema: str, n: int, workdir: str) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Event()
    consumer_level = "safe" if system == "localq" else "off"
    h = _open(system, url, schema, "safe" if system == "localq" else "on")
    procs, reports = [], []
    for i in range(2):
        ready = ctx.Event()
        report = os.path.join(workdir, f"{schema}-{i}.json")
        p = ctx.Process(target=consume, args=(system, url, schema, consumer_level, report,
                                              ready, done))
        p.start()
        procs.append((p, ready))
        reports.append(report)
    try:
        for p, ready in procs:
            if not ready.wait(60):
                raise RuntimeError(f"W4 consumer of {system} did not start (exit {p.exitcode})")
        start = time.perf_counter()
        for i in range(n):
            h.add(_payload(i))
        done.set()
        for p, _ in procs:
            p.join(120)
        seconds = time.perf_counter() - start
    finally:
        done.set()
        h.close()
        for p, _ in procs:
            if p.is_alive():
                p.kill()
                p.join()
    seqs = [s for r in reports if os.path.exists(r) for s in json.loads(Path(r).read_text())]
    return {"done": len(seqs), "seconds": seconds, "lost": n - len(set(seqs)),
            "completed_twice": len(seqs) - len(set(seqs))}


def _row(system: str, workload: str, level: str, n: int, done: int, seconds: float,
         lat: Sequence[float]) -> dict[str, Any]:
    row: dict[str, Any] = {"system": system, "workload": workload, "level": level, "n": n,
                           "done": done, "seconds": round(seconds, 4),
                           "ops_per_s": round(done / seconds, 1) if seconds else 0.0}
    if lat:
        row["p50_ms"] = round(percentile(lat, 50) * 1000, 3)
        row["p99_ms"] = round(percentile(lat, 99) * 1000, 3)
    return row


def run_config(system: str, workload: str, level: str, url: str, schema: str, n: int,
               workdir: str) -> dict[str, Any]:
    """Run one workload on one system in schema *schema*; return its row."""
    if workload == "W4":
        w4 = _w4(system, url, schema, n, workdir)
        row = _row(system, workload, level, n, w4["done"], w4["seconds"], [])
        row.update(lost=w4["lost"], completed_twice=w4["completed_twice"])
        return row
    body = {"W1": _w1, "W2": _w2, "W3": _w3, "W5": _w5}[workload]
    h = _open(system, url, schema, level)
    try:
        done, seconds, lat = body(h, n)
    finally:
        h.close()
    return _row(system, workload, level, n, done, seconds, lat)


def _private_server() -> Any:
    # tests/pg_server.py is not a package module: load it by path.
    path = Path(__file__).resolve().parents[1] / "tests" / "pg_server.py"
    spec = importlib.util.spec_from_file_location("_localq_pg_server", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    # The server's defaults (fsync on, synchronous_commit on): what a deployment runs.
    return mod.start("-c listen_addresses=127.0.0.1 -c max_connections=100")


def server_info(url: str) -> dict[str, str]:
    """The server settings a reader needs to judge the figures, plus this machine's."""
    with psycopg.connect(url) as conn:
        info = {k: str(conn.execute(f"SHOW {k}").fetchone()[0])  # type: ignore[index]
                for k in ("server_version", "fsync", "synchronous_commit",
                          "full_page_writes", "wal_sync_method")}
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info.update(nproc=str(os.cpu_count()), cpu=cpu, python=platform.python_version(),
                psycopg=psycopg.__version__)
    return info


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per workload x level: localq and psycopg jobs/s and their ratio."""
    head = (f"{'workload':<9}{'localq':<8}{'psycopg':<9}{'n':>6}{'localq/s':>10}"
            f"{'psycopg/s':>11}{'ratio':>7}{'lost':>6}{'twice':>6}")
    lines = [head, "-" * len(head)]
    base = {(r["workload"], i): r for i, r in enumerate(rows) if r["system"] == "psycopg"}
    ours = [(i, r) for i, r in enumerate(rows) if r["system"] == "localq"]
    for i, r in ours:
        b = base.get((r["workload"], i + 1))
        ratio = f"{r['ops_per_s'] / b['ops_per_s']:.2f}" if b and b["ops_per_s"] else "-"
        # W4 only: localq's count / the baseline's.
        lost = twice = "-"
        if "lost" in r and b:
            lost = f"{r['lost']}/{b['lost']}"
            twice = f"{r['completed_twice']}/{b['completed_twice']}"
        lines.append(f"{r['workload']:<9}{r['level']:<8}{b['level'] if b else '-':<9}"
                     f"{r['n']:>6}{r['ops_per_s']:>10.0f}"
                     f"{b['ops_per_s'] if b else 0:>11.0f}{ratio:>7}{lost:>6}{twice:>6}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pg_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help="jobs per W1/W3/W4/W5 configuration (default %(default)s)")
    p.add_argument("--n-bulk", type=int, default=None,
                   help="jobs for W2 (default 10 x n, batches of 1000)")
    p.add_argument("--url", default=os.environ.get(_ENV_URL),
                   help=f"server to use (default ${_ENV_URL}; else a private one is started)")
    p.add_argument("--workloads", default="W1,W2,W3,W4,W5", help="comma list (default all)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each configuration K times and keep the median by jobs/s: the"
                        " machine is shared and noisy (default %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the rows to PATH")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the configurations, print JSON lines and the table; return the exit status."""
    args = _parser().parse_args(argv)
    server = None if args.url else _private_server()
    url = parse_url(args.url if server is None else server.url).conninfo
    run = uuid.uuid4().hex[:8]
    wanted = set(args.workloads.split(","))
    rows: list[dict[str, Any]] = []
    schemas: list[str] = []
    try:
        info = server_info(url)
        print(json.dumps({"environment": info}, sort_keys=True), flush=True)
        with tempfile.TemporaryDirectory(prefix="localq-pgbench-") as workdir:
            for k, (workload, ours, theirs) in enumerate(CONFIGS):
                if workload not in wanted:
                    continue
                n = (args.n_bulk or 10 * args.n) if workload == "W2" else args.n
                for system, level in (("localq", ours), ("psycopg", theirs)):
                    tries = []
                    for rep in range(max(1, args.repeat)):
                        schema = f"bench_{run}_{k}_{system[0]}{rep}"
                        schemas.append(schema)
                        tries.append(run_config(system, workload, level, url, schema, n,
                                                workdir))
                    row = sorted(tries, key=lambda r: float(r["ops_per_s"]))[len(tries) // 2]
                    row["repeat"] = len(tries)
                    rows.append(row)
                    print(json.dumps(row, sort_keys=True), flush=True)
        print(format_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"environment": info, "rows": rows}))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if server is not None:
            server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
