"""Workers in separate processes on PostgreSQL: cut sessions, a server restart.

Each worker is ``tests/worker_proc.py`` given the queue's URL, with its own connections. The
outcome is read from the database (one ``completed`` event per job) and from the workers' own
logs, never from exit codes alone: 0 jobs lost, 0 completed twice, and no job of a live worker
taken back because its session was cut. (SIGKILL chaos and the recovery of a killed worker's
jobs run on both backends in tests/crash/test_kill_workers.py.)
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

import psycopg
import pytest

import localq
import pg_server
from localq.pg.url import parse_url
from tests.processes import read_log, spawn_worker, stop, wait_for

pytestmark = [pytest.mark.pg, pytest.mark.multiprocess, pytest.mark.crash]


def completions(q: localq.Queue) -> Counter[str]:
    return Counter(r[0] for r in q._store.query(
        "SELECT job_id FROM events WHERE queue = :q AND event = 'completed'", {"q": q.name}))


def events(q: localq.Queue, kind: str) -> int:
    return int(q._store.query("SELECT count(*) FROM events WHERE queue = :q AND event = :e",
                              {"q": q.name, "e": kind})[0][0])


def terminate(url: str, application_names: tuple[str, ...]) -> int:
    with psycopg.connect(parse_url(url).conninfo, autocommit=True) as conn:
        return len(conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
            " current_database() AND pid <> pg_backend_pid() AND application_name = ANY(%s)",
            (list(application_names),)).fetchall())


def test_cut_sessions_are_not_mistaken_for_dead_workers(pg_url: str, tmp_path: Any) -> None:
    log, n = f"{tmp_path}/w.log", 6
    q = localq.Queue("cut", path=pg_url, durability="normal")
    workers = [spawn_worker(pg_url, "cut", log, "--concurrency", "3") for _ in range(2)]
    try:
        q.add_bulk([{"data": {"hold": 2.0}} for _ in range(n)])
        assert wait_for(lambda: q.get_job_counts("active")["active"] == n, 15)
        # Every session of the workers ends at once: leases, leadership, LISTEN, pools.
        assert terminate(pg_url, ("localq", "localq-lease", "localq-listen")) >= 4
        assert wait_for(lambda: q.get_job_counts("completed")["completed"] == n, 30)
        q.add_bulk([{"data": {}} for _ in range(n)])  # and they still work afterwards
        assert wait_for(lambda: q.get_job_counts("completed")["completed"] == 2 * n, 30)
        assert events(q, "stalled") == 0
        assert max(completions(q).values()) == 1
        starts = Counter(line.job for line in read_log(log) if line.kind == "start")
        assert max(starts.values()) == 1  # no job ran twice
    finally:
        stop(*workers)
        q.close()


@pytest.fixture
def private_server() -> Iterator[pg_server.PgServer]:
    try:
        server = pg_server.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    yield server
    server.destroy()


@pytest.mark.slow
def test_a_server_restart_mid_job_runs_nothing_twice(private_server: pg_server.PgServer,
                                                     tmp_path: Any) -> None:
    url, log, n = private_server.url, f"{tmp_path}/w.log", 4
    q = localq.Queue("restart", path=url, durability="normal")
    worker = spawn_worker(url, "restart", log, "--concurrency", "4")
    try:
        q.add_bulk([{"data": {"hold": 3.0}} for _ in range(n)])
        assert wait_for(lambda: q.get_job_counts("active")["active"] == n, 15)
        private_server.restart("fast")
        assert wait_for(lambda: q.get_job_counts("completed")["completed"] == n, 60, 0.1)
        q.add({})
        assert wait_for(lambda: q.get_job_counts("completed")["completed"] == n + 1, 30, 0.1)
        assert events(q, "stalled") == 0
        assert max(completions(q).values()) == 1
        starts = Counter(line.job for line in read_log(log) if line.kind == "start")
        assert max(starts.values()) == 1
    finally:
        stop(worker)
        q.close()
