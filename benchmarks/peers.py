"""Adapters doing the W1-W4 work through the SQLite queue peers (the ``bench`` extra).

Every peer runs on the stdlib ``sqlite3`` module (its own SQLite version, printed
in each row), in WAL mode, at the ``synchronous`` level of the row: the adapter sets
the pragma on the peer's connections after the peer opened them, so each row
compares with raw at the same durability.  The peer's own default is in its note.

How each peer is driven, and how honestly:

- **persist-queue** ``SQLiteAckQueue(path, multithreading=True)`` with its JSON
  serializer: ``put``, ``get(block=False, raw=True)``, ``ack(id=...)``.  Its claim is
  a ``SELECT`` on one connection then an unguarded ``UPDATE`` on another,
  serialised only by a ``threading.Lock``: not atomic across processes, so W4 shows
  jobs processed twice.  Its default ``synchronous`` is SQLite's (FULL).
- **huey** at the storage level, not through ``Huey``/the consumer:
  ``SqliteStorage.enqueue`` / ``dequeue``, i.e. huey's queue without task
  pickling or its consumer's scheduler loop.  ``dequeue`` deletes the row inside
  ``begin exclusive``: that delete *is* the claim, there is no ack (at-most-once),
  so ``ack`` is a no-op and huey pays one commit per job where the others pay two.
  It leaves ``synchronous`` at SQLite's default (FULL) unless ``fsync`` is given.
- **litequeue** ``LiteQueue``: ``put``, ``pop``, ``done``.  W2 puts a batch inside
  its public ``transaction()`` context manager.  Its claim orders READY rows by
  ``message_id`` through the ``status`` index and sorts them in a temp b-tree, so a
  claim costs O(waiting jobs) and a drain of n jobs O(n^2).  Default NORMAL.
- **liteq** (PyPI) has no claim API: its ``Worker.run`` loop claims at most one task
  per iteration and sleeps 0.5 s between iterations (<= 2 jobs/s per worker).
  The adapter adds with ``task(...).delay`` and claims with the worker's own
  ``Worker._fetch_and_run`` (its ``BEGIN IMMEDIATE`` + ``UPDATE ... RETURNING``),
  which runs the task in the worker's thread pool: started_at update, handler,
  done update.  ``ack`` waits for that.  Left out: the 0.5 s sleep and the
  per-iteration heartbeat write, so these rows are an upper bound for liteq.  Its
  database path is a module global read from ``LITEQ_DB`` at import; the adapter
  sets ``liteq.db.DB_PATH``.  It opens a new connection for every statement group.
  Default NORMAL (set on every connection it opens).

An adapter whose package is missing is skipped with the reason printed.
"""
from __future__ import annotations

import importlib
import logging
import os
import platform
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, cast

from benchmarks.common import Adapter, Backend, Claim, Settings, sync_name

_QUEUE = "bench"
_DRIVER = f"sqlite3 (stdlib, Python {platform.python_version()})"


def _read_settings(conn: sqlite3.Connection) -> Settings:
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return Settings(journal_mode=str(mode), synchronous=sync_name(sync))


class PersistQueueAdapter:
    """persist-queue's ``SQLiteAckQueue``."""

    def __init__(self, workdir: str, sync: str) -> None:
        import persistqueue
        import persistqueue.serializers.json

        self._empty = persistqueue.Empty
        self._q = persistqueue.SQLiteAckQueue(
            os.path.join(workdir, "persist-queue"), multithreading=True,
            serializer=persistqueue.serializers.json)
        # Private attributes: multithreading=True gives a reading and a writing
        # connection, and the queue has no option for synchronous.
        self._putter = cast(sqlite3.Connection, self._q._putter)
        for conn in (cast(sqlite3.Connection, self._q._getter), self._putter):
            conn.execute(f"PRAGMA synchronous = {sync}")

    def add(self, data: str) -> None:
        self._q.put(data)

    def add_bulk(self, items: Sequence[str]) -> None:
        raise NotImplementedError("SQLiteAckQueue has no bulk put")

    def claim(self) -> Claim | None:
        try:
            item = self._q.get(block=False, raw=True)
        except self._empty:
            return None
        return Claim(token=item["pqid"], data=item["data"])

    def ack(self, claim: Claim) -> None:
        self._q.ack(id=cast(int, claim.token))

    def settings(self) -> Settings:
        return _read_settings(self._putter)

    def pages_written(self) -> int | None:
        return None

    def close(self) -> None:
        self._q.close()


