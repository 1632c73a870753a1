"""Job: a snapshot of one job row, with Bull's Job methods (the seed, one for one)."""

from __future__ import annotations

import enum
import json
import time
import traceback
from typing import TYPE_CHECKING, Any, Mapping

from . import serializers
from .backoff import retry_delay_ms
from .errors import ConfigError, JobFailed, JobNotFound, LockError, UnrecoverableError
from .options import NO_PRIORITY, JobOptions
from .text import check_text

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["Job", "JobState", "failure_plan"]

_DEFAULT_OPTS = JobOptions().to_dict()
_MISSING: Any = object()


class JobState(str, enum.Enum):
    """What :meth:`Job.get_state` returns (Bull's words)."""

    WAITING = "waiting"
    PAUSED = "paused"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    #: Active, but its lock has expired: no live worker holds it and the stalled-job check
    #: will take it back.
    STUCK = "stuck"


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


def _error_parts(err: object) -> tuple[str, str | None]:
    """Return (failed_reason, stack entry) for what a handler raised or a caller passed."""
    if isinstance(err, BaseException):
        reason = str(err) or err.__class__.__name__
        remote = getattr(err, "remote_traceback", None)  # raised in a sandbox child
        if isinstance(remote, str):
            return reason, remote
        return reason, "".join(traceback.format_exception(type(err), err, err.__traceback__))
    if isinstance(err, Mapping) and "message" in err:
        return str(err["message"]), None
    if isinstance(err, str):
        return err, None
    raise ConfigError("move_to_failed(err) takes an exception, a str or {'message': str}")


