"""A localq schema on a PostgreSQL server, opened by one process: the twin of ``localq._db.Store``.

Same interface: :meth:`PgStore.write` (one transaction), :meth:`PgStore.read` (one snapshot),
:meth:`PgStore.query`, :meth:`PgStore.close`, :attr:`PgStore.closed`,
:meth:`PgStore.data_version`. What differs and why:

* Connections come from a psycopg pool (``pool_size`` in the URL) instead of one per thread:
  a server allows ~100 sessions in all, and a worker with 32 threads in each of several
  processes would exhaust one-per-thread. Transactions are short, so a few connections carry
  many threads. A transaction never spans two pooled sessions.
* After ``fork`` the child never touches (not even closes) an inherited connection: closing
  it would send a Terminate message on the parent's socket. A new pool is made.
* All statements run at READ COMMITTED; transitions lock the rows they read before writing
  them (``FOR NO KEY UPDATE``) or claim with ``SKIP LOCKED``, so guards hold without
  SERIALIZABLE. ``lock_timeout`` is the ``busy_timeout``.
* Durability is ``synchronous_commit`` per transaction (see :meth:`PgStore.sync_level`).
* :meth:`data_version` is the counter of a LISTEN thread (:mod:`localq.pg.notify`).
* Schema creation and migrations run under an advisory lock (see :meth:`PgStore._migrate`).
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConfigError, DatabaseError
from . import forksafe, schema
from .errors import connect_error, refused, translate
from .notify import KEEPALIVES, Notifier
from .url import parse_url, remember

__all__ = ["DURABILITY_MODES", "MIN_SERVER_VERSION", "PgStore", "check_server_version",
           "translate_params"]

DURABILITY_MODES = ("safe", "full", "normal")

#: Pools inherited through fork(): kept referenced forever so that the child never closes
#: (and so never terminates) the parent's sessions.
_abandoned: list[Any] = []

#: ``:name`` outside quotes and not part of a ``::`` cast.
_SQLITE_PARAM = re.compile(r"'[^']*'|(?<![:\w]):([A-Za-z_]\w*)")


#: The oldest server localq runs on (``server_version_num``): the README promises 14.
MIN_SERVER_VERSION = 140000


def check_server_version(version: int, shown: str) -> None:
    """Refuse a server older than :data:`MIN_SERVER_VERSION` before anything is created on it.

    :param version: the server's ``server_version_num`` (libpq reports it at connection).
    :raises DatabaseError: the server is too old.
    """
    if version < MIN_SERVER_VERSION:
        raise DatabaseError(
            f"{shown} runs PostgreSQL {version // 10000}.{version % 10000}; localq needs"
            f" {MIN_SERVER_VERSION // 10000} or newer: upgrade the server, or use a SQLite"
            " file path", path=shown)


def translate_params(sql_text: str) -> str:
    """Turn SQLite-style ``:name`` parameters into psycopg's ``%(name)s`` (``%`` doubled)."""
    sql_text = sql_text.replace("%", "%%")
    return _SQLITE_PARAM.sub(
        lambda m: m.group(0) if m.group(1) is None else f"%({m.group(1)})s", sql_text)


#: Second advisory-lock key of schema migrations is hashtext(schema); this is the first.
_MIGRATION_LOCK = schema.ADVISORY_NAMESPACE


