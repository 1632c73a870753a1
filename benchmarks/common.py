"""Shared pieces of the benchmark suite: the adapter protocol, results, timing, output.

The adapter protocol
====================

Every backend (``raw`` apsw, each peer, and later localq itself) is driven through
the same workload functions (:mod:`benchmarks.workloads`), so a figure means the same
thing in every row.  A backend is described by a :class:`Backend` record whose
``open(workdir, sync)`` returns an :class:`Adapter`: one open handle on the backend's
store, in one process, used from one thread.

``open(workdir, sync) -> Adapter``
    ``workdir`` is an empty directory of its own for this configuration; the backend
    names its files inside it.  ``sync`` is ``"NORMAL"`` or ``"FULL"``: the
    ``PRAGMA synchronous`` the backend must run its commits under (an adapter of a
    library with its own durability knob maps it, and says how in ``Backend.note``).
    Opening must be idempotent and safe while other processes have the store open
    (the W4 consumers open it after the producer did).
``add(data: str) -> None``
    Enqueue one job whose payload is ``data`` (a JSON text), durable when it returns.
``add_bulk(items: Sequence[str]) -> None``
    Enqueue many jobs at once; only called when ``Backend.supports_bulk``.
``claim() -> Claim | None``
    Take the next waiting job for this consumer, or ``None`` when none is waiting.
    Must never block waiting for work: the workloads own the polling.
``ack(claim) -> None``
    Record the claimed job as done.  An adapter whose library runs the handler
    itself (liteq) may fill in ``claim.data`` only here.
``settings() -> Settings``
    The ``journal_mode`` and ``synchronous`` actually in force, read back from the
    connection: rows report what was measured, not what was asked for.
``pages_written() -> int | None``
    Pages written to the WAL so far by this connection
    (``SQLITE_DBSTATUS_CACHE_WRITE``), or ``None`` when the driver cannot tell
    (stdlib ``sqlite3``).  DESIGN.md: "measure pages per commit, not just seconds".
``close() -> None``
    Release everything; the workdir is deleted afterwards.

``prepare(data: str) -> object`` (optional)
    Turn a payload into what ``add`` takes, before the clock starts (localq's ``add``
    takes a Python value, not JSON text: decoding it is not the library's work).
    ``add_bulk`` receives prepared payloads too.  Without it, payloads stay text.

A backend with a fixed durability of its own (localq's ``durability`` modes) sets
``Backend.mode``: it is opened with that mode whatever the row group's level, and
``settings().synchronous`` must report it (``"SAFE"`` when commits that create user
data are fsynced and processing steps are not).  ``Backend.levels`` says, per
workload, in which level's row group it runs (beside the raw row it is compared
with, so repeats interleave with it); ``Backend.workloads`` replaces a workload's
function (localq's W3 drains with its real ``Worker``).  ``Backend.targets`` are the
DESIGN.md figures its rows are held to; the table prints them next to the ratios.

W4 runs consumers in processes started with ``spawn``: the :class:`Backend` record is
pickled into each child, so ``open`` (and ``consumer``) must be module-level
functions.  ``Backend.consumer`` is the worker-process entry: ``None`` means the
generic claim/ack poll loop of :func:`benchmarks.workloads.run_consumer`; a backend
with a worker of its own (localq's ``Worker``) gives a function taking a
:class:`ConsumerContext` that must follow that loop's contract: open, set
``ctx.ready``, process until ``ctx.producer_done`` is set *and* a claim started after
seeing it found nothing, then call :func:`write_consumer_report`.
"""
from __future__ import annotations

import json
import math
import multiprocessing.synchronize
import os
import platform
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Protocol

import apsw

#: The two durability levels every workload runs at ("raw" vs "raw-full").
SYNC_LEVELS = ("NORMAL", "FULL")
#: Environment variable naming the parent of the benchmark's temporary directory
#: (the smoke test points it at pytest's tmp_path); ``--tmpdir`` overrides it.
TMPDIR_ENV = "LOCALQ_BENCH_TMPDIR"
_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@dataclass(slots=True)
class Claim:
    """One claimed job: the backend's own handle and the job's payload.

    :param token: whatever the backend needs to ack the job (row id, message id...).
    :param data: the payload given to ``add``; may be ``None`` until ``ack`` returns
        for a library that runs the handler itself.
    """

    token: object
    data: str | None


@dataclass(frozen=True, slots=True)
class Settings:
    """The pragmas in force on a backend's connection."""

    journal_mode: str
    synchronous: str


class Adapter(Protocol):
    """One open handle on a backend (see the module docstring)."""

    def add(self, data: str) -> None: ...

    def add_bulk(self, items: Sequence[str]) -> None: ...

    def claim(self) -> Claim | None: ...

    def ack(self, claim: Claim) -> None: ...

    def settings(self) -> Settings: ...

    def pages_written(self) -> int | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ConsumerContext:
    """Everything a W4 consumer process needs; pickled into the spawned child.

    :param backend: the backend under test.
    :param workdir: the directory given to ``Backend.open``.
    :param sync: the synchronous level to open with.
    :param index: this consumer's number, 0-based.
    :param report_path: where :func:`write_consumer_report` writes its JSON report.
    :param ready: set once the backend is open, so the producer starts the clock
        only when every consumer can take jobs.
    :param producer_done: set by the producer after its last add committed.
    :param poll_s: sleep between two empty claims.
    """

    backend: Backend
    workdir: str
    sync: str
    index: int
    report_path: str
    ready: multiprocessing.synchronize.Event
    producer_done: multiprocessing.synchronize.Event
    poll_s: float


