"""Schedule arithmetic for repeatable jobs: pure functions, no database.

:func:`parse_repeat` validates the ``repeat`` option of ``Queue.add`` into a
:class:`RepeatSpec`; :meth:`RepeatSpec.next_after` gives the next slot in epoch ms.

- ``every``: slots are multiples of the period since the epoch, as in Bull
  (``floor(now / every) * every + every``), so every process computes the same slots.
- ``cron``: exactly 5 fields (minute hour day-of-month month day-of-week) read by croniter
  on the wall clock of ``tz``, in Vixie syntax: ``*``, numbers, ranges, lists, ``/`` steps,
  3-letter month and day names. Seconds or year fields, ``@`` aliases and croniter's
  ``L W # H R`` are refused: we do not promise them (``H`` and ``R`` are not even
  deterministic). Without ``tz`` the local zone is recorded by its IANA name
  (:func:`local_zone_name`), so every machine reads the cron the same way.
- ``start_date`` skips earlier slots (for ``every`` too, keeping the epoch alignment);
  no slot is later than ``end_date``. ``limit`` is left to the caller, who counts runs.
- Slots missed while nothing ran are skipped, not piled up: the caller asks for
  ``next_after(now)`` and gets one future slot.

DST (cron only; ``every`` is elapsed time):

- Spring forward: a slot in the gap is *moved* to the instant the gap ends (``30 2 * * *``
  runs at 03:00 that day) unless the hour field is ``*``, then it is *skipped*
  (``*/20 * * * *`` goes 01:40, 03:00), as croniter does with aware datetimes. Slots moved
  to the same instant run once.
- Fall back: a wall time that occurs twice runs once, at its first occurrence (croniter
  alone fires twice). ``30 1 * * *`` in New York runs at 01:30 EDT only; a ``*/20``
  schedule pauses through the repeated hour. Use ``every`` for a strict elapsed period.

Keys are Bull's ``name:job_id:end_ms:tz:cron|every_ms`` plus ``:start_ms:limit`` when
either is set (they change the schedule too); ``%`` and ``:`` in the name and job id are
percent-escaped, so distinct schedules never share a key.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from localq.errors import ConfigError
from localq.text import check_text

__all__ = ["RepeatSpec", "local_zone_name", "parse_repeat"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_OPTIONS = ("cron", "tz", "every", "limit", "start_date", "end_date", "job_id")
_SPEC_FIELDS = ("every_ms", "cron", "tz", "limit", "start_ms", "end_ms", "job_id")
_CRON_TOKEN = re.compile(r"(\*|[0-9]+|[a-z]{3})(-([0-9]+|[a-z]{3}))?(/[0-9]+)?",
                         re.ASCII | re.IGNORECASE)
# IANA names are ASCII words joined by "/": no dots, so no "..", no absolute paths.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", re.ASCII)


@dataclass(frozen=True)
class RepeatSpec:
    """One validated repeat schedule; build it with :func:`parse_repeat`.

    :ivar every_ms: period in ms (exactly one of ``every_ms`` / ``cron`` is set).
    :ivar cron: 5-field cron expression, stripped, read in ``tz``.
    :ivar tz: IANA zone name; ``None`` for ``every``.
    :ivar limit: maximum number of occurrences (counted by the caller), ``>= 1``.
    :ivar start_ms: epoch ms; the first slot is ``>= start_ms``.
    :ivar end_ms: epoch ms; no slot is ``> end_ms``.
    :ivar job_id: the user's repeat ``job_id``, part of the key.
    """

    every_ms: int | None
    cron: str | None
    tz: str | None
    limit: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    job_id: str | None = None

    def __post_init__(self) -> None:
        if (self.every_ms is None) == (self.cron is None):
            raise ConfigError("repeat needs one of 'cron' ('*/5 * * * *') or 'every' (seconds)")
        if self.cron is not None:
            # Normalised here too, so a spec built by hand has the same key as a parsed one.
            object.__setattr__(self, "cron", _check_cron(self.cron))
            object.__setattr__(self, "tz", _check_tz(self.tz))
        elif not _is_int(self.every_ms) or self.every_ms < 1:
            raise ConfigError(f"every_ms must be an int >= 1, got {self.every_ms!r}")
        elif self.tz is not None:
            raise ConfigError("'tz' applies to 'cron' only; remove it when using 'every'")
        _check_limit(self.limit)
        for field in ("start_ms", "end_ms"):
            value = getattr(self, field)
            if value is not None and not _is_int(value):
                raise ConfigError(f"{field} must be an int (epoch ms), got {value!r}")
        if self.start_ms is not None and self.end_ms is not None and self.end_ms < self.start_ms:
            raise ConfigError("repeat 'end_date' is before 'start_date'; swap or fix them")
        _check_job_id(self.job_id)

    def key(self, name: str) -> str:
        """Return the key of this schedule for job ``name``: equal iff name and options are.

        :param name: the job name the schedule creates jobs for.
        :returns: e.g. ``"emails::1700000000000:Europe/Paris:*/5 * * * *"``.
        """
        end, start, limit = ("" if v is None else str(v)
                             for v in (self.end_ms, self.start_ms, self.limit))
        parts = [_escape(name), _escape(self.job_id or ""), end, self.tz or "",
                 self.cron if self.cron is not None else str(self.every_ms)]
        # Neither a cron nor a period contains ":", so the optional tail stays unambiguous.
        if start or limit:
            parts += [start, limit]
        return ":".join(parts)

    def next_after(self, after_ms: int) -> int | None:
        """Return the first slot strictly after ``after_ms`` within start/end (not ``limit``).

        :param after_ms: epoch ms, usually the current time or the previous slot.
        :returns: the slot in epoch ms, or ``None`` when the schedule has ended.
        """
        floor_ms = math.floor(after_ms)  # slots are ints: "> x" is "> floor(x)", even for floats
        if self.start_ms is not None:
            floor_ms = max(floor_ms, self.start_ms - 1)  # first slot > start - 1 is >= start
        if self.every_ms is not None:
            slot: int | None = (floor_ms // self.every_ms + 1) * self.every_ms
        else:
            slot = self._next_cron_slot(floor_ms)
        if slot is None or (self.end_ms is not None and slot > self.end_ms):
            return None
        return slot

    def _next_cron_slot(self, after_ms: int) -> int | None:
        """Return the first cron slot strictly after ``after_ms`` (DST rules: module doc)."""
        assert self.cron is not None and self.tz is not None
        zone = ZoneInfo(self.tz)
        try:
            # Cron slots are whole wall minutes, so starting from the wall minute (rather than
            # the exact instant) loses nothing and keeps croniter's float timestamps exact.
            start = _wall(after_ms, zone).replace(second=0, microsecond=0)
            it = croniter(self.cron, start, ret_type=datetime)
            skip_gap = it.expanded[1] == ["*"]  # the hour field is a wildcard
            while True:
                wall: datetime = it.get_next(datetime)
                slot_ms, exists = _wall_to_ms(wall, zone)
                # Slots whose first occurrence is not after after_ms are behind us: this is
                # what stops a wall time repeated by a fall-back from running twice.
                if slot_ms > after_ms and (exists or not skip_gap):
                    return slot_ms
        except (OverflowError, CroniterBadDateError):
            return None  # past year 9999, or no matching date left: the schedule is over

    def to_dict(self) -> dict[str, object]:
        """Return the fields as a JSON-able dict (the stored form), keyed by field name."""
        return {field: getattr(self, field) for field in _SPEC_FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> RepeatSpec:
        """Rebuild a spec from :meth:`to_dict` output (missing fields are ``None``).

        :raises ConfigError: on unknown fields or values that break the rules.
        """
        unknown = sorted(set(d) - set(_SPEC_FIELDS))
        if unknown:
            raise ConfigError(f"unknown RepeatSpec field(s) {unknown}; known: {list(_SPEC_FIELDS)}")
        return cls(**{field: d.get(field) for field in _SPEC_FIELDS})  # type: ignore[arg-type]

    def public(self) -> dict[str, object]:
        """Return the options as users write them, for ``get_repeatable_jobs``.

        :func:`parse_repeat` of the result gives back this spec.

        :returns: ``{"cron": ...}`` or ``{"every": seconds}``, plus ``tz``, ``limit``,
            ``start_date`` and ``end_date`` (epoch seconds or ``None``) and ``job_id``.
        """
        every, start, end = (None if ms is None else ms / 1000
                             for ms in (self.every_ms, self.start_ms, self.end_ms))
        out: dict[str, object] = {"cron": self.cron} if every is None else {"every": every}
        out.update(tz=self.tz, limit=self.limit, start_date=start, end_date=end,
                   job_id=self.job_id)
        return out


def parse_repeat(value: object, *, now_ms: int | None = None) -> RepeatSpec:
    """Validate the ``repeat`` option of ``Queue.add`` and return its :class:`RepeatSpec`.

    A key whose value is ``None`` counts as absent.

    :param value: ``{"cron": "*/5 * * * *", "tz": "Europe/Paris"}`` or ``{"every": seconds}``,
        plus optional ``limit``, ``start_date``, ``end_date`` (epoch seconds or an aware
        ``datetime``) and ``job_id``.
    :param now_ms: the queue clock's time; when given, an ``end_date`` in the past is refused.
    :returns: the validated spec (cron without ``tz`` gets :func:`local_zone_name`).
    :raises ConfigError: saying what is wrong and how to fix it.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"repeat must be a dict such as {{'every': 60}} or {{'cron': '*/5 * * * *'}}, "
            f"got {type(value).__name__}")
    unknown = [k for k in value if k not in _OPTIONS]
    if unknown:
        hints = "".join(f"; did you mean {m[0]!r} for {k!r}?" for k in unknown
                        if (m := difflib.get_close_matches(str(k).lower(), _OPTIONS, n=1)))
        raise ConfigError(f"unknown repeat option(s) {', '.join(map(repr, unknown))}{hints}; "
                          f"allowed: {', '.join(_OPTIONS)}")
    opts: dict[str, object] = {str(k): v for k, v in value.items() if v is not None}
    cron, every, tz = opts.get("cron"), opts.get("every"), opts.get("tz")
    if cron is not None and every is not None:
        raise ConfigError("repeat takes 'cron' or 'every', not both; keep one")
    if every is not None and tz is not None:
        raise ConfigError("'tz' applies to 'cron' only; remove it when using 'every'")
    # Neither cron nor every: RepeatSpec refuses it with its "exactly one" message.
    every_ms = None if every is None else _every_ms(every)
    cron_expr = None if cron is None else _check_cron(cron)
    tz_name = None if cron is None else local_zone_name() if tz is None else _check_tz(tz)
    end_ms = _date_ms("end_date", opts.get("end_date"))
    if end_ms is not None and now_ms is not None and end_ms < now_ms:
        raise ConfigError(f"repeat 'end_date' ({end_ms / 1000}) is already in the past "
                          f"(now is {now_ms / 1000}); give a later end_date or drop it")
    return RepeatSpec(every_ms=every_ms, cron=cron_expr, tz=tz_name,
                      limit=_check_limit(opts.get("limit")),
                      start_ms=_date_ms("start_date", opts.get("start_date")),
                      end_ms=end_ms, job_id=_check_job_id(opts.get("job_id")))


