"""PostgreSQL under real concurrency: separate processes, each with its own connections.

* claims: several processes drain one queue; no job is taken twice, none is lost;
* events: many writers commit out of id order while a reader pages by cursor; the reader
  sees every event exactly once (an ``id > cursor`` reader misses some: printed, not asserted);
* migrations: several processes open one new schema at the same instant.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Iterator

import pytest

import pg_children
from localq.pg import queries, schema
from localq.pg import transitions as tr
from localq.pg.store import PgStore

pytestmark = [pytest.mark.pg, pytest.mark.multiprocess]


@pytest.fixture
def pool() -> Iterator[tuple[ProcessPoolExecutor, Any]]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(4, mp_context=ctx) as executor:
        yield executor, manager


def test_processes_draining_one_queue_take_each_job_exactly_once(
        pg_url: str, pool: tuple[ProcessPoolExecutor, Any]) -> None:
    executor, manager = pool
    store = PgStore(pg_url)
    n = 400
    with store.write(durable=True) as conn:
        for i in range(n):
            tr.add_job(conn, queue="q", name="n", data=str(i), opts={}, stored_opts="{}",
                       job_id=None, priority=None, delay_ms=0, lifo=False,
                       timestamp_ms=pg_children.T0, now_ms=pg_children.T0)
    barrier = manager.Barrier(4)
    futures = [executor.submit(pg_children.drain, pg_url, w, barrier) for w in range(4)]
    done = [job for f in futures for job in f.result(timeout=120)]
    assert len(done) == n and len(set(done)) == n
    assert sorted(map(int, done)) == list(range(1, n + 1))
    assert queries.counts(store, "q", ["waiting", "active", "completed"]) == {
        "waiting": 0, "active": 0, "completed": n}
    # every completion was recorded by the process that took the job, once
    assert store.query("SELECT count(*) FROM events WHERE event = 'completed'")[0][0] == n
    store.close()


def test_a_cursor_reader_sees_every_event_exactly_once_although_commits_reorder(
        pg_url: str, pool: tuple[ProcessPoolExecutor, Any]) -> None:
    executor, manager = pool
    store = PgStore(pg_url)
    writers, per_writer = 4, 400
    barrier = manager.Barrier(writers + 1)
    cursor = queries.last_event_id(store)
    futures = [executor.submit(pg_children.write_events, pg_url, w, per_writer, barrier)
               for w in range(writers)]
    barrier.wait()
    seen: list[str] = []
    naive_seen, naive_cursor = 0, 0
    while True:
        running = not all(f.done() for f in futures)
        batch = queries.events_after(store, "q", cursor, limit=50)
        for cur, event, job_id, _ in batch:
            assert event == "progress" and job_id is not None
            seen.append(job_id)
            cursor = cur
        naive = store.query("SELECT id FROM events WHERE id > %s ORDER BY id", (naive_cursor,))
        if naive:
            naive_seen += len(naive)
            naive_cursor = naive[-1][0]
        if not batch and not running:
            break
    written = [job for f in futures for job in f.result()]
    assert len(seen) == len(set(seen)) == writers * per_writer
    assert set(seen) == set(written)
    # each writer's own events arrive in its commit order
    for w in range(writers):
        mine = [int(j.split(":")[1]) for j in seen if j.startswith(f"{w}:")]
        assert mine == sorted(mine)
    print(f"\nid > cursor reader saw {naive_seen} of {writers * per_writer} events;"
          f" the (xid, id) reader saw {len(seen)}")
    store.close()


def test_a_listener_starting_mid_stream_misses_nothing_committed_after_it_started(
        pg_url: str, pool: tuple[ProcessPoolExecutor, Any]) -> None:
    executor, manager = pool
    store = PgStore(pg_url)
    barrier = manager.Barrier(3)
    futures = [executor.submit(pg_children.write_events, pg_url, w, 300, barrier)
               for w in range(2)]
    barrier.wait()
    while store.query("SELECT count(*) FROM events")[0][0] < 100:
        pass
    cursor = queries.last_event_id(store)
    # Every event visible now was committed before the cursor was taken...
    before = {r[0] for r in store.query("SELECT job_id FROM events")}
    seen: list[str] = []
    while True:
        running = not all(f.done() for f in futures)
        batch = queries.events_after(store, "q", cursor)
        for cur, _, job_id, _ in batch:
            seen.append(str(job_id))
            cursor = cur
        if not batch and not running:
            break
    for f in futures:
        f.result()
    everything = {r[0] for r in store.query("SELECT job_id FROM events")}
    assert len(seen) == len(set(seen))
    # ...and every event not visible then is read after it.
    assert everything - before <= set(seen)
    store.close()


def test_concurrent_first_opens_create_the_schema_once(
        pg_url: str, pool: tuple[ProcessPoolExecutor, Any]) -> None:
    executor, manager = pool
    barrier = manager.Barrier(4)
    versions = [f.result(timeout=60) for f in
                [executor.submit(pg_children.open_store, pg_url, barrier) for _ in range(4)]]
    assert versions == [schema.SCHEMA_VERSION] * 4
    store = PgStore(pg_url)
    assert store.query("SELECT count(*) FROM pg_tables WHERE schemaname = %s",
                       (store.schema,))[0][0] == 8
    store.close()
