"""Process leases: how one process proves to the others that it is alive.

Each process that takes jobs from a database holds, for its whole life, an exclusive OS file
lock (``filelock``: ``flock`` on Unix, ``LockFileEx`` on Windows) on its own lease file::

    <db>-localq/            0700
        leases/<lease id>.lock   0600, one per live process (and per database)

The lease id is what an active job records as its ``lock_owner``. The operating system drops
the lock the instant the process dies, however it dies (SIGKILL, OOM killer, power cut of the
process), so another process that *can* lock an owner's lease file has proved that the owner
is gone and may take its jobs back at once, long before their lock expires (Bull waits 30-90 s).

Rules that keep this sound (reference/reliability.md §3):

* the database, ``-wal`` and ``-shm`` are never locked or opened here: SQLite's own POSIX locks
  live on them, and a second ``open()``/``close()`` of those files would drop them;
* a lease id is never reused (pid plus 64 random bits), so a lease file proven dead stays dead:
  deleting it cannot let two live holders lock different inodes of one lease;
* a forked child never holds its parent's lease: filelock >= 3.30 closes the inherited
  descriptor in the child, and the at-fork hook below makes the child take a lease of its own.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from typing import Iterable

import filelock

from .errors import ConfigError

__all__ = ["Lease", "acquire", "current", "dead_owners", "is_alive", "is_lease_id",
           "lease_dir", "release", "state_dir", "sweep"]

_LEASE_ID = re.compile(r"[0-9]{1,10}-[0-9a-f]{16}")
_SUFFIX = ".lock"


def state_dir(db_path: str) -> str:
    """Return (creating it 0700 if needed) the directory of localq's side files for *db_path*."""
    return _private_dir(db_path + "-localq")


def lease_dir(db_path: str) -> str:
    """Return (creating it 0700 if needed) the directory of the lease files of *db_path*."""
    return _private_dir(os.path.join(state_dir(db_path), "leases"))


def _private_dir(path: str) -> str:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path) or os.path.islink(path):
            raise ConfigError(f"{path!r} exists and is not a directory: localq keeps its lock"
                              " files there; move it away") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {path!r} ({exc.strerror}): localq needs write access"
                          " to the database's directory for its lock files") from exc
    return path


def is_lease_id(value: object) -> bool:
    """Whether *value* looks like a lease id (anything else is never used to build a path)."""
    return isinstance(value, str) and _LEASE_ID.fullmatch(value) is not None


class Lease:
    """This process's lease on one database: an exclusive lock held until :meth:`release`.

    Use :func:`acquire`, which shares one lease between every Queue of the process on the file.

    :ivar id: the lease id, recorded as ``lock_owner`` by every job this process takes.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.pid = os.getpid()
        self.id = f"{self.pid}-{secrets.token_hex(8)}"
        self.path = os.path.join(lease_dir(db_path), self.id + _SUFFIX)
        # thread_local=False: the lease belongs to the process, and the Queue that releases it
        # may close from another thread than the one that took it.
        self._lock = filelock.FileLock(self.path, mode=0o600, thread_local=False,
                                       fallback_to_soft=False)
        try:
            self._lock.acquire(timeout=0)
        except (filelock.Timeout, OSError) as exc:
            raise ConfigError(f"cannot lock {self.path!r} ({exc}): localq needs a local"
                              " filesystem with working file locks beside the database") from exc
        self._users = 0

    def __repr__(self) -> str:
        return f"<Lease {self.id} {self.db_path!r}>"

    @property
    def held(self) -> bool:
        """Whether this process still holds the lock."""
        return bool(self._lock.is_locked) and os.getpid() == self.pid

    def release(self) -> None:
        """Delete the lease file and drop the lock (a clean exit: nothing left to recover)."""
        if os.getpid() != self.pid or not self._lock.is_locked:
            return
        # Unlinking while the lock is held means nobody can lock this id any more except through
        # an inode that is already gone; the id is never reused, so that is harmless.
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self._lock.release(force=True)


_registry: dict[str, Lease] = {}
_registry_lock = threading.Lock()


def _reset_after_fork() -> None:
    # The child must never speak for its parent: drop every lease object (filelock has already
    # closed the inherited descriptors) so that the child's first claim takes a lease of its own.
    global _registry_lock
    _registry.clear()
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def acquire(db_path: str) -> Lease:
    """Return this process's lease on *db_path*, taking it on first use (counted: pair every
    call with :func:`release`)."""
    with _registry_lock:
        lease = _registry.get(db_path)
        if lease is None or lease.pid != os.getpid() or not lease.held:
            lease = Lease(db_path)
            _registry[db_path] = lease
        lease._users += 1
        return lease


def release(lease: Lease) -> None:
    """Give back one use of *lease*; the last one deletes the lease file and unlocks it."""
    with _registry_lock:
        lease._users -= 1
        if lease._users > 0:
            return
        if _registry.get(lease.db_path) is lease:
            del _registry[lease.db_path]
    lease.release()


def current(db_path: str) -> Lease | None:
    """Return this process's live lease on *db_path*, if it has one."""
    lease = _registry.get(db_path)
    if lease is None or lease.pid != os.getpid() or not lease.held:
        return None
    return lease


def _probe(path: str) -> bool:
    """Whether the lease file at *path* is dead (lockable, or already removed); a dead file is
    deleted while we hold its lock."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return True  # removed by whoever proved its owner dead first
    except OSError:
        return False  # unreadable: never conclude that a process is dead from an error
    try:
        try:
            if not filelock.lock_descriptor(fd, blocking=False):
                return False
        except OSError:
            return False
        try:
            os.unlink(path)
        except OSError:
            pass
        filelock.unlock_descriptor(fd)
        return True
    finally:
        os.close(fd)


def dead_owners(db_path: str, owners: Iterable[str | None]) -> list[str]:
    """Return the owners among *owners* whose process is gone (their lease file is lockable).

    Owners of this process, and values that are not lease ids, are never reported dead.
    The lease files proven dead are deleted.
    """
    mine = current(db_path)
    directory = os.path.join(db_path + "-localq", "leases")
    out = []
    for owner in set(owners):
        if owner is None or not is_lease_id(owner) or (mine is not None and owner == mine.id):
            continue
        if _probe(os.path.join(directory, owner + _SUFFIX)):
            out.append(owner)
    return out


def is_alive(db_path: str, owner: str) -> bool:
    """Whether the process of lease *owner* is alive (this process's own lease counts)."""
    return not dead_owners(db_path, [owner]) if is_lease_id(owner) else False


def sweep(db_path: str, *, min_age: float = 10.0) -> list[str]:
    """Delete the lease files of dead processes that no job row mentions any more.

    Only files older than *min_age* seconds are probed, so a process that has just created its
    file and is about to lock it is left alone (filelock would retry on a fresh inode anyway).

    :returns: the ids of the leases found dead.
    """
    directory = os.path.join(db_path + "-localq", "leases")
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    now = time.time()
    stale = []
    for name in names:
        owner = name[: -len(_SUFFIX)]
        if not name.endswith(_SUFFIX) or not is_lease_id(owner):
            continue
        try:
            if now - os.stat(os.path.join(directory, name)).st_mtime < min_age:
                continue
        except OSError:
            continue
        stale.append(owner)
    return dead_owners(db_path, stale)