class PgStore:
    """One localq schema on a PostgreSQL server: pooled connections and transactions.

    :param url: ``postgresql://user:password@host:port/db[?schema=localq&pool_size=20]``.
    :param durability: ``"safe"``, ``"full"`` or ``"normal"`` (see API.md).
    :param busy_timeout: seconds a statement waits for a row lock held by another transaction.
    :raises ConfigError: a bad URL parameter or durability.
    :raises DatabaseError: the server cannot be reached, the schema holds other tables, or its
        localq schema version is newer than this code.
    """

    def __init__(self, url: str, *, durability: str = "safe", busy_timeout: float = 10.0) -> None:
        if durability not in DURABILITY_MODES:
            raise ConfigError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self.url = parse_url(url)
        remember(url)
        #: The URL without its password: what messages and ``repr`` show.
        self.path = self.url.shown
        self.schema = self.url.schema
        self.durability = durability
        self.busy_timeout = busy_timeout
        self._closed = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: synchronous_commit currently set on each pooled session (saves a SET per commit).
        self._sync: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        conn = self._connect()
        try:
            self._check_and_migrate(conn)
        finally:
            conn.close()
        self._pool = self._make_pool()
        self._notifier = self._make_notifier()

    def __repr__(self) -> str:
        return f"<PgStore {self.path} schema={self.schema}>"

    # -- opening ---------------------------------------------------------------------------

    def _translate(self, exc: BaseException) -> DatabaseError:
        return translate(exc, self.path, self.busy_timeout, schema=self.schema)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url.conninfo, autocommit=True, connect_timeout=10,
                                   **KEEPALIVES)
        except psycopg.OperationalError as exc:
            raise connect_error(exc, self.path) from exc
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        try:
            self._configure(conn)
        except psycopg.Error as exc:
            conn.close()
            raise self._translate(exc) from exc
        return conn

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        forksafe.track(conn)  # every session: pooled ones and the migration's
        # One round trip for every session setting. search_path holds only our schema, so
        # unqualified table names are ours (pg_catalog is always searched first for functions).
        conn.execute(
            "SELECT set_config('search_path', %s, false), set_config('lock_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', '60s', false),"
            " set_config('application_name', 'localq', false),"
            " set_config('synchronous_commit', 'on', false)",
            (sql.Identifier(self.schema).as_string(conn), f"{int(self.busy_timeout * 1000)}ms"))
        self._sync[conn] = "on"

    def _make_pool(self) -> ConnectionPool:
        pool = ConnectionPool(
            self.url.conninfo, min_size=1, max_size=self.url.pool_size, open=False,
            configure=self._configure, timeout=max(self.busy_timeout, 1.0),
            kwargs={"autocommit": True, "connect_timeout": 10, **KEEPALIVES},
            name=f"localq-{self.schema}", num_workers=1)
        pool.open(wait=False)
        return pool

    def _make_notifier(self) -> Notifier:
        return Notifier(self.url.conninfo, self.schema, listen=self.url.listen,
                        poll_interval=self.url.poll_interval)

    def _read_version(self, conn: psycopg.Connection[Any]) -> int | None:
        """Return the schema version, None if the schema has no localq tables yet.

        :raises DatabaseError: the schema holds another application's tables.
        """
        row = conn.execute("SELECT to_regclass('localq_meta') IS NOT NULL,"
                           " (SELECT count(*) FROM pg_tables WHERE schemaname = %s)",
                           (self.schema,)).fetchone()
        assert row is not None
        has_meta, tables = row
        if not has_meta:
            if tables:
                raise DatabaseError(
                    f"schema {self.schema!r} of {self.path} holds {tables} table(s) that are not"
                    " localq's: pass another schema in the URL (?schema=name)", path=self.path)
            return None
        meta = dict(conn.execute("SELECT key, value FROM localq_meta").fetchall())
        if meta.get("app") != schema.APP:
            raise DatabaseError(f"schema {self.schema!r} of {self.path} has a localq_meta table"
                                " that is not localq's: pass another schema (?schema=name)",
                                path=self.path)
        version = int(meta.get("schema_version", "0"))
        if version > schema.SCHEMA_VERSION:
            raise DatabaseError(
                f"schema {self.schema!r} of {self.path} has localq schema version {version},"
                f" newer than this localq (version {schema.SCHEMA_VERSION}): upgrade localq",
                path=self.path)
        return version

    def _check_and_migrate(self, conn: psycopg.Connection[Any]) -> None:
        check_server_version(conn.info.server_version, self.path)
        try:
            if self._read_version(conn) == schema.SCHEMA_VERSION:
                return  # the common case: no lock, no DDL
            self._migrate(conn)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        """Create or upgrade the schema: every pending step in one transaction, under an
        advisory lock that serialises concurrent first opens (DDL is transactional, so a
        crash leaves the old version whole). The version is read again under the lock: the
        process that waited finds the work done. (A try-lock that returns early would let the
        loser run against a half-made schema: saq's ``init_db``.)"""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (_MIGRATION_LOCK, self.schema))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.schema)))
            version = self._read_version(conn) or 0
            for step in schema.MIGRATIONS[version:]:
                conn.execute(step)
            conn.execute(
                "INSERT INTO localq_meta (key, value) VALUES ('app', %s), ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (schema.APP, str(schema.SCHEMA_VERSION)))

    # -- connections -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseError(f"the queue on {self.path} is closed", path=self.path)
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    _abandoned.extend([self._pool, self._notifier])
                    self._pid = os.getpid()
                    self._sync = weakref.WeakKeyDictionary()
                    self._pool = self._make_pool()
                    self._notifier = self._make_notifier()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Lend a pooled connection (autocommit) for the block; reopened pools after fork.

        Unlike ``Store.connection()`` this is a context manager: a pooled session goes back
        to the pool when the block ends.
        """
        self._check_open()
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise DatabaseError(
                f"all {self.url.pool_size} connections to {self.path} stayed busy for"
                f" {max(self.busy_timeout, 1.0):g} s: raise pool_size in the URL or lower the"
                " worker concurrency", path=self.path) from exc
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def close(self) -> None:
        """Close every connection this store opened (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            return
        self._notifier.close()
        self._pool.close(timeout=5.0)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- transactions ----------------------------------------------------------------------

    def sync_level(self, durable: bool) -> str:
        """Return the ``synchronous_commit`` of a transaction that is *durable* or not (for a
        statement that sets it itself, see :meth:`run`)."""
        # "safe": adds, updates and removals wait for the WAL flush; processing steps (claim,
        # complete, fail, progress, lock renewal) commit with synchronous_commit = off. A
        # crash of the server can then lose the last few hundred ms of those commits, never
        # corrupt anything (PostgreSQL replays the WAL up to a consistent point): a lost
        # claim or completion leaves the job active, its worker's lease ends with the crash
        # and the job runs again: at-least-once, as on SQLite with synchronous=NORMAL.
        if self.durability == "full" or (self.durability == "safe" and durable):
            return "on"
        return "off"

    @contextmanager
    def _begin(self, begin: str, level: str | None) -> Iterator[psycopg.Connection[Any]]:
        # A pooled session may have died since its last use (server restart, idle timeout);
        # nothing has run yet when BEGIN fails, so one retry on a fresh session is safe.
        for attempt in (1, 2):
            if attempt == 2:
                self._pool.check()
            with self.connection() as conn:
                try:
                    if level is not None and self._sync.get(conn) != level:
                        conn.execute("SELECT set_config('synchronous_commit', %s, false)",
                                     (level,))
                        self._sync[conn] = level
                    conn.execute(begin)
                except psycopg.OperationalError as exc:
                    if attempt == 1 and conn.broken:
                        # The others idle in the pool are likely dead too (a server
                        # restart ends every session): test and replace them all.
                        broken = True
                    else:
                        raise self._translate(exc) from exc
                except psycopg.Error as exc:
                    raise self._translate(exc) from exc
                else:
                    broken = False
                if broken:
                    continue
                try:
                    # (psycopg's pipeline mode was tried here to batch the statements whose
                    # results the block does not read: it measured 2x slower.)
                    yield conn
                    conn.execute("COMMIT")
                except BaseException as exc:
                    if not conn.broken and conn.info.transaction_status != 0:
                        try:
                            conn.execute("ROLLBACK")
                        except psycopg.Error:
                            pass
                    if isinstance(exc, psycopg.Error):
                        raise self._translate(exc) from exc
                    raise
                return

    @contextmanager
    def write(self, *, durable: bool) -> Iterator[psycopg.Connection[Any]]:
        """Run the block as one READ COMMITTED transaction.

        :param durable: the transaction creates or changes user data (add, update, remove),
            so the ``"safe"`` mode waits for its commit to reach the disk.
        :raises DatabaseError: a driver error (the transaction was rolled back).
        """
        with self._begin("BEGIN", self.sync_level(durable)) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        """Run the block's reads on one snapshot (REPEATABLE READ, READ ONLY)."""
        with self._begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", None) as conn:
            yield conn

    def run(self, sql_text: str, params: Any) -> list[Any]:
        """Run one statement as a transaction of its own (autocommit): one round trip, no
        ``BEGIN``/``COMMIT``. For statements that call a function of
        :mod:`localq.pg.plpgsql`, which sets ``synchronous_commit`` for its own transaction
        (pass :meth:`sync_level`).

        A pooled session found dead runs the statement again once on a fresh one. Unlike a
        failed ``BEGIN``, the first try may have committed just before the session died;
        the second then fails its guard (the job is no longer active) and raises the
        guard's error, and a job the lost reply had claimed stays active until its lock
        expires and then runs again: at least once, never lost.

        :returns: the statement's rows.
        :raises Refused: the function refused (SQLSTATE class ``LQ``); nothing was stored.
        :raises DatabaseError: any other driver error; nothing was stored (but see above).
        """
        for attempt in (1, 2):
            if attempt == 2:
                self._pool.check()
            with self.connection() as conn:
                try:
                    return list(conn.execute(sql_text, params).fetchall())
                except psycopg.OperationalError as exc:
                    if attempt == 2 or not conn.broken:
                        raise self._translate(exc) from exc
                except psycopg.Error as exc:
                    refusal = refused(exc)
                    if refusal is not None:
                        raise refusal from None
                    raise self._translate(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def query(self, sql_text: str, params: Any = None) -> list[Any]:
        """Run one read statement outside a transaction and return all its rows.

        SQLite-style ``:name`` parameters are accepted too in a statement without psycopg ones
        (translated to ``%(name)s``), so the shared layers' few portable reads run unchanged on both backends.
        """
        if isinstance(params, dict) and ":" in sql_text and "%(" not in sql_text:
            sql_text = translate_params(sql_text)
        return self._query(sql_text, params)

    def _query(self, sql_text: str, params: Any = None) -> list[Any]:
        """Run one read statement outside a transaction and return all its rows (run again
        once on a fresh session if the pooled one turns out dead)."""
        for attempt in (1, 2):
            if attempt == 2:
                self._pool.check()  # a read is safe to run again on a fresh session
            with self.connection() as conn:
                try:
                    cur = conn.execute(sql_text, params)
                    return cur.fetchall() if cur.description is not None else []
                except psycopg.OperationalError as exc:
                    if attempt == 2 or not conn.broken:
                        raise self._translate(exc) from exc
                except psycopg.Error as exc:
                    raise self._translate(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def wal_size(self) -> int:
        """Return 0: the server manages its WAL (SQLite's checkpointing has no twin here)."""
        return 0

    def checkpoint(self, *, truncate: bool = False, busy_timeout: float = 0.1) -> None:
        """Do nothing: the server checkpoints by itself (kept for interface parity)."""

    @property
    def notifier(self) -> Notifier:
        """The LISTEN/NOTIFY wakeups of this store (re-made after fork)."""
        self._check_open()
        return self._notifier

    def data_version(self) -> int:
        """Return a counter that changes when another session commits a change that matters
        (a job became runnable, an event was written), or at least every ``poll_interval``
        seconds with ``listen=off``."""
        self._check_open()
        return self._notifier.version()
