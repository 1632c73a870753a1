"""Leases and leadership as session advisory locks: death is seen at once, a server restart or
a cut connection is not mistaken for death, leadership changes hands."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any, Callable, Iterator

import psycopg
import pytest

import pg_children
import pg_server
from localq.pg import lease
from localq.pg.url import parse_url

pytestmark = [pytest.mark.pg, pytest.mark.multiprocess]


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def conninfo(pg_url: str) -> str:
    return parse_url(pg_url).conninfo


@pytest.fixture
def probe(conninfo: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield conn


@pytest.fixture
def child(conninfo: str) -> Iterator[tuple[Any, Any]]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=pg_children.hold_lease, args=(conninfo, out), daemon=True)
    proc.start()
    yield proc, out
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)


def test_one_lease_per_process_and_server_counted_by_users(conninfo: str,
                                                            probe: psycopg.Connection[Any]) -> None:
    first = lease.acquire(conninfo)
    second = lease.acquire(conninfo)
    assert first is second and lease.current(conninfo) is first
    assert lease.is_alive(probe, first.id)
    lease.release(second)
    assert first.held
    lease.release(first)
    assert lease.current(conninfo) is None
    assert not lease.is_alive(probe, first.id)


def test_a_killed_process_is_dead_after_two_probes_a_grace_apart(
        child: tuple[Any, Any], probe: psycopg.Connection[Any]) -> None:
    proc, out = child
    owner = out.get(timeout=30)
    assert lease.is_alive(probe, owner)
    assert lease.dead_owners(probe, [owner, None, "not-a-lease"], grace=1.0, now=0.0) == []
    assert lease.dead_owners(probe, [owner], grace=1.0, now=5.0) == []  # alive: never dead
    os.kill(proc.pid, signal.SIGKILL)
    eventually(lambda: not lease.is_alive(probe, owner))
    assert lease.dead_owners(probe, [owner], grace=1.0, now=10.0) == []  # first pass
    assert lease.dead_owners(probe, [owner], grace=1.0, now=10.5) == []
    assert lease.dead_owners(probe, [owner], grace=1.0, now=11.0) == [owner]
    lease.forget([owner])


def test_a_terminated_session_takes_its_lease_back_before_the_grace_ends(
        child: tuple[Any, Any], probe: psycopg.Connection[Any]) -> None:
    _, out = child
    owner = out.get(timeout=30)
    start = time.monotonic()
    probe.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                  " WHERE application_name = 'localq-lease'")
    free_at_first = lease.dead_owners(probe, [owner], grace=lease.GRACE)
    assert out.get(timeout=10) == "reconnected:1:True"
    assert time.monotonic() - start < lease.GRACE
    eventually(lambda: lease.is_alive(probe, owner))
    assert free_at_first == []
    assert lease.dead_owners(probe, [owner], now=time.monotonic() + 2 * lease.GRACE) == []


def test_leadership_is_exclusive_and_changes_hands(conninfo: str,
                                                   probe: psycopg.Connection[Any]) -> None:
    a, b = lease.PgLease(conninfo), lease.PgLease(conninfo)
    try:
        assert a.lead("q") and a.lead("q")
        assert not b.lead("q")
        assert b.lead("other")
        a.resign("q")
        assert b.lead("q") and not a.lead("q")
        pid = b._conn.info.backend_pid  # type: ignore[union-attr]
        probe.execute("SELECT pg_terminate_backend(%s)", (pid,))
        eventually(lambda: b.reconnects == 1)
        assert a.lead("q")  # b's session ended, and its leadership with it
        assert not b.lead("q") and b.held
    finally:
        a.release()
        b.release()


@pytest.mark.slow
def test_a_server_restart_is_not_mistaken_for_the_death_of_every_worker() -> None:
    try:
        server = pg_server.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=pg_children.hold_lease, args=(server.url, out), daemon=True)
    proc.start()
    try:
        owner = out.get(timeout=30)
        server.restart("immediate")
        with psycopg.connect(server.url, autocommit=True) as probe:
            # The leader's first look after the restart: the lease may be free right now.
            t0 = time.monotonic()
            lease.dead_owners(probe, [owner], grace=lease.GRACE, now=t0)
            assert out.get(timeout=15).startswith("reconnected:")
            eventually(lambda: lease.is_alive(probe, owner))
            assert lease.dead_owners(probe, [owner], grace=lease.GRACE,
                                     now=t0 + lease.GRACE) == []
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        server.destroy()


def test_the_url_facade_matches_the_file_lease_module(pg_url: str,
                                                       child: tuple[Any, Any]) -> None:
    proc, out = child
    owner = out.get(timeout=30)
    mine = lease.acquire(pg_url)  # by the queue's URL: one lease per database, any schema
    try:
        assert lease.current(pg_url) is mine and lease.is_alive(pg_url, mine.id)
        assert lease.is_alive(pg_url, owner) and lease.sweep(pg_url) == []
        assert lease.dead_owners(pg_url, [owner, mine.id], grace=0.0) == []
        os.kill(proc.pid, signal.SIGKILL)
        eventually(lambda: not lease.is_alive(pg_url, owner))
        assert lease.dead_owners(pg_url, [owner, mine.id], grace=0.0) == [owner]
        lease.forget([owner])
    finally:
        lease.release(mine)


def test_a_leader_lock_behaves_like_the_file_lock_and_ends_with_its_session(
        pg_url: str, probe: psycopg.Connection[Any]) -> None:
    import filelock

    first, second = lease.PgLeaderLock(pg_url, "q"), lease.PgLeaderLock(pg_url, "q")
    other_queue = lease.PgLeaderLock(pg_url, "r")
    try:
        first.acquire(timeout=0)
        assert first.is_locked
        with pytest.raises(filelock.Timeout):
            second.acquire(timeout=0)  # same process, another Queue instance: not the leader
        other_queue.acquire(timeout=0)
        first.release()
        assert not first.is_locked
        second.acquire(timeout=0)
        assert second.is_locked
        pid = lease.current(pg_url)._conn.info.backend_pid  # type: ignore[union-attr]
        probe.execute("SELECT pg_terminate_backend(%s)", (pid,))
        eventually(lambda: not second.is_locked)  # leadership ended with the session
        eventually(lambda: lease.current(pg_url) is not None)
        second.acquire(timeout=0)  # and is taken again on the new session
        assert second.is_locked
    finally:
        for lock in (first, second, other_queue):
            lock.release()
