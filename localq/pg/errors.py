"""Translating psycopg errors into :class:`~localq.DatabaseError` (the only place that does),
and the refusals of localq's server-side functions into the errors of their guards.

Errors are told apart by their class (SQLSTATE), never by message text. Every message names
the server by its URL without the password and says what to do. SQLSTATE class ``LQ`` is
localq's own (:mod:`localq.pg.plpgsql`): :meth:`PgStore.run <localq.pg.store.PgStore.run>`
raises it as :class:`Refused`, which the caller turns into the guard's error
(:func:`guard_error`), exactly as the Python moves raise it.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pgerr

from ..errors import DatabaseError, InvalidJobState, JobNotFound, LocalqError, LockError
from . import plpgsql

__all__ = ["Refused", "connect_error", "guard_error", "refusal", "refused", "translate"]

#: SQLSTATE classes of a lost or refused connection (08: connection exception; 57P: the
#: server shut down or the session was terminated).
_CONNECTION_STATES = ("08", "57P")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def translate(exc: BaseException, shown: str, busy_timeout: float, *,
              schema: str = "localq") -> DatabaseError:
    """Return the :class:`DatabaseError` that explains psycopg error *exc* (chain it with
    ``from``).

    :param shown: the server URL without its password.
    :param busy_timeout: the lock wait limit, in seconds (for the message).
    """
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, pgerr.LockNotAvailable):
        msg = (f"a row of {shown} stayed locked by another transaction for over"
               f" {busy_timeout:g} s; raise settings['busy_timeout'] or look for a session"
               " holding a long transaction (pg_stat_activity); nothing of this call was"
               " stored")
    elif isinstance(exc, (pgerr.DeadlockDetected, pgerr.SerializationFailure)):
        msg = (f"the transaction on {shown} conflicted with a concurrent one and was rolled"
               " back; nothing of this call was stored: try again")
    elif isinstance(exc, pgerr.DiskFull):
        msg = f"the server of {shown} is out of disk space; nothing of this call was stored"
    elif isinstance(exc, pgerr.InsufficientPrivilege):
        msg = (f"the role of {shown} lacks a privilege ({_first_line(exc)}): grant it CREATE"
               f" on the database (first open) and USAGE and all table privileges on schema"
               f" {schema!r}")
    elif isinstance(exc, pgerr.QueryCanceled):
        msg = (f"a statement on {shown} was cancelled ({_first_line(exc)}): check the"
               " server's statement_timeout; nothing of this call was stored")
    elif isinstance(exc, (pgerr.UndefinedTable, pgerr.UndefinedColumn, pgerr.InvalidSchemaName)):
        msg = (f"schema {schema!r} of {shown} lacks localq's tables ({_first_line(exc)}):"
               " it was dropped or altered while the queue was open; reopen the queue")
    elif isinstance(exc, psycopg.OperationalError) and (
            not sqlstate or sqlstate.startswith(_CONNECTION_STATES)):
        msg = (f"cannot reach the PostgreSQL server at {shown} ({_first_line(exc)}): check that"
               " it runs and accepts connections; the outcome of the last call is unknown")
    else:
        msg = (f"database error on {shown}: {exc.__class__.__name__}"
               f"{' ' + sqlstate if sqlstate else ''}: {_first_line(exc)}")
    return DatabaseError(msg, path=shown)


def connect_error(exc: BaseException, shown: str) -> DatabaseError:
    """Return the :class:`DatabaseError` of a first connection that failed (chain it with
    ``from``): nothing ran yet, and the cause is often the URL itself (libpq's first line
    says which part: host, port, role, password or database)."""
    return DatabaseError(
        f"cannot connect to the PostgreSQL server at {shown} ({_first_line(exc)}): check the"
        " host, port, user, password and database of the URL, and that the server runs and"
        " accepts connections; nothing was stored", path=shown)


class Refused(Exception):
    """A localq server-side function refused its statement (SQLSTATE class ``LQ``); the
    transaction was rolled back. Never reaches users: the caller maps it.

    :ivar sqlstate: which refusal (see :mod:`localq.pg.plpgsql`).
    :ivar detail: the DETAIL field (the job's state for ``LQ409``), else None.
    """

    def __init__(self, sqlstate: str, detail: str | None) -> None:
        super().__init__(sqlstate, detail)
        self.sqlstate = sqlstate
        self.detail = detail


def refused(exc: BaseException) -> Refused | None:
    """Return *exc* as a :class:`Refused` if it is one of localq's refusals, else None."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if not sqlstate.startswith("LQ"):
        return None
    diag = getattr(exc, "diag", None)
    return Refused(sqlstate, None if diag is None else diag.message_detail)


def guard_error(public: str, token: str | None, state: str | None) -> LocalqError:
    """Return the error of a move out of ``active`` whose guard refused job *public*.

    :param token: the lock token the caller held (None: ``ignore_lock``).
    :param state: the job's state (None: the job is gone; ``"active"``: another token
        holds it).
    """
    if state is None:
        return JobNotFound(public)
    if state != "active":
        if token is not None:
            return LockError(f"job {public!r} is {state}, no longer locked by this queue"
                             " (its lock was lost, e.g. it stalled and was taken back)",
                             job_id=public, expected="active", actual=state)
        return InvalidJobState(f"job {public!r} is {state}, not active",
                               job_id=public, expected="active", actual=state)
    return LockError(f"job {public!r} is locked by another worker (this queue's lock on it"
                     " was lost): its result was not recorded", job_id=public,
                     expected="active", actual="active")


def refusal(exc: Refused, public: str, token: str | None) -> LocalqError:
    """Return the guard error that refusal *exc* of a move of job *public* stands for.

    :raises Refused: *exc* is not a guard's refusal (e.g. the fallback signal).
    """
    if exc.sqlstate == plpgsql.GONE:
        return guard_error(public, token, None)
    if exc.sqlstate == plpgsql.NOT_ACTIVE and exc.detail:
        return guard_error(public, token, exc.detail)
    if exc.sqlstate == plpgsql.OTHER_TOKEN:
        return guard_error(public, token, "active")
    raise exc
