"""``localq watch``: a live view of the queues of a file, refreshed in place.

A :class:`Sampler` reads one :class:`Frame` per refresh (counts per state, completions per
second over the last few seconds, active jobs with their progress, recent failed attempts),
all read-only. How a frame is shown depends on where stdout goes:

* a terminal, with ``rich`` installed (``pip install localq[pretty]``): a ``rich`` live
  display with real progress bars, which also handles Windows consoles and resizes;
* a terminal without ``rich`` (or ``--plain``): the same view as plain text, redrawn in place
  with two ANSI sequences (cursor up N lines, clear to the end of the screen);
* anything else (a pipe, a file, CI): one plain line per queue per refresh, nothing redrawn.

Ctrl-C ends the view with exit status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, TextIO

from . import cli_format as fmt

from .errors import ConfigError

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["Frame", "QueueView", "Sampler", "add_view_options", "live", "render_line",
           "render_text", "run_view"]

COUNTED = ("waiting", "active", "delayed", "completed", "failed", "paused")


@dataclass
class QueueView:
    """What the view shows of one queue."""

    name: str
    is_paused: bool
    counts: dict[str, int]
    #: Jobs completed per second over the last ``window`` seconds.
    rate: float
    #: (id, name, progress, processed_on) of the longest-running active jobs.
    active: list[tuple[str, str, Any, float | None]] = field(default_factory=list)
    #: (job id, reason, when) of the newest failed attempts (retried ones included).
    failures: list[tuple[str | None, Any, float]] = field(default_factory=list)


@dataclass
class Frame:
    """One refresh of the view."""

    path: str
    now: float
    queues: list[QueueView]

    def total(self, state: str) -> int:
        """Return the count of *state* over every queue."""
        return sum(v.counts.get(state, 0) for v in self.queues)


class Sampler:
    """Read frames of the queues *names* (None: every queue of the file, found each time).

    :param queue: any open queue of the file (only its store and clock are used).
    :param window: seconds over which the completion rate is averaged.
    :param timer: monotonic seconds (a seam for tests).
    """

    def __init__(self, queue: Queue, names: list[str] | None, *, window: float = 5.0,
                 active_limit: int = 8, failure_limit: int = 5,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self._store = queue._store
        self._q = queue._q
        self._clock = queue.clock
        self._path = str(queue.path)
        self._names = names
        self._window = window
        self._active_limit = active_limit
        self._failure_limit = failure_limit
        self._timer = timer
        self._cursor: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._history: dict[str, deque[tuple[float, int]]] = {}

    def _rate(self, name: str, tick: float) -> float:
        # Completions are counted from `completed` events (written even for jobs that
        # remove_on_complete deletes), read by id cursor: no scan of the events table.
        count, newest = self._q.count_events_after(self._store, name, "completed",
                                                   self._cursor.get(name, -1))
        self._cursor[name] = newest
        total = self._done[name] = self._done.get(name, 0) + count
        history = self._history.setdefault(name, deque())
        history.append((tick, total))
        while len(history) > 2 and tick - history[1][0] >= self._window:
            history.popleft()
        first_tick, first_total = history[0]
        return (total - first_total) / (tick - first_tick) if tick > first_tick else 0.0

    def sample(self) -> Frame:
        """Read the current frame."""
        tick = self._timer()
        names = self._names or self._q.queue_names(self._store)
        views = []
        for name in names:
            counts = self._q.counts(self._store, name, COUNTED)
            views.append(QueueView(
                name=name, is_paused=bool(self._store.query(
                    "SELECT 1 FROM queues WHERE name = :q AND paused = 1", {"q": name})),
                counts=counts, rate=self._rate(name, tick),
                active=self._q.active_jobs(self._store, name, self._active_limit),
                failures=self._q.recent_events(self._store, name, "failed",
                                               self._failure_limit)))
        return Frame(self._path, self._clock.now(), views)


# -- renderers -----------------------------------------------------------------------------

def render_line(frame: Frame) -> list[str]:
    """Return one plain line per queue (the non-terminal form)."""
    stamp = datetime.fromtimestamp(frame.now).strftime("%H:%M:%S")
    if not frame.queues:
        return [f"{stamp} no queues yet"]
    return [f"{stamp} {v.name}{' (paused)' if v.is_paused else ''} "
            + " ".join(f"{s}={v.counts[s]}" for s in COUNTED) + f" rate={v.rate:.1f}/s"
            for v in frame.queues]


def render_text(frame: Frame, title: str = "localq watch") -> list[str]:
    """Return the full view as plain text lines (the terminal form without rich)."""
    stamp = datetime.fromtimestamp(frame.now).strftime("%H:%M:%S")
    lines = [f"{title}  {frame.path}  {stamp}  (Ctrl-C to quit)", ""]
    if not frame.queues:
        return lines + ["no queues yet"]
    lines += fmt.table(["QUEUE", *(s.upper() for s in COUNTED), "DONE/S"], [
        [v.name + (" (paused)" if v.is_paused else ""), *(v.counts[s] for s in COUNTED),
         f"{v.rate:.1f}"] for v in frame.queues]).splitlines()
    active = [(v.name, *a) for v in frame.queues for a in v.active]
    if active:
        lines += ["", "ACTIVE"] + fmt.table(["QUEUE", "ID", "NAME", "PROGRESS", "RUNNING"], [
            [q, i, n, fmt.bar(p), fmt.duration(frame.now - t) if t else "-"]
            for q, i, n, p, t in active]).splitlines()
    failures = [(v.name, *f) for v in frame.queues for f in v.failures]
    if failures:
        lines += ["", "RECENT FAILED ATTEMPTS"] + fmt.table(["QUEUE", "ID", "WHEN", "REASON"], [
            [q, i or "-", fmt.ago(t, frame.now), str(r)] for q, i, r, t in failures],
            cell=60).splitlines()
    return lines


def render_rich(frame: Frame, title: str = "localq watch") -> Any:
    """Return the view as a ``rich`` renderable (needs ``rich``)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    stamp = datetime.fromtimestamp(frame.now).strftime("%H:%M:%S")
    parts: list[Any] = [Text.assemble((title, "bold"), f"  {frame.path}  {stamp}",
                                      ("  (Ctrl-C to quit)", "dim"))]
    counts = Table("queue", *COUNTED, "done/s", box=None, header_style="bold")
    for v in frame.queues:
        counts.add_row(v.name + (" (paused)" if v.is_paused else ""),
                       *(str(v.counts[s]) for s in COUNTED), f"{v.rate:.1f}")
    parts.append(counts if frame.queues else Text("no queues yet"))
    active = Table("queue", "id", "name", "progress", "", "running", box=None,
                   title="active", title_justify="left", header_style="bold")
    for v in frame.queues:
        for job_id, name, progress, started in v.active:
            numeric = isinstance(progress, (int, float)) and not isinstance(progress, bool)
            active.add_row(v.name, job_id, name,
                           ProgressBar(total=100, completed=float(progress), width=24)
                           if numeric else Text(fmt.compact(progress)),
                           f"{float(progress):3.0f}%" if numeric else "",
                           fmt.duration(frame.now - started) if started else "-")
    if active.row_count:
        parts += [Text(""), active]
    failed = Table("queue", "id", "when", "reason", box=None, title="recent failed attempts",
                   title_justify="left", header_style="bold red")
    for v in frame.queues:
        for failed_id, reason, at in v.failures:
            failed.add_row(v.name, failed_id or "-", fmt.ago(at, frame.now),
                           fmt.clip(str(reason), 70))
    if failed.row_count:
        parts += [Text(""), failed]
    return Group(*parts)


