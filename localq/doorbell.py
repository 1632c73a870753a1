"""Doorbells: waking idle processes within a millisecond, at no cost while nobody waits.

Polling ``PRAGMA data_version`` every few milliseconds costs 2-4 % of a core per idle process
on the reference machine (a sleep/wake cycle of the interpreter is ~40-90 µs of CPU), so it
cannot give both a 5 ms pickup latency and an idle cost under 1 %. Instead, each process that
has something waiting owns a *bell*::

    <db>-localq/bells/<bell id>.bell     16 bytes: b"LQB1", UDP port (u16), flags (u8 at 8)

The owner binds a UDP socket on 127.0.0.1, writes its port in the file, maps the file in
memory and holds a file lock on it for its life. Its flag byte says whether any thread of the
process is waiting right now (bit 1: for any change; bit 2: a scheduler, for delayed jobs).
A process that commits a change reads the flag of every other bell (a memory read, no system
call) and sends one datagram, naming the queue, only to the bells whose waiters care. So a busy
worker is never woken by datagrams, and an idle one sleeps in ``select`` at no cost.

Correctness does not rest on the datagram: a waiter arms its flag *before* its last look at the
database (see ``Watcher.wait_change``), so a commit either precedes that look or sees the flag
set. Each waiting thread also reads ``data_version`` every :data:`FALLBACK_INTERVAL` seconds,
which covers lost datagrams and writers that do not ring (older versions, other tools).
Datagrams carry no authority: any local process can send one, and it only causes a re-check.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import select
import socket
import struct
import threading
import time
import weakref
from typing import TYPE_CHECKING, Callable

import filelock

from .lease import state_dir

if TYPE_CHECKING:
    from .wakeup import Watcher

__all__ = ["CHANGE", "FALLBACK_INTERVAL", "Hub", "SCHEDULE", "hub_for", "sweep_bells"]

#: Flag bits of a bell: waiting for any change / waiting for delayed-job changes (scheduler).
CHANGE = 1
SCHEDULE = 2
#: Seconds between two ``data_version`` reads while somebody waits and bells work.
FALLBACK_INTERVAL = 0.25
#: Seconds between two ``data_version`` reads when no bell can be used (no loopback socket).
POLL_INTERVAL = 0.005

#: A file of the bells directory whose 8 bytes every bell rewrites (at random) when it is
#: created or removed: a process that rings reads them from memory and lists the directory
#: only when they changed, instead of a stat of the directory per commit (4 us here).
_GENERATION = "generation"
#: Seconds between two checks of the directory itself even when the generation is unchanged
#: (bells of processes that do not write it: older versions).
_RECHECK = 1.0

_MAGIC = b"LQB1"
_SIZE = 16
_FLAG = 8
_SUFFIX = ".bell"


def _bell_dir(db_path: str) -> str:
    path = os.path.join(state_dir(db_path), "bells")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    return path


def _bump_generation(directory: str) -> None:
    """Tell every ringer that the set of bells in *directory* changed."""
    fd = os.open(os.path.join(directory, _GENERATION),
                 os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.pwrite(fd, os.urandom(8), 0)
    finally:
        os.close(fd)


def _map_generation(directory: str) -> mmap.mmap:
    """Map the generation file of *directory* read-only (creating it if needed)."""
    fd = os.open(os.path.join(directory, _GENERATION),
                 os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if os.fstat(fd).st_size < 8:
            os.ftruncate(fd, 8)
        return mmap.mmap(fd, 8, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


class _Bell:
    """This process's bell: socket, lock-held file and its mapped flag byte."""

    def __init__(self, directory: str) -> None:
        self.id = f"{os.getpid()}-{secrets.token_hex(8)}"
        self.path = os.path.join(directory, self.id + _SUFFIX)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(("127.0.0.1", 0))
            self.sock.setblocking(False)
            port = self.sock.getsockname()[1]
            self._lock = filelock.FileLock(self.path, mode=0o600, thread_local=False,
                                           fallback_to_soft=False)
            self._lock.acquire(timeout=0)
            fd = os.open(self.path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.write(fd, _MAGIC + struct.pack("<H", port) + bytes(_SIZE - 6))
                self.map = mmap.mmap(fd, _SIZE)
            finally:
                os.close(fd)
            # After the file is complete, and before any flag is set (arm): a ringer that
            # reads the old generation commits before this process's first look at the
            # database, which then sees that commit. (Without it, ringers find the bell at
            # their next look at the directory, within _RECHECK.)
            with contextlib.suppress(OSError):
                _bump_generation(directory)
        except BaseException:
            self.sock.close()
            raise

    def set_flags(self, flags: int) -> None:
        self.map[_FLAG] = flags

    def close(self) -> None:
        self.set_flags(0)
        try:
            os.unlink(self.path)
            _bump_generation(os.path.dirname(self.path))
        except OSError:
            pass
        self.map.close()
        self._lock.release(force=True)
        self.sock.close()


class _Peer:
    """Another process's bell, mapped read-only."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            if os.fstat(fd).st_size < _SIZE:
                raise OSError("bell file not written yet")
            self.map = mmap.mmap(fd, _SIZE, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        if self.map[:4] != _MAGIC:
            self.map.close()
            raise OSError("not a bell file")
        self.port: int = struct.unpack("<H", self.map[4:6])[0]

    def flags(self) -> int:
        return self.map[_FLAG]


class Hub:
    """Wakeups of one process on one database: its watchers, its bell, the other bells.

    One per (process, database), shared by every Queue of the process on that file.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._watchers: weakref.WeakSet[Watcher] = weakref.WeakSet()
        #: A snapshot of _watchers as weak references, rebuilt when one is added or removed:
        #: every commit of this process wakes them, and iterating the WeakSet cost more than
        #: the wake-ups.
        self._snapshot: tuple[weakref.ref[Watcher], ...] = ()
        self._users = 0
        self._armed = {CHANGE: 0, SCHEDULE: 0}
        self._bell: _Bell | None = None
        self._bell_failed = False
        self._thread: threading.Thread | None = None
        self._stop = False
        self._dir: str | None = None
        self._peers: dict[str, _Peer] = {}
        self._peers_mtime = -1
        self._peer_list: list[_Peer] = []
        #: The bells directory's generation file, mapped, and the bytes read at the last
        #: listing; the directory is looked at again when they differ or at _recheck_at.
        self._generation: mmap.mmap | None = None
        self._generation_seen: bytes | None = None
        self._generation_failed = False
        self._recheck_at = 0.0
        self._sender: socket.socket | None = None

    # -- watchers ----------------------------------------------------------------------------

    def add(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.add(watcher)
            self._snapshot = tuple(weakref.ref(w) for w in self._watchers)
            self._users += 1

    def remove(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)
            self._snapshot = tuple(weakref.ref(w) for w in self._watchers)
            self._users -= 1
            last = self._users <= 0
        if last:
            self.close()
            with _hubs_lock:
                if _hubs.get(self.db_path) is self:
                    del _hubs[self.db_path]

    def arm(self, kind: int) -> None:
        """Note that a thread is about to wait for *kind* (CHANGE or SCHEDULE)."""
        with self._lock:
            self._armed[kind] += 1
            self._ensure_started()
            self._publish()

    def disarm(self, kind: int) -> None:
        with self._lock:
            self._armed[kind] -= 1
            self._publish()

    def _publish(self) -> None:
        if self._bell is not None:
            flags = CHANGE if self._armed[CHANGE] else 0
            self._bell.set_flags(flags | (SCHEDULE if self._armed[SCHEDULE] else 0))

    def _wake_local(self, queue: str | None, delayed: bool) -> None:
        for ref in self._snapshot:
            watcher = ref()
            if watcher is not None and (queue is None or watcher.name == queue):
                watcher._wake(delayed)

    # -- ringing -----------------------------------------------------------------------------

    def ring(self, queue: str, *, delayed: bool = False) -> None:
        """Tell every waiter of *queue*, in this process and the others, that it changed.

        :param delayed: the change concerns delayed jobs (wakes schedulers too).
        """
        self._wake_local(queue, delayed)
        peers = self._current_peers()
        if not peers:
            return
        payload = (b"d" if delayed else b"c") + queue.encode()
        mask = CHANGE | SCHEDULE if delayed else CHANGE
        for peer in peers:
            # A bell that went away: the next refresh drops it.
            with contextlib.suppress(OSError, ValueError):
                if peer.flags() & mask:
                    self._send(payload, peer.port)

    def _send(self, payload: bytes, port: int) -> None:
        sender = self._sender
        if sender is None:
            sender = self._sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.setblocking(False)
        # A full buffer means the peer has wakeups pending already.
        with contextlib.suppress(BlockingIOError, ConnectionError):
            sender.sendto(payload, ("127.0.0.1", port))

    def _current_peers(self) -> list[_Peer]:
        generation = self._generation
        token = generation[:8] if generation is not None else None
        if (token is not None and token == self._generation_seen
                and time.monotonic() < self._recheck_at):
            return self._peer_list  # no bell came or went: no system call
        if self._dir is None:
            self._dir = os.path.join(self.db_path + "-localq", "bells")
        try:
            st = os.stat(self._dir)
        except OSError:
            return []
        if generation is None and not self._generation_failed:
            try:
                generation = self._generation = _map_generation(self._dir)
                token = generation[:8]
            except (OSError, ValueError):
                # No token to read (a directory we may not write): look at the directory at
                # every ring, as without generation files.
                self._generation_failed = True
        now = time.time()
        # Directory mtimes can be coarse (a few ms): within that window a second new bell
        # would not change it, so a recent mtime is never trusted.
        recent = now - st.st_mtime < 0.1
        if st.st_mtime_ns != self._peers_mtime or recent or token != self._generation_seen:
            self._refresh_peers(st.st_mtime_ns)
            self._peer_list = list(self._peers.values())
        self._generation_seen = token
        self._recheck_at = time.monotonic() + (0.0 if recent else _RECHECK)
        return self._peer_list

    def _refresh_peers(self, mtime: int) -> None:
        try:
            names = {n for n in os.listdir(self._dir or "") if n.endswith(_SUFFIX)}
        except OSError:
            return
        own = self._bell.id + _SUFFIX if self._bell is not None else None
        for name in list(self._peers):
            if name not in names:
                self._peers.pop(name).map.close()
        for name in names - set(self._peers):
            if name == own:
                continue
            try:
                self._peers[name] = _Peer(os.path.join(self._dir or "", name))
            except (OSError, ValueError):
                continue
        if own is not None:
            peer = self._peers.pop(own, None)
            if peer is not None:
                peer.map.close()
        self._peers_mtime = mtime

    # -- the receiving thread ----------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._thread is not None or self._stop or self._bell_failed:
            return
        try:
            self._bell = _Bell(_bell_dir(self.db_path))
        except (OSError, filelock.Timeout, ValueError):
            self._bell_failed = True  # no loopback socket or no locks: waiters poll instead
            return
        self._thread = threading.Thread(target=self._run, args=(self._bell,),
                                        name="localq-doorbell", daemon=True)
        self._thread.start()

    @property
    def poll_interval(self) -> float:
        """Seconds between two ``data_version`` reads of a waiting thread (the safety net)."""
        return POLL_INTERVAL if self._bell_failed else FALLBACK_INTERVAL

    def _run(self, bell: _Bell) -> None:
        # Sleeps in select() until a datagram arrives: no timeout, no cost while idle.
        while not self._stop:
            try:
                ready, _, _ = select.select([bell.sock], [], [])
            except (OSError, ValueError):
                return
            if self._stop:
                return
            if ready:
                self._drain(bell)

    def _drain(self, bell: _Bell) -> None:
        seen: set[tuple[bool, str]] = set()
        while True:
            try:
                data = bell.sock.recv(512)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return
            if data[:1] in (b"c", b"d"):
                seen.add((data[:1] == b"d", data[1:].decode("utf-8", "replace")))
        for delayed, queue in seen:
            self._wake_local(queue, delayed)

    def close(self) -> None:
        with self._lock:
            self._stop = True
            bell, self._bell = self._bell, None
            thread = self._thread
        if bell is not None:
            try:
                bell.sock.sendto(b"", bell.sock.getsockname())  # wake select() to exit
            except OSError:
                pass
            if thread is not None and thread is not threading.current_thread():
                thread.join(1.0)
            bell.close()
        for peer in self._peers.values():
            peer.map.close()
        self._peers.clear()
        self._peer_list = []
        if self._generation is not None:
            self._generation.close()
            self._generation = None
        if self._sender is not None:
            self._sender.close()


_hubs: dict[str, Hub] = {}
_hubs_lock = threading.Lock()


def _reset_after_fork() -> None:
    # A forked child has none of its parent's threads; its bells and waiters are its own.
    global _hubs_lock
    _hubs.clear()
    _hubs_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def hub_for(db_path: str) -> Hub:
    """Return this process's hub for *db_path* (created on first use)."""
    with _hubs_lock:
        hub = _hubs.get(db_path)
        if hub is None or hub.pid != os.getpid() or hub._stop:
            hub = _hubs[db_path] = Hub(db_path)
        return hub


def sweep_bells(db_path: str, *, min_age: float = 10.0,
                probe: Callable[[str], bool] | None = None) -> int:
    """Delete the bell files of dead processes (lockable files older than *min_age* s).

    :returns: how many were deleted.
    """
    from .lease import _probe
    check = probe or _probe
    directory = os.path.join(db_path + "-localq", "bells")
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    now, removed = time.time(), 0
    for name in names:
        path = os.path.join(directory, name)
        try:
            if not name.endswith(_SUFFIX) or now - os.stat(path).st_mtime < min_age:
                continue
        except OSError:
            continue
        if check(path):
            removed += 1
    if removed:
        with contextlib.suppress(OSError):
            _bump_generation(directory)
    return removed
