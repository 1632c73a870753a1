"""Process leases and scheduler leadership on PostgreSQL: session advisory locks.

The twin of the file-lock leases of ``localq.lease``. Each process that takes jobs from a
server holds, for its whole life, a session advisory lock on a key derived from its lease id,
on one dedicated connection (never a pooled one: a pool would hand the session, and so the
lock, to someone else, or run lock and unlock on different sessions: npgsql #5592). The lease
id is what an active job records as its ``lock_owner``. When the process dies (SIGKILL, OOM,
power cut of its machine) its session ends and the server drops the lock: another process that
*can* take the lock has proved the owner gone (good_job #472). The connection sets the
server-side TCP keepalives of its session, so the server ends the session of a machine that
vanished within ~15 s instead of hours.

Leadership of a queue's scheduler is one more session lock on the same connection
(:meth:`PgLease.lead`); it ends with the process or the connection, and :meth:`PgLease.resign`
hands it over at once.

A server restart (or a network cut) ends every session at once, so every lease looks free at
the same moment while the workers still run their jobs (good_job #90: jobs ran twice). Two
rules keep that from requeueing them:

* :func:`dead_owners` reports an owner only when its lock was free on two probes at least
  ``grace`` seconds apart (Bull's two-pass stalled check);
* the keeper thread of each lease checks its connection every :data:`KEEP_INTERVAL` seconds
  and, when it died, reconnects and takes its lease back first thing, well within ``grace``.
  If it cannot (someone took it: it was declared dead), :attr:`PgLease.lost` is set, and its
  jobs' writes fail the token guard anyway.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import filelock
import psycopg

from . import forksafe
from .errors import translate
from .notify import KEEPALIVES
from .url import is_postgres_url, parse_url, redact, resolve

__all__ = ["GRACE", "KEEP_INTERVAL", "PgLeaderLock", "PgLease", "acquire", "advisory_key",
           "current", "dead_owners", "forget", "is_alive", "release", "sweep"]

log = logging.getLogger("localq")

#: Seconds a lease must stay free before its owner counts as dead (two probes this far apart).
GRACE = 1.0
#: Seconds between two health checks of a lease's connection.
KEEP_INTERVAL = 0.25

#: Server-side keepalives of the lease session (user-settable GUCs): a client machine that
#: vanished is noticed in 5 + 2 * 3 s, and unacknowledged data aborts the socket after 15 s.
_SERVER_KEEPALIVES = (("tcp_keepalives_idle", "5"), ("tcp_keepalives_interval", "2"),
                      ("tcp_keepalives_count", "3"), ("tcp_user_timeout", "15000"))


def advisory_key(kind: str, name: str) -> int:
    """Return the 64-bit advisory-lock key of *name* (a lease id, or a leader's name).

    The one-key (bigint) form never collides with two-key locks, and 64 hash bits make a
    collision with another application's keys negligible.
    """
    digest = hashlib.sha256(f"localq:{kind}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgLease:
    """This process's lease on one server: a session advisory lock on a dedicated connection.

    Use :func:`acquire`, which shares one lease between every Queue of the process on the
    server.

    :ivar id: the lease id, recorded as ``lock_owner`` by every job this process takes.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.pid = os.getpid()
        self.id = f"{self.pid}-{secrets.token_hex(8)}"
        self.key = advisory_key("lease", self.id)
        #: Set when the lease could not be taken back after a reconnection.
        self.lost = False
        self._lock = threading.Lock()
        self._leading: dict[str, int] = {}
        self._users = 0
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._connect_and_lock()
        #: How many times the session was re-established (tests read it).
        self.reconnects = 0
        self._thread = threading.Thread(target=self._keep, name="localq-pg-lease", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<PgLease {self.id}{' lost' if self.lost else ''}>"

    def _connect_and_lock(self) -> None:
        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10,
                               application_name="localq-lease", **KEEPALIVES)
        forksafe.track(conn)
        try:
            for name, value in _SERVER_KEEPALIVES:
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error:
            conn.close()
            raise
        if not row or not row[0]:
            conn.close()
            self.lost = True
            raise psycopg.OperationalError(f"lease {self.id} is held by another session")
        self._conn = conn

    @property
    def held(self) -> bool:
        """Whether this process still holds its lease (as far as the last check knows)."""
        return self._conn is not None and not self.lost and os.getpid() == self.pid

    def _keep(self) -> None:
        backoff = 0.05
        while not self._stop.wait(KEEP_INTERVAL if self._conn is not None else backoff):
            with self._lock:
                if self._stop.is_set():
                    return
                conn = self._conn
                try:
                    if conn is None:
                        raise psycopg.OperationalError("not connected")
                    conn.execute("SELECT 1")
                    backoff = 0.05
                    continue
                except psycopg.Error:
                    pass
                # The session is gone, and with it the lease and any leadership.
                self._leading.clear()
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
                self._conn = None
                if self.lost:
                    continue
                try:
                    self._connect_and_lock()
                    self.reconnects += 1
                except psycopg.Error as exc:
                    if self.lost:
                        log.warning("localq: lease %s was taken over (declared dead) while"
                                    " its connection was down", self.id)
                    else:
                        log.debug("localq: lease reconnection failed: %s", exc)
                    backoff = min(backoff * 2, 0.5)

    def lead(self, name: str, holder: int = 0) -> bool:
        """Try to become (or confirm being) the leader *name*; True if *holder* (an id within
        this process: one Queue instance) leads. Session locks are re-entrant, so two holders
        of one process are told apart here, as two file locks of one process would be."""
        with self._lock:
            if name in self._leading:
                return self._leading[name] == holder
            if self._conn is None or self.lost:
                return False
            try:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                         (advisory_key("leader", name),)).fetchone()
            except psycopg.Error:
                return False
            if row and row[0]:
                self._leading[name] = holder
                return True
            return False

    def resign(self, name: str, holder: int = 0) -> None:
        """Stop leading *name* if *holder* leads it (the next candidate takes over at once)."""
        with self._lock:
            if self._leading.get(name, None) != holder:
                return
            del self._leading[name]
            if self._conn is not None:
                try:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)",
                                       (advisory_key("leader", name),))
                except psycopg.Error:
                    pass

    def release(self) -> None:
        """End the lease: close its session (the server drops every lock it holds)."""
        self._stop.set()
        if os.getpid() != self.pid:
            return
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
        with self._lock:
            conn, self._conn = self._conn, None
            self._leading.clear()
        if conn is not None:
            try:
                # Unlock first: the server drops a closed session's locks only when its
                # backend has exited, a moment after close() returns.
                conn.execute("SELECT pg_advisory_unlock_all()")
                conn.close()
            except psycopg.Error:
                pass


