"""Functions run in spawned child processes by the PostgreSQL tests (importable by name)."""

from __future__ import annotations

import random
import time
from typing import Any

T0 = 1_767_225_600_000


def open_store(url: str, barrier: Any) -> int:
    """Open a PgStore (creating or migrating the schema) right after every sibling is ready."""
    from localq.pg.store import PgStore

    barrier.wait()
    store = PgStore(url)
    version = int(store.query("SELECT value FROM localq_meta WHERE key = 'schema_version'")[0][0])
    store.close()
    return version


def drain(url: str, worker: int, barrier: Any) -> list[str]:
    """Claim and complete jobs of queue "q" until none is left; return the ids it completed."""
    from localq.pg import transitions as tr
    from localq.pg.store import PgStore

    store = PgStore(url)
    done = []
    barrier.wait()
    try:
        while True:
            token = f"w{worker}-{len(done)}"
            with store.write(durable=False) as conn:
                row = tr.claim(conn, queue="q", token=token, owner=f"w{worker}",
                               lock_ms=60_000, now_ms=T0)
            if row is None:
                return done
            with store.write(durable=False) as conn:
                tr.move_to_completed(conn, rowid=row[0], public=str(row[0]), token=token,
                                     returnvalue=str(worker), now_ms=T0)
            done.append(str(row[0]))
    finally:
        store.close()


def write_events(url: str, worker: int, count: int, barrier: Any) -> list[str]:
    """Write *count* events, each in a transaction that stays open 0-2 ms after taking its
    id, so that commits land out of id order; return the job ids written."""
    from localq.pg import transitions as tr
    from localq.pg.store import PgStore

    store = PgStore(url)
    rng = random.Random(worker)
    written = []
    barrier.wait()
    try:
        for i in range(count):
            job_id = f"{worker}:{i}"
            with store.write(durable=False) as conn:
                tr.emit(conn, "q", "progress", job_id, i, T0)
                time.sleep(rng.random() * 0.002)
            written.append(job_id)
    finally:
        store.close()
    return written


def hold_lease(conninfo: str, out: Any) -> None:
    """Take this process's lease, report its id, and hold it until killed."""
    from localq.pg import lease

    held = lease.acquire(conninfo)
    out.put(held.id)
    while True:
        time.sleep(0.1)
        if held.reconnects:
            out.put(f"reconnected:{held.reconnects}:{held.held}")
            held.reconnects = 0
