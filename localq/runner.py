"""Running one job: calling the handler and recording what came of it.

Shared by :class:`localq.Worker` (threads and sandbox children) and
:func:`localq.testing.run_until_idle`, so that a job run in a unit test goes through exactly
the path a worker takes: the handler's return value completes the job, an exception fails it
(retries and backoff apply, :class:`~localq.UnrecoverableError` fails it at once), and a return
value that is not JSON fails it with a reason that says so.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import ConfigError, LocalqError, LockError, SerializationError

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue

__all__ = ["call_handler", "execute", "resolve_handler", "settle"]

TaskHook = Callable[[asyncio.AbstractEventLoop, "asyncio.Task[Any]"], None]


def resolve_handler(ref: str) -> Callable[[Job], Any]:
    """Import ``"package.module:function"`` (the worker's choice, never job data).

    :raises ConfigError: a malformed string, a missing module or attribute, or not callable.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"handler {ref!r} must look like 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as exc:  # the user's module: any import-time error is bad input
        raise ConfigError(f"cannot load handler {ref!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(target):
        raise ConfigError(f"handler {ref!r} is not callable")
    return target  # type: ignore[no-any-return]


async def _await(awaitable: Any) -> Any:
    return await awaitable


def call_handler(handler: Callable[[Job], Any], job: Job, *,
                 loop: asyncio.AbstractEventLoop | None = None,
                 on_task: TaskHook | None = None) -> Any:
    """Call a sync or ``async def`` handler with *job* and return its result.

    :param loop: the event loop to run a coroutine on (a new one per call when None).
    :param on_task: told the loop and task of a coroutine handler, so that another thread can
        cancel it (``loop.call_soon_threadsafe(task.cancel)``) when the job times out.
    """
    result = handler(job)
    if not inspect.isawaitable(result):
        return result
    own = loop is None
    run_loop = asyncio.new_event_loop() if loop is None else loop
    try:
        task = run_loop.create_task(_await(result))
        if on_task is not None:
            on_task(run_loop, task)
        return run_loop.run_until_complete(task)
    finally:
        if own:
            run_loop.close()


def execute(handler: Callable[[Job], Any], job: Job, *,
            loop: asyncio.AbstractEventLoop | None = None,
            on_task: TaskHook | None = None) -> tuple[bool, Any]:
    """Run the handler; return ``(True, result)`` or ``(False, exception)``.

    ``asyncio.CancelledError`` (a coroutine handler cancelled at its timeout) counts as a
    failure like any exception; ``KeyboardInterrupt`` and ``SystemExit`` propagate.
    """
    try:
        return True, call_handler(handler, job, loop=loop, on_task=on_task)
    except (Exception, asyncio.CancelledError) as exc:  # user code: its failure is the job's
        return False, exc


def settle(queue: Queue, job: Job, ok: bool, value: Any, *, fetch: bool = False,
           names: Sequence[str] | None = None) -> Job | None:
    """Record one run of *job*: complete it with *value*, or fail it with the exception *value*.

    A worker whose lock was lost changes nothing: the :class:`~localq.LockError` is emitted as
    an ``error`` event. A database error is emitted too, and the job's lock is dropped so that
    the job stalls and runs again (at-least-once) instead of staying active for ever.

    :param fetch: on success, also take the next job in the same transaction.
    :returns: the next job (already locked) when *fetch* found one, else None.
    """
    if ok:
        try:
            return queue._complete(job, value, fetch=fetch, names=names)
        except SerializationError as exc:
            ok, value = False, SerializationError(
                f"the handler's return value could not be stored: {exc}")
        except LockError as exc:
            _lost(queue, job, exc)
            return None
        except LocalqError as exc:
            _broken(queue, job, exc)
            return None
    try:
        queue._fail(job, value)
    except LockError as exc:
        _lost(queue, job, exc)
    except LocalqError as exc:
        _broken(queue, job, exc)
    return None


def _lost(queue: Queue, job: Job, exc: LockError) -> None:
    job._release()
    queue._emit_local("error", exc)


def _broken(queue: Queue, job: Job, exc: LocalqError) -> None:
    # The outcome could not be written (disk full, database locked for too long, job removed
    # with obliterate(force=True)...): stop renewing the lock so that, if the job is still
    # there, the stalled-job check gives it to someone else.
    job._release()
    queue._emit_local("error", exc)
