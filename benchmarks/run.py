"""Run the benchmark suite: ``python -m benchmarks.run --repeat 5 --json results.json``.

Prints one JSON line per configuration (workload x synchronous x backend) as it
finishes, then a table with each row's ratio to ``raw`` and ``raw-full`` and, for
localq's rows, the DESIGN.md target the ratio is held to (met or MISSED).  Skipped
backends and workloads are reported on stderr with the reason.  ``--scale`` and
``--latency`` add :mod:`benchmarks.scale` and :mod:`benchmarks.latency` to the run
(their figures go into the JSON too).

Backends come in three families selected with ``--only``: ``raw`` (this machine's
floor, :mod:`benchmarks.raw`), ``peers`` (:mod:`benchmarks.peers`) and ``localq``
(``benchmarks/localq_bench.py``, which exposes ``BACKENDS`` like :mod:`benchmarks.raw`);
``--only`` also takes single backend names.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from typing import Any

from benchmarks import peers, raw
from benchmarks.common import (
    SYNC_LEVELS,
    TMPDIR_ENV,
    Backend,
    Result,
    annotate,
    emit_json_line,
    environment,
    format_table,
    make_tempdir,
    write_json,
)
from benchmarks.workloads import WORKLOADS

FAMILIES = ("raw", "peers", "localq")
#: The default n keeps a full run (every backend, both sync levels) well under two
#: minutes on the shared 2-core dev machine: 25 s when it is quiet, while n=4000
#: took 160 s at a load average of 6.  The peers whose drain is quadratic
#: (persist-queue, litequeue) and liteq dominate it; pass a larger --n to measure.
DEFAULT_N = 2000


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help="jobs per configuration at synchronous NORMAL (default %(default)s)")
    p.add_argument("--n-full", type=int, default=None,
                   help="jobs per W1/W3/W4 configuration at FULL, which is fsync-bound "
                        "(default: n/4, at least min(n, 200))")
    p.add_argument("--n-bulk", type=int, default=None,
                   help="jobs for W2 at both levels (default: 10 x n; batches of 1000)")
    p.add_argument("--workloads", type=_csv, default=list(WORKLOADS),
                   help="comma list of %s (default all)" % ",".join(WORKLOADS))
    p.add_argument("--only", type=_csv, default=list(FAMILIES),
                   help="comma list of families (%s) or backend names" % ",".join(FAMILIES))
    p.add_argument("--sync", type=_csv, default=list(SYNC_LEVELS),
                   help="comma list of synchronous levels (default NORMAL,FULL)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each configuration K times and keep the median by ops/s: "
                        "the machine is shared and noisy (default %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write all results to PATH")
    p.add_argument("--scale", choices=("quick", "full"),
                   help="also run benchmarks.scale (full: DESIGN.md's 1,000,000 jobs, minutes)")
    p.add_argument("--latency", choices=("quick", "full"),
                   help="also run benchmarks.latency (recovery, pickup, delayed lag, idle CPU)")
    p.add_argument("--tmpdir", metavar="DIR",
                   help=f"parent of the run's temporary directory (default ${TMPDIR_ENV} "
                        "or the system temp dir); removed at the end")
    return p


def _select_backends(only: Sequence[str]) -> tuple[list[Backend], list[tuple[str, str]]]:
    """Return the backends to run and the (name, reason) of the selected ones skipped.

    :raises ValueError: if ``only`` names neither a family nor a known backend.
    """
    candidates: list[Backend] = list(raw.BACKENDS)
    found, missing = peers.backends()
    candidates += found
    skipped = [("peers", name, why) for name, why in missing]
    try:
        localq_bench = importlib.import_module("benchmarks.localq_bench")
    except ImportError as exc:
        skipped.append(("localq", "localq", f"benchmarks.localq_bench cannot be imported "
                                            f"({exc})"))
    else:
        candidates += list(localq_bench.BACKENDS)
    known = set(FAMILIES) | {b.name for b in candidates} | {name for _, name, _ in skipped}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(sorted(known))}")
    chosen = [b for b in candidates if b.family in only or b.name in only]
    return chosen, [(name, why) for family, name, why in skipped
                    if family in only or name in only]


def _size(workload: str, sync: str, args: argparse.Namespace) -> int:
    if workload == "W2":
        return int(args.n_bulk if args.n_bulk is not None else 10 * args.n)
    if sync == "FULL":
        return int(args.n_full if args.n_full is not None
                   else max(args.n // 4, min(args.n, 200)))
    return int(args.n)


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad:
        parser.error(f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(WORKLOADS)}")
    args.sync = [s.upper() for s in args.sync]
    bad = [s for s in args.sync if s not in SYNC_LEVELS]
    if bad:
        parser.error(f"unknown synchronous level(s) {', '.join(bad)}")
    for name in ("n", "n_full", "n_bulk", "repeat"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def _run_once(workload: str, backend: Backend, n: int, sync: str, workdir: str) -> Result:
    config_dir = tempfile.mkdtemp(prefix=f"{workload}-{sync}-{backend.name}-", dir=workdir)
    try:
        function = (backend.workloads or {}).get(workload) or WORKLOADS[workload]
        return function(backend, config_dir, n, sync)
    except Exception as exc:  # one failing backend must not end the run
        traceback.print_exc(file=sys.stderr)
        return Result(workload=workload, backend=backend.name, n=n, synchronous=sync,
                      journal_mode="?", concurrency="?", ops_per_s=0.0, seconds=0.0,
                      driver=backend.driver, sqlite_version=backend.sqlite_version,
                      backend_note=backend.note, error=f"{type(exc).__name__}: {exc}")
    finally:
        # Each configuration starts from an empty directory and leaves nothing
        # behind, so disk use stays one database at a time.
        shutil.rmtree(config_dir, ignore_errors=True)


def _median(all_runs: list[Result]) -> Result:
    """Return the median successful run by ops/s, noting failed runs.

    A run that failed (a peer's "database is locked") is shown in the note rather
    than hiding the runs that worked; when every run failed, the first failure is
    the row.  Lost and completed-twice counts are the worst of any run.
    """
    runs = [r for r in all_runs if r.error is None]
    failures = [r for r in all_runs if r.error is not None]
    if not runs:
        return failures[0]
    if len(all_runs) == 1:
        return runs[0]
    ordered = sorted(runs, key=lambda r: r.ops_per_s)
    median = ordered[len(ordered) // 2]
    # Speed is the median, but a job lost or completed twice in any run is shown.
    for field in ("lost", "completed_twice"):
        counts = [getattr(r, field) for r in runs if getattr(r, field) is not None]
        if counts:
            setattr(median, field, max(counts))
    spread = (f"median of {len(runs)}: "
              f"{ordered[0].ops_per_s:,.0f}..{ordered[-1].ops_per_s:,.0f}/s")
    failed = (f"{len(failures)} of {len(all_runs)} runs FAILED: {failures[0].error}"
              if failures else "")
    median.note = "; ".join(part for part in (failed, spread, median.note) if part)
    median.failed_runs = len(failures)
    return median


def run(args: argparse.Namespace, backends: Sequence[Backend],
        workdir: str) -> tuple[list[Result], bool]:
    """Run every selected configuration under ``workdir``; return results and success.

    Repeats go round the backends (raw, peer, ..., raw, peer, ...) rather than
    repeating one backend K times in a row, so a noisy spell on the shared machine
    (fsync latency varies several-fold here) hits every backend of a row group alike.
    A row group is one workload at one synchronous level; a backend with a fixed
    durability mode (localq) joins the group of the raw row its target compares with.
    """
    results: list[Result] = []
    for workload in args.workloads:
        for b in backends:
            if workload == "W2" and not b.supports_bulk:
                print(f"skip {b.name} W2: no bulk add API", file=sys.stderr)
            elif not any(b.runs(workload, level) for level in args.sync):
                print(f"skip {b.name} {workload}: not run at --sync {','.join(args.sync)}",
                      file=sys.stderr)
        for sync in args.sync:
            group = [b for b in backends if b.runs(workload, sync)]
            n = _size(workload, sync, args)
            runs: dict[str, list[Result]] = {b.name: [] for b in group}
            for _ in range(args.repeat):
                for b in group:
                    runs[b.name].append(_run_once(workload, b, n, sync, workdir))
            for b in group:
                result = _median(runs[b.name])
                emit_json_line(result)
                results.append(result)
    return results, all(r.error is None and not r.failed_runs for r in results)


def main(argv: list[str] | None = None) -> int:
    """Run the suite; return 0 when every configuration ran, 1 otherwise."""
    parser = _parser()
    args = parser.parse_args(argv)
    _validate(args, parser)
    try:
        backends, skipped = _select_backends(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    for name, why in skipped:
        print(f"skip {name}: {why}", file=sys.stderr)
    env = environment()
    load_before = _load()
    extra: dict[str, list[dict[str, Any]]] = {}
    workdir = make_tempdir(args.tmpdir)
    try:
        results, ok = run(args, backends, workdir)
        if args.scale:
            from benchmarks import scale
            extra["scale"] = scale.run(workdir, args.scale == "full")
        if args.latency:
            from benchmarks import latency
            extra["latency"] = latency.measure(latency.FIGURES, quick=args.latency == "quick")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    env["load average (start, end)"] = f"{load_before} / {_load()}"
    print()
    print("  ".join(f"{k}: {v}" for k, v in env.items()))
    annotate(results, backends)
    print(format_table(results))
    if "scale" in extra:
        from benchmarks import scale
        print()
        print(scale.format_rows(extra["scale"]))
    if "latency" in extra:
        from benchmarks import latency
        print()
        print(latency.format_rows(extra["latency"]))
    if args.json:
        write_json(args.json, results, env, extra)
    return 0 if ok else 1


def _load() -> str:
    """The 1-minute load average (other processes compete for the cores), or "?"."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
