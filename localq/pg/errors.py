"""Translating psycopg errors into :class:`~localq.DatabaseError` (the only place that does).

Errors are told apart by their class (SQLSTATE), never by message text. Every message names
the server by its URL without the password and says what to do.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pgerr

from ..errors import DatabaseError

__all__ = ["connect_error", "translate"]

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
