"""Server-side functions of the PostgreSQL schema (PL/pgSQL), installed by migrations.

Only what must be one round trip lives here: :data:`COMPLETE_AND_FETCH` completes a job and
claims the next one in one statement, hence one transaction, the way Bull's
``moveToFinished`` Lua script does on Redis (either half alone too: a claim, a completion).
Each function mirrors, statement for statement, the Python moves of
:mod:`localq.pg.transitions` it replaces (same guards, rows, events, NOTIFY and row locks);
the tests run both on the same data and compare.

A migration's text is frozen once released: a change to a function is a new migration with
``CREATE OR REPLACE FUNCTION`` (see :data:`localq.pg.schema.MIGRATIONS`).

Refusals are raised with SQLSTATEs of class ``LQ`` (not used by PostgreSQL), never told
apart by their message: ``LQ404`` the job is gone; ``LQ409`` the job is not active (its
state in DETAIL); ``LQ423`` it is locked by another token; ``LQ300`` the next job is a
repeat occurrence, whose schedule must advance in Python (croniter): the statement is
rolled back whole and the caller runs the multi-statement path instead.
"""

from __future__ import annotations

__all__ = ["COMPLETE_AND_FETCH", "FALLBACK", "GONE", "NOT_ACTIVE", "OTHER_TOKEN"]

#: SQLSTATEs of the refusals (see the module docstring).
GONE = "LQ404"
NOT_ACTIVE = "LQ409"
OTHER_TOKEN = "LQ423"
FALLBACK = "LQ300"

