"""Opening the database file and running transactions on it.

The only module that talks to apsw directly and the only place where driver errors are
translated into :class:`~localq.DatabaseError` (chained with ``from``).

Rules this module enforces (reference/reliability.md §0):

* every write is one ``BEGIN IMMEDIATE`` transaction: a DEFERRED read that upgrades to a
  write fails at once with ``SQLITE_BUSY`` whatever the busy timeout (the "database is
  locked" bug every peer ships);
* one connection per thread, opened lazily; a forked child never touches (not even closes)
  a connection it inherited, because closing it can delete the WAL under the parent;
* cursors are always read to the end, so no snapshot stays pinned and the WAL stays bounded;
* durability is the per-connection ``synchronous`` level, switched per transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import apsw

from . import schema
from .errors import ConfigError, DatabaseError

__all__ = ["CORRUPT_VALUE_ERRORS", "DURABILITY_MODES", "Store", "corrupt_value", "resolve_path"]

DURABILITY_MODES = ("safe", "full", "normal")

#: Connections inherited through fork(): kept referenced forever so that they are never
#: closed in the child (sqlite.org/howtocorrupt.html §2.6).
_abandoned: list[Any] = []

_OPEN_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_NOFOLLOW


def resolve_path(path: str | os.PathLike[str] | None) -> str:
    """Return the absolute database path for *path* (``None``: ``$LOCALQ_PATH`` or ./localq.db).

    :raises ConfigError: ``:memory:``, a missing parent directory, a directory, or a symlink.
    """
    if path is None:
        path = os.environ.get("LOCALQ_PATH") or "localq.db"
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    text = os.fspath(path)
    if not text or text == ":memory:" or text.startswith("file:"):
        raise ConfigError(
            f"path {text!r} is not supported: localq shares a queue between threads and"
            " processes through a file; use a file path (in tests, pytest's tmp_path / 'q.db')"
        )
    full = os.path.abspath(text)
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        raise ConfigError(f"directory {parent!r} does not exist: create it first (path {text!r})")
    if os.path.islink(full):
        raise ConfigError(f"{full!r} is a symlink: localq opens only real files; pass the target path")
    if os.path.isdir(full):
        raise ConfigError(f"{full!r} is a directory: pass a file path such as {full}/localq.db")
    return full


#: Extended result codes of a failed fsync: the only I/O errors after which a transaction
#: that raised may still be in the file (tests/unit/test_faults_vfs.py pins this).
_SYNC_ERRORS = frozenset({apsw.SQLITE_IOERR_FSYNC, apsw.SQLITE_IOERR_DIR_FSYNC})


def _extended(exc: apsw.Error) -> int:
    # The apsw stubs do not declare extendedresult, though every apsw.Error has it.
    return int(getattr(exc, "extendedresult", 0))


#: What reading a damaged row raises instead of an apsw error: SQLite checks the b-tree
#: structure, not the bytes of a value, so a page overwritten in the middle of a row (or
#: zero-filled, as virtiofs has done) surfaces as text that is not UTF-8 (apsw decodes it)
#: or not JSON (localq decodes it).
CORRUPT_VALUE_ERRORS: tuple[type[Exception], ...] = (UnicodeDecodeError, json.JSONDecodeError)
#: What a read or a transaction translates into DatabaseError.
_DRIVER_ERRORS: tuple[type[Exception], ...] = (apsw.Error, *CORRUPT_VALUE_ERRORS)


def corrupt_value(exc: BaseException, path: str) -> DatabaseError:
    """Return the error for a stored value that does not decode (see CORRUPT_VALUE_ERRORS)."""
    return DatabaseError(
        f"{path!r} is corrupt: a stored value does not decode ({exc.__class__.__name__}:"
        f" {exc}): restore it from a backup, or move it away to start a new queue", path=path)


def _translate(exc: BaseException, path: str, busy_timeout: float) -> DatabaseError:
    # Matching on exception classes, never on message text.
    if isinstance(exc, CORRUPT_VALUE_ERRORS):
        return corrupt_value(exc, path)
    if isinstance(exc, apsw.BusyError):
        msg = (f"database {path!r} stayed locked by another connection for over {busy_timeout:g} s;"
               " raise settings['busy_timeout'] or look for a process holding a long transaction")
    elif isinstance(exc, apsw.FullError):
        msg = f"disk full while writing {path!r}: free some space; nothing of this call was stored"
    elif isinstance(exc, (apsw.NotADBError, apsw.CorruptError)):
        msg = (f"{path!r} is corrupt or not a database ({exc.__class__.__name__}): restore it from"
               " a backup, or move it away to start a new queue")
    elif isinstance(exc, apsw.IOError) and _extended(exc) in _SYNC_ERRORS:
        # The commit's frames may all be in the WAL already: SQLite rolled the transaction
        # back in memory, but the next open of the file can replay it (README "Reliability").
        msg = (f"I/O error on {path!r} ({exc}): check the disk. An fsync failed, so the"
               " outcome of this call is unknown: it may reappear when the file is next"
               " opened (repeat an add with a custom job_id to make the retry harmless)")
    elif isinstance(exc, apsw.IOError):
        msg = f"I/O error on {path!r} ({exc}): check the disk; nothing of this call was stored"
    elif isinstance(exc, apsw.ReadOnlyError):
        msg = f"{path!r} is read-only: localq needs write access to the file and its directory"
    elif isinstance(exc, apsw.CantOpenError):
        links = [path + suffix for suffix in ("-wal", "-shm") if os.path.islink(path + suffix)]
        if links:
            msg = (f"cannot open {path!r}: {links[0]!r} is a symlink, and localq opens no"
                   " symlink (someone may have planted it): remove it")
        else:
            msg = (f"cannot open {path!r}: check that it is a file, readable and writable, in a"
                   " directory where its -wal and -shm files can be created")
    elif isinstance(exc, apsw.TooBigError):
        msg = f"a value is too large for {path!r}: store large payloads in files"
    else:
        msg = f"database error on {path!r}: {exc.__class__.__name__}: {exc}"
    return DatabaseError(msg, path=path)


class _Transaction:
    """The context manager of :meth:`Store.write`: a class, not a ``@contextmanager``
    generator, as every job move goes through it (a generator costs a few microseconds more).
    """

    __slots__ = ("_store", "_durable", "_conn")

    def __init__(self, store: Store, durable: bool) -> None:
        self._store = store
        self._durable = durable

    def __enter__(self) -> apsw.Connection:
        store = self._store
        conn = self._conn = store.connection()
        level = store._sync_level(self._durable)
        try:
            if store._local.sync != level:
                conn.execute(f"PRAGMA synchronous={level}")
                store._local.sync = level
            conn.execute("BEGIN IMMEDIATE")
        except apsw.Error as exc:
            raise _translate(exc, store.path, store.busy_timeout) from exc
        return conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        store, conn = self._store, self._conn
        if exc is None:
            try:
                conn.execute("COMMIT")
            except BaseException as failed:
                store._rollback(conn)
                if isinstance(failed, _DRIVER_ERRORS):
                    raise _translate(failed, store.path, store.busy_timeout) from failed
                raise
            return
        store._rollback(conn)
        if isinstance(exc, _DRIVER_ERRORS):
            raise _translate(exc, store.path, store.busy_timeout) from exc


class Store:
    """One database file, opened by one process: thread-local connections and transactions.

    :param path: an absolute path from :func:`resolve_path`.
    :param durability: ``"safe"``, ``"full"`` or ``"normal"`` (see API.md).
    :param busy_timeout: seconds a transaction waits for another writer.
    :param vfs: a testing hook, not public API: the name of a registered apsw VFS to open
        the file through (``tests/faults.py`` injects I/O errors this way; see
        ``Queue._open_store``). ``None``, the default, is SQLite's own VFS.
    """

    def __init__(self, path: str, *, durability: str = "safe", busy_timeout: float = 10.0,
                 vfs: str | None = None) -> None:
        if durability not in DURABILITY_MODES:
            raise ConfigError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self.path = path
        self.durability = durability
        self.busy_timeout = busy_timeout
        self.vfs = vfs
        self._local = threading.local()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._conns: weakref.WeakSet[apsw.Connection] = weakref.WeakSet()
        self._closed = False
        self._create_file()
        try:
            self._check_and_migrate(self.connection())
        except BaseException:
            self._close_refused()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _create_file(self) -> None:
        # SQLite would create the file 0644 under a usual umask; created 0600 first, the
        # -wal and -shm files inherit the owner-only mode.
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot create {self.path!r}: {exc.strerror}") from exc
        os.close(fd)

    def _open(self) -> apsw.Connection:
        try:
            conn = apsw.Connection(self.path, flags=_OPEN_FLAGS, vfs=self.vfs)
        except apsw.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout) from exc
        conn.set_busy_timeout(int(self.busy_timeout * 1000))
        try:
            # None of these writes to the file: a foreign file stays untouched.
            for pragma in ("trusted_schema=OFF", "foreign_keys=ON", "cell_size_check=ON",
                           "mmap_size=0", "journal_size_limit=67108864"):
                conn.execute(f"PRAGMA {pragma}").fetchall()
        except apsw.Error as exc:
            conn.close()
            raise _translate(exc, self.path, self.busy_timeout) from exc
        conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
        return conn

    def _close_refused(self) -> None:
        # A refused file must stay as it was. Closing the last connection checkpoints the
        # -wal into the file, so frames another program left there are kept in the -wal
        # instead; an empty -wal (only ours: we never write to a refused file) is removed by
        # the normal close.
        conn = getattr(self._local, "conn", None)
        try:
            frames = os.path.getsize(self.path + "-wal") > 0
        except OSError:
            frames = False
        if conn is not None and frames:
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        self.close()

    def _check_and_migrate(self, conn: apsw.Connection) -> None:
        try:
            # One snapshot: read one by one, a process migrating meanwhile made a fresh file
            # look foreign (application_id still 0 but user_version already set).
            conn.execute("BEGIN")
            try:
                app_id, version, objects = self._marker(conn)
            finally:
                conn.execute("COMMIT")
            if app_id == 0 and version == 0 and objects == 0:
                # A new, empty file: WAL first, so that even the schema is written to the log.
                self._enable_wal(conn)
            else:
                self._refuse_foreign(app_id, version)
            if version < schema.SCHEMA_VERSION:
                self._migrate(conn)
            if self._jobs_sql(conn).find(schema.STATE_CHECK_IN) >= 0:
                # On a connection of its own: the one that edits the schema keeps using the
                # text it had parsed, every other one reads the new text.
                other = self._open()
                try:
                    self._respell_state_check(other)
                finally:
                    other.close()
            mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
            if mode != "wal":
                self._enable_wal(conn)
        except apsw.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout) from exc

    def _enable_wal(self, conn: apsw.Connection) -> None:
        # Processes switching a fresh file to WAL at once each hold a SHARED lock and want an
        # EXCLUSIVE one: SQLite fails all but one at once with SQLITE_BUSY (deadlock
        # avoidance: the busy handler is not called). The winner is done in microseconds, so
        # the others retry, up to the busy timeout.
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.001
        while True:
            try:
                if conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0] == "wal":
                    return
            except apsw.BusyError:
                pass
            if time.monotonic() >= deadline:
                raise DatabaseError(
                    f"could not switch {self.path!r} to WAL mode within {self.busy_timeout:g} s:"
                    " another process holds it open in another journal mode", path=self.path)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @staticmethod
    def _marker(conn: apsw.Connection) -> tuple[int, int, int]:
        app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
        version = conn.execute("PRAGMA user_version").fetchall()[0][0]
        objects = conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()[0][0]
        return int(app_id), int(version), int(objects)  # type: ignore[arg-type]

    def _refuse_foreign(self, app_id: int, version: int) -> None:
        if app_id != schema.APPLICATION_ID:
            raise DatabaseError(
                f"{self.path!r} is not a localq database (it is another SQLite file):"
                " pass the path of a localq queue file, or a new path", path=self.path)
        if version > schema.SCHEMA_VERSION:
            raise DatabaseError(
                f"{self.path!r} has localq schema version {version}, newer than this localq"
                f" (version {schema.SCHEMA_VERSION}): upgrade localq", path=self.path)

    @staticmethod
    def _jobs_sql(conn: apsw.Connection) -> str:
        rows = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table'"
                            " AND name = 'jobs'").fetchall()
        return str(rows[0][0]) if rows else ""

    def _respell_state_check(self, conn: apsw.Connection) -> None:
        """Replace the jobs table's ``state IN (...)`` rule by the same rule spelled with OR
        (see :data:`localq.schema.STATE_CHECK`), in one transaction; skipped, to be done at a
        later open, when the file is read-only or stays locked."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except (apsw.ReadOnlyError, apsw.BusyError):
            return
        try:
            old = self._jobs_sql(conn)  # again, under the write lock
            new = old.replace(schema.STATE_CHECK_IN, schema.STATE_CHECK)
            if new != old:
                cookie = int(conn.execute("PRAGMA schema_version").fetchall()[0][0])  # type: ignore[arg-type]
                # Editing sqlite_schema needs the defensive flag off, on this connection and
                # only for this transaction.
                conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
                try:
                    conn.execute("PRAGMA writable_schema=ON")
                    conn.execute("UPDATE sqlite_schema SET sql = :sql WHERE type = 'table'"
                                 " AND name = 'jobs'", {"sql": new})
                    # Every connection, in every process, reads the schema again.
                    conn.execute(f"PRAGMA schema_version={cookie + 1:d}")
                    conn.execute("PRAGMA writable_schema=OFF")
                finally:
                    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
                # The new text parses, or nothing is committed.
                conn.execute("SELECT count(*) FROM jobs WHERE 0").fetchall()
            conn.execute("COMMIT")
        except (apsw.ReadOnlyError, apsw.BusyError):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self, conn: apsw.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            app_id, version, objects = self._marker(conn)
            if not (app_id == 0 and version == 0 and objects == 0):
                self._refuse_foreign(app_id, version)
            for step in schema.MIGRATIONS[version:]:
                conn.execute(step)
            conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID:d}")
            conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION:d}")
            conn.execute("COMMIT")
        except BaseException:
            # apsw spells "not in autocommit mode" as in_transaction (there is no .autocommit).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- connections -----------------------------------------------------------------------

    def connection(self) -> apsw.Connection:
        """Return this thread's connection, opening it on first use (and after a fork)."""
        if self._closed:
            raise DatabaseError(f"the queue on {self.path!r} is closed", path=self.path)
        pid = os.getpid()
        if pid != self._pid:
            self._after_fork(pid)
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            self._local.sync = None
            with self._lock:
                self._conns.add(conn)
        return conn

    def _after_fork(self, pid: int) -> None:
        with self._lock:
            _abandoned.extend(self._conns)
            self._conns = weakref.WeakSet()
            self._local = threading.local()
            self._lock = threading.Lock()
            self._pid = pid

    def close(self) -> None:
        """Close every connection this store opened (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            return
        with self._lock:
            conns = list(self._conns)
            self._conns = weakref.WeakSet()
        for conn in conns:
            # A connection busy in another thread closes when that thread drops it.
            with contextlib.suppress(apsw.Error):
                conn.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- transactions ----------------------------------------------------------------------

    def _sync_level(self, durable: bool) -> str:
        if self.durability == "full" or (self.durability == "safe" and durable):
            return "FULL"
        return "NORMAL"

    def write(self, *, durable: bool) -> _Transaction:
        """Run the block as one ``BEGIN IMMEDIATE`` transaction (``with store.write(...) as
        conn:``).

        :param durable: the transaction creates or changes user data (add, update, remove),
            so the ``"safe"`` mode fsyncs its commit.
        :raises DatabaseError: a driver error (the transaction was rolled back).
        """
        return _Transaction(self, durable)

    @contextmanager
    def read(self) -> Iterator[Any]:  # Any, as PgStore.read: the seam yields either driver
        """Run the block's reads on one snapshot (a DEFERRED read transaction)."""
        conn = self.connection()
        try:
            conn.execute("BEGIN")
        except apsw.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, _DRIVER_ERRORS):
                raise _translate(exc, self.path, self.busy_timeout) from exc
            raise

    def _rollback(self, conn: apsw.Connection) -> None:
        # After SQLITE_FULL/IOERR/BUSY SQLite may already have rolled back (lang_transaction §3).
        # apsw has no .autocommit attribute: reading it raised AttributeError and left every
        # refused move's transaction open on the thread's connection.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except apsw.Error:
                pass

    def query(self, sql: str, params: Any = None) -> list[Any]:
        """Run one read statement outside a transaction and return all its rows."""
        try:
            return self.connection().execute(sql, params).fetchall()
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, self.path, self.busy_timeout) from exc

    def data_version(self) -> int:
        """Return ``PRAGMA data_version`` of this thread's connection (changes on others' commits)."""
        try:
            return int(self.connection().execute("PRAGMA data_version").fetchall()[0][0])  # type: ignore[arg-type]
        except apsw.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout) from exc

    def checkpoint(self, *, truncate: bool = False, busy_timeout: float = 0.1) -> None:
        """Copy the WAL into the database (PASSIVE), or also empty the WAL file (TRUNCATE).

        TRUNCATE waits for readers and blocks writers meanwhile, so it uses a short busy
        timeout of its own: when it cannot finish quickly it gives up and is tried again later.
        """
        conn = self.connection()
        mode = apsw.SQLITE_CHECKPOINT_TRUNCATE if truncate else apsw.SQLITE_CHECKPOINT_PASSIVE
        if truncate:
            conn.set_busy_timeout(int(busy_timeout * 1000))
        try:
            conn.wal_checkpoint(mode=mode)
        except apsw.BusyError:
            return  # readers or a writer in the way: the next round tries again
        except apsw.Error as exc:
            raise _translate(exc, self.path, self.busy_timeout) from exc
        finally:
            if truncate:
                conn.set_busy_timeout(int(self.busy_timeout * 1000))

    def wal_size(self) -> int:
        """Return the size of the ``-wal`` file in bytes (0 if absent): a stat, never an open."""
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0
