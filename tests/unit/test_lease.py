"""Process leases, doorbells and the scheduler's leader lock, in one process (plus fork)."""

from __future__ import annotations

import os
import stat
import threading
import time
import warnings

import pytest

import localq
from localq import doorbell, lease
from localq.scheduler import Scheduler, leader_path
from localq.testing import FakeClock

# File leases: the PostgreSQL leases are tested in tests/pg/test_pg_lease.py.
pytestmark = pytest.mark.sqlite_only


def fetch(queue: localq.Queue, job_id: str) -> localq.Job:
    """The stored job (it must exist)."""
    job = queue.get_job(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_lease_files_are_private_and_never_the_database(db_path: str) -> None:
    held = lease.acquire(db_path)
    try:
        assert mode(held.path) == 0o600
        assert mode(os.path.dirname(held.path)) == 0o700
        assert mode(db_path + "-localq") == 0o700
        assert os.path.dirname(held.path) == os.path.join(db_path + "-localq", "leases")
    finally:
        lease.release(held)
    assert not os.path.exists(held.path)  # a clean exit leaves nothing to recover


def test_one_lease_per_process_and_database_shared_by_queues(db_path: str) -> None:
    a = localq.Queue("a", path=db_path)
    b = localq.Queue("b", path=db_path)
    try:
        assert a._owner == b._owner
        a.close()
        assert lease.current(db_path) is not None  # b still uses it
    finally:
        b.close()
    assert lease.current(db_path) is None


def test_own_lease_is_alive_and_unknown_or_removed_leases_are_dead(db_path: str) -> None:
    held = lease.acquire(db_path)
    try:
        assert lease.dead_owners(db_path, [held.id]) == []
        gone = "12345-0123456789abcdef"
        assert lease.dead_owners(db_path, [gone, None]) == [gone]
    finally:
        lease.release(held)


def test_values_that_are_not_lease_ids_never_build_a_path(db_path: str) -> None:
    lease.lease_dir(db_path)
    outside = os.path.join(os.path.dirname(db_path), "victim.lock")
    with open(outside, "w") as fh:
        fh.write("x")
    assert lease.dead_owners(db_path, ["../victim", "host:1:ab", "1-xyz"]) == []
    assert os.path.exists(outside)


def test_a_lease_held_elsewhere_is_alive_and_a_dead_one_is_deleted(db_path: str) -> None:
    held = lease.acquire(db_path)
    other = lease.Lease(db_path)  # a second holder, as another process would be
    try:
        assert lease.dead_owners(db_path, [other.id]) == []
        other._lock.release(force=True)  # as the OS does when its process dies
        assert lease.dead_owners(db_path, [other.id]) == [other.id]
        assert not os.path.exists(other.path)
        assert lease.dead_owners(db_path, [other.id]) == [other.id]  # still dead
    finally:
        lease.release(held)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_takes_a_lease_of_its_own(db_path: str) -> None:
    parent = lease.acquire(db_path)
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a process with threads; the child here only
        # takes a lease and exits, which is what this test is about.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report its own lease id, then exit without cleanup
        try:
            os.write(write, lease.acquire(db_path).id.encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    try:
        assert child_id and child_id != parent.id
        assert lease.dead_owners(db_path, [child_id]) == [child_id]
        assert lease.dead_owners(db_path, [parent.id]) == []
    finally:
        lease.release(parent)


def test_sweep_deletes_old_dead_lease_files_only(db_path: str) -> None:
    held = lease.acquire(db_path)
    dead = lease.Lease(db_path)
    dead._lock.release(force=True)
    old = time.time() - 3600
    os.utime(dead.path, (old, old))
    os.utime(held.path, (old, old))
    try:
        assert lease.sweep(db_path) == [dead.id]
        assert os.path.exists(held.path) and not os.path.exists(dead.path)
    finally:
        lease.release(held)


def test_doorbell_ring_wakes_every_waiter_of_the_queue_in_the_process(db_path: str) -> None:
    a = localq.Queue("bell", path=db_path)
    b = localq.Queue("bell", path=db_path)
    other = localq.Queue("other", path=db_path)
    try:
        woke = threading.Event()

        def wait() -> None:
            seen = b._watcher.version()
            if b._watcher.wait_change(seen, 10):
                woke.set()
        thread = threading.Thread(target=wait)
        thread.start()
        while not b._watcher._waiters:
            time.sleep(0.001)
        other._watcher.notify()  # another queue: not ours
        assert not woke.wait(0.05)
        a.add({})
        assert woke.wait(10)
        thread.join()
    finally:
        a.close()
        b.close()
        other.close()


def test_bell_file_is_private_and_flags_say_who_waits(db_path: str) -> None:
    q = localq.Queue("bell", path=db_path)
    try:
        hub = doorbell.hub_for(q.path)
        hub.arm(doorbell.CHANGE)
        try:
            bell = hub._bell
            assert bell is not None and mode(bell.path) == 0o600
            peer = doorbell._Peer(bell.path)
            assert peer.flags() == doorbell.CHANGE and peer.port == bell.sock.getsockname()[1]
            hub.arm(doorbell.SCHEDULE)
            assert peer.flags() == doorbell.CHANGE | doorbell.SCHEDULE
            hub.disarm(doorbell.SCHEDULE)
            peer.map.close()
        finally:
            hub.disarm(doorbell.CHANGE)
        assert bell.map[doorbell._FLAG] == 0
    finally:
        q.close()
    assert not os.path.exists(bell.path)


def test_a_ringer_sees_bells_come_and_go_even_when_the_directory_mtime_does_not_change(
        db_path: str) -> None:
    # Each Hub stands for a process. The directory's mtime is set back after every change
    # (a coarse clock): only the generation file tells the ringer, without a stat per ring.
    q = localq.Queue("bell", path=db_path)
    ringer, first, second = (doorbell.Hub(q.path) for _ in range(3))
    try:
        first.arm(doorbell.CHANGE)
        directory = os.path.dirname(first._bell.path)  # type: ignore[union-attr]
        old = time.time_ns() - 10**9
        os.utime(directory, ns=(old, old))

        def ports() -> set[int]:
            return {peer.port for peer in ringer._current_peers()}

        def port(hub: doorbell.Hub) -> int:
            assert hub._bell is not None
            return int(hub._bell.sock.getsockname()[1])

        assert ports() == {port(first)}
        second.arm(doorbell.CHANGE)
        os.utime(directory, ns=(old, old))
        assert ports() == {port(first), port(second)}
        gone = port(second)
        second.disarm(doorbell.CHANGE)
        second.close()
        os.utime(directory, ns=(old, old))
        assert ports() == {port(first)} and gone not in ports()
        first.disarm(doorbell.CHANGE)
    finally:
        for hub in (ringer, first, second):
            hub.close()
        q.close()


def test_only_one_scheduler_leads_a_queue_and_the_next_takes_over(db_path: str) -> None:
    a = localq.Queue("lead:er", path=db_path)  # ':' is hashed away from the file name
    b = localq.Queue("lead:er", path=db_path)
    first, second = Scheduler(a, start=False), Scheduler(b, start=False)
    try:
        assert ":" not in os.path.basename(leader_path(db_path, "lead:er"))
        assert first.try_lead() and not second.try_lead()
        first.close()
        assert second.try_lead()
    finally:
        first.close()
        second.close()
        a.close()
        b.close()


def test_the_leader_promotes_due_delayed_jobs_on_the_queue_clock(db_path: str) -> None:
    clock = FakeClock(1767225600.0)
    q = localq.Queue("d", path=db_path, clock=clock)
    scheduler = Scheduler(q, start=False)
    try:
        job = q.add({}, delay=30)
        assert scheduler.tick() <= q.settings.guard_interval  # sleeps at most that long
        assert fetch(q, job.id).get_state() == "delayed"
        clock.advance(30)
        scheduler.tick()
        assert fetch(q, job.id).get_state() == "waiting"
    finally:
        scheduler.close()
        q.close()


def test_the_leader_trims_events_and_recovers_jobs_of_dead_owners(db_path: str) -> None:
    clock = FakeClock(1767225600.0)
    q = localq.Queue("t", path=db_path, clock=clock, settings={"max_events": 100})
    scheduler = Scheduler(q, start=False)
    try:
        q.add_bulk([{"opts": {"delay": 3600}}] * 300)  # each writes a "delayed" event
        q.add({})
        job = q.get_next_job()
        assert job is not None
        with q._store.write(durable=False) as conn:  # as if a dead process held it
            conn.execute("UPDATE jobs SET lock_owner = '1-00000000000000ff' WHERE id = :i",
                         {"i": job._rowid})
        stalled: list[localq.Job] = []
        q.on("stalled", stalled.append)
        scheduler.tick()
        assert fetch(q, job.id).get_state() == "waiting"
        assert [j.id for j in stalled] == [job.id]
        count = q._store.query("SELECT count(*) FROM events")[0][0]
        assert count <= 100
    finally:
        scheduler.close()
        q.close()


def test_wal_checkpoint_truncates_a_large_wal(db_path: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from localq import scheduler as module
    q = localq.Queue("c", path=db_path, durability="normal")
    sched = Scheduler(q, start=False)
    try:
        q.add_bulk([{"data": {"pad": "x" * 2000}} for _ in range(500)])
        assert q._store.wal_size() > 100_000
        monkeypatch.setattr(module, "WAL_TRUNCATE_BYTES", 100_000)
        sched.tick()
        assert q._store.wal_size() == 0
    finally:
        sched.close()
        q.close()


def test_a_commit_between_looking_and_waiting_is_not_lost(db_path: str) -> None:
    import apsw
    q = localq.Queue("lost", path=db_path)
    other = apsw.Connection(db_path)  # another writer that rings no doorbell
    try:
        seen = q._watcher.version()
        other.execute("INSERT INTO meta (key, value) VALUES ('x', 1)")  # after the look
        started = time.monotonic()
        assert q._watcher.wait_change(seen, 10)
        assert time.monotonic() - started < 1.0  # seen at once, not at the timeout
        seen = q._watcher.version()
        threading.Timer(0.05, other.execute, ["UPDATE meta SET value = 2 WHERE key = 'x'"]).start()
        assert q._watcher.wait_change(seen, 10)  # the data_version safety net
    finally:
        other.close()
        q.close()
