"""localq/pg/queries.py: lookups, listings, counts, logs, outcomes and overview reads."""

from __future__ import annotations

import pytest

from localq.pg import queries as q
from localq.pg import transitions as tr
from localq.pg.store import PgStore
from localq.states import STATES
from test_pg_transitions import T0, add, claim, complete, fail

pytestmark = pytest.mark.pg


def test_lookups_and_states(store: PgStore) -> None:
    add(store)
    add(store, job_id="c", delay_ms=5)
    assert q.rowid(store, "q", "c") == 2 and q.rowid(store, "q", "9") is None
    assert q.job_row(store, "q", "1")[0] == 1 and q.job_row(store, "q", "x") is None
    assert q.job_state(store, 2, T0) == "delayed"
    claim(store, lock_ms=10)
    assert q.job_state(store, 1, T0) == "active" and q.job_state(store, 1, T0 + 11) == "stuck"
    with store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=T0)
        tr.promote(conn, rowid=2, public="c", now_ms=T0)
    assert q.job_state(store, 2, T0) == "paused" and q.job_state(store, 7, T0) is None


def test_listings_counts_and_ranges(store: PgStore) -> None:
    for i in range(5):
        add(store, priority=5 - i if i < 2 else None)
    add(store, delay_ms=10)
    claim(store)
    counts = q.counts(store, "q", list(STATES))
    assert counts == {"waiting": 4, "active": 1, "delayed": 1, "completed": 0, "failed": 0,
                      "paused": 0}
    waiting = [r[0] for r in q.list_jobs(store, "q", ["waiting"], 0, -1, True)]
    assert waiting == [1, 3, 4, 5]
    assert [r[0] for r in q.list_jobs(store, "q", ["waiting"], 1, 2, True)] == [3, 4]
    assert [r[0] for r in q.list_jobs(store, "q", ["waiting"], -2, -1, True)] == [4, 5]
    assert [r[0] for r in q.list_jobs(store, "q", ["waiting", "delayed"], 0, 0, False)] == [5, 6]
    with store.write(durable=True) as conn:
        tr.pause(conn, queue="q", now_ms=T0)
    assert q.counts(store, "q", ["waiting", "paused"]) == {"waiting": 0, "paused": 4}
    assert q.list_jobs(store, "q", ["waiting"], 0, -1, True) == []


def test_logs_and_outcomes(store: PgStore) -> None:
    add(store, opts='{"remove_on_complete":true}')
    add(store, opts='{"remove_on_fail":true}')
    add(store)
    with store.write(durable=False) as conn:
        for i in range(4):
            tr.add_log(conn, rowid=3, public="3", token=None, row=f"r{i}", now_ms=T0)
    assert q.logs(store, 3, 0, -1, True) == (["r0", "r1", "r2", "r3"], 4)
    assert q.logs(store, 3, 0, 1, False) == (["r3", "r2"], 4)
    assert q.outcome(store, "q", 3, "3") == ("pending", None)
    claim(store, token="a")
    complete(store, 1, token="a", rv='{"r":1}')
    claim(store, token="b")
    fail(store, 2, token="b", delay=None)
    assert q.outcome(store, "q", 1, "1") == ("completed", {"r": 1})
    assert q.outcome(store, "q", 2, "2") == ("failed", "boom")
    with store.write(durable=True) as conn:
        tr.remove(conn, rowid=3, public="3", token=None, now_ms=T0)
    assert q.outcome(store, "q", 3, "3") == ("gone", None)


def test_overview_reads(store: PgStore) -> None:
    add(store, queue="b")
    add(store, queue="a", delay_ms=5)
    add(store, queue="c")
    with store.write(durable=True) as conn:
        tr.pause(conn, queue="z", now_ms=T0)
    assert q.queue_names(store) == ["a", "b", "c", "z"]
    claim(store, queue="b")
    assert q.active_jobs(store, "b", 5) == [("1", "n", 0, T0 / 1000)]
    _, cursor = q.count_events_after(store, "c", "progress", -1)
    with store.write(durable=False) as conn:
        tr.set_progress(conn, rowid=3, public="3", token=None, progress="7", now_ms=T0)
    count, _ = q.count_events_after(store, "c", "progress", cursor)
    assert count == 1
    assert q.recent_events(store, "c", "progress", 5) == [("3", 7, T0 / 1000)]
