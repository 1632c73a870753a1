"""PostgreSQL sessions inherited through ``fork()``: the child must neither use nor keep them.

A forked child (a ``multiprocessing`` fork, a daemon, a handler's subprocess pool) gets a
copy of every socket of its parent. Using one would interleave two processes on one session;
closing one would send Terminate and end the parent's session; and merely keeping one keeps
the parent's session alive after the parent dies. That last one matters: a SIGKILLed worker's
open transaction would keep its row locks (recovery of its jobs blocks on them) and its
lease would hide its death for as long as the child lives.

So every session localq opens is tracked here, and right after a fork the child points each
inherited descriptor at /dev/null (``dup2``: the descriptor number stays taken, so an
abandoned connection can never write into a file opened later). Nothing is sent to the
server; the parent's sockets are untouched; a later close of the abandoned connection in the
child only closes /dev/null.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import psycopg

__all__ = ["detach", "track"]

_sessions: weakref.WeakSet[Any] = weakref.WeakSet()


def track(conn: psycopg.Connection[Any]) -> None:
    """Detach *conn* from any child forked while it is open."""
    _sessions.add(conn)


def detach(conn: psycopg.Connection[Any]) -> None:
    """Drop this process's copy of *conn*'s socket, saying nothing to the server."""
    try:
        fd = conn.fileno()
    except psycopg.Error:
        return  # closed already: no socket left
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def _after_fork_in_child() -> None:
    global _sessions
    for conn in list(_sessions):
        detach(conn)
    _sessions = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
