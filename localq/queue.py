"""Queue: producing, admin and events (API.md "Queue"); taking and finishing jobs, by hand
or by workers, is mixed in from :mod:`localq.processing`."""

from __future__ import annotations

import json
import os
from collections import abc
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from . import serializers
from .backend import Backend, backend_for
from ._db import Store
from .clock import Clock, SystemClock
from .errors import ConfigError
from .events import EventBus
from .fscheck import check_local_filesystem
from .getters import Getters
from .job import Job
from .limiter import compile_limit
from .options import (JobOptions, Limiter, Settings, check_queue_name, merge_job_options,
                      seconds)
from .processing import Processing
from .repeats import Repeatables
from .states import CLEAN_STATES
from .text import check_text, holds_nul

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import AddOptions
    from .worker import Worker

__all__ = ["Queue"]

_DEFAULTS = asdict(JobOptions())
_BULK_KEYS = frozenset({"name", "data", "opts"})
#: Options stored in their own columns, not in the row's opts JSON.
_COLUMN_OPTS = frozenset({"name", "timestamp", "job_id", "priority"})


_STORED_FIELDS = tuple(f for f in JobOptions.__dataclass_fields__ if f not in _COLUMN_OPTS)


def _stored_opts(opts: JobOptions) -> str:
    # Only the options that differ from the defaults: most rows store "{}". (asdict() would
    # deep-copy every field and cost more than the INSERT itself.)
    changed = {}
    for key in _STORED_FIELDS:
        value = getattr(opts, key)
        default = _DEFAULTS[key]
        # 0 == False in Python, but remove_on_complete=0 (keep none) is not the default.
        if value != default or type(value) is not type(default):
            changed[key] = value
    return json.dumps(changed, separators=(",", ":")) if changed else "{}"


def _columns_of(opts: JobOptions, text: str, now: int) -> dict[str, Any]:
    return {"name": opts.name, "data": text, "stored_opts": _stored_opts(opts),
            "job_id": opts.job_id, "priority": opts.priority, "delay_ms": int(opts.delay * 1000),
            "lifo": opts.lifo,
            "timestamp_ms": now if opts.timestamp is None else int(opts.timestamp * 1000)}