#: ``complete_and_fetch(...) RETURNS SETOF jobs``: when ``p_id`` is not NULL,
#: move_to_completed (guard, result, event, NOTIFY, remove_on_complete); then, when
#: ``p_claim_token`` is not NULL, promote_due and claim (pause, names, SKIP LOCKED, ``active``
#: event while watched), or with ``p_drained`` a ``drained`` event (while watched) when
#: nothing is runnable. ``p_sync`` is the transaction's ``synchronous_commit`` (set locally:
#: no round trip of its own).
COMPLETE_AND_FETCH = r"""
CREATE OR REPLACE FUNCTION complete_and_fetch(
    p_id bigint, p_public text, p_token text, p_returnvalue text, p_now bigint,
    p_queue text, p_claim_token text, p_owner text, p_expires bigint, p_names text[],
    p_wall bigint, p_sync text, p_drained boolean)
RETURNS SETOF jobs
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_queue   text;
    v_opts    text;
    v_state   text;
    v_policy  jsonb;
    v_next    bigint;
    v_nopts   text;
    v_count   bigint;
    v_row     jobs;
BEGIN
    PERFORM set_config('synchronous_commit', p_sync, true);
    IF p_id IS NOT NULL THEN
        -- move_to_completed: one guarded UPDATE; on no match, lock the row and say why.
        UPDATE jobs SET state = 'completed', returnvalue = p_returnvalue,
               finished_on_ms = p_now, lock_token = NULL, lock_owner = NULL,
               lock_expires_ms = NULL
         WHERE id = p_id AND state = 'active' AND (p_token IS NULL OR lock_token = p_token)
        RETURNING queue, opts INTO v_queue, v_opts;
        IF NOT FOUND THEN
            SELECT state INTO v_state FROM jobs WHERE id = p_id FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'localq: job % is gone', p_public USING ERRCODE = 'LQ404';
            ELSIF v_state <> 'active' THEN
                RAISE EXCEPTION 'localq: job % is %', p_public, v_state
                    USING ERRCODE = 'LQ409', DETAIL = v_state;
            END IF;
            RAISE EXCEPTION 'localq: job % is locked by another token', p_public
                USING ERRCODE = 'LQ423';
        END IF;
        INSERT INTO events (queue, event, job_id, data, ts_ms)
        VALUES (v_queue, 'completed', p_public, p_returnvalue, p_now);
        PERFORM pg_notify('localq_' || current_schema(), 'c:' || v_queue);

        -- remove_on_complete (transitions._retain): true, a count, or {age, count}.
        IF v_opts <> '{}' THEN
            v_policy := v_opts::jsonb -> 'remove_on_complete';
            IF v_policy = 'true'::jsonb THEN
                DELETE FROM jobs WHERE id = p_id;
            ELSIF jsonb_typeof(v_policy) IN ('number', 'object') THEN
                IF jsonb_typeof(v_policy -> 'age') = 'number' THEN
                    DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = v_queue
                        AND state = 'completed' AND finished_on_ms < p_now
                            - trunc((v_policy ->> 'age')::float8 * 1000)::bigint
                        FOR UPDATE SKIP LOCKED);
                END IF;
                IF jsonb_typeof(v_policy) = 'number' THEN
                    v_count := trunc((v_policy #>> '{}')::numeric)::bigint;
                ELSIF jsonb_typeof(v_policy -> 'count') = 'number' THEN
                    v_count := trunc((v_policy ->> 'count')::numeric)::bigint;
                END IF;
                IF v_count IS NOT NULL THEN
                    DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = v_queue
                        AND state = 'completed' ORDER BY finished_on_ms DESC, id DESC
                        OFFSET v_count FOR UPDATE SKIP LOCKED);
                END IF;
            END IF;
        END IF;
    END IF;

    IF p_claim_token IS NULL THEN
        RETURN;
    END IF;

    -- promote_due: due delayed jobs to waiting, one position each in due order.
    WITH due AS (SELECT id, run_at_ms FROM jobs WHERE queue = p_queue AND state = 'delayed'
                  AND run_at_ms <= p_now ORDER BY run_at_ms, id LIMIT 1000
                  FOR UPDATE SKIP LOCKED),
         pos AS (SELECT id, nextval('job_seq') AS p FROM (SELECT id FROM due
                  ORDER BY run_at_ms, id) AS d),
         upd AS (UPDATE jobs j SET state = 'waiting', delay_ms = 0,
                  seq = (CASE WHEN j.opts::jsonb @> '{"lifo": true}' THEN -1 ELSE 1 END) * pos.p
                  FROM pos WHERE j.id = pos.id RETURNING j.id, j.job_id, pos.p),
         ev AS (INSERT INTO events (queue, event, job_id, data, ts_ms)
                  SELECT p_queue, 'waiting', coalesce(job_id, id::text), NULL, p_now
                  FROM (SELECT * FROM upd ORDER BY p) AS u)
    SELECT count(*) INTO v_count FROM upd;
    IF v_count > 0 THEN
        PERFORM pg_notify('localq_' || current_schema(), 'c:' || p_queue);
    END IF;

    -- claim: the next waiting job of a queue that is not paused.
    SELECT id, opts INTO v_next, v_nopts FROM jobs
     WHERE queue = p_queue AND state = 'waiting'
       AND (p_names IS NULL OR name = ANY(p_names))
       AND NOT EXISTS (SELECT 1 FROM queues WHERE name = p_queue AND paused = 1)
     ORDER BY priority, seq, id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        -- note_drained: the worker found nothing after having worked (only while watched,
        -- as on SQLite).
        IF p_drained AND EXISTS (SELECT 1 FROM queues WHERE name = p_queue
                                 AND watch_until_ms > p_wall) THEN
            INSERT INTO events (queue, event, job_id, data, ts_ms)
            VALUES (p_queue, 'drained', NULL, NULL, p_now);
            PERFORM pg_notify('localq_' || current_schema(), 'c:' || p_queue);
        END IF;
        RETURN;
    END IF;
    IF strpos(v_nopts, '"repeat":') > 0
       AND jsonb_typeof(v_nopts::jsonb -> 'repeat' -> 'key') = 'string' THEN
        RAISE EXCEPTION 'localq: the next job is a repeat occurrence' USING ERRCODE = 'LQ300';
    END IF;
    UPDATE jobs SET state = 'active', lock_token = p_claim_token, lock_owner = p_owner,
           lock_expires_ms = p_expires, processed_on_ms = p_now
     WHERE id = v_next RETURNING * INTO v_row;
    IF EXISTS (SELECT 1 FROM queues WHERE name = p_queue AND watch_until_ms > p_wall) THEN
        INSERT INTO events (queue, event, job_id, data, ts_ms)
        VALUES (p_queue, 'active', coalesce(v_row.job_id, v_row.id::text), NULL, p_now);
    END IF;
    RETURN NEXT v_row;
END
$fn$;
"""
