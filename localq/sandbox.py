"""Sandboxed processors: each job runs in a child process of a pool (``sandbox=True``).

The pool holds one child per worker slot, started with multiprocessing's ``spawn`` method
(never ``fork``: a forked child would inherit the parent's threads' locks and SQLite
connections). The parent keeps everything that proves ownership of the job: the lease, the
lock token and its renewal; the child only runs the handler. Inside the child, ``job`` is a
:class:`SandboxJob`: the job's attributes plus ``progress``, ``log``, ``update``, ``discard``
and ``is_cancelled``; the first three are relayed to the parent, which applies them to the real
job with its lock token (so a child whose job was taken away changes nothing).

A child that dies (a crash, ``os._exit``, the OOM killer) fails its job at once with
"process exited with code X" and is replaced; a job that passes its ``timeout`` has its
child killed. Children ignore SIGINT (the parent decides when they stop), and exit by
themselves if the parent process dies.

The handler is a module-level function or a ``"package.module:function"`` string, resolved by
the worker: job data never chooses the code that runs. The worker's main script must guard its
start-up code with ``if __name__ == "__main__":`` (spawn imports it in each child).
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback
from typing import TYPE_CHECKING, Any, Callable

from . import serializers
from .errors import (ConfigError, InvalidJobState, JobNotFound, LocalqError, LockError,
                     SerializationError, UnrecoverableError)

if TYPE_CHECKING:
    from .job import Job

__all__ = ["ChildProcessExited", "Pool", "SandboxJob", "handler_ref"]

Relay = Callable[[int, str, "tuple[Any, ...]"], Any]

_ERRORS: dict[str, type[LocalqError]] = {
    cls.__name__: cls for cls in (ConfigError, InvalidJobState, JobNotFound, LockError,
                                  SerializationError, LocalqError)}
_MISSING: Any = object()


class ChildProcessExited(Exception):
    """The failure of a job whose sandbox child died (``"process exited with code X"``)."""


class RemoteError(Exception):
    """An exception raised by the handler in a sandbox child (its traceback is kept)."""


def handler_ref(handler: Any) -> str:
    """Return the import string a child uses to find *handler*.

    :raises ConfigError: a lambda, a nested function, or something that is not importable.
    """
    if isinstance(handler, str):
        ref = handler
    elif callable(handler):
        module = getattr(handler, "__module__", None)
        qualname = getattr(handler, "__qualname__", "")
        if not module or not qualname or "<" in qualname:
            raise ConfigError(f"sandboxed handler {handler!r} must be a module-level function"
                              " (child processes import it by name), or a"
                              " 'package.module:function' string")
        ref = f"{module}:{qualname}"
    else:
        raise ConfigError("handler must be a callable or a 'package.module:function' string")
    return ref


class SandboxJob:
    """The job as a sandboxed handler sees it (in the child process)."""

    def __init__(self, payload: dict[str, Any], conn: Any) -> None:
        self.id: str = payload["id"]
        self.name: str = payload["name"]
        self.data: Any = payload["data"]
        self.opts: dict[str, Any] = payload["opts"]
        self.queue_name: str = payload["queue"]
        self.timestamp: float = payload["timestamp"]
        self.delay: float = payload["delay"]
        self.attempts_made: int = payload["attempts_made"]
        self.processed_on: float | None = payload["processed_on"]
        self._progress: Any = payload["progress"]
        self._conn = conn
        self._lock = threading.Lock()
        self._discarded = False

    def __repr__(self) -> str:
        return f"<SandboxJob {self.id} {self.name!r}>"

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            self._conn.send(("call", method, args))
            ok, value = self._conn.recv()
        if ok:
            return value
        kind, message = value
        raise _ERRORS.get(kind, LocalqError)(message)

    def progress(self, value: Any = _MISSING) -> Any:
        """Store the job's progress (relayed to the parent), or return it without a value."""
        if value is _MISSING:
            return self._progress
        self._call("progress", value)
        self._progress = value
        return None

    def log(self, row: str) -> int:
        """Append a row to the job's log; return how many rows it has."""
        return int(self._call("log", row))

    def update(self, data: Any) -> None:
        """Replace the job's data."""
        self._call("update", data)
        self.data = data

    def discard(self) -> None:
        """Make the current failure final even if attempts remain."""
        self._call("discard")
        self._discarded = True

    def is_cancelled(self) -> bool:
        """Always False in a child: a timed-out child is killed rather than told."""
        return False


def _watch_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return
    multiprocessing.connection.wait([sentinel])
    os._exit(1)  # the worker died: nobody is left to record this child's result


