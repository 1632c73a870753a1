"""Every error localq raises.

::

    LocalqError
    ├── ConfigError(LocalqError, ValueError)          bad option, bad cron, bad path, bad queue name
    ├── SerializationError(LocalqError, TypeError)    data / result / progress is not strict JSON
    ├── DatabaseError                                  not a localq file, corrupt, newer schema, I/O
    ├── JobNotFound(LocalqError, KeyError)             the job does not exist (or was removed)
    ├── InvalidJobState                                .job_id .expected .actual
    │   └── LockError                                  the caller does not hold the job's lock
    └── JobFailed                                      raised by job.finished(); .job_id .reason

    UnrecoverableError(Exception)    raise it in a handler: fail now, no retries
    JobTimeout(LocalqError)          the failure reason of a job that ran past its timeout

Driver (apsw) errors are translated in ``localq._db`` only, and chained with ``from``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseError",
    "InvalidJobState",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "LocalqError",
    "LockError",
    "SerializationError",
    "UnrecoverableError",
]


class LocalqError(Exception):
    """Base class of every error raised by localq."""


class ConfigError(LocalqError, ValueError):
    """A bad option value or combination: fix the call; nothing was stored."""


class SerializationError(LocalqError, TypeError):
    """Data, a return value or a progress value is not strict JSON."""


class DatabaseError(LocalqError):
    """The file is not a localq database, is corrupt, has a newer schema, or I/O failed.

    :ivar path: the database path, when known.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class JobNotFound(LocalqError, KeyError):
    """The job does not exist, or was removed.

    :ivar job_id: the id that was looked up.
    """

    def __init__(self, job_id: str, message: str | None = None) -> None:
        super().__init__(message or f"job {job_id!r} does not exist (or was removed)")
        self.job_id = job_id

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message; show it as written.
        return str(self.args[0])


class InvalidJobState(LocalqError):
    """The job is not in the state the operation needs.

    :ivar job_id: the job's id.
    :ivar expected: the state(s) the operation needs.
    :ivar actual: the state the job is in (``None`` if it is gone).
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.expected = expected
        self.actual = actual


class LockError(InvalidJobState):
    """The caller does not hold the job's lock (it was never taken, or was lost).

    Nothing was changed; the caller's result is dropped.
    """


class JobFailed(LocalqError):
    """Raised by :meth:`localq.Job.finished` when the job failed.

    :ivar job_id: the job's id.
    :ivar reason: the job's ``failed_reason``.
    """

    def __init__(self, job_id: str, reason: str | None) -> None:
        super().__init__(f"job {job_id!r} failed: {reason}")
        self.job_id = job_id
        self.reason = reason


class JobTimeout(LocalqError):
    """The job ran past its ``timeout`` option (the failure reason of such a job)."""


class UnrecoverableError(Exception):
    """Raise inside a handler to fail the job at once, whatever attempts remain."""