def local_zone_name(*, environ: Mapping[str, str] | None = None,
                    localtime: str = "/etc/localtime", timezone_file: str = "/etc/timezone") -> str:
    """Return the IANA name of this process's local time zone.

    Looked up in order: ``$TZ`` (a name, ``:name`` or a path under a zoneinfo directory),
    the target of the ``/etc/localtime`` symlink, ``/etc/timezone``, else ``"UTC"``. A
    name is what gets stored, so other machines read the cron in the same zone.

    :param environ: environment to read ``TZ`` from (default ``os.environ``).
    :param localtime: path of the ``localtime`` symlink (a seam for tests).
    :param timezone_file: path of the Debian-style ``timezone`` file (a seam for tests).
    :returns: a zone name that :class:`zoneinfo.ZoneInfo` loads.
    """
    tz_env = (os.environ if environ is None else environ).get("TZ")
    if tz_env is not None and not tz_env.strip():
        return "UTC"  # glibc reads an empty TZ as UTC, so the process runs in UTC
    candidates: list[str | None] = []
    if tz_env is not None:
        name = tz_env.strip().removeprefix(":")  # POSIX allows "TZ=:Europe/Paris"
        candidates.append(_zone_from_path(name) if name.startswith("/") else name)
    if os.path.islink(localtime):
        candidates.append(_zone_from_path(os.path.realpath(localtime)))
    with contextlib.suppress(OSError), open(timezone_file, encoding="utf-8") as f:
        candidates.append(f.readline())
    for candidate in candidates:
        try:
            return _check_tz(candidate)  # also refuses None and path-like names
        except ConfigError:
            continue
    return "UTC"


