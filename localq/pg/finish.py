"""Completing a job and claiming the next one in one round trip (PostgreSQL).

A worker that finishes a job takes its next one in the same transaction (Bull's
``moveToFinished`` with fetch-next). Written as Python moves, that transaction costs five round
trips on PostgreSQL (BEGIN, complete, promote, claim, COMMIT; six when the session's
``synchronous_commit`` must change); here it is one statement, the server-side function
``complete_and_fetch`` (:mod:`localq.pg.plpgsql`), run outside ``BEGIN`` so that the
statement is the transaction. A claim alone (:func:`fetch_next`, ``get_next_job`` and an idle
worker's look) and a completion alone are the same statement with the other half left out.

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

__all__ = ["complete_and_fetch", "fetch_next"]

_CALL = (
    "SELECT " + JOB_COLUMNS + " FROM complete_and_fetch(%(id)s, %(public)s, %(token)s,"
    " %(rv)s, %(now)s, %(queue)s, %(claim)s, %(owner)s, %(expires)s, %(names)s::text[],"
    " %(wall)s, %(sync)s, %(drained)s)"
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
    done = {"rowid": rowid, "public": public, "token": token, "returnvalue": returnvalue}
    try:
        return _call(store, done, now_ms, claim, drained=False)
    except Refused as exc:
        raise refusal(exc, public, token) from None


def fetch_next(store: PgStore, *, now_ms: int, claim: dict[str, Any],
               drained: bool = False) -> Row | None:
    """Take the next job of ``claim["queue"]`` in one statement (``claim()`` and, with
    *drained*, ``note_drained`` when nothing is runnable): nothing to take writes nothing,
    so an idle worker that looks costs a read.

    :param claim: as for :func:`complete_and_fetch`.
    :returns: the claimed job's row, or None.
    """
    return _call(store, None, now_ms, claim, drained=drained)


def _call(store: PgStore, done: dict[str, Any] | None, now_ms: int,
          claim: dict[str, Any] | None, *, drained: bool) -> Row | None:
    """Run the function; on ``LQ300`` (a repeat occurrence is next) run the moves instead.

    :raises Refused: a guard refused *done*'s completion.
    """
    # A limited claim reads the clock under the limiter's lock (Queue._claim_in): not here.
    assert claim is None or claim.get("limit") is None, "rate-limited claims take claim()"
    params: dict[str, Any] = {
        "id": None, "public": None, "token": None, "rv": None, "now": now_ms, "queue": None,
        "claim": None, "owner": None, "expires": None, "names": None,
        "wall": int(time.time() * 1000), "sync": store.sync_level(False), "drained": drained}
    if done is not None:
        params.update(id=done["rowid"], public=done["public"], token=done["token"],
                      rv=done["returnvalue"])
    if claim is not None:
        names = claim.get("names")
        params.update(queue=claim["queue"], claim=claim["token"], owner=claim["owner"],
                      expires=now_ms + claim["lock_ms"],
                      names=None if names is None else list(names))
    try:
        rows = store.run(_CALL, params)
    except Refused as exc:
        if exc.sqlstate != plpgsql.FALLBACK:
            raise
        return _as_moves(store, done, now_ms, claim, drained=drained)
    return rows[0] if rows else None


def _as_moves(store: PgStore, done: dict[str, Any] | None, now_ms: int,
              claim: dict[str, Any] | None, *, drained: bool = False) -> Row | None:
    """The same completion and claim as Python moves in one transaction (the claim advances
    a repeat occurrence's schedule).

    :raises LockError: (and the other guard errors) as ``move_to_completed``.
    """
    from . import transitions  # transitions re-exports this module's moves

    with store.write(durable=False) as conn:
        if done is not None:
            transitions.move_to_completed(conn, now_ms=now_ms, **done)
        if claim is None:
            return None
        row: Row | None = transitions.claim(conn, now_ms=now_ms, **claim)
        if row is None and drained:
            transitions.note_drained(conn, queue=claim["queue"], now_ms=now_ms)
        return row
