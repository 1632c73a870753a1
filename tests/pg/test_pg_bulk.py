"""add_bulk in one statement (localq/pg/bulk.py) and the idle read (queries.runnable).

``add_jobs`` must leave exactly what ``add_job`` called once per job leaves: ids, queue
positions, events, returned rows and the custom-id rule. Each batch runs on two schemas,
once each way, and every table is compared.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import pytest

import localq
from localq.pg import queries
from localq.testing import FakeClock
from localq.pg import transitions as tr
from localq.pg.store import PgStore
from test_pg_finish import Twin, _round_trips, twins  # noqa: F401  (fixture)
from test_pg_transitions import T0

pytestmark = pytest.mark.pg


def job(job_id: str | None = None, *, delay_ms: int = 0, priority: int | None = None,
        lifo: bool = False, name: str = "n", data: Any = 1) -> dict[str, Any]:
    return {"name": name, "data": json.dumps(data), "stored_opts": "{}", "job_id": job_id,
            "priority": priority, "delay_ms": delay_ms, "lifo": lifo, "timestamp_ms": T0 - 7}


MIXED = [job(data=0), job(lifo=True), job(priority=3), job(delay_ms=1_500),
         job("a"), job("old"), job("a", delay_ms=9), job("b", delay_ms=2_000, lifo=True),
         job(data={"k": [1, "x"]}), job("old"), job("b"), job(delay_ms=1_500)]


def one_by_one(conn: Any, *, queue: str, jobs: list[dict[str, Any]], rowid: int,
               now_ms: int) -> list[tuple[Any, bool]]:
    return [tr.add_job(conn, queue=queue, opts={}, now_ms=now_ms, **j) for j in jobs]


@pytest.mark.parametrize("watched", [False, True])
@pytest.mark.parametrize("batch", [MIXED, [job() for _ in range(3)], [job("x")] * 3],
                         ids=["mixed", "plain", "one-id"])
def test_add_jobs_leaves_what_add_job_leaves(
        twins: tuple[Twin, Twin], watched: bool,  # noqa: F811  (the imported fixture)
        batch: list[dict[str, Any]]) -> None:
    got = []
    for twin, run in zip(twins, (tr.add_jobs, one_by_one)):
        with twin.store.write(durable=True) as conn:
            tr.add_job(conn, queue="q", name="n", data="{}", opts={}, stored_opts="{}",
                       job_id="old", priority=None, delay_ms=0, lifo=False, timestamp_ms=T0,
                       now_ms=T0)
            if watched:
                tr.watch_queue(conn, queue="q", until_ms=2**62)
        twin.notes()
        with twin.store.write(durable=True) as conn:
            rows = run(conn, queue="q", jobs=batch, rowid=0, now_ms=T0)
        got.append(([(tuple(r), ins) for r, ins in rows], twin.tables(),
                    sorted(twin.notes())))
    assert got[0] == got[1]
    rows = got[0][0]
    assert len(rows) == len(batch)
    assert [r[0][1] for r in rows] == [j["job_id"] for j in batch]


def test_the_ids_stay_consecutive_and_the_batch_keeps_its_order(
        queue_on_pg: localq.Queue) -> None:
    q = queue_on_pg
    q.add(job_id="dup")
    jobs = q.add_bulk([{"data": i, "opts": {"job_id": "dup"} if i == 2 else {}}
                       for i in range(200)])
    assert [j.id for j in jobs[:4]] == ["2", "3", "dup", "4"]
    assert q.add().id == "201"
    taken = []
    while (j := q.get_next_job()) is not None:
        taken.append(j.data)
        j.move_to_completed(None, not_fetch=True)
    assert taken == [{}] + [i for i in range(200) if i != 2] + [{}]


def test_concurrent_bulks_of_one_custom_id_make_one_job(pg_url: str) -> None:
    stores = [PgStore(pg_url) for _ in range(4)]
    results: list[list[tuple[Any, bool]]] = []
    barrier = threading.Barrier(len(stores))

    def run(store: PgStore) -> None:
        barrier.wait()
        with store.write(durable=True) as conn:
            results.append(tr.add_jobs(conn, queue="q", jobs=[job(), job("same"), job()],
                                       rowid=0, now_ms=T0))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(r[1][1] for r in results) == [False] * 3 + [True]
        assert len({r[1][0] for r in results}) == 1  # every call returns the same row
        assert stores[0].query("SELECT count(*) FROM jobs WHERE job_id = 'same'")[0][0] == 1
        assert stores[0].query("SELECT count(*) FROM jobs")[0][0] == 9
    finally:
        for s in stores:
            s.close()


def test_add_bulk_costs_the_same_round_trips_for_ten_jobs_or_five_hundred(
        queue_on_pg: localq.Queue) -> None:
    q = queue_on_pg
    q.add_bulk([{}])  # the session's synchronous_commit is set once, before measuring
    small = _round_trips(q, lambda: q.add_bulk([{"data": i} for i in range(10)]))
    large = _round_trips(q, lambda: q.add_bulk([{"data": i} for i in range(500)]))
    assert small == large == 3  # BEGIN, the INSERT, COMMIT
    assert q.count() == 511


# -- runnable: the read an idle worker makes before it opens a transaction ------------------

@pytest.fixture
def queue_on_pg(pg_url: str) -> Iterator[localq.Queue]:
    q = localq.Queue("q", path=f"{pg_url}&pool_size=2",
                     clock=FakeClock(T0 / 1000))
    try:
        yield q
    finally:
        q.close()


def test_runnable_says_whether_a_claim_would_take_a_job(queue_on_pg: localq.Queue) -> None:
    q, store = queue_on_pg, queue_on_pg._store

    def look(names: list[str] | None = None, now: int = T0) -> tuple[bool, bool]:
        return queries.runnable(store, queue="q", names=names, now_ms=now)  # type: ignore

    assert look() == (False, False)
    q.add(name="a", delay=5)
    assert look() == (False, False) and look(now=T0 + 5_000) == (True, False)
    q.add(name="b")
    assert look() == (True, False)
    assert look(["a"]) == (False, False) and look(["b"]) == (True, False)
    assert look([]) == (False, False)
    q.pause()
    assert look() == (False, False)
    assert look(now=T0 + 5_000) == (True, False)  # a due delayed job: the claim promotes it
    q.resume()
    with store.write(durable=False) as conn:  # type: ignore[attr-defined]
        tr.watch_queue(conn, queue="q", until_ms=2**62)
    assert look(["a"]) == (False, True)
    assert look() == (True, True)
