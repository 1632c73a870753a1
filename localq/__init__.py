"""localq: Bull's job queue model on one SQLite file, shared by local processes.

::

    import localq

    with localq.Queue("emails", path="jobs.db") as q:
        q.add({"to": "ada@example.com"}, attempts=3, backoff={"type": "exponential", "delay": 1})
        q.process(send_email, concurrency=4)
"""

from __future__ import annotations

from .errors import (ConfigError, DatabaseError, InvalidJobState, JobFailed, JobNotFound,
                     JobTimeout, LocalqError, LockError, SerializationError, UnrecoverableError)
from .job import Job, JobState
from .queue import Queue
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatabaseError",
    "InvalidJobState",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "LocalqError",
    "LockError",
    "Queue",
    "SerializationError",
    "UnrecoverableError",
    "Worker",
    "__version__",
]