class HueyAdapter:
    """huey's ``SqliteStorage``, used directly (see the module docstring)."""

    def __init__(self, workdir: str, sync: str) -> None:
        from huey.storage import SqliteStorage

        self._storage = SqliteStorage(name=_QUEUE, filename=os.path.join(workdir, "huey.db"))
        # ``conn`` opens the connection the storage then keeps; its ``fsync``
        # option only offers FULL or OFF, so NORMAL is set here.
        self._storage.conn.execute(f"PRAGMA synchronous = {sync}")

    def add(self, data: str) -> None:
        self._storage.enqueue(data.encode())

    def add_bulk(self, items: Sequence[str]) -> None:
        raise NotImplementedError("SqliteStorage has no bulk enqueue")

    def claim(self) -> Claim | None:
        raw = self._storage.dequeue()
        return None if raw is None else Claim(token=None, data=bytes(raw).decode())

    def ack(self, claim: Claim) -> None:
        # Nothing to do: dequeue already deleted the row (at-most-once).
        return None

    def settings(self) -> Settings:
        return _read_settings(self._storage.conn)

    def pages_written(self) -> int | None:
        return None

    def close(self) -> None:
        self._storage.close()


class LiteQueueAdapter:
    """litequeue's ``LiteQueue``."""

    def __init__(self, workdir: str, sync: str) -> None:
        from litequeue import LiteQueue

        self._q = LiteQueue(os.path.join(workdir, "litequeue.db"), queue_name=_QUEUE)
        self._q.conn.execute(f"PRAGMA synchronous = {sync}")

    def add(self, data: str) -> None:
        self._q.put(data)

    def add_bulk(self, items: Sequence[str]) -> None:
        with self._q.transaction(mode="IMMEDIATE"):
            for data in items:
                self._q.put(data)

    def claim(self) -> Claim | None:
        message = self._q.pop()
        return None if message is None else Claim(token=message.message_id, data=message.data)

    def ack(self, claim: Claim) -> None:
        self._q.done(claim.token)

    def settings(self) -> Settings:
        return _read_settings(self._q.conn)

    def pages_written(self) -> int | None:
        return None

    def close(self) -> None:
        self._q.close()


#: Payloads liteq's worker thread handed to the task; read back by ``ack``.
_LITEQ_SEEN: list[str] = []
_LITEQ_TASK = "localq_bench_job"


def _liteq_job(data: str) -> None:
    """The no-op task liteq's worker runs; it only reports what it was given."""
    _LITEQ_SEEN.append(data)