@dataclass(frozen=True)
class Target:
    """A DESIGN.md "Figures to reach" line: ``ops/s >= ratio x`` the raw row at ``base``.

    :param base: ``"NORMAL"`` (``raw``) or ``"FULL"`` (``raw-full``).
    :param ratio: the least ratio that meets the target.
    :param exact: also require 0 lost and 0 completed twice (W4).
    """

    base: str
    ratio: float
    exact: bool = False

    def describe(self) -> str:
        """Return the target as printed, e.g. ``">= 0.8 x raw-full"``."""
        text = f">= {self.ratio:g} x {'raw' if self.base == 'NORMAL' else 'raw-full'}"
        return text + ", 0 lost/twice" if self.exact else text


#: A workload function: ``(backend, workdir, n, sync) -> Result``.
WorkloadFn = Callable[["Backend", str, int, str], "Result"]


@dataclass(frozen=True)
class Backend:
    """A benchmarked backend: how to open it and what it can do.

    :param name: row label, e.g. ``"raw"`` or ``"persist-queue"``.
    :param family: the ``--only`` group it belongs to: ``raw``, ``peers`` or ``localq``.
    :param open: ``(workdir, sync) -> Adapter``; a module-level function.
    :param driver: the SQLite binding it runs on, e.g. ``"apsw 3.54.1.0"``.
    :param sqlite_version: the SQLite library version behind that driver.
    :param supports_bulk: whether ``add_bulk`` is a real API of the backend (W2).
    :param consumer: the W4 worker-process entry, or ``None`` for the generic loop.
    :param note: what a reader must know to judge its rows (API used, quirks).
    :param mode: a fixed durability label (see the module docstring), or ``None``.
    :param levels: workload -> the levels whose row group it runs in; a workload not
        listed is not run.  ``None``: every workload at every level.
    :param workloads: workload -> a function replacing the generic one.
    :param targets: workload -> the DESIGN.md target of its row.
    """

    name: str
    family: str
    open: Callable[[str, str], Adapter]
    driver: str
    sqlite_version: str
    supports_bulk: bool = False
    consumer: Callable[[ConsumerContext], None] | None = None
    note: str = ""
    mode: str | None = None
    levels: Mapping[str, tuple[str, ...]] | None = None
    workloads: Mapping[str, WorkloadFn] | None = None
    targets: Mapping[str, Target] = field(default_factory=dict)

    def runs(self, workload: str, level: str) -> bool:
        """Whether this backend has a row for *workload* in *level*'s row group."""
        if workload == "W2" and not self.supports_bulk:
            return False
        return self.levels is None or level in self.levels.get(workload, ())


@dataclass
class Result:
    """The figures of one configuration (workload x backend x synchronous).

    ``ops_per_s`` is jobs per second for every workload.  ``p50_ms``/``p99_ms`` are
    per add (W1), per batch (W2), per claim+ack (W3) and add-to-ack (W4).
    ``lost``/``completed_twice`` are counted in W4 from the consumers' own reports.
    ``note`` is about this run, ``backend_note`` (``Backend.note``) about the backend.
    ``error`` is set when the configuration failed; ``failed_runs`` counts the
    ``--repeat`` runs that failed when others succeeded (their error is in ``note``).
    ``x_raw``/``x_raw_full`` are the ratios to raw's row of the same workload at
    NORMAL and FULL, and ``target``/``target_met`` the DESIGN.md target, filled in by
    :func:`annotate` once the whole run is done.
    """

    workload: str
    backend: str
    n: int
    synchronous: str
    journal_mode: str
    concurrency: str
    ops_per_s: float
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    lost: int | None = None
    completed_twice: int | None = None
    batch: int | None = None
    pages_per_op: float | None = None
    driver: str = ""
    sqlite_version: str = ""
    apsw_version: str = field(default_factory=apsw.apsw_version)
    note: str = ""
    backend_note: str = ""
    error: str | None = None
    failed_runs: int = 0
    x_raw: float | None = None
    x_raw_full: float | None = None
    target: str | None = None
    target_met: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0-100) of ``values``, nearest-rank method.

    :raises ValueError: if ``values`` is empty.
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_ms(seconds: Sequence[float]) -> tuple[float | None, float | None]:
    """Return (p50, p99) in milliseconds of durations given in seconds."""
    if not seconds:
        return None, None
    return percentile(seconds, 50) * 1e3, percentile(seconds, 99) * 1e3


def make_payload(seq: int, t: float = 0.0) -> str:
    """Return a small realistic job payload (JSON text) carrying its sequence number.

    :param seq: the job's number, how W4 consumers report what they processed.
    :param t: the producer's ``perf_counter()`` at add time (W4 add-to-ack latency).
    """
    return json.dumps(
        {"seq": seq, "t": t, "to": f"user{seq}@example.com", "template": "welcome"},
        separators=(",", ":"),
    )