class Queue(Getters, Repeatables, Processing):
    """A named queue in a SQLite file, shared by every thread and process that opens it.

    :param name: 1-200 characters of letters, digits and ``-_.:``.
    :param path: the database file (``None``: ``$LOCALQ_PATH``, else ``./localq.db``);
        its directory must exist.
    :param default_job_options: ``add()`` keyword options applied to every job.
    :param limiter: ``{"max": n, "duration": s[, "group_key": field]}``.
    :param settings: Bull's advanced settings, in seconds (see :class:`~localq.options.Settings`).
    :param durability: ``"safe"`` (default), ``"full"`` or ``"normal"``.
    :param clock: a testing seam: anything with ``now()`` (see ``localq.testing.FakeClock``).
    :raises ConfigError: a bad name, option or path.
    :raises DatabaseError: the file is not a localq database, is corrupt, or is newer.
    """

    def __init__(self, name: str = "default", path: str | os.PathLike[str] | None = None, *,
                 default_job_options: Mapping[str, Any] | None = None,
                 limiter: Mapping[str, Any] | None = None,
                 settings: Mapping[str, Any] | None = None, durability: str = "safe",
                 clock: Clock | None = None) -> None:
        self.name = check_queue_name(name)
        self.settings = Settings.from_mapping(settings)
        if default_job_options is not None and not isinstance(default_job_options, Mapping):
            raise ConfigError("default_job_options must be a dict of add() options")
        self._default_opts = dict(default_job_options or {})
        self._base_opts = merge_job_options(self._default_opts, {})  # fail now, not at add()
        #: add_job's keywords for a job with the queue's default options, but its data (and
        #: timestamp, when the defaults set none): copied per add instead of rebuilt.
        self._base_columns = _columns_of(self._base_opts, "", 0)
        self.limiter = Limiter.from_mapping(limiter)
        self._limit = compile_limit(self.limiter)
        #: When the last empty claim was held back by the limiter: the epoch ms at which a
        #: slot frees (workers sleep until then instead of spinning), else None.
        self._limited_until_ms: int | None = None
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise ConfigError("clock must have a now() method returning epoch seconds")
        self._clock: Clock = clock or SystemClock()
        self._backend: Backend
        self._backend, target = backend_for(path)
        if self._backend.kind == "sqlite":
            self.path = target
            check_local_filesystem(self.path, allow_network_fs=self.settings.allow_network_fs)
        else:
            # The URL with its password hidden: the path shows in messages and reprs, and
            # the PostgreSQL modules map it back to the URL (localq.pg.url.resolve).
            from .pg.url import remember
            self.path = remember(target)
        #: The backend's job moves and reads (``localq.transitions`` / ``localq.queries`` on
        #: SQLite): every layer above calls them through the queue.
        self._tx = self._backend.transitions
        self._q = self._backend.queries
        self._check_text(self._base_opts)
        self._store = self._open_store(durability)
        self.durability = durability
        self._watcher = self._backend.watcher(self._store, name=self.name)
        self._events = EventBus(self)
        #: rowid -> lock token of the jobs this instance (and its workers) holds.
        self._locks: dict[int, str] = {}
        self._workers: list[Worker] = []
        self._closed = False
        self._init_processing()

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} {self.path!r}>"

    def _open_store(self, durability: str) -> Store:
        """Open the queue's file. A testing seam, not public API: the fault-injection tests
        override it in a subclass to open the file through their VFS (``Store(vfs=...)``)."""
        if self._backend.kind == "postgresql":
            from .pg.store import PgStore
            from .pg.url import resolve
            return PgStore(resolve(self.path), durability=durability,  # type: ignore[return-value]
                           busy_timeout=self.settings.busy_timeout)
        return Store(self.path, durability=durability, busy_timeout=self.settings.busy_timeout)

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def clock(self) -> Clock:
        """The clock every time decision of this queue follows."""
        return self._clock

    # -- internals shared with Job and Worker -----------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    def _after_write(self, *, delayed: bool = False) -> None:
        # Wakes this queue's waiters here and, through doorbells, in other processes;
        # *delayed*: the commit added or moved delayed jobs, so schedulers re-arm their timer.
        self._watcher.notify(delayed=delayed)

    def _emit_local(self, event: str, *args: Any) -> None:
        self._events.emit(event, *args)

    # -- producing -------------------------------------------------------------------------

    def _check_text(self, opts: JobOptions) -> None:
        """Refuse options holding text this database cannot store (NUL on PostgreSQL; lone
        surrogates are refused by the options themselves)."""
        if self._backend.nul_in_text:
            return
        check_text(opts.name, "name", nul=False)
        if opts.job_id is not None:
            check_text(opts.job_id, "job_id", nul=False)
        repeat_id = (opts.repeat or {}).get("job_id")
        if isinstance(repeat_id, str):
            check_text(repeat_id, "repeat 'job_id'", nul=False)
        # Stored as JSON, so storable, but PostgreSQL's JSON functions refuse to parse a
        # document holding an escaped NUL: one in a job's options would fail every claim.
        for key in ("backoff", "repeat"):
            if holds_nul(getattr(opts, key)):
                raise ConfigError(f"{key} contains the NUL character '\\x00', which PostgreSQL"
                                  " cannot read back in JSON: remove it")

    def _prepare(self, data: Any, call: Mapping[str, Any]) -> tuple[JobOptions, str]:
        # Validating options costs as much as the INSERT: reuse the queue's defaults
        # (validated once in __init__) when the call adds none.
        opts = self._base_opts
        if call:
            opts = merge_job_options(self._default_opts, call)
            self._check_text(opts)
        text = serializers.dumps({} if data is None else data,
                                 limit=self.settings.max_data_bytes)
        return opts, text

    def _columns(self, opts: JobOptions, text: str, now: int) -> dict[str, Any]:
        """Return add_job's keywords (but queue, opts, now_ms and rowid) for one job."""
        if opts is self._base_opts:
            # The queue's default options (validated once) give the same columns each time.
            columns = self._base_columns.copy()
            columns["data"] = text
            if opts.timestamp is None:
                columns["timestamp_ms"] = now
            return columns
        return _columns_of(opts, text, now)

    def _insert(self, conn: Any, opts: JobOptions, text: str, now: int,
                rowid: int | None = None) -> tuple[tuple[Any, ...], bool]:
        added: tuple[tuple[Any, ...], bool] = self._tx.add_job(
            conn, queue=self.name, opts={}, now_ms=now, rowid=rowid,
            **self._columns(opts, text, now))
        return added

    def add(self, data: Any = None, **options: Unpack[AddOptions]) -> Job:
        """Add a job and return it.

        Keyword options (API.md ``add``): ``name``, ``priority``, ``delay``, ``attempts``,
        ``backoff``, ``lifo``, ``timeout``, ``job_id``, ``remove_on_complete``,
        ``remove_on_fail``, ``repeat``, ``stack_trace_limit``, ``timestamp``; they override
        the queue's ``default_job_options``. With the ``job_id`` of a job already in the
        queue, nothing is added and that job is returned. With ``repeat``, a schedule is
        stored and its next occurrence (a delayed job) is returned.

        :param data: any strict-JSON value (default ``{}``).
        :raises ConfigError: an unknown option, a wrong type or an out-of-range value.
        :raises SerializationError: *data* is not strict JSON.
        """
        call: Mapping[str, Any] = options
        opts, text = self._prepare(data, call)
        if opts.repeat is not None:
            from .repeats import add_repeat
            return add_repeat(self, opts, text)
        now = self._now_ms()
        with self._store.write(durable=True) as conn:
            row, inserted = self._insert(conn, opts, text, now)
        job = Job(self, row, written=inserted)
        if inserted:
            self._after_write(delayed=job._state == "delayed")
            if job._state == "waiting":
                self._emit_local("waiting", job.id)
        return job

    def add_bulk(self, jobs: Sequence[Mapping[str, Any]]) -> list[Job]:
        """Add several jobs in one transaction: all or none.

        :param jobs: ``[{"name": ..., "data": ..., "opts": {...}}, ...]`` (each key optional).
        :raises ConfigError: a bad entry or option (nothing is added); ``repeat`` is refused.
        :raises SerializationError: some data is not strict JSON (nothing is added).
        """
        if isinstance(jobs, (str, bytes, abc.Mapping)) or not isinstance(jobs, abc.Sequence):
            raise ConfigError("add_bulk takes a list of {'name', 'data', 'opts'} dicts")
        prepared = []
        for i, entry in enumerate(jobs):
            # type() first: isinstance against the Mapping ABC costs more than the INSERT.
            if (type(entry) is not dict and not isinstance(entry, abc.Mapping)
                    or not entry.keys() <= _BULK_KEYS):
                raise ConfigError(f"add_bulk entry {i} must be a dict with only the keys"
                                  " 'name', 'data' and 'opts'")
            given = entry.get("opts")
            if given and not isinstance(given, abc.Mapping):
                raise ConfigError(f"add_bulk entry {i}: opts must be a dict")
            call = dict(given) if given else {}
            if "name" in entry:
                call["name"] = entry["name"]
            opts, text = self._prepare(entry.get("data"), call)
            if opts.repeat is not None:
                raise ConfigError(f"add_bulk entry {i}: repeat is not allowed in add_bulk;"
                                  " add repeatable jobs with add()")
            prepared.append((opts, text))
        now = self._now_ms()
        many = getattr(self._tx, "add_jobs", None)  # a backend may only have add_job
        with self._store.write(durable=True) as conn:
            rowid = self._tx.next_rowid(conn)
            if many is not None:
                rows = many(conn, queue=self.name, rowid=rowid, now_ms=now,
                            jobs=[self._columns(opts, text, now) for opts, text in prepared])
            else:
                rows = []
                for opts, text in prepared:
                    row, inserted = self._insert(conn, opts, text, now, rowid)
                    rowid += inserted
                    rows.append((row, inserted))
        out = [Job(self, row, written=inserted) for row, inserted in rows]
        self._after_write(delayed=any(job._state == "delayed" for job in out))
        if self._events.has("waiting"):
            for job, (_, inserted) in zip(out, rows):
                if inserted and job._state == "waiting":
                    self._emit_local("waiting", job.id)
        return out

    # -- admin -------------------------------------------------------------------------------

    def pause(self) -> None:
        """Pause the queue for every process: no job starts until :meth:`resume`."""
        with self._store.write(durable=True) as conn:
            self._tx.pause(conn, queue=self.name, now_ms=self._now_ms())
        self._after_write()
        self._emit_local("paused")

    def resume(self) -> None:
        """Resume the queue for every process."""
        with self._store.write(durable=True) as conn:
            self._tx.resume(conn, queue=self.name, now_ms=self._now_ms())
        self._after_write()
        self._emit_local("resumed")

    def is_paused(self) -> bool:
        """Whether the queue is paused (globally)."""
        return bool(self._store.query("SELECT 1 FROM queues WHERE name = :q AND paused = 1",
                                      {"q": self.name}))

    def empty(self) -> int:
        """Remove the waiting, paused and delayed jobs (and their logs); return how many."""
        with self._store.write(durable=True) as conn:
            removed: int = self._tx.empty(conn, queue=self.name)
        return removed

    def clean(self, grace: float, status: str = "completed", limit: int = 0) -> list[str]:
        """Remove jobs of *status* older than *grace* seconds (active: unlocked only), at most
        *limit* (0: all); emit ``cleaned`` and return their ids."""
        grace_s = seconds(grace, "grace")
        if status not in CLEAN_STATES:
            raise ConfigError(f"clean status {status!r} must be one of"
                              f" {sorted(CLEAN_STATES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigError(f"limit must be an int >= 0 (0: all), not {limit!r}")
        now = self._now_ms()
        with self._store.write(durable=True) as conn:
            ids: list[str] = self._tx.clean(conn, queue=self.name, state=status,
                                    before_ms=now - int(grace_s * 1000), limit=limit, now_ms=now)
        self._emit_local("cleaned", ids, status)
        return ids

    def retry_jobs(self, count: int | None = None) -> int:
        """Re-queue failed jobs, oldest failure first, at most *count* (None: all)."""
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            raise ConfigError(f"count must be None or an int >= 0, not {count!r}")
        with self._store.write(durable=True) as conn:
            n: int = self._tx.retry_failed(conn, queue=self.name, count=count, now_ms=self._now_ms())
        self._after_write()
        return n

    def obliterate(self, force: bool = False) -> None:
        """Remove the whole queue: jobs, logs, schedules, limiter window and pause flag.

        :raises InvalidJobState: jobs are active and *force* is False.
        """
        with self._store.write(durable=True) as conn:
            self._tx.delete_queue(conn, queue=self.name, force=bool(force),
                                     now_ms=self._now_ms())
        self._locks.clear()

    # -- events ------------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> None:
        """Call *callback* on *event* (``"global:<event>"`` for every process's events)."""
        self._events.on(event, callback)

    def once(self, event: str, callback: Callable[..., Any]) -> None:
        """Call *callback* on the next *event* only."""
        self._events.on(event, callback, once=True)

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        """Stop calling *callback* on *event*."""
        self._events.off(event, callback)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the queue's workers (waiting for running jobs), threads and connections.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_processing()
        self._events.close()
        self._watcher.close()
        self._store.close()