class _ErrorRecorder(logging.Handler):
    """Catch the errors liteq's claim logs and swallows, so they are not read as
    "no job waiting" (which would end a drain early and look like lost jobs)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class LiteqAdapter:
    """PyPI ``liteq``: ``task().delay`` to add, its ``Worker`` to claim and run."""

    def __init__(self, workdir: str, sync: str) -> None:
        import liteq
        import liteq.core
        import liteq.db
        import liteq.worker

        liteq.db.DB_PATH = os.path.join(workdir, "liteq.db")
        self._patched: list[tuple[Any, Callable[[], sqlite3.Connection]]] = []
        if sync != "NORMAL":
            # liteq sets NORMAL on every connection it opens; modules import
            # get_conn by name, so each module's reference is wrapped.
            original = liteq.db.get_conn

            def get_conn() -> sqlite3.Connection:
                conn: sqlite3.Connection = original()
                conn.execute(f"PRAGMA synchronous = {sync}")
                return conn

            for module in (liteq.core, liteq.worker):
                self._patched.append((module, module.get_conn))
                module.get_conn = get_conn
        liteq.db.init_db()
        self._task = liteq.task(queue=_QUEUE, max_retries=1, name=_LITEQ_TASK)(_liteq_job)
        self._worker = liteq.worker.Worker(queues=[_QUEUE], concurrency=1)
        self._errors = _ErrorRecorder()
        logging.getLogger("liteq.worker").addHandler(self._errors)
        self._get_conn: Callable[[], sqlite3.Connection] = liteq.worker.get_conn

    def add(self, data: str) -> None:
        self._task.delay(data)

    def add_bulk(self, items: Sequence[str]) -> None:
        raise NotImplementedError("liteq has no bulk enqueue")

    def claim(self) -> Claim | None:
        running = self._worker.running_tasks
        before = set(running)
        self._worker._fetch_and_run()
        if self._errors.messages:
            raise RuntimeError(f"liteq claim failed: {self._errors.messages[-1]}")
        new = set(running) - before
        if not new:
            return None
        task_id = new.pop()
        future: Future[None] = running[task_id][0]
        return Claim(token=future, data=None)

    def ack(self, claim: Claim) -> None:
        assert isinstance(claim.token, Future)
        claim.token.result()
        # concurrency=1 and one claim in flight: the last payload seen is this one.
        claim.data = _LITEQ_SEEN.pop()

    def settings(self) -> Settings:
        conn = self._get_conn()
        try:
            return _read_settings(conn)
        finally:
            conn.close()

    def pages_written(self) -> int | None:
        return None

    def close(self) -> None:
        self._worker.pool.shutdown(wait=True)
        logging.getLogger("liteq.worker").removeHandler(self._errors)
        for module, get_conn in self._patched:
            module.get_conn = get_conn


def open_persist_queue(workdir: str, sync: str) -> Adapter:
    """Open persist-queue in ``workdir``."""
    return PersistQueueAdapter(workdir, sync)


def open_huey(workdir: str, sync: str) -> Adapter:
    """Open huey's SQLite storage in ``workdir``."""
    return HueyAdapter(workdir, sync)


def open_litequeue(workdir: str, sync: str) -> Adapter:
    """Open litequeue in ``workdir``."""
    return LiteQueueAdapter(workdir, sync)


def open_liteq(workdir: str, sync: str) -> Adapter:
    """Open liteq in ``workdir`` (sets its module-global database path)."""
    return LiteqAdapter(workdir, sync)


def _backend(name: str, open_: Callable[[str, str], Adapter], note: str,
             supports_bulk: bool = False) -> Backend:
    return Backend(name=name, family="peers", open=open_, driver=_DRIVER,
                   sqlite_version=sqlite3.sqlite_version, supports_bulk=supports_bulk,
                   note=note)


#: (import name, backend) for every peer, in table order.
_PEERS: list[tuple[str, Backend]] = [
    ("persistqueue", _backend(
        "persist-queue", open_persist_queue,
        "SQLiteAckQueue(multithreading=True), JSON serializer: put / get(block=False, "
        "raw=True) / ack(id=); claim = SELECT, then an unguarded UPDATE on another "
        "connection (not atomic across processes); the SELECT rescans acked rows, so "
        "a drain slows as they pile up; own default synchronous FULL")),
    ("huey", _backend(
        "huey", open_huey,
        "SqliteStorage.enqueue / dequeue at the storage level (no task pickling, no "
        "consumer); dequeue deletes the row: claim+ack is one commit, at-most-once; "
        "own default synchronous FULL")),
    ("litequeue", _backend(
        "litequeue", open_litequeue,
        "put / pop / done, W2 = put inside its transaction(); a claim sorts every "
        "waiting row (temp b-tree on message_id); done() is unguarded; own default "
        "synchronous NORMAL",
        supports_bulk=True)),
    ("liteq", _backend(
        "liteq", open_liteq,
        "task().delay / Worker._fetch_and_run, which runs the task in its pool: 3 "
        "transactions per job, a new connection each; its run() loop sleeps 0.5 s per "
        "claim (<= 2 jobs/s per worker), left out here; own default synchronous NORMAL")),
]


def backends() -> tuple[list[Backend], list[tuple[str, str]]]:
    """Return the installed peers and, for the others, ``(name, reason skipped)``."""
    found: list[Backend] = []
    skipped: list[tuple[str, str]] = []
    for module, backend in _PEERS:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            skipped.append((backend.name, f"{module} is not installed ({exc}); "
                                          f"pip install -e '.[bench]'"))
        else:
            found.append(backend)
    return found, skipped