def _zone_from_path(path: str) -> str | None:
    """Return the zone name of a file path under a ``zoneinfo`` directory, if it is one."""
    _, sep, name = path.rpartition("zoneinfo/")
    # "posix/" holds the same zones as the top level; "right/" ones differ (leap seconds).
    return name.removeprefix("posix/") if sep else None


def _check_tz(tz: object) -> str:
    """Return ``tz`` stripped if it names an IANA zone; else raise :class:`ConfigError`."""
    if not isinstance(tz, str):
        raise ConfigError(f"repeat 'tz' must be a str such as 'Europe/Paris', got {tz!r}")
    tz = tz.strip()
    # "localtime" mirrors each machine's own setting: storing it would defeat the name.
    if not _ZONE_NAME.fullmatch(tz) or tz == "localtime":
        raise ConfigError(f"repeat 'tz' {tz!r} is not an IANA zone name such as 'Europe/Paris'")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ConfigError(
            f"repeat 'tz' {tz!r} is not a known time zone; use an IANA name such as "
            f"'Europe/Paris' (install tzdata if this system has none)") from exc
    return tz


def _check_limit(limit: object) -> int | None:
    """Return ``limit`` if it is ``None`` or an int >= 1; else raise :class:`ConfigError`."""
    if limit is not None and not (_is_int(limit) and limit >= 1):
        raise ConfigError(f"repeat 'limit' must be an int >= 1 (or omitted), got {limit!r}")
    return limit