_registry: dict[str, PgLease] = {}
_registry_lock = threading.Lock()
#: owner -> monotonic time it was first found free (the first of the two probes).
_free_since: dict[str, float] = {}
#: Leases inherited through fork(): never closed in the child (their sessions are the parent's).
_abandoned: list[PgLease] = []


def _reset_after_fork() -> None:
    # The lease sockets themselves are detached by localq.pg.forksafe (a child keeping them
    # would hide the parent's death); here the child forgets the parent's leases.
    global _registry_lock
    _abandoned.extend(_registry.values())
    _registry.clear()
    _free_since.clear()
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _server(url: str) -> str:
    """The libpq URL of *url*'s server and database: leases are per database, not schema."""
    return parse_url(resolve(url)).conninfo if is_postgres_url(url) else url


def acquire(url: str) -> PgLease:
    """Return this process's lease on the database of *url*, taking it on first use
    (counted: pair every call with :func:`release`).

    :raises DatabaseError: the server cannot be reached.
    """
    conninfo = _server(url)
    with _registry_lock:
        lease = _registry.get(conninfo)
        if lease is None or lease.pid != os.getpid() or not lease.held:
            try:
                lease = PgLease(conninfo)
            except psycopg.Error as exc:
                raise translate(exc, redact(url), 0) from exc
            _registry[conninfo] = lease
        lease._users += 1
        return lease


def release(lease: PgLease) -> None:
    """Give back one use of *lease*; the last one ends its session."""
    with _registry_lock:
        lease._users -= 1
        if lease._users > 0:
            return
        if _registry.get(lease.conninfo) is lease:
            del _registry[lease.conninfo]
    lease.release()


def current(url: str) -> PgLease | None:
    """Return this process's live lease on the database of *url*, if it has one."""
    lease = _registry.get(_server(url))
    if lease is None or lease.pid != os.getpid() or not lease.held:
        return None
    return lease


@contextmanager
def _probe_conn(target: Any) -> Iterator[Any]:
    """A connection to probe leases on: *target* itself, or for a URL this process's lease
    session (under its lock), else a short-lived connection."""
    if not isinstance(target, str):
        yield target
        return
    lease = current(target)
    if lease is not None:
        with lease._lock:
            if lease._conn is not None:
                yield lease._conn
                return
    with psycopg.connect(_server(target), autocommit=True, connect_timeout=10) as conn:
        yield conn


