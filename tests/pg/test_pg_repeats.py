"""Repeat schedules and occurrences on PostgreSQL: one job per slot, at most one pending
occurrence, removal that leaves nothing to run, concurrent schedulers."""

from __future__ import annotations

import json
import threading

import pytest

from localq.errors import ConfigError
from localq.pg import repeats
from localq.pg import transitions as tr
from localq.pg.store import PgStore
from localq.repeat import parse_repeat
from test_pg_transitions import T0, claim, complete, events, fail, state

pytestmark = pytest.mark.pg

TEMPLATE = json.dumps({"data": '{"n":1}', "opts": {"attempts": 3}, "priority": None})


def schedule(store: PgStore, every: float = 10, now: int = T0, **extra: object) -> tuple:
    spec = parse_repeat({"every": every, **extra}, now_ms=now)
    with store.write(durable=True) as conn:
        row = repeats.add_schedule(conn, queue="q", name="tick", spec=spec, template=TEMPLATE,
                                   now_ms=now)
    return spec, row


def test_a_schedule_starts_with_one_delayed_occurrence_and_adding_it_again_changes_nothing(
        store: PgStore) -> None:
    spec, row = schedule(store)
    key = spec.key("tick")
    slot = spec.next_after(T0)
    assert row[1] == tr.occurrence_id(key, slot) and row[5] == "delayed" and row[9] == slot
    assert json.loads(row[4])["repeat"]["count"] == 1
    _, again = schedule(store)
    assert again == row
    with store.read() as conn:
        assert [r[0] for r in repeats.schedules(conn, queue="q")] == [key]
        assert repeats.next_due_ms(conn, queue="q") == slot


def test_claiming_an_occurrence_creates_the_next_one_and_slots_never_repeat(
        store: PgStore) -> None:
    spec, row = schedule(store)
    slot = spec.next_after(T0)
    claimed = claim(store, now=slot)
    assert claimed[0] == row[0]
    ids = [r[0] for r in store.query("SELECT job_id FROM jobs ORDER BY id")]
    assert ids == [row[1], tr.occurrence_id(spec.key("tick"), slot + 10_000)]
    with store.write(durable=False) as conn:  # a second scheduler at the same time: nothing
        assert [repeats.advance(conn, queue="q", key=k, now_ms=slot)
                for k in repeats.due_keys(conn, queue="q", now_ms=slot)] == []
    assert store.query("SELECT count(*) FROM jobs")[0][0] == 2


def test_a_pending_occurrence_that_never_started_is_not_piled_up(store: PgStore) -> None:
    spec, _ = schedule(store)
    later = spec.next_after(T0) + 35_000
    with store.write(durable=False) as conn:
        for key in repeats.due_keys(conn, queue="q", now_ms=later):
            assert repeats.advance(conn, queue="q", key=key, now_ms=later) is None
    assert store.query("SELECT count(*) FROM jobs")[0][0] == 1


def test_concurrent_schedulers_create_each_slot_once(store: PgStore) -> None:
    spec, _ = schedule(store)
    first = spec.next_after(T0)
    claim(store, now=first)
    complete(store, 1, now=first)
    with store.write(durable=True) as conn:  # the pending occurrence is removed (job.remove())
        tr.remove(conn, rowid=2, public="2", token=None, now_ms=first)
    made: list[object] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        with store.write(durable=False) as conn:
            for key in repeats.due_keys(conn, queue="q", now_ms=first + 10_000):
                made.append(repeats.advance(conn, queue="q", key=key, now_ms=first + 10_000))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([m for m in made if m is not None]) == 1
    slots = [r[0] for r in store.query("SELECT job_id FROM jobs ORDER BY id")]
    assert len(slots) == len(set(slots)) == 2


def test_removal_takes_the_pending_occurrence_and_a_running_one_is_not_retried(
        store: PgStore) -> None:
    spec, row = schedule(store)
    key = spec.key("tick")
    claim(store, now=spec.next_after(T0))  # occurrence 1 runs; occurrence 2 is pending
    with store.write(durable=True) as conn:
        assert repeats.delete_schedule(conn, queue="q", key=key)
        removed = tr.remove_occurrences(conn, queue="q", key=key, now_ms=T0)
        assert not repeats.delete_schedule(conn, queue="q", key=key)
    assert [r[0] for r in removed] == [2] and state(store, 2) is None
    assert fail(store, 1, delay=0) == "failed"  # attempts were left, the schedule is gone
    assert state(store, 1) == "failed" and events(store)[-1][0] == "failed"
    assert row[0] == 1


def test_a_stalled_occurrence_of_a_removed_schedule_fails(store: PgStore) -> None:
    spec, _ = schedule(store)
    claim(store, now=spec.next_after(T0), lock_ms=1)
    with store.write(durable=True) as conn:
        repeats.delete_schedule(conn, queue="q", key=spec.key("tick"))
        got = tr.recover_stalled(conn, queue="q", now_ms=T0 + 10**9, dead_owners=[],
                                 max_stalled_count=5)
    assert [s for _, s in got] == ["failed"]
    assert store.query("SELECT failed_reason FROM jobs WHERE id = 1")[0][0] == \
        tr.REMOVED_SCHEDULE_REASON


def test_a_schedule_with_no_slot_left_is_refused(store: PgStore) -> None:
    with pytest.raises(ConfigError, match="no slot"):
        schedule(store, end_date=(T0 + 1000) / 1000, every=3600)
    assert store.query("SELECT count(*) FROM repeats")[0][0] == 0


def test_a_limited_schedule_ends(store: PgStore) -> None:
    spec, _ = schedule(store, limit=1)
    slot = spec.next_after(T0)
    claim(store, now=slot)
    with store.read() as conn:
        assert repeats.next_due_ms(conn, queue="q") is None
