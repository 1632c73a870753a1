"""The PostgreSQL schema: the SQLite tables of :mod:`localq.schema`, in a schema of their own.

Every localq table lives in one PostgreSQL schema (``localq`` unless the URL says
``?schema=name``), so a database that holds other applications' tables is fine. The schema is
marked and versioned by the ``localq_meta`` table (``app = 'localq'``, ``schema_version``);
a newer version is refused, as ``PRAGMA user_version`` is on SQLite. Migrations run in order,
in one transaction, under an advisory lock (PostgreSQL DDL is transactional), see
:meth:`localq.pg.store.PgStore`.

Differences from the SQLite schema, each for a reason:

* ``jobs.id`` is a ``BIGINT`` identity: a sequence never hands out a number twice, so no
  high-water mark is needed (ids of removed jobs are never reused).
* Queue positions (``seq``) come from their own sequence ``job_seq`` so that the job ids of
  plain adds stay consecutive; a job that re-enters ``waiting`` takes a fresh position.
* ``data``, ``opts``, ``progress``, ``returnvalue`` and ``stacktrace`` are ``text``, not
  ``jsonb``: jsonb rewrites numbers (``1e+100`` comes back as an int) and reorders keys, and
  refuses ``\\u0000``, while localq promises exact round trips of strict JSON.
* ``events.xid`` records the writing transaction (``pg_current_xact_id()``): readers page by
  ``(xid, id)`` below the snapshot's xmin, because ids commit out of order (see
  :func:`localq.pg.queries.events_after`).
* No index covers ``lock_expires_ms``, ``progress`` or ``data``: lock renewals, progress and
  updates are then HOT updates (no new index entries); ``fillfactor = 80`` leaves room for
  them on the page. Per-table autovacuum settings keep the churn of a queue table cleaned.
* One server-side function (PL/pgSQL, :mod:`localq.pg.plpgsql`, version 2) completes a job
  and claims the next in one statement: a worker's step is one round trip, not five.
"""

from __future__ import annotations

from .plpgsql import COMPLETE_AND_FETCH

__all__ = ["ADVISORY_NAMESPACE", "APP", "MIGRATIONS", "SCHEMA_VERSION"]

#: First key of every advisory lock localq takes ("LQLQ"), the second is per use.
ADVISORY_NAMESPACE = 0x4C514C51

#: The ``app`` value in ``localq_meta`` that marks a schema as localq's.
APP = "localq"

_V1 = """
CREATE TABLE localq_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE SEQUENCE job_seq AS bigint;

CREATE TABLE queues (
    name           text PRIMARY KEY,
    -- 0/1 as on SQLite, so that the shared layers' reads (paused = 1) run on both
    paused         smallint NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    -- wall-clock ms until which some process listens to global events of this queue
    watch_until_ms bigint  NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue           text    NOT NULL,
    job_id          text,              -- custom id; NULL means the id is id::text
    name            text    NOT NULL,
    data            text    NOT NULL,
    opts            text    NOT NULL,  -- non-default options as JSON
    state           text    NOT NULL
        CHECK (state IN ('waiting', 'delayed', 'active', 'completed', 'failed')),
    priority        bigint  NOT NULL,  -- 1 highest; 2**31 for "no priority"
    seq             bigint  NOT NULL,  -- FIFO order; negative for LIFO
    timestamp_ms    bigint  NOT NULL,
    delay_ms        bigint  NOT NULL DEFAULT 0,
    run_at_ms       bigint  NOT NULL DEFAULT 0,
    attempts_made   integer NOT NULL DEFAULT 0,
    stalled_count   integer NOT NULL DEFAULT 0,
    progress        text,
    returnvalue     text,
    failed_reason   text,
    stacktrace      text,
    processed_on_ms bigint,
    finished_on_ms  bigint,
    lock_token      text,
    lock_owner      text,
    lock_expires_ms bigint,
    repeat_key      text
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX jobs_waiting  ON jobs (queue, priority, seq, id) WHERE state = 'waiting';
CREATE INDEX jobs_delayed  ON jobs (queue, run_at_ms, id)     WHERE state = 'delayed';
CREATE INDEX jobs_active   ON jobs (queue, lock_owner)        WHERE state = 'active';
CREATE INDEX jobs_finished ON jobs (queue, state, finished_on_ms, id)
    WHERE state IN ('completed', 'failed');
CREATE UNIQUE INDEX jobs_custom_id ON jobs (queue, job_id) WHERE job_id IS NOT NULL;

CREATE TABLE job_logs (
    id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    row text   NOT NULL
) WITH (autovacuum_vacuum_insert_scale_factor = 0.01);
CREATE INDEX job_logs_job ON job_logs (job, id);

-- Append-only; read by (xid, id) cursor below the snapshot xmin. Trimmed from the oldest
-- end only.
CREATE TABLE events (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid    xid8   NOT NULL DEFAULT pg_current_xact_id(),
    queue  text   NOT NULL,
    event  text   NOT NULL,
    job_id text,
    data   text,
    ts_ms  bigint NOT NULL
) WITH (autovacuum_vacuum_insert_scale_factor = 0.01);
CREATE INDEX events_cursor ON events (queue, xid, id);

CREATE TABLE workers (
    id          text PRIMARY KEY,
    queue       text    NOT NULL,
    pid         integer NOT NULL,
    host        text    NOT NULL,
    started_ms  bigint  NOT NULL,
    concurrency integer NOT NULL,
    lease       text    NOT NULL       -- the lease id whose advisory lock proves it alive
);

CREATE TABLE repeats (
    queue    text    NOT NULL,
    key      text    NOT NULL,        -- RepeatSpec.key(name)
    name     text    NOT NULL,
    spec     text    NOT NULL,        -- RepeatSpec as JSON
    template text    NOT NULL,        -- {"data": text, "opts": {...}, "priority": p}
    slot_ms  bigint  NOT NULL,        -- slot of the newest occurrence created
    next_ms  bigint,                  -- when the scheduler acts next; NULL once ended
    count    integer NOT NULL,        -- occurrences created so far
    PRIMARY KEY (queue, key)
);

CREATE TABLE rate_starts (
    queue text   NOT NULL,
    grp   text   NOT NULL,
    ts_ms bigint NOT NULL
);
CREATE INDEX rate_starts_window ON rate_starts (queue, grp, ts_ms);
"""

#: Version 2: the server-side function that completes a job and claims the next one in one
#: round trip (:mod:`localq.pg.plpgsql`); a version 1 schema gains it on first open.
_V2 = COMPLETE_AND_FETCH

#: Ordered migrations: MIGRATIONS[i] takes schema_version i to i + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2)

#: The schema version this code writes and reads.
SCHEMA_VERSION = len(MIGRATIONS)
