"""Completing a job and claiming the next one in one round trip (PostgreSQL).

A worker that finishes a job takes its next one in the same transaction (Bull's
``moveToFinished`` with fetch-next). Written as Python moves, that transaction costs six round
trips on PostgreSQL (BEGIN, complete, promote, claim, COMMIT, and more for retention); here
it is one statement, the server-side function ``complete_and_fetch``
(:mod:`localq.pg.plpgsql`), run outside ``BEGIN`` so that the statement is the transaction.

What still takes the Python moves, in one transaction as before:

* a claim on a queue with a rate limiter (its window and lock live in
  :mod:`localq.pg.limiter`, and the clock is read under that lock): the caller does not
  come here;
* a next job that is a repeat occurrence: its schedule's next slot is computed in Python
  (croniter) and must be created in the claim's transaction (no slot lost if the process
  dies, none twice). The function refuses such a claim and rolls back everything it did
  (``LQ300``); the whole completion and claim then run again as Python moves, which
  advance the schedule. Occurrences are rare next to plain jobs, so their extra round trips
  do not show.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import plpgsql
from ._sql import JOB_COLUMNS, Row
from .errors import Refused, refusal

if TYPE_CHECKING:
    from .store import PgStore

__all__ = ["complete_and_fetch"]

_CALL = (
    "SELECT " + JOB_COLUMNS + " FROM complete_and_fetch(%(id)s, %(public)s, %(token)s,"
    " %(rv)s, %(now)s, %(queue)s, %(claim)s, %(owner)s, %(expires)s, %(names)s::text[],"
    " %(wall)s, %(sync)s)"
)


def complete_and_fetch(store: PgStore, *, rowid: int, public: str, token: str | None,
                       returnvalue: str, now_ms: int,
                       claim: dict[str, Any] | None) -> Row | None:
    """Complete job *rowid* and, with *claim*, take the next job of ``claim["queue"]``, in
    one transaction (one statement unless the next job is a repeat occurrence).

    From: ``active`` (then ``waiting``, ``delayed`` due). To: ``completed`` (then ``active``).
    Guard, emits and NOTIFY: those of ``move_to_completed``, ``promote_due`` and ``claim`` of
    :mod:`localq.pg.transitions` together.

    :param store: the queue's store (this move runs its own transaction).
    :param claim: ``claim()``'s keywords (``queue``, ``token``, ``owner``, ``lock_ms``,
        ``names``; ``limit`` None); None completes only.
    :returns: the claimed job's row, or None (nothing runnable, or no *claim*).
    :raises LockError: the lock is not held with *token*; nothing was changed or taken.
    :raises InvalidJobState: the job is not active (*token* None); nothing was changed.
    :raises JobNotFound: the job is gone.
    """
    # A limited claim reads the clock under the limiter's lock (Queue._claim_in): not here.
    assert claim is None or claim.get("limit") is None, "rate-limited claims take claim()"
    params = {"id": rowid, "public": public, "token": token, "rv": returnvalue, "now": now_ms,
              "queue": None, "claim": None, "owner": None, "expires": None, "names": None,
              "wall": int(time.time() * 1000), "sync": store.sync_level(False)}
    if claim is not None:
        names = claim.get("names")
        params.update(queue=claim["queue"], claim=claim["token"], owner=claim["owner"],
                      expires=now_ms + claim["lock_ms"],
                      names=None if names is None else list(names))
    try:
        rows = store.run(_CALL, params)
    except Refused as exc:
        if exc.sqlstate != plpgsql.FALLBACK:
            raise refusal(exc, public, token) from None
        return _as_moves(store, rowid=rowid, public=public, token=token,
                         returnvalue=returnvalue, now_ms=now_ms, claim=claim)
    return rows[0] if rows else None


def _as_moves(store: PgStore, *, rowid: int, public: str, token: str | None,
              returnvalue: str, now_ms: int, claim: dict[str, Any] | None) -> Row | None:
    """The same completion and claim as Python moves in one transaction (the claim advances
    a repeat occurrence's schedule)."""
    from . import transitions  # transitions re-exports this module's move

    with store.write(durable=False) as conn:
        transitions.move_to_completed(conn, rowid=rowid, public=public, token=token,
                                      returnvalue=returnvalue, now_ms=now_ms)
        if claim is None:
            return None
        row: Row | None = transitions.claim(conn, now_ms=now_ms, **claim)
        return row
