"""Job options and queue settings: validated once, in one place.

Precedence for job options is per call > ``Queue(default_job_options=...)`` > defaults,
merged by :func:`merge_job_options`. Every check raises :class:`~localq.ConfigError` naming
the option and what to pass instead, before anything touches the database.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Callable, Mapping, Optional, TypedDict, Union

from . import serializers
from .errors import ConfigError, SerializationError
from .text import check_text

__all__ = [
    "AddOptions",
    "JOB_OPTION_NAMES",
    "JobOptions",
    "Limiter",
    "Settings",
    "check_queue_name",
    "merge_job_options",
    "seconds",
]

#: The largest priority (SQLite INTEGER, and Bull's MAX_INT); 1 is the highest priority.
MAX_PRIORITY = 2**31 - 1
#: Stored as the priority of un-prioritised jobs so that they sort after every prioritised one.
NO_PRIORITY = 2**31

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")

Retention = Union[bool, int, dict[str, float]]
Backoff = Union[None, float, dict[str, Any]]


def check_queue_name(name: object) -> str:
    """Return *name* if it is a valid queue name, else raise :class:`ConfigError`."""
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
        raise ConfigError(
            f"bad queue name {name!r}: use 1-200 characters of letters, digits and -_.:"
        )
    return name


def seconds(value: object, what: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """Return *value* (a number or ``timedelta``) as finite float seconds.

    :param what: the option's name, for the error message.
    :param minimum: the smallest accepted value.
    :param strict: reject *minimum* itself (``> minimum`` instead of ``>=``).
    :raises ConfigError: not a number, not finite, or out of range.
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number of seconds, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number of seconds, not {value!r}")
    if number < minimum or (strict and number == minimum):
        sign = ">" if strict else ">="
        raise ConfigError(f"{what} must be {sign} {minimum:g} seconds, not {value!r}")
    return number


