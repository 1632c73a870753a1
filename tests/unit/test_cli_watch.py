"""``localq watch``: frames, completion rate, renderers, non-terminal output, Ctrl-C."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import localq
from localq import cli, queries
from localq.cli_watch import Frame, QueueView, Sampler, render_line, render_rich, render_text
from localq.testing import FakeClock, run_until_idle

ROOT = Path(__file__).resolve().parents[2]


class Ticks:
    """A monotonic timer the test moves."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def flaky(job: localq.Job) -> int:
    if job.data.get("fail"):
        raise RuntimeError(f"bad input {job.data['n']}")
    return 1


def test_sampler_reads_counts_active_progress_and_failed_attempts(queue: localq.Queue):
    queue.add({"n": 1, "fail": True}, attempts=2)
    queue.add({"n": 2})
    run_until_idle(queue, flaky)  # n=1 fails twice, n=2 completes
    queue.add({"n": 3}, name="resize")
    job = queue.get_next_job()
    assert job is not None
    job.progress(50)
    queue.add({"n": 4}, delay=60)
    frame = Sampler(queue, None).sample()
    (view,) = frame.queues
    assert view.name == "q" and not view.is_paused
    assert view.counts == {"waiting": 0, "active": 1, "delayed": 1, "completed": 1,
                           "failed": 1, "paused": 0}
    assert [(i, n, p) for i, n, p, _ in view.active] == [(job.id, "resize", 50)]
    assert [(i, r) for i, r, _ in view.failures] == [("1", "bad input 1")] * 2
    assert frame.now == queue.clock.now()


def test_rate_is_completions_per_second_over_the_window(queue: localq.Queue):
    ticks = Ticks()
    sampler = Sampler(queue, ["q"], window=5.0, timer=ticks)
    queue.add_bulk([{"data": {"n": i}} for i in range(10)])
    run_until_idle(queue, flaky)  # completed before the first frame: not counted
    assert sampler.sample().queues[0].rate == 0.0
    queue.add_bulk([{"data": {"n": i}} for i in range(20)])
    run_until_idle(queue, flaky)
    ticks.t += 2.0
    assert sampler.sample().queues[0].rate == pytest.approx(10.0)
    ticks.t += 2.0
    assert sampler.sample().queues[0].rate == pytest.approx(5.0)  # 20 over 4 s
    for _ in range(4):
        ticks.t += 2.0
        rate = sampler.sample().queues[0].rate
    assert rate == 0.0  # nothing completed in the last window


def test_every_queue_is_watched_when_none_is_named(db_path: str, clock: FakeClock):
    with localq.Queue("a", path=db_path, clock=clock) as a, \
            localq.Queue("b", path=db_path, clock=clock) as b:
        a.add({})
        sampler = Sampler(a, None)
        assert [v.name for v in sampler.sample().queues] == ["a"]
        b.pause()  # a paused queue without jobs is a queue too
        views = sampler.sample().queues
        assert [(v.name, v.is_paused) for v in views] == [("a", False), ("b", True)]


def _frame() -> Frame:
    view = QueueView("mail", False, {"waiting": 3, "active": 1, "delayed": 2, "completed": 7,
                                     "failed": 1, "paused": 0}, 12.5,
                     active=[("17", "report", 50, 995.0), ("18", "odd", {"step": "b"}, None)],
                     failures=[("9", "SMTP timeout", 998.0)])
    return Frame("/tmp/q.db", 1000.0, [view])


def test_render_text_shows_counts_bars_and_failures():
    text = "\n".join(render_text(_frame()))
    assert "/tmp/q.db" in text
    assert "mail   3        1       2        7          1       0       12.5" in text
    assert "[##########----------] 50%" in text and "5.0s" in text
    assert '{"step":"b"}' in text
    assert "SMTP timeout" in text and "2.0s ago" in text


