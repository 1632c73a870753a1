"""SQL helpers shared by the PostgreSQL transitions: row reads, event rows and NOTIFY.

Nothing here writes a job row (that is :mod:`localq.pg.transitions`' alone); these are the
pieces every move uses: the job columns, the event insert that notifies listeners in the same
statement, and the payload rule of notifications.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

__all__ = ["JOB_COLUMNS", "Row", "WATCHED", "emit", "emit_many", "note", "public_id", "rows"]

#: The columns every Job snapshot is built from, in this order (see ``Job.__init__``).
JOB_COLUMNS = (
    "id, job_id, name, data, opts, state, priority, timestamp_ms, delay_ms, run_at_ms,"
    " attempts_made, stalled_count, progress, returnvalue, failed_reason, stacktrace,"
    " processed_on_ms, finished_on_ms, lock_token, lock_expires_ms, queue"
)
#: The same columns qualified with the alias ``j`` (for UPDATE ... FROM).
J_COLUMNS = ", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))

Row = tuple[Any, ...]

#: Whether someone listens to the queue's global events: listeners keep
#: queues.watch_until_ms ahead of the wall clock (see ``transitions.watch_queue``).
WATCHED = "EXISTS (SELECT 1 FROM queues WHERE name = %(q)s AND watch_until_ms > %(wall)s)"

#: The schema's NOTIFY channel, computed in SQL (search_path holds only our schema). The
#: payload is ``c:<queue>`` (a change) or ``d:<queue>`` (delayed jobs changed: schedulers wake
#: too); identical notifications of one transaction are folded into one.
NOTIFY = "pg_notify('localq_' || current_schema(), %(note)s)"


def note(queue: str, delayed: bool = False) -> str:
    """Return the notification payload of a change to *queue*."""
    return f"{'d' if delayed else 'c'}:{queue}"


def public_id(rowid: int, job_id: str | None) -> str:
    """Return the id users see: the custom id, else the row number."""
    return job_id if job_id is not None else str(rowid)


def rows(conn: Any, sql: str, params: Any = None) -> list[Row]:
    """Run a statement that returns rows and return them all."""
    return list(conn.execute(sql, params).fetchall())


def emit(conn: Any, queue: str, event: str, job_id: str | None, data: Any, now_ms: int) -> None:
    """Append one global event row (``data`` is JSON-encoded here) and notify listeners."""
    emit_many(conn, queue, [(event, job_id, None if data is None else json.dumps(data))], now_ms)


def emit_many(conn: Any, queue: str, events: Sequence[tuple[str, str | None, str | None]],
              now_ms: int) -> None:
    """Append event rows (data already JSON text) in one statement, in order, and notify."""
    if not events:
        return
    params: dict[str, Any] = {"q": queue, "t": now_ms,
                              "note": note(queue, any(e[0] == "delayed" for e in events))}
    values = []
    for i, (event, job_id, data) in enumerate(events):
        params.update({f"e{i}": event, f"j{i}": job_id, f"d{i}": data})
        values.append(f"(%(q)s, %(e{i})s, %(j{i})s, %(d{i})s, %(t)s)")
    conn.execute(f"WITH ev AS (INSERT INTO events (queue, event, job_id, data, ts_ms) VALUES"
                 f" {', '.join(values)} RETURNING 1) SELECT {NOTIFY}", params)
