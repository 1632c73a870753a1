"""Queue queries: jobs by id, by state, counts and logs (Bull's lib/getters.js)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from .states import STATES
from .errors import ConfigError, JobNotFound
from .job import Job
from .text import findable

if TYPE_CHECKING:
    from ._db import Store
    from .backend import Backend

__all__ = ["Getters"]


def _check_range(start: object, end: object) -> None:
    for label, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be an int index, not {type(value).__name__}")


def _check_states(states: Iterable[str] | str) -> list[str]:
    if isinstance(states, str):
        states = [states]
    out = []
    for state in states:
        state = "waiting" if state == "wait" else state
        if state not in STATES:
            raise ConfigError(f"unknown state {state!r}: use some of {list(STATES)}")
        out.append(state)
    return out


def _job_id(job_id: object) -> str:
    if isinstance(job_id, bool) or not isinstance(job_id, (str, int)):
        raise ConfigError(f"job_id must be a str, not {type(job_id).__name__}")
    return str(job_id)


class Getters:
    """Read-only queue methods; mixed into :class:`localq.Queue`."""

    name: str
    _store: Store
    _q: Any
    _backend: Backend

    def get_job(self, job_id: str) -> Job | None:
        """Return job *job_id*, or None if it does not exist."""
        public = _job_id(job_id)
        if not findable(public, nul=self._backend.nul_in_text):
            return None  # no job can have an id the database cannot store
        row = self._q.job_row(self._store, self.name, public)
        return None if row is None else Job(self, row)  # type: ignore[arg-type]

    def get_jobs(self, states: Iterable[str] | str, start: int = 0, end: int = -1,
                 asc: bool = False) -> list[Job]:
        """Return jobs in *states* (``waiting, active, delayed, completed, failed, paused``).

        As in Bull, *start* and *end* are inclusive indexes taken per state (``end=-1``: the
        last); ``asc=True`` lists oldest first (waiting: in run order), ``asc=False`` newest first.
        """
        _check_range(start, end)
        rows = self._q.list_jobs(self._store, self.name, _check_states(states), start, end,
                                 bool(asc))
        return [Job(self, row) for row in rows]  # type: ignore[arg-type]

    def get_waiting(self, start: int = 0, end: int = -1) -> list[Job]:
        """Return waiting jobs (also those of a paused queue) in run order, next first."""
        return self.get_jobs(["waiting", "paused"], start, end, asc=True)

    def get_active(self, start: int = 0, end: int = -1) -> list[Job]:
        """Return active jobs, longest-running first."""
        return self.get_jobs(["active"], start, end, asc=True)

    def get_delayed(self, start: int = 0, end: int = -1) -> list[Job]:
        """Return delayed jobs by due time, soonest first."""
        return self.get_jobs(["delayed"], start, end, asc=True)

    def get_completed(self, start: int = 0, end: int = -1) -> list[Job]:
        """Return completed jobs, newest first."""
        return self.get_jobs(["completed"], start, end, asc=False)

    def get_failed(self, start: int = 0, end: int = -1) -> list[Job]:
        """Return failed jobs, newest first."""
        return self.get_jobs(["failed"], start, end, asc=False)

    def get_job_counts(self, *states: str) -> dict[str, int]:
        """Return ``{state: count}`` for *states* (all states when none are given)."""
        wanted = _check_states(states) if states else list(STATES)
        counts: dict[str, int] = self._q.counts(self._store, self.name, wanted)
        return counts

    def count(self) -> int:
        """Return how many jobs wait to run: waiting + paused + delayed."""
        return sum(self._q.counts(self._store, self.name, ["waiting", "paused", "delayed"]).values())

    def get_job_logs(self, job_id: str, start: int = 0, end: int = -1,
                     asc: bool = True) -> dict[str, Any]:
        """Return ``{"logs": [rows], "count": total}`` for job *job_id* (inclusive range).

        :raises JobNotFound: the job does not exist.
        """
        _check_range(start, end)
        public = _job_id(job_id)
        rid = (self._q.rowid(self._store, self.name, public)
               if findable(public, nul=self._backend.nul_in_text) else None)
        if rid is None:
            raise JobNotFound(public)
        page, total = self._q.logs(self._store, rid, start, end, bool(asc))
        return {"logs": page, "count": total}
