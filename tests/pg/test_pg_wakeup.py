"""PgWatcher: waiters of a queue wake on another process's commit to that queue (by NOTIFY),
schedulers on delayed-job changes only, everyone after a reconnection; polling without LISTEN."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import psycopg
import pytest

from localq.pg import transitions as tr
from localq.pg.store import PgStore
from localq.pg.url import parse_url
from localq.pg.wakeup import PgWatcher
from test_pg_transitions import T0, add

pytestmark = pytest.mark.pg


@pytest.fixture
def pair(pg_url: str) -> Iterator[tuple[PgStore, PgStore]]:
    a, b = PgStore(pg_url), PgStore(pg_url)
    yield a, b
    a.close()
    b.close()


def test_a_waiter_wakes_on_a_commit_to_its_queue_only(pair: tuple[PgStore, PgStore]) -> None:
    watched, writer = pair
    watcher = PgWatcher(watched, name="q")
    seen = watcher.version()
    add(writer, queue="other")
    assert not watcher.wait_change(seen, 0.3)
    start = time.monotonic()
    add(writer, queue="q")
    assert watcher.wait_change(seen, 10)
    print(f"\npickup by NOTIFY took {(time.monotonic() - start) * 1000:.1f} ms")
    watcher.close()


def test_schedulers_wake_on_delayed_changes_only(pair: tuple[PgStore, PgStore]) -> None:
    watched, writer = pair
    watcher = PgWatcher(watched, name="q")
    seen = watcher.schedule_version()
    add(writer)
    assert not watcher.wait_schedule(seen, 0.3)
    add(writer, delay_ms=1000)
    assert watcher.wait_schedule(seen, 10)
    watcher.close()


def test_a_local_notify_and_close_release_waiters(pair: tuple[PgStore, PgStore]) -> None:
    watcher = PgWatcher(pair[0], name="q")
    seen = watcher.version()
    threading.Timer(0.05, watcher.notify).start()
    assert watcher.wait_change(seen, 10)
    seen = watcher.version()
    threading.Timer(0.05, watcher.close).start()
    assert watcher.wait_change(seen, 10)
    watcher.close()


def test_every_waiter_wakes_after_the_listener_reconnects(pg_url: str,
                                                           pair: tuple[PgStore, PgStore]) -> None:
    watcher = PgWatcher(pair[0], name="q")
    seen = watcher.schedule_version()
    with psycopg.connect(parse_url(pg_url).conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'localq-listen'")
    assert watcher.wait_schedule(seen, 10)
    seen = watcher.version()
    add(pair[1])
    assert watcher.wait_change(seen, 10)  # listening again
    watcher.close()


def test_without_listen_waiters_look_again_every_poll_interval(pg_url: str) -> None:
    store = PgStore(pg_url + "&listen=off&poll_interval=0.05")
    watcher = PgWatcher(store, name="q")
    seen = watcher.version()
    start = time.monotonic()
    assert watcher.wait_change(seen, 5)
    assert time.monotonic() - start < 1
    watcher.close()
    store.close()


def test_writes_notify_inside_their_transaction_only_on_commit(
        pair: tuple[PgStore, PgStore]) -> None:
    watched, writer = pair
    watcher = PgWatcher(watched, name="q")
    seen = watcher.version()
    with pytest.raises(RuntimeError):
        with writer.write(durable=True) as conn:
            tr.pause(conn, queue="q", now_ms=T0)
            raise RuntimeError("rolled back")
    assert not watcher.wait_change(seen, 0.3)
    watcher.close()


def test_close_ends_the_listening_thread_without_waiting_out_its_poll(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() rings the thread awake: a queue's close must not wait for the next look at the
    socket (every PostgreSQL Queue.close paid ~0.45 s before)."""
    from localq.pg import notify

    monkeypatch.setattr(notify, "_WAIT", 60.0)
    note = notify.Notifier(parse_url(pg_url).conninfo, "s", listen=True, poll_interval=1.0)
    note.version()  # starts the thread, LISTEN in place
    thread = note._thread
    assert thread is not None and thread.is_alive()
    closer = threading.Thread(target=note.close)
    closer.start()
    closer.join(10)  # the old thread slept out its 60 s wait first
    assert not closer.is_alive() and not thread.is_alive()
    assert note._bell is None  # its pipe closed with it