def test_render_line_is_one_plain_line_per_queue():
    (line,) = render_line(_frame())
    assert line.endswith("mail waiting=3 active=1 delayed=2 completed=7 failed=1 paused=0"
                         " rate=12.5/s")
    assert "\x1b" not in line
    assert render_line(Frame("x", 1000.0, []))[0].endswith("no queues yet")


def test_render_rich_draws_the_same_view():
    rich = pytest.importorskip("rich.console")
    out = io.StringIO()
    rich.Console(file=out, width=120, color_system=None).print(render_rich(_frame()))
    text = out.getvalue()
    for part in ("mail", "12.5", "report", "50%", "SMTP timeout", '{"step":"b"}'):
        assert part in text


def test_watch_prints_plain_lines_when_stdout_is_not_a_terminal(capsys, db_path):
    with localq.Queue("mail", path=db_path) as q:
        q.add_bulk([{"data": {}}] * 3)
    assert cli.main(["--db", db_path, "watch", "--count", "3", "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3
    assert all("mail waiting=3 active=0" in line for line in out.splitlines())
    assert "\x1b" not in out
    assert cli.main(["--db", db_path, "watch", "mail", "--once"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_watch_on_a_missing_file_is_an_error(capsys, db_path):
    assert cli.main(["--db", db_path, "watch", "--once"]) == 1  # no file (or schema) yet
    assert capsys.readouterr().err.startswith("localq: error: no localq database")


def _read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 20.0,
                times: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while seen.count(needle) < times:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen {times} times in {bytes(seen)[-500:]!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                return


#: Runs the command line with ``import rich`` failing, as where the extra is not installed.
WITHOUT_RICH = ("import sys; sys.modules['rich'] = None; from localq.cli import main;"
                " sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("style", ["--plain", "rich", "no rich"])
def test_watch_in_a_terminal_redraws_in_place_and_exits_0_on_ctrl_c(db_path, style):
    if style == "rich":
        pytest.importorskip("rich")
    with localq.Queue("mail", path=db_path) as q:
        q.add({})
    main, child = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120", LINES="40", TERM="xterm")
    python = [sys.executable] + (["-c", WITHOUT_RICH] if style == "no rich" else ["-m", "localq"])
    argv = python + ["--db", db_path, "watch", "--interval", "0.05"]
    proc = subprocess.Popen(argv + (["--plain"] if style == "--plain" else []), stdin=child,
                            stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    seen = bytearray()
    try:
        _read_until(main, b"localq watch", seen, times=3)  # three frames drawn
        if style != "rich":
            # each later frame starts by moving up over the previous one and clearing it
            assert seen.count(b"F\x1b[J") >= 2 and b"WAITING" in seen
        else:
            assert b"waiting" in seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        _read_until(main, b"\n", seen, timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    assert b"Traceback" not in seen and b"KeyboardInterrupt" not in seen


@pytest.mark.sqlite_only  # SQLite query plans
def test_queue_names_finds_queues_in_every_state_without_scanning(db_path, clock):
    with localq.Queue("c-done", path=db_path, clock=clock) as q:
        q.add({})
        run_until_idle(q, flaky)
    with localq.Queue("a-wait", path=db_path, clock=clock) as q:
        q.add({})
    with localq.Queue("b-delayed", path=db_path, clock=clock) as q:
        q.add({}, delay=5)
    with localq.Queue("d-repeat", path=db_path, clock=clock) as r:
        r.add({}, repeat={"every": 60})
        (occurrence,) = r.get_delayed()
        occurrence.remove()  # only the schedule is left to name the queue
    with localq.Queue("b-delayed", path=db_path, clock=clock) as q:
        assert queries.queue_names(q._store) == ["a-wait", "b-delayed", "c-done", "d-repeat"]
        for sql in queries._NEXT_QUEUE:
            plan = q._store.query("EXPLAIN QUERY PLAN " + sql, {"after": ""})
            assert "INDEX jobs_" in plan[0][3], (sql, plan)
