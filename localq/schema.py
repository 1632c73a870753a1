"""The database schema, its marker and its migrations.

A localq file is marked by ``PRAGMA application_id`` (:data:`APPLICATION_ID`) and versioned by
``PRAGMA user_version``. A file with another application id is not ours and is never written;
a file with a newer version is refused. Migrations run in order, in one transaction.

Hot-path choices (DESIGN.md "Where the time goes"): the integer rowid is the internal job id
(custom ids live in a partial unique index that costs nothing for ordinary adds); every
secondary index is partial, so a job only pays for the index of the state it is in; no
counter row is touched per add.
"""

from __future__ import annotations

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "STATE_CHECK", "STATE_CHECK_IN"]

#: "LQ01" as a big-endian int: marks a file as a localq database.
APPLICATION_ID = 0x4C513031

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- Job ids are rowids; the high-water mark stops SQLite from reusing the id of a deleted
-- newest job (an old id coming back would confuse job.finished() and event readers).
INSERT INTO meta (key, value) VALUES ('id_hwm', 0);

CREATE TABLE queues (
    name           TEXT PRIMARY KEY,
    paused         INTEGER NOT NULL DEFAULT 0,
    -- wall-clock ms until which some process listens to global events of this queue
    watch_until_ms INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    queue           TEXT    NOT NULL,
    job_id          TEXT,              -- custom id; NULL means the id is str(id)
    name            TEXT    NOT NULL,
    data            TEXT    NOT NULL,
    opts            TEXT    NOT NULL,  -- non-default options as JSON
    state           TEXT    NOT NULL CHECK (state IN ('waiting','delayed','active','completed','failed')),
    priority        INTEGER NOT NULL,  -- 1 highest; 2**31 for "no priority"
    seq             INTEGER NOT NULL,  -- FIFO order; negative for LIFO
    timestamp_ms    INTEGER NOT NULL,
    delay_ms        INTEGER NOT NULL DEFAULT 0,
    run_at_ms       INTEGER NOT NULL DEFAULT 0,
    attempts_made   INTEGER NOT NULL DEFAULT 0,
    stalled_count   INTEGER NOT NULL DEFAULT 0,
    progress        TEXT,
    returnvalue     TEXT,
    failed_reason   TEXT,
    stacktrace      TEXT,
    processed_on_ms INTEGER,
    finished_on_ms  INTEGER,
    lock_token      TEXT,
    lock_owner      TEXT,
    lock_expires_ms INTEGER,
    repeat_key      TEXT
);
CREATE INDEX jobs_waiting  ON jobs (queue, priority, seq) WHERE state = 'waiting';
CREATE INDEX jobs_delayed  ON jobs (queue, run_at_ms)     WHERE state = 'delayed';
CREATE INDEX jobs_active   ON jobs (queue, lock_expires_ms) WHERE state = 'active';
CREATE INDEX jobs_finished ON jobs (queue, state, finished_on_ms)
    WHERE state IN ('completed', 'failed');
CREATE UNIQUE INDEX jobs_custom_id ON jobs (queue, job_id) WHERE job_id IS NOT NULL;

CREATE TABLE job_logs (
    id  INTEGER PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    row TEXT    NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job);

-- Append-only; read by cursor (id > last seen). Trimmed from the oldest end only, so the
-- newest id is never reused and no reader can miss an event.
CREATE TABLE events (
    id     INTEGER PRIMARY KEY,
    queue  TEXT    NOT NULL,
    event  TEXT    NOT NULL,
    job_id TEXT,
    data   TEXT,
    ts_ms  INTEGER NOT NULL
);

CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    queue       TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT    NOT NULL,
    started_ms  INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    lease       TEXT    NOT NULL       -- the process lease id whose lock file proves it alive
);

CREATE TABLE repeats (
    queue    TEXT    NOT NULL,
    key      TEXT    NOT NULL,        -- RepeatSpec.key(name)
    name     TEXT    NOT NULL,
    spec     TEXT    NOT NULL,        -- RepeatSpec as JSON
    template TEXT    NOT NULL,        -- {"data": text, "opts": {...}, "priority": p} of each occurrence
    slot_ms  INTEGER NOT NULL,        -- slot of the newest occurrence created (never created twice)
    next_ms  INTEGER,                 -- when the scheduler looks next (>= slot_ms); NULL once ended
    count    INTEGER NOT NULL,        -- occurrences created so far (compared with the limit)
    PRIMARY KEY (queue, key)
);

CREATE TABLE rate_starts (
    queue TEXT    NOT NULL,
    grp   TEXT    NOT NULL,
    ts_ms INTEGER NOT NULL
);
CREATE INDEX rate_starts_window ON rate_starts (queue, grp, ts_ms);
"""

# SQLite uses a partial index only when the query's WHERE names the index's condition
# exactly: "state = 'completed'" does not imply "state IN ('completed', 'failed')" to its
# prover, so counting, listing, cleaning and retaining finished jobs scanned the whole table
# (get_job_counts on a million waiting jobs: 300 ms). One index per finished state matches
# the "state = '<state>'" every statement spells out, and keeps ORDER BY finished_on_ms free
# of a sort.
_V2 = """
DROP INDEX jobs_finished;
CREATE INDEX jobs_completed ON jobs (queue, finished_on_ms) WHERE state = 'completed';
CREATE INDEX jobs_failed    ON jobs (queue, finished_on_ms) WHERE state = 'failed';
"""

#: Ordered migrations: MIGRATIONS[i] takes user_version i to i + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2)

#: The schema version this code writes and reads.
SCHEMA_VERSION = len(MIGRATIONS)

#: The jobs table's state rule as version 1 wrote it, and the same rule spelled with OR.
#: SQLite checks ``IN`` over five values by building a temporary b-tree at every statement
#: that writes a job row (an add, each row of an add_bulk, a claim, a completion: ~20k
#: instructions each, a tenth of an add), and compares the OR form in place. The rule is the
#: same, so the text is replaced where SQLite keeps it (lang_altertable.html "other kinds of
#: table schema changes": a CHECK constraint does not change what is stored), without a new
#: schema version: every localq version reads and writes the file either way.
STATE_CHECK_IN = "CHECK (state IN ('waiting','delayed','active','completed','failed'))"
STATE_CHECK = ("CHECK (state = 'waiting' OR state = 'delayed' OR state = 'active'"
               " OR state = 'completed' OR state = 'failed')")
