"""The plain-psycopg baseline of :mod:`benchmarks.pg_bench`: the same operations, no library.

One table in a schema of its own per configuration::

    jobs(id bigserial PRIMARY KEY, data text, status text DEFAULT 'waiting')

with a partial index on ``id WHERE status = 'waiting'`` so a claim finds the oldest waiting
job without scanning the finished ones (what any hand-written queue would add).

* add: one ``INSERT`` in its own transaction (autocommit);
* add_bulk: ``executemany`` of the ``INSERT`` in one transaction (psycopg 3 sends it as a
  pipeline: one round trip per batch, not per row);
* claim: ``UPDATE jobs SET status = 'active' WHERE id = (SELECT id ... FOR UPDATE SKIP LOCKED
  LIMIT 1) RETURNING id, data`` in one transaction, then ack ``UPDATE ... SET status =
  'done'`` in a second one;
* ack_and_claim: the ack of one job and the claim of the next in one statement (a
  data-modifying CTE), hence one transaction: what a worker's complete-and-fetch does.

``synchronous_commit`` is set once per session: ``on`` or ``off``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.jobs (
    id bigserial PRIMARY KEY,
    data text NOT NULL,
    status text NOT NULL DEFAULT 'waiting'
);
CREATE INDEX IF NOT EXISTS jobs_waiting ON {s}.jobs (id) WHERE status = 'waiting';
"""


class Baseline:
    """One autocommit session on the baseline table of schema *schema*.

    :param url: a libpq URL (no localq parameters).
    :param schema: the schema of this configuration (created if missing).
    :param sync: ``"on"`` or ``"off"``: the session's ``synchronous_commit``.
    """

    def __init__(self, url: str, schema: str, sync: str) -> None:
        self.conn: psycopg.Connection[Any] = psycopg.connect(url, autocommit=True)
        # The DDL runs once at a time: two processes creating the same table race.
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(7261)")
            self.conn.execute(_DDL.format(s=schema))
        self.conn.execute("SELECT set_config('synchronous_commit', %s, false)", (sync,))
        self._insert = f"INSERT INTO {schema}.jobs (data) VALUES (%s)"
        self._claim = (f"UPDATE {schema}.jobs SET status = 'active' WHERE id = ("
                       f"SELECT id FROM {schema}.jobs WHERE status = 'waiting' ORDER BY id"
                       " FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, data")
        self._ack = f"UPDATE {schema}.jobs SET status = 'done' WHERE id = %s"
        self._ack_and_claim = (f"WITH ack AS ({self._ack.replace('%s', '%(id)s')})"
                               f" {self._claim}")

    def add(self, data: str) -> None:
        """Insert one job, committed on return."""
        self.conn.execute(self._insert, (data,))

    def add_bulk(self, items: Sequence[str]) -> None:
        """Insert *items* in one transaction (executemany, pipelined)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self._insert, [(d,) for d in items])

    def claim(self) -> tuple[int, str] | None:
        """Take the oldest waiting job (one transaction), or None."""
        row = self.conn.execute(self._claim).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def ack(self, job_id: int) -> None:
        """Mark a claimed job done (a second transaction)."""
        self.conn.execute(self._ack, (job_id,))

    def ack_and_claim(self, job_id: int) -> tuple[int, str] | None:
        """Mark a claimed job done and take the next one, in one statement."""
        row = self.conn.execute(self._ack_and_claim, {"id": job_id}).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def close(self) -> None:
        """Close the session."""
        self.conn.close()