# -- the refresh loop ----------------------------------------------------------------------

def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def live(sample: Callable[[], Frame], out: TextIO, *, interval: float, count: int = 0,
         plain: bool = False, title: str = "localq watch",
         stop: Callable[[Frame], bool] | None = None) -> Frame:
    """Show frames from *sample* on *out* every *interval* seconds and return the last one.

    :param count: stop after this many frames (0: no limit).
    :param plain: never use ``rich``.
    :param stop: stop after the first frame for which it returns True.
    """
    terminal = out.isatty()
    if terminal and not plain and _have_rich():
        from rich.console import Console
        from rich.live import Live
        with Live(console=Console(file=out), auto_refresh=False, transient=False) as view:
            return _loop(sample, lambda f: view.update(render_rich(f, title), refresh=True),
                         interval, count, stop)
    drawn = [0]

    def redraw(frame: Frame) -> None:
        height = max(5, shutil.get_terminal_size().lines - 1)
        lines = render_text(frame, title)[:height]
        # Cursor up over the previous frame, clear to the end of the screen, draw again.
        prefix = f"\x1b[{drawn[0]}F\x1b[J" if drawn[0] else ""
        out.write(prefix + "\n".join(lines) + "\n")
        out.flush()
        drawn[0] = len(lines)

    def lines(frame: Frame) -> None:
        out.write("\n".join(render_line(frame)) + "\n")
        out.flush()

    return _loop(sample, redraw if terminal else lines, interval, count, stop)


def _loop(sample: Callable[[], Frame], show: Callable[[Frame], None], interval: float,
          count: int, stop: Callable[[Frame], bool] | None) -> Frame:
    shown = 0
    while True:
        frame = sample()
        show(frame)
        shown += 1
        if (count and shown >= count) or (stop is not None and stop(frame)):
            return frame
        time.sleep(interval)


def add_view_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--interval``, ``--count``, ``--once`` and ``--plain`` to *parser*."""
    parser.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="seconds between refreshes (default 1)")
    parser.add_argument("--count", type=int, default=0, metavar="N",
                        help="stop after N refreshes (default: until Ctrl-C)")
    parser.add_argument("--once", dest="count", action="store_const", const=1,
                        help="show one refresh and exit")
    parser.add_argument("--plain", action="store_true",
                        help="plain text even if rich is installed")


def run_view(queue: Queue, names: list[str] | None, args: argparse.Namespace) -> int:
    """Run ``localq watch`` on the file of *queue*; return 0 (also after Ctrl-C)."""
    if not args.interval >= 0 or args.interval > 3600:
        raise ConfigError(f"--interval must be 0-3600 seconds, not {args.interval}")
    if args.count < 0:
        raise ConfigError(f"--count must be >= 0, not {args.count}")
    sampler = Sampler(queue, names)
    # Ctrl-C is how a live view ends: not an error.
    with contextlib.suppress(KeyboardInterrupt):
        live(sampler.sample, sys.stdout, interval=args.interval, count=args.count,
             plain=args.plain)
    return 0
