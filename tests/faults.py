"""Fault injection for tests: an apsw VFS that fails the k-th write, sync or truncate.

This copies SQLite's own I/O-error loops (https://sqlite.org/testing.html §3.2): count the
I/O operations of a scenario, then rerun it failing operation k, for every k, once and
persistently, and check the file afterwards (reference/reliability.md §1.9, §7 T2).

The shim inherits from the default VFS (base ``""``), so every call it does not intercept
goes straight to SQLite's unix/win32 VFS: locks are the real ones, and apsw proxies the
``xShm*`` methods, so WAL databases work. Locks are shared with connections opened through
the default VFS in the same process, because both end in the same OS VFS; a test may check
a file through the default VFS while a faulty connection is still open.

Usage::

    with FaultVFS() as vfs:
        conn = open_with(vfs, path)
        vfs.arm(op="write", k=3, error=apsw.SQLITE_IOERR_WRITE, persistent=False)
        ...                      # the third xWrite raises apsw.IOError
        vfs.disarm()

Only Python-level I/O: slow (a few µs per call). Never use it outside tests.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import apsw

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Buffer, Self

__all__ = ["OPS", "FaultVFS", "Injection", "open_with"]

Op = Literal["write", "sync", "truncate"]
#: The operations that can be failed; ``"any"`` in :meth:`FaultVFS.arm` counts all three.
OPS: tuple[Op, ...] = ("write", "sync", "truncate")

_names = itertools.count(1)


@dataclass(frozen=True)
class Injection:
    """One fault that was raised.

    :ivar op: the operation that failed.
    :ivar n: its number in the armed counter (the k-th of *op*, or of all ops for ``"any"``).
    :ivar file: the base name of the file (``q.db``, ``q.db-wal``; ``""`` for a temp file).
    :ivar error: the SQLite result code raised.
    :ivar torn: a write that stored the first half of its data before failing.
    """

    op: Op
    n: int
    file: str
    error: int
    torn: bool = False


@dataclass(frozen=True)
class _Plan:
    op: Op | Literal["any"]
    k: int
    error: int
    persistent: bool
    torn: bool


class FaultVFS(apsw.VFS):
    """A VFS registered under a unique name that fails chosen I/O operations on demand.

    Use it as a context manager, which unregisters it on exit, and open connections with
    :func:`open_with`. Connections opened through it must be closed before it is dropped.

    :param name: the name to register under; a unique one by default. Registering an
        existing name replaces that VFS, so never pass ``""`` or ``"unix"``.
    :param sync_to_disk: pass ``False`` to count (and fail) xSync calls without calling
        ``fsync``. SQLite sees the same calls and results, so tests of error handling lose
        nothing and stop waiting on the disk; tests of power loss must keep it ``True``.

    :ivar vfs_name: the registered name, for ``apsw.Connection(..., vfs=vfs_name)``.
    :ivar counts: operations seen since the last :meth:`arm` or :meth:`reset`, by op and
        in total under ``"any"``. Counting continues after :meth:`disarm`.
    :ivar trace: ``(op, file)`` for each of those operations, in order, to see where a
        sweep's points fall.
    :ivar injected: the faults raised since the last :meth:`arm` or :meth:`reset`.
    """

    def __init__(self, name: str | None = None, *, sync_to_disk: bool = True) -> None:
        self.sync_to_disk = sync_to_disk
        self.vfs_name = name if name is not None else f"localq-fault-{os.getpid()}-{next(_names)}"
        self.counts: dict[str, int] = {}
        self.trace: list[tuple[Op, str]] = []
        self.injected: list[Injection] = []
        self._plan: _Plan | None = None
        # Connections in several threads may share this VFS; SQLite releases the GIL between
        # calls, so the counters need their own lock to stay exact.
        self._lock = threading.Lock()
        self.reset()
        super().__init__(self.vfs_name, base="")

    def arm(
        self,
        *,
        op: Op | Literal["any"],
        k: int,
        error: int,
        persistent: bool,
        torn: bool = False,
    ) -> None:
        """Fail the *k*-th *op* from now on, and reset the counters.

        :param op: ``"write"``, ``"sync"``, ``"truncate"``, or ``"any"`` to count all three
            together.
        :param k: the 1-based number of the operation to fail.
        :param error: a SQLite result code, e.g. ``apsw.SQLITE_IOERR_WRITE``,
            ``apsw.SQLITE_IOERR_FSYNC`` or ``apsw.SQLITE_FULL``; apsw raises the matching
            exception class (``IOError``, ``FullError``) to the caller.
        :param persistent: fail every later matching operation too (a dead disk), rather
            than only the k-th (a transient error).
        :param torn: for a failed write, write the first half of the data before failing,
            as a write cut short by a full disk does.
        :raises ValueError: for an unknown op, ``k < 1`` or an unknown error code.
        """
        if op not in (*OPS, "any"):
            raise ValueError(f"op must be one of {OPS + ('any',)}, not {op!r}")
        if k < 1:
            raise ValueError(f"k is 1-based, got {k}")
        if error & 0xFF not in apsw.mapping_result_codes:
            raise ValueError(f"{error} is not a SQLite result code")
        with self._lock:
            self._plan = _Plan(op, k, error, persistent, torn)
            self._clear()

    def disarm(self) -> None:
        """Stop failing operations; the counters keep counting."""
        with self._lock:
            self._plan = None

    def reset(self) -> None:
        """Disarm and zero the counters, the trace and the list of injected faults."""
        with self._lock:
            self._plan = None
            self._clear()

    def _clear(self) -> None:
        self.counts = {"write": 0, "sync": 0, "truncate": 0, "any": 0}
        self.trace = []
        self.injected = []

    def _tick(self, op: Op, file: str) -> Injection | None:
        """Count one *op* on *file*; return the fault to raise, if this one must fail."""
        with self._lock:
            self.counts[op] += 1
            self.counts["any"] += 1
            self.trace.append((op, file))
            plan = self._plan
            if plan is None or plan.op not in (op, "any"):
                return None
            n = self.counts[plan.op]
            if n == plan.k or (plan.persistent and n > plan.k):
                injection = Injection(op, n, file, plan.error, plan.torn and op == "write")
                self.injected.append(injection)
                return injection
            return None

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:
        """Open *name* through the default VFS, wrapped so that its I/O can be failed."""
        return _FaultFile(self, name, flags)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()
        self.unregister()


def _error(injection: Injection) -> BaseException:
    exc = apsw.exception_for(injection.error)
    # exception_for() gives an empty message, and apsw hands this very object to the
    # caller of execute(); say where it came from, so that a failing sweep reads clearly.
    name = apsw.mapping_result_codes.get(injection.error & 0xFF, "?")
    extended = apsw.mapping_extended_result_codes.get(injection.error, name)
    exc.args = (f"FaultVFS: {extended} injected at {injection.op} #{injection.n} "
                f"({injection.file or 'temp file'})",)
    return exc


class _FaultFile(apsw.VFSFile):
    """A default-VFS file whose xWrite, xSync and xTruncate ask the FaultVFS first.

    A failed operation does nothing (except the first half of a torn write), like an
    EIO or ENOSPC reported before any byte reached the disk.
    """

    def __init__(
        self, vfs: FaultVFS, name: str | apsw.URIFilename | None, flags: list[int]
    ) -> None:
        self._vfs = vfs
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        self._file = os.path.basename(path) if path else ""
        super().__init__("", name, flags)

    def xWrite(self, data: Buffer, offset: int) -> None:
        injection = self._vfs._tick("write", self._file)
        if injection is not None:
            if injection.torn:
                view = memoryview(data)
                if len(view) > 1:
                    super().xWrite(view[: len(view) // 2], offset)
            raise _error(injection)
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        injection = self._vfs._tick("sync", self._file)
        if injection is not None:
            raise _error(injection)
        if self._vfs.sync_to_disk:
            super().xSync(flags)

    def xTruncate(self, newsize: int) -> None:
        injection = self._vfs._tick("truncate", self._file)
        if injection is not None:
            raise _error(injection)
        super().xTruncate(newsize)


def open_with(vfs: FaultVFS, path: str, *, flags: int | None = None) -> apsw.Connection:
    """Open *path* through *vfs* (read-write, created if missing unless *flags* says else)."""
    if flags is None:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    return apsw.Connection(path, flags=flags, vfs=vfs.vfs_name)