def _integer(value: object, what: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ConfigError(f"{what} must be >= {minimum}{upper}, not {value}")
    return value


def _retention(value: object, what: str) -> Retention:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _integer(value, what, minimum=0)
    if isinstance(value, Mapping):
        unknown = set(value) - {"age", "count"}
        if unknown or not value:
            raise ConfigError(
                f"{what} as a dict takes 'age' (seconds) and/or 'count', not {sorted(value)}"
            )
        out: dict[str, float] = {}
        if "age" in value:
            out["age"] = seconds(value["age"], f"{what}['age']")
        if "count" in value:
            out["count"] = _integer(value["count"], f"{what}['count']", minimum=0)
        return out
    raise ConfigError(
        f"{what} must be True/False, an int (keep the newest N) or {{'age': s, 'count': n}},"
        f" not {type(value).__name__}"
    )


def _backoff(value: object) -> Backoff:
    if value is None:
        return None
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return {"type": "fixed", "delay": seconds(value, "backoff")}
    if isinstance(value, Mapping):
        unknown = set(value) - {"type", "delay", "options"}
        if unknown:
            raise ConfigError(f"backoff has unknown keys {sorted(unknown)}: use type and delay")
        kind = value.get("type")
        if not isinstance(kind, str) or not kind:
            raise ConfigError(
                "backoff['type'] must be 'fixed', 'exponential' or the name of a strategy in"
                f" settings['backoff_strategies'], not {kind!r}"
            )
        check_text(kind, "backoff['type']", nul=True)
        out: dict[str, Any] = {"type": kind, "delay": seconds(value.get("delay", 0), "backoff['delay']")}
        if "options" in value:
            out["options"] = _strict(value["options"], "backoff['options']")
        return out
    raise ConfigError(
        f"backoff must be seconds or {{'type': ..., 'delay': s}}, not {type(value).__name__}"
    )


def _strict(value: Any, what: str) -> Any:
    """Return *value* if it is strict JSON (it is stored in the job's options)."""
    try:
        serializers.dumps(value, what=what)
    except SerializationError as exc:
        raise ConfigError(str(exc)) from exc
    return value


def _job_id(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"job_id must be a str, not {type(value).__name__}")
    text = str(value)
    if not text or len(text) > 400:
        raise ConfigError("job_id must be 1-400 characters")
    check_text(text, "job_id", nul=True)
    if text.isdigit():
        # Automatic ids are the decimal row numbers; a custom all-digit id could name
        # another job. Bull has the same collision and only warns about it.
        raise ConfigError(
            f"job_id {text!r} is all digits, which is reserved for automatic ids: add a prefix,"
            f" e.g. 'order-{text}'"
        )
    return text


@dataclass(frozen=True)
class JobOptions:
    """The validated options of one job (the keyword options of ``Queue.add``)."""

    name: str = "__default__"
    priority: Optional[int] = None
    delay: float = 0.0
    attempts: int = 1
    backoff: Backoff = None
    lifo: bool = False
    timeout: Optional[float] = None
    job_id: Optional[str] = None
    remove_on_complete: Retention = False
    remove_on_fail: Retention = False
    repeat: Optional[dict[str, Any]] = None
    stack_trace_limit: Optional[int] = None
    timestamp: Optional[float] = None

    def __post_init__(self) -> None:
        fix = object.__setattr__
        if not isinstance(self.name, str) or not self.name or len(self.name) > 200:
            raise ConfigError(f"name must be a non-empty str of at most 200 chars, not {self.name!r}")
        check_text(self.name, "name", nul=True)
        if self.priority is not None:
            fix(self, "priority", _integer(self.priority, "priority", minimum=1, maximum=MAX_PRIORITY))
        fix(self, "delay", seconds(self.delay, "delay"))
        fix(self, "attempts", _integer(self.attempts, "attempts", minimum=1))
        fix(self, "backoff", _backoff(self.backoff))
        if not isinstance(self.lifo, bool):
            raise ConfigError(f"lifo must be True or False, not {self.lifo!r}")
        if self.timeout is not None:
            fix(self, "timeout", seconds(self.timeout, "timeout", strict=True))
        fix(self, "job_id", _job_id(self.job_id))
        fix(self, "remove_on_complete", _retention(self.remove_on_complete, "remove_on_complete"))
        fix(self, "remove_on_fail", _retention(self.remove_on_fail, "remove_on_fail"))
        if self.repeat is not None and not isinstance(self.repeat, Mapping):
            raise ConfigError(f"repeat must be a dict, not {type(self.repeat).__name__}")
        if self.stack_trace_limit is not None:
            fix(self, "stack_trace_limit", _integer(self.stack_trace_limit, "stack_trace_limit", minimum=0))
        if self.timestamp is not None:
            fix(self, "timestamp", seconds(self.timestamp, "timestamp"))

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a JSON-able dict (what ``job.opts`` holds)."""
        return asdict(self)


JOB_OPTION_NAMES = frozenset(f for f in JobOptions.__dataclass_fields__)


class AddOptions(TypedDict, total=False):
    """The keyword options of ``Queue.add`` (for type checkers)."""

    name: str
    priority: Optional[int]
    delay: Union[float, timedelta]
    attempts: int
    backoff: Backoff
    lifo: bool
    timeout: Optional[float]
    job_id: Optional[str]
    remove_on_complete: Retention
    remove_on_fail: Retention
    repeat: Optional[Mapping[str, Any]]
    stack_trace_limit: Optional[int]
    timestamp: Optional[float]


def merge_job_options(defaults: Mapping[str, Any] | None, call: Mapping[str, Any]) -> JobOptions:
    """Merge per-call options over queue defaults and validate them.

    :raises ConfigError: an unknown option, or a bad value.
    """
    merged: dict[str, Any] = dict(defaults or {})
    merged.update(call)
    unknown = set(merged) - JOB_OPTION_NAMES
    if unknown:
        raise ConfigError(
            f"unknown job option(s) {sorted(unknown)}: valid options are {sorted(JOB_OPTION_NAMES)}"
        )
    return JobOptions(**merged)


BackoffStrategy = Callable[[int, BaseException], float]


@dataclass(frozen=True)
class Settings:
    """Bull's advanced settings, in seconds (``Queue(settings={...})``)."""

    lock_duration: float = 30.0
    lock_renew_time: Optional[float] = None  # default lock_duration / 2
    stalled_interval: float = 30.0
    max_stalled_count: int = 1
    guard_interval: float = 5.0
    retry_process_delay: float = 5.0
    drain_delay: float = 5.0
    backoff_strategies: Mapping[str, BackoffStrategy] = field(default_factory=dict)
    #: Cap on one JSON payload in bytes (see :data:`localq.serializers.MAX_DATA_BYTES`).
    max_data_bytes: int = 1024 * 1024
    #: How long a write waits for another process's transaction before giving up.
    busy_timeout: float = 10.0
    #: Open a database on NFS/SMB/9p/virtiofs anyway (WAL is unsafe there; see the README).
    allow_network_fs: bool = False
    #: Events kept in the events table for ``global:`` listeners and ``job.finished()``.
    max_events: int = 10000

    def __post_init__(self) -> None:
        fix = object.__setattr__
        fix(self, "lock_duration", seconds(self.lock_duration, "settings['lock_duration']", strict=True))
        renew = self.lock_renew_time
        renew = self.lock_duration / 2 if renew is None else seconds(renew, "settings['lock_renew_time']", strict=True)
        if renew >= self.lock_duration:
            raise ConfigError("settings['lock_renew_time'] must be shorter than lock_duration")
        fix(self, "lock_renew_time", renew)
        for key in ("stalled_interval", "guard_interval", "retry_process_delay", "drain_delay"):
            fix(self, key, seconds(getattr(self, key), f"settings[{key!r}]"))
        fix(self, "busy_timeout", seconds(self.busy_timeout, "settings['busy_timeout']"))
        fix(self, "max_stalled_count", _integer(self.max_stalled_count, "settings['max_stalled_count']", minimum=0))
        fix(self, "max_data_bytes", _integer(self.max_data_bytes, "settings['max_data_bytes']", minimum=16))
        fix(self, "max_events", _integer(self.max_events, "settings['max_events']", minimum=100))
        if not isinstance(self.allow_network_fs, bool):
            raise ConfigError("settings['allow_network_fs'] must be True or False")
        if not isinstance(self.backoff_strategies, Mapping) or not all(
            isinstance(k, str) and callable(v) for k, v in self.backoff_strategies.items()
        ):
            raise ConfigError("settings['backoff_strategies'] must map names to callables")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Settings:
        """Build settings from the user's dict, rejecting unknown keys."""
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ConfigError(f"settings must be a dict, not {type(values).__name__}")
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {sorted(unknown)}: valid settings are {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**values)


@dataclass(frozen=True)
class Limiter:
    """``Queue(limiter={"max": N, "duration": s[, "group_key": "field"]})``: at most *max*
    job starts of the queue in any window of *duration* seconds, across all processes."""

    max: int
    duration: float
    group_key: Optional[str] = None

    @classmethod
    def from_mapping(cls, value: object) -> Optional[Limiter]:
        """Validate the user's ``limiter`` option (None: no limit)."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(f"limiter must be a dict like {{'max': 10, 'duration': 1.0}},"
                              f" not {type(value).__name__}")
        unknown = set(value) - {"max", "duration", "group_key"}
        if unknown:
            raise ConfigError(f"limiter has unknown keys {sorted(unknown)}:"
                              " use max, duration and group_key")
        if "max" not in value or "duration" not in value:
            raise ConfigError("limiter needs both 'max' (jobs) and 'duration' (seconds)")
        group = value.get("group_key")
        if group is not None and (not isinstance(group, str) or not group):
            raise ConfigError("limiter['group_key'] must be the name of a data field (a str)")
        return cls(max=_integer(value["max"], "limiter['max']", minimum=1),
                   duration=seconds(value["duration"], "limiter['duration']", strict=True),
                   group_key=group)