def _child_main(conn: Any, ref: str) -> None:
    """The child's loop: run one job per message until told to stop."""
    import asyncio

    from .runner import execute
    from .runner import resolve_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, daemon=True, name="localq-parent-watch").start()
    handler = resolve_handler(ref)
    loop = asyncio.new_event_loop()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "run":
            return
        job = SandboxJob(message[1], conn)
        ok, value = execute(handler, job, loop=loop)  # type: ignore[arg-type]
        if ok:
            try:
                conn.send(("done", serializers.dumps(value, what="return value",
                                                     limit=message[2])))
                continue
            except SerializationError as exc:
                ok, value = False, exc
        tb = "".join(traceback.format_exception(type(value), value, value.__traceback__))
        conn.send(("failed", type(value).__name__, str(value) or type(value).__name__, tb,
                   isinstance(value, UnrecoverableError)))


class _Child:
    def __init__(self, ctx: Any, ref: str, slot: int) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child_conn, ref), daemon=True,
                                name=f"localq-sandbox-{slot}")
        self.proc.start()
        child_conn.close()


class Pool:
    """The child processes of one sandboxed worker, one per slot (started on first use).

    :param ref: the handler's import string.
    :param size: the number of slots.
    :param relay: applies a child's ``(slot, method, args)`` call to the real job.
    """

    def __init__(self, ref: str, size: int, relay: Relay) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._ref = ref
        self._relay = relay
        self._children: list[_Child | None] = [None] * size
        #: The job each slot's child runs now (so that a late kill never hits the next job).
        self._jobs: list[str | None] = [None] * size
        self._lock = threading.Lock()
        self._closed = False

    def run(self, slot: int, job: Job) -> tuple[bool, Any]:
        """Run *job* in the slot's child; return ``(True, result)`` or ``(False, error)``."""
        with self._lock:
            if self._closed:
                return False, ChildProcessExited("the worker closed before the job started")
            child = self._children[slot]
            if child is None or not child.proc.is_alive():
                child = self._children[slot] = _Child(self._ctx, self._ref, slot)
            self._jobs[slot] = job.id
        try:
            return self._exchange(slot, child, job)
        finally:
            with self._lock:
                self._jobs[slot] = None

    def _exchange(self, slot: int, child: _Child, job: Job) -> tuple[bool, Any]:
        payload = {"id": job.id, "name": job.name, "data": job.data, "opts": job.opts,
                   "queue": job.queue.name, "timestamp": job.timestamp, "delay": job.delay,
                   "attempts_made": job.attempts_made, "processed_on": job.processed_on,
                   "progress": job.progress()}
        try:
            child.conn.send(("run", payload, job.queue.settings.max_data_bytes))
            while True:
                ready = multiprocessing.connection.wait([child.conn, child.proc.sentinel])
                if child.conn not in ready:
                    break
                message = child.conn.recv()
                if message[0] == "call":
                    child.conn.send(self._apply(slot, message[1], message[2]))
                elif message[0] == "done":
                    return True, json.loads(message[1])
                else:
                    return False, self._error(message)
        except (EOFError, OSError):
            pass
        return False, self._died(slot, child)

    def _apply(self, slot: int, method: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        try:
            return True, self._relay(slot, method, args)
        except LocalqError as exc:
            return False, (type(exc).__name__, str(exc))

    @staticmethod
    def _error(message: tuple[Any, ...]) -> BaseException:
        _, kind, text, tb, unrecoverable = message
        err: Exception
        if unrecoverable:
            err = UnrecoverableError(text)
        elif kind == "SerializationError":
            err = SerializationError(f"the handler's return value could not be stored: {text}")
        else:
            err = RemoteError(text)
        setattr(err, "remote_traceback", tb)  # read by job.failure_plan for the stack
        return err

    def _died(self, slot: int, child: _Child) -> ChildProcessExited:
        child.proc.join(2.0)
        if child.proc.exitcode is None:
            child.proc.kill()
            child.proc.join(2.0)
        with self._lock:
            if self._children[slot] is child:
                self._children[slot] = None
        child.conn.close()
        return ChildProcessExited(f"process exited with code {child.proc.exitcode}")

    def kill(self, slot: int, job_id: str) -> None:
        """Kill the slot's child if it still runs *job_id* (a timed-out or abandoned job); a
        new child takes the slot's next job."""
        with self._lock:
            child = self._children[slot]
            if child is not None and self._jobs[slot] == job_id and child.proc.is_alive():
                child.proc.kill()

    def close(self) -> None:
        """Stop every child (idle ones are asked, the others killed)."""
        with self._lock:
            self._closed = True
            children = [c for c in self._children if c is not None]
            self._children = [None] * len(self._children)
        for child in children:
            try:
                child.conn.send(("stop",))
            except OSError:
                pass
        for child in children:
            child.proc.join(1.0)
            if child.proc.is_alive():
                child.proc.kill()
                child.proc.join(1.0)
            child.conn.close()
