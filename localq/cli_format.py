"""Human-readable output of the command line: aligned tables, durations, job details.

Plain ASCII only (no box drawing), so the output survives any terminal encoding, ``less``,
logs and CI consoles; ``--json`` is the form for scripts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from .job import Job

__all__ = ["ago", "bar", "clip", "compact", "duration", "job_details", "job_row", "table",
           "when"]

#: The job-listing columns of ``localq jobs``.
JOB_HEADERS = ("ID", "STATE", "NAME", "ATTEMPTS", "PRIORITY", "WHEN", "PROGRESS", "DATA / REASON")


def clip(text: str, width: int) -> str:
    """Return *text* on one line, cut to *width* characters (``...`` marks the cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def compact(value: Any) -> str:
    """Return *value* as compact JSON (how data, results and progress are shown)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, cell: int = 40) -> str:
    """Return *rows* under *headers* as left-aligned columns (cells clipped to *cell* chars)."""
    body = [[clip(str(c), cell) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [list(headers), *body]]
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """Return a short duration: ``0.4s``, ``12s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    s = abs(seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def ago(at: float | None, now: float) -> str:
    """Return ``"12s ago"`` / ``"in 3.0s"`` for epoch seconds *at* seen from *now*."""
    if at is None:
        return "-"
    return f"in {duration(at - now)}" if at > now else f"{duration(now - at)} ago"


def when(at: float | None, now: float) -> str:
    """Return local date and time of epoch seconds *at*, with :func:`ago` in brackets."""
    if at is None:
        return "-"
    stamp = datetime.fromtimestamp(at).isoformat(sep=" ", timespec="milliseconds")
    return f"{stamp} ({ago(at, now)})"


def bar(progress: Any, width: int = 20) -> str:
    """Return a text progress bar for a number 0-100 (``[#####-----]  50%``); other values
    (Bull allows any JSON progress) are shown as compact JSON."""
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        return clip(compact(progress), width + 7)
    pct = min(100.0, max(0.0, float(progress)))
    done = int(round(width * pct / 100))
    return f"[{'#' * done}{'-' * (width - done)}] {pct:3.0f}%"


def _attempts(job: Job) -> str:
    return f"{job.attempts_made}/{job.opts.get('attempts', 1)}"


def job_row(job: Job, state: str, now: float) -> list[str]:
    """Return the :data:`JOB_HEADERS` cells of *job*, listed as *state*."""
    if state == "delayed":
        moment = ago(job._run_at, now)
    elif state == "active":
        moment = f"running {duration(now - job.processed_on)}" if job.processed_on else "-"
    elif state in ("completed", "failed"):
        moment = ago(job.finished_on, now)
    else:
        moment = ago(job.timestamp, now)
    priority = job.opts.get("priority")
    detail = job.failed_reason if state == "failed" and job.failed_reason else compact(job.data)
    progress = job.progress()
    return [job.id, state, job.name, _attempts(job), "-" if priority is None else str(priority),
            moment, "-" if progress in (0, None) else clip(compact(progress), 12), detail]


def job_details(job: Job, state: str | None, now: float, log_count: int) -> str:
    """Return ``localq show``'s description of *job* (one ``key  value`` line per field)."""
    opts = {k: v for k, v in job.opts.items()
            if k not in ("name", "priority", "attempts", "delay", "job_id", "timestamp")
            and v not in (None, False)}
    fields: list[tuple[str, str]] = [
        ("id", job.id), ("queue", job.queue.name), ("state", state or "(removed)"),
        ("name", job.name), ("data", compact(job.data)), ("progress", compact(job.progress())),
        ("attempts", f"{job.attempts_made} made of {job.opts.get('attempts', 1)}"),
        ("priority", str(job.opts.get("priority") or "-")),
        ("added", when(job.timestamp, now)),
    ]
    if job.delay:
        fields.append(("runs at", when(job._run_at, now)))
    fields += [("processed", when(job.processed_on, now)), ("finished", when(job.finished_on, now))]
    if state == "completed":
        fields.append(("result", compact(job.returnvalue)))
    if job.failed_reason:
        fields.append(("failed reason", job.failed_reason))
    if opts:
        fields.append(("options", compact(opts)))
    fields.append(("logs", f"{log_count} rows (localq logs {job.queue.name} {job.id})"
                   if log_count else "none"))
    lines = [f"{key:<14}{value}" for key, value in fields]
    if job.stacktrace:
        lines.append("stacktrace    (last attempt)")
        lines += ["  " + line for line in job.stacktrace[-1].rstrip().splitlines()]
    return "\n".join(lines)