def sync_name(value: int | str) -> str:
    """Map a ``PRAGMA synchronous`` answer (0-3) to its name."""
    return _SYNC_NAMES.get(int(value), str(value))


def write_consumer_report(path: str, seqs: list[int], latencies: list[float],
                          last_ack: float | None) -> None:
    """Write what one W4 consumer processed, for the producer to check after.

    :param path: ``ConsumerContext.report_path``.
    :param seqs: the ``seq`` of every job this consumer acked, repeats included.
    :param latencies: add-to-ack seconds, one per entry of ``seqs``.
    :param last_ack: ``perf_counter()`` just after the last ack, or ``None``.
    """
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"seqs": seqs, "latencies": latencies, "last_ack": last_ack}, f)
    # Renamed into place so a half-written report is never mistaken for a short one.
    os.replace(tmp, path)


def environment() -> dict[str, str]:
    """Describe the machine and libraries, printed once above the table."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "apsw": apsw.apsw_version(),
        "sqlite (apsw)": apsw.sqlite_lib_version(),
        "sqlite (stdlib sqlite3)": sqlite3.sqlite_version,
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def make_tempdir(parent: str | None) -> str:
    """Create the run's private temporary directory.

    :param parent: where to create it; ``None`` reads ``$LOCALQ_BENCH_TMPDIR`` and
        falls back to the system default.
    """
    parent = parent or os.environ.get(TMPDIR_ENV) or None
    return tempfile.mkdtemp(prefix="localq-bench-", dir=parent)


def emit_json_line(result: Result, stream: IO[str] | None = None) -> None:
    """Print one result as a single JSON line (STYLE.md: one line per configuration)."""
    print(json.dumps(result.to_dict(), sort_keys=True), file=stream or sys.stdout, flush=True)


def _fmt(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:,.{digits}f}"


def annotate(results: Sequence[Result], backends: Sequence[Backend]) -> None:
    """Fill in each result's ratios to raw and raw-full and its target verdict.

    ``x_raw`` and ``x_raw_full`` divide a row's ops/s by the raw backend's at
    synchronous NORMAL and FULL on the same workload: the ratios DESIGN.md's
    "Figures to reach" are written in.
    """
    raw = {(r.workload, r.synchronous): r.ops_per_s
           for r in results if r.backend == "raw" and r.error is None}
    targets = {b.name: b.targets for b in backends}
    for r in results:
        if r.error is not None:
            continue
        base, full = raw.get((r.workload, "NORMAL")), raw.get((r.workload, "FULL"))
        r.x_raw = r.ops_per_s / base if base else None
        r.x_raw_full = r.ops_per_s / full if full else None
        target = targets.get(r.backend, {}).get(r.workload)
        if target is None:
            continue
        r.target = target.describe()
        ratio = r.x_raw if target.base == "NORMAL" else r.x_raw_full
        if ratio is None:
            r.target_met = None
            continue
        met = ratio >= target.ratio
        if target.exact:
            met = met and r.lost == 0 and r.completed_twice == 0
        r.target_met = met


def _verdict(r: Result) -> str:
    if r.target is None:
        return ""
    word = {True: "met", False: "MISSED", None: "no baseline"}[r.target_met]
    return f"{r.target}: {word}"


def format_table(results: Sequence[Result]) -> str:
    """Render results as a text table: ratios to raw and raw-full, then the target.

    Call :func:`annotate` first (the ratios and verdicts are read from the results).
    """
    header = ["workload", "backend", "sync", "n", "procs", "ops/s", "x raw", "x raw-full",
              "target", "p50 ms", "p99 ms", "pages/op", "lost", "twice", "note"]
    rows = [header]
    for r in results:
        ok = r.error is None
        rows.append([
            r.workload, r.backend, r.synchronous, str(r.n), r.concurrency,
            _fmt(r.ops_per_s) if ok else "ERROR",
            _fmt(r.x_raw, 2), _fmt(r.x_raw_full, 2), _verdict(r),
            _fmt(r.p50_ms, 3), _fmt(r.p99_ms, 3), _fmt(r.pages_per_op, 2),
            _fmt(r.lost), _fmt(r.completed_twice),
            r.error if r.error else r.note,
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [c.rjust(w) if 3 <= j <= 13 and j != 8 else c.ljust(w)
                 for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    notes = {r.backend: r.backend_note for r in results if r.backend_note}
    if notes:
        lines.append("")
        lines += [f"{name}: {note}" for name, note in notes.items()]
    return "\n".join(lines)


def write_json(path: str, results: Sequence[Result], env: dict[str, str],
               extra: Mapping[str, Any] | None = None) -> None:
    """Write every result and the environment to ``path`` as one JSON document.

    :param extra: more sections (``scale``, ``latency``) to write beside ``results``.
    """
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"environment": env, "results": [r.to_dict() for r in results],
                   **(extra or {})}, f, indent=1, sort_keys=True)
        f.write("\n")