def _check_job_id(job_id: object) -> str | None:
    """Return ``job_id`` if it is ``None`` or a non-empty str; else raise :class:`ConfigError`."""
    if job_id is not None and not (isinstance(job_id, str) and job_id):
        raise ConfigError(f"repeat 'job_id' must be a non-empty str, got {job_id!r}")
    return None if job_id is None else check_text(job_id, "repeat 'job_id'", nul=True)


def _check_cron(cron: object) -> str:
    """Return ``cron`` stripped if it is a valid 5-field expression; else raise ConfigError."""
    if not isinstance(cron, str):
        raise ConfigError(f"repeat 'cron' must be a str such as '*/5 * * * *', got {cron!r}")
    cron = cron.strip()
    if cron.startswith("@"):
        raise ConfigError(f"repeat 'cron' {cron!r}: '@' forms are not supported; write the 5 "
                          "fields ('0 0 * * *' for @daily) or use 'every' for a period")
    # ASCII split, as croniter does: a no-break space is not a field separator.
    fields = re.findall(r"[^ \t]+", cron)
    if len(fields) != 5:
        raise ConfigError(
            f"repeat 'cron' {cron!r} has {len(fields)} field(s); cron needs exactly 5: "
            "minute hour day-of-month month day-of-week (no seconds or year field)")
    for index, field in enumerate(fields):
        for token in field.split(","):
            # Names are only meaningful for month (3) and day of week (4).
            if (not _CRON_TOKEN.fullmatch(token)
                    or (index < 3 and any(c.isalpha() for c in token))):
                raise ConfigError(
                    f"repeat 'cron' {cron!r}: {token!r} is not supported; use numbers, '*', "
                    "ranges 'a-b', lists 'a,b', steps '/n' and 3-letter month or day names")
    try:  # a match must exist: '0 0 30 2 *' parses, and fails only when iterated
        croniter(cron, datetime(2000, 1, 1), ret_type=datetime).get_next(datetime)
    except CroniterBadDateError as exc:
        raise ConfigError(f"repeat 'cron' {cron!r} never matches a date") from exc
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise ConfigError(f"repeat 'cron' {cron!r} is invalid: {exc}") from exc
    return cron