class Job:
    """One job as it was when read; methods act on the stored job.

    Attributes (Bull's, in seconds): ``id``, ``name``, ``data``, ``opts``, ``queue``,
    ``timestamp``, ``delay``, ``attempts_made``, ``failed_reason``, ``stacktrace``,
    ``returnvalue``, ``processed_on``, ``finished_on``.
    """

    def __init__(self, queue: Queue, row: tuple[Any, ...], *, token: str | None = None,
                 written: bool = False) -> None:
        """:param written: *row* holds what this process just wrote (an add), not what was
            read: its data and options are decoded on first use. Data read from the file is
            decoded here, so that a damaged value raises :class:`DatabaseError` where it was
            read."""
        (rowid, job_id, self.name, data, opts, state, priority, timestamp_ms, delay_ms,
         run_at_ms, self.attempts_made, self.stalled_count, progress, returnvalue,
         self.failed_reason, stacktrace, processed_ms, finished_ms, _lock_token,
         lock_expires_ms, _queue_name) = row
        self.queue = queue
        self._rowid: int = rowid
        self.id: str = queue._tx.public_id(rowid, job_id)
        self._state: str = state
        timestamp = timestamp_ms / 1000.0
        self.timestamp: float = timestamp
        self.delay: float = delay_ms / 1000.0
        self._run_at: float = run_at_ms / 1000.0
        self._token = token
        self._discarded = False
        self._cancelled = False
        #: What ``opts`` is built from on first use: the stored options' JSON text and the
        #: options kept in columns of their own.
        self._opts_parts: tuple[str, str | None, int] | None = (opts, job_id, priority)
        self._opts: dict[str, Any] | None = None
        if written:
            # Just added: nothing of it to decode yet, and an add returns the job
            # (add_bulk a thousand of them) that callers mostly never look at.
            self._data: Any = None
            #: The data's JSON text while it is not decoded yet (see the ``data`` property).
            self._data_text: str | None = data
            self._progress: Any = 0
            self.returnvalue: Any = None
            self.stacktrace: list[str] = []
            self.processed_on: float | None = None
            self.finished_on: float | None = None
            self._lock_expires: float | None = None
            return
        path = queue.path
        self._data_text = None
        self._data = serializers.loads(data, path=path)
        self._build_opts()
        self._progress = serializers.loads(progress, path=path) if progress is not None else 0
        self.returnvalue = (None if returnvalue is None
                            else serializers.loads(returnvalue, path=path))
        self.stacktrace = serializers.loads(stacktrace, path=path) if stacktrace else []
        self.processed_on = None if processed_ms is None else processed_ms / 1000.0
        self.finished_on = None if finished_ms is None else finished_ms / 1000.0
        self._lock_expires = None if lock_expires_ms is None else lock_expires_ms / 1000.0

    def _build_opts(self) -> dict[str, Any]:
        parts = self._opts_parts
        opts = dict(_DEFAULT_OPTS)
        if parts is not None:
            text, job_id, priority = parts
            if text != "{}":
                opts.update(serializers.loads(text, path=self.queue.path))
            # These options live in their own columns, not in the stored opts JSON.
            opts.update(name=self.name, job_id=job_id, timestamp=self.timestamp,
                        priority=None if priority == NO_PRIORITY else priority)
        self._opts = opts
        self._opts_parts = None
        return opts

    @property
    def opts(self) -> dict[str, Any]:
        """The job's options: every ``add()`` option, defaults included."""
        opts = self._opts
        return opts if opts is not None else self._build_opts()

    @opts.setter
    def opts(self, value: dict[str, Any]) -> None:
        self._opts = value
        self._opts_parts = None

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name!r} {self._state} queue={self.queue.name!r}>"

    @property
    def data(self) -> Any:
        """The job's data (a strict-JSON value)."""
        text = self._data_text
        if text is not None:
            # Text this process encoded itself: it decodes (a race decodes it twice, alike).
            self._data = json.loads(text)
            self._data_text = None
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value
        self._data_text = None

    # -- helpers ---------------------------------------------------------------------------

    def _held_token(self) -> str | None:
        return self._token or self.queue._locks.get(self._rowid)

    def _require_token(self, ignore_lock: bool) -> str | None:
        if ignore_lock:
            return None
        token = self._held_token()
        if token is None:
            raise LockError(f"job {self.id!r} is not locked by this queue: take it with"
                            " get_next_job() (or pass ignore_lock=True)", job_id=self.id,
                            expected="locked by this queue", actual=self._state)
        return token

    def _write(self, durable: bool) -> Any:
        return self.queue._store.write(durable=durable)

    def _release(self) -> None:
        # Pop only our own token: the same row may have been taken again meanwhile (after a
        # stall) by another thread of this queue, under a new token.
        held = self._held_token()
        if held is not None and self.queue._locks.get(self._rowid) == held:
            self.queue._locks.pop(self._rowid, None)
        self._token = None

    def _cancel(self) -> None:
        self._cancelled = True

    # -- the seed's methods ----------------------------------------------------------------

    def progress(self, value: Any = _MISSING) -> Any:
        """Store *value* (a number or JSON object) as the job's progress and emit ``progress``;
        without a value, return the progress this snapshot holds.

        :raises LockError: the job is active and this queue does not hold its lock.
        :raises SerializationError: *value* is not strict JSON.
        """
        if value is _MISSING:
            return self._progress
        text = serializers.dumps(value, what="progress", limit=self.queue.settings.max_data_bytes)
        with self._write(False) as conn:
            self.queue._tx.set_progress(conn, rowid=self._rowid, public=self.id,
                                     token=self._held_token(), progress=text,
                                     now_ms=self.queue._now_ms())
        self._progress = json.loads(text)
        self.queue._after_write()
        self.queue._emit_local("progress", self, self._progress)
        return None

    def log(self, row: str) -> int:
        """Append *row* to the job's log; return how many rows the log has.

        :raises ConfigError: *row* is not a str, or holds text the database cannot store
            (a lone surrogate; NUL on PostgreSQL, see :mod:`localq.text`).
        """
        if not isinstance(row, str):
            raise ConfigError(f"log row must be a str, not {type(row).__name__}")
        check_text(row, "log row", nul=self.queue._backend.nul_in_text)
        with self._write(False) as conn:
            count: int = self.queue._tx.add_log(conn, rowid=self._rowid, public=self.id,
                                                token=self._held_token(), row=row,
                                                now_ms=self.queue._now_ms())
        return count

    def get_state(self) -> str | None:
        """Return the job's state now (one indexed read), or None if it no longer exists."""
        state: str | None = self.queue._q.job_state(self.queue._store, self._rowid,
                                                    self.queue._now_ms())
        return state

    def update(self, data: Any) -> None:
        """Replace the job's data (no merge).

        :raises SerializationError: *data* is not strict JSON; nothing is stored.
        :raises LockError: the job is active and this queue does not hold its lock.
        """
        text = serializers.dumps(data, limit=self.queue.settings.max_data_bytes)
        with self._write(True) as conn:
            self.queue._tx.update_data(conn, rowid=self._rowid, public=self.id,
                                    token=self._held_token(), data=text,
                                    now_ms=self.queue._now_ms())
        self.data = json.loads(text)

    def remove(self) -> None:
        """Remove the job and its logs.

        :raises LockError: the job is active and locked by a live worker.
        :raises JobNotFound: the job was already removed.
        """
        with self._write(True) as conn:
            self.queue._tx.remove(conn, rowid=self._rowid, public=self.id,
                               token=self._held_token(), now_ms=self.queue._now_ms())
        self._release()
        self.queue._after_write()
        self.queue._emit_local("removed", self)

    def retry(self) -> None:
        """Move a failed job back to waiting (``attempts_made`` is kept, as in Bull).

        :raises InvalidJobState: the job is not failed.
        """
        with self._write(True) as conn:
            self.queue._tx.retry(conn, rowid=self._rowid, public=self.id,
                              now_ms=self.queue._now_ms())
        self._state = "waiting"
        self.queue._after_write()

    def is_cancelled(self) -> bool:
        """Whether the worker running this job gave up on it: the job ran past its ``timeout``
        (and was failed with :class:`~localq.JobTimeout`), the worker lost the job's lock, or
        the worker was closed before the job finished. A handler that runs long should check
        it now and then and return early: whatever it returns afterwards is not recorded.
        """
        return self._cancelled

    def discard(self) -> None:
        """Make the current failure final even if attempts remain (call it before raising)."""
        self._discarded = True

    def promote(self) -> None:
        """Move a delayed job to waiting, to run as soon as possible.

        :raises InvalidJobState: the job is not delayed.
        """
        with self._write(True) as conn:
            self.queue._tx.promote(conn, rowid=self._rowid, public=self.id,
                                now_ms=self.queue._now_ms())
        self._state = "waiting"
        self.delay = 0.0
        self.queue._after_write()

    def finished(self, timeout: float | None = None) -> Any:
        """Block until the job completes (return its result) or fails (raise :class:`JobFailed`).

        Works from any process, and for jobs removed by ``remove_on_complete`` /
        ``remove_on_fail`` (their outcome is read from the events table).

        :raises JobFailed: the job failed for good.
        :raises JobNotFound: the job was removed before it finished.
        :raises TimeoutError: *timeout* seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        watcher = self.queue._watcher
        while True:
            seen = watcher.version()
            outcome, value = self.queue._q.outcome(self.queue._store, self.queue.name, self._rowid,
                                             self.id)
            if outcome == "completed":
                return value
            if outcome == "failed":
                raise JobFailed(self.id, value)
            if outcome == "gone":
                raise JobNotFound(self.id, f"job {self.id!r} was removed before it finished")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {self.id!r} did not finish within {timeout:g} s")
            watcher.wait_change(seen, 0.5 if remaining is None else min(remaining, 0.5))

    def move_to_completed(self, return_value: Any = None, ignore_lock: bool = False,
                          not_fetch: bool = False) -> tuple[Any, str] | None:
        """Complete the job and, unless *not_fetch*, lock the next waiting job in the same
        transaction.

        :returns: ``(data, job_id)`` of the next job (now locked by this queue), or None.
        :raises LockError: this queue does not hold the job's lock (nothing is changed).
        :raises SerializationError: *return_value* is not strict JSON (the job stays active).
        """
        nxt = self.queue._complete(self, return_value, ignore_lock=ignore_lock,
                                   fetch=not not_fetch)
        return None if nxt is None else (nxt.data, nxt.id)

    def move_to_failed(self, err: Any, ignore_lock: bool = False) -> tuple[Any, str] | None:
        """Record a failed attempt: retried (after its backoff) while attempts remain, else
        failed for good.

        :param err: an exception, a str, or ``{"message": str}``.
        :returns: None (Bull fetches the next job here; localq leaves that to the caller).
        :raises LockError: this queue does not hold the job's lock (nothing is changed).
        """
        self.queue._fail(self, err, ignore_lock=ignore_lock)
        return None

    # -- state helpers ---------------------------------------------------------------------

    def is_completed(self) -> bool:
        """Whether the job is completed now."""
        return self.get_state() == "completed"

    def is_failed(self) -> bool:
        """Whether the job is failed now."""
        return self.get_state() == "failed"

    def is_delayed(self) -> bool:
        """Whether the job is delayed now."""
        return self.get_state() == "delayed"

    def is_active(self) -> bool:
        """Whether the job is active now."""
        return self.get_state() == "active"

    def is_waiting(self) -> bool:
        """Whether the job is waiting now (in a queue that is not paused)."""
        return self.get_state() == "waiting"

    def is_paused(self) -> bool:
        """Whether the job is waiting in a paused queue."""
        return self.get_state() == "paused"

    def is_stuck(self) -> bool:
        """Whether the job is active with an expired lock (its worker is gone)."""
        return self.get_state() == "stuck"

    # -- (de)serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the job as a JSON-able dict (Bull's ``toJSON``)."""
        return {
            "id": self.id, "name": self.name, "data": self.data, "opts": dict(self.opts),
            "progress": self._progress, "delay": self.delay, "timestamp": self.timestamp,
            "attempts_made": self.attempts_made, "failed_reason": self.failed_reason,
            "stacktrace": list(self.stacktrace), "returnvalue": self.returnvalue,
            "processed_on": self.processed_on, "finished_on": self.finished_on,
            "state": self._state, "queue": self.queue.name,
        }

    @classmethod
    def from_dict(cls, queue: Queue, d: Mapping[str, Any]) -> Job:
        """Rebuild a job object of *queue* from :meth:`to_dict` output (no database access).

        :raises ConfigError: *d* lacks ``id``, ``name`` or ``data``.
        :raises SerializationError: *d*'s data is not strict JSON.
        """
        missing = {"id", "name", "data"} - set(d)
        if missing:
            raise ConfigError(f"Job.from_dict needs the keys {sorted(missing)}")
        job_id = str(d["id"])
        auto = queue._tx.auto_rowid(job_id)
        opts = {k: v for k, v in dict(d.get("opts") or {}).items() if _DEFAULT_OPTS.get(k) != v}

        def ms(value: Any) -> int | None:
            return None if value is None else int(float(value) * 1000)

        row = (auto or 0, None if auto is not None else job_id, d["name"],
               serializers.dumps(d["data"]), json.dumps(opts), d.get("state", "waiting"),
               opts.get("priority") or NO_PRIORITY, ms(d.get("timestamp", 0)),
               ms(d.get("delay", 0)), 0, d.get("attempts_made", 0), 0,
               json.dumps(d.get("progress", 0)), json.dumps(d.get("returnvalue")),
               d.get("failed_reason"), json.dumps(d.get("stacktrace") or []),
               ms(d.get("processed_on")), ms(d.get("finished_on")), None, None, queue.name)
        job = cls(queue, row)
        if auto is None:
            job._rowid = queue._q.rowid(queue._store, queue.name, job_id) or 0
        return job


def failure_plan(job: Job, err: Any, strategies: Mapping[str, Any]) -> tuple[str, str | None, int | None]:
    """Return (reason, stack entry, retry delay in ms or None to fail now) for a failed attempt."""
    reason, stack = _error_parts(err)
    if job._discarded or isinstance(err, UnrecoverableError):
        return reason, stack, None
    exc = err if isinstance(err, BaseException) else Exception(reason)
    delay, note = retry_delay_ms(job.opts.get("backoff"), job.attempts_made + 1, exc, strategies)
    if note is not None:
        reason = f"{reason} ({note})"
    return reason, stack, delay