def _free(target: Any, owners: list[str]) -> set[str]:
    try:
        with _probe_conn(target) as conn:
            return _free_on(conn, owners)
    except psycopg.Error as exc:
        # Never conclude that a process is dead from an error.
        log.debug("localq: lease probe failed: %s", exc)
        return set()


def _free_on(conn: Any, owners: list[str]) -> set[str]:
    # A transaction-level try-lock on each owner's key: it fails while the owner's session
    # holds its lease, and it is released when this autocommit statement ends, so it can run
    # on a pooled session without leaking a lock.
    rows = conn.execute(
        "SELECT o.owner FROM unnest(%s::text[], %s::bigint[]) AS o(owner, k)"
        " WHERE pg_try_advisory_xact_lock(o.k)",
        (owners, [advisory_key("lease", o) for o in owners])).fetchall()
    return {r[0] for r in rows}


def dead_owners(target: Any, owners: Iterable[str | None], *, grace: float = GRACE,
                now: float | None = None) -> list[str]:
    """Return the owners among *owners* whose process is gone: their lease was free on two
    probes at least *grace* seconds apart (this call is the second; the first is remembered).

    Owners of this process and values that are not lease ids are never reported dead.

    :param target: the queue's URL, or a connection in autocommit mode (a pooled one is fine).
    :param now: ``time.monotonic()`` (a testing seam).
    """
    wanted = sorted({o for o in owners if o and _looks_like_lease(o)} -
                    {lease.id for lease in _registry.values() if lease.pid == os.getpid()})
    if not wanted:
        return []
    at = time.monotonic() if now is None else now
    free = _free(target, wanted)
    for owner in wanted:
        if owner not in free:
            _free_since.pop(owner, None)
    dead = []
    for owner in sorted(free):
        first = _free_since.setdefault(owner, at)
        if at - first >= grace:
            dead.append(owner)
    return dead


def forget(owners: Iterable[str]) -> None:
    """Drop the memory of *owners* (their jobs were taken back, so they are not probed again)."""
    for owner in owners:
        _free_since.pop(owner, None)


def is_alive(target: Any, owner: str) -> bool:
    """Whether the process of lease *owner* holds its lease now (one probe, no grace; a failed
    probe counts as alive). *target*: the queue's URL or a connection."""
    if not _looks_like_lease(owner):
        return False
    mine = {lease.id for lease in _registry.values() if lease.pid == os.getpid()}
    return owner in mine or not _free(target, [owner])


def sweep(url: str, *, min_age: float = 10.0) -> list[str]:
    """Return []: a lease on PostgreSQL leaves no file behind (interface parity with
    ``localq.lease.sweep``; dead ``workers`` rows are found by :func:`dead_owners`)."""
    return []


class PgLeaderLock:
    """Leadership of one queue's scheduler: a session lock on this process's lease session.

    Shaped like the ``filelock.FileLock`` the SQLite scheduler holds (``acquire(timeout=0)``,
    ``release()``, ``is_locked``), with one difference: leadership ends with the session (a
    server restart, a cut connection), so :attr:`is_locked` must be asked before each round
    of leader work, not remembered.

    :param url: the queue's URL (the schema is part of the leader's name).
    :param queue: the queue's name.
    """

    def __init__(self, url: str, queue: str) -> None:
        self._url = url
        self.name = f"{parse_url(url).schema}:{queue}"
        self._lease: PgLease | None = None

    def acquire(self, timeout: float = 0) -> None:
        """Become the leader now, or raise ``filelock.Timeout`` (someone else leads).

        :raises DatabaseError: the server cannot be reached.
        """
        if self._lease is None or self._lease.pid != os.getpid():
            self._lease = acquire(self._url)
        if not self._lease.lead(self.name, id(self)):
            raise filelock.Timeout(self.name)

    @property
    def is_locked(self) -> bool:
        """Whether this process leads now (False once its session ended)."""
        lease = self._lease
        return (lease is not None and lease.pid == os.getpid() and lease.held
                and lease._leading.get(self.name) == id(self))

    def release(self, force: bool = False) -> None:
        """Hand leadership over at once and give back the lease use."""
        lease, self._lease = self._lease, None
        if lease is None or lease.pid != os.getpid():
            return
        lease.resign(self.name, id(self))
        release(lease)


def _looks_like_lease(value: str) -> bool:
    pid, _, token = value.partition("-")
    return pid.isdigit() and len(token) == 16 and all(c in "0123456789abcdef" for c in token)