def _every_ms(every: object) -> int:
    """Convert the ``every`` option (seconds or timedelta) to whole ms, validated."""
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0.001:
        raise ConfigError(
            f"repeat 'every' must be a finite number of seconds >= 0.001 (or a timedelta), "
            f"got {every!r}")
    return round(seconds * 1000)


def _date_ms(option: str, value: object) -> int | None:
    """Convert ``start_date`` / ``end_date`` (epoch seconds or aware datetime) to epoch ms."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ConfigError(
                f"repeat {option!r} is a naive datetime; add tzinfo, e.g. "
                "datetime(..., tzinfo=timezone.utc), so it names one instant")
        return (value - _EPOCH + _MS / 2) // _MS  # nearest ms, in exact integer arithmetic
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(f"repeat {option!r} must be epoch seconds (int or float) or an aware "
                          f"datetime, got {value!r}")
    return round(value * 1000)


def _wall(ms: int, zone: ZoneInfo) -> datetime:
    """Return the naive wall-clock time of epoch ``ms`` in ``zone``."""
    return (_EPOCH + ms * _MS).astimezone(zone).replace(tzinfo=None, fold=0)


def _wall_to_ms(wall: datetime, zone: ZoneInfo) -> tuple[int, bool]:
    """Return the epoch ms of a naive wall time in ``zone``, and whether that time exists.

    A repeated wall time gives its first occurrence (``fold=0`` uses the pre-transition
    offset: the earlier instant); a wall time in a gap gives the end of the gap.
    """
    def offset(seconds: int) -> timedelta | None:  # at an instant, unlike zone.utcoffset
        return (_EPOCH + timedelta(seconds=seconds)).astimezone(zone).utcoffset()

    first = (wall.replace(tzinfo=zone, fold=0) - _EPOCH) // _MS
    if _wall(first, zone) == wall:
        return first, True
    # In a gap fold=0 lands after the transition and fold=1 before it; transitions are
    # on whole seconds, so bisect the seconds between them for the first new-offset one.
    before = (wall.replace(tzinfo=zone, fold=1) - _EPOCH) // _MS // 1000
    after = -(-first // 1000)
    new_offset = offset(after)
    while after - before > 1:
        mid = (before + after) // 2
        if offset(mid) == new_offset:
            after = mid
        else:
            before = mid
    return after * 1000, False


def _is_int(value: object) -> TypeGuard[int]:
    """Return whether ``value`` is an int and not a bool (bool is an int subclass)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    """Return whether ``value`` is an int or float, bool excluded."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _escape(part: str) -> str:
    """Percent-escape ``%`` and ``:`` so key parts cannot run into each other."""
    return part.replace("%", "%25").replace(":", "%3A")
