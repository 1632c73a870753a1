"""Every change of a job row: the state machine, and the moves that alone write ``jobs``.

State machine (Bull's, with ``paused`` as a queue flag and ``stalled`` as an event)::

     add(delay>0) ──────────► delayed ──── due (promote_due) / promote() ────► waiting
                                 ▲                                              │  ▲
        failed attempt, backoff>0┘                                 claim (lock) │  │ failed attempt, no backoff
                                                                                ▼  │ stalled (count ≤ max)
     add ─────────────────────────────────────────────────────────────────► active ─┘
                                                                           │    │
                                                  move_to_completed ◄──────┘    └──► move_to_failed (final)
                                                        │                                │
                                                    completed                         failed ── retry() ──► waiting
                                                                                         ▲
                                                      stalled more than max_stalled_count┘

| move                 | from               | to                       | guard                         | emits            |
|----------------------|--------------------|--------------------------|-------------------------------|------------------|
| add_job / add_jobs   | (new)              | waiting / delayed        | custom id unused              | waiting (watched) / delayed |
| promote_due          | delayed            | waiting                  | run_at <= now                 | waiting          |
| claim                | waiting            | active                   | not paused; names; rate limit | active (watched) |
| extend_locks         | active             | active                   | token                         | -                |
| move_to_completed    | active             | completed (or removed)   | token (unless ignore_lock)    | completed        |
| move_to_failed       | active             | delayed/waiting/failed   | token (unless ignore_lock)    | failed (+delayed/waiting) |
| recover_stalled      | active             | waiting (head) / failed  | lock expired or owner dead    | stalled (+waiting/failed) |
| release              | active             | waiting (head)           | token                         | waiting          |
| retry / retry_failed | failed             | waiting                  | state                         | waiting          |
| promote              | delayed            | waiting                  | state                         | waiting          |
| set_progress/add_log/update_data | any    | (same)                   | token, or no live lock        | progress (set_progress) |
| remove               | not locked         | (gone)                   | no live lock                  | removed          |
| clean / empty / delete_queue | per state  | (gone)                   | active: unlocked only         | -                |
| create_occurrence    | (new)              | delayed (waiting if due) | occurrence id unused          | as add_job       |
| remove_occurrences   | waiting / delayed  | (gone)                   | the schedule's key            | removed          |
| pause / resume       | queue flag         |                          | -                             | paused/resumed   |
| note_drained         | (none)             |                          | -                             | drained (watched)|
| register_worker / unregister_workers | ``workers`` rows |            | -                             | -                |
| watch_queue / trim_events | ``queues`` / ``events`` rows |       | -                             | -                |

Each function runs inside the caller's ``BEGIN IMMEDIATE`` transaction (``Store.write``), takes
the time as ``now_ms`` (the caller reads the clock), never sleeps, logs or calls user code, and
writes the global event row in the same transaction (outbox). Moves out of ``active`` match the
row's state and lock token; when nothing matched, the row is looked up and the precise error
raised (Bull's -2/-3 codes, typed). SQL uses named parameters and fixed table names only.

Repeat occurrences are ordinary rows with the deterministic id ``repeat:<hash of key>:<slot>``
(:func:`occurrence_id`), so two schedulers creating one slot create one job; the schedules
(the ``repeats`` table) are kept by :mod:`localq.repeats`, in the same transactions. The
claim of an occurrence also creates its schedule's next one when due (as Bull does when a
repetition starts). An occurrence whose schedule was removed while it ran is not run again:
a failed attempt is final and a stalled one fails (a waiting or delayed one would have been
removed with the schedule).

Where the moves live (this module re-exports them; :mod:`localq.moves` says more):

- :mod:`localq.moves.adding`: ``add_job``, ``add_jobs``, ``next_rowid``;
- :mod:`localq.moves.claiming`: ``promote_due``, ``claim``, ``pick_statement``,
  ``lock_for_claim``, ``extend_locks``;
- :mod:`localq.moves.finishing`: ``move_to_completed``, ``move_to_failed``,
  ``recover_stalled``, ``release``;
- :mod:`localq.moves.job_admin`: ``set_progress``, ``add_log``, ``update_data``, ``retry``,
  ``retry_failed``, ``promote``, ``remove``;
- :mod:`localq.moves.queue_admin`: ``clean``, ``empty``, ``delete_queue``, ``pause``,
  ``resume``, ``trim_events``, ``note_drained``, ``register_worker``, ``unregister_workers``;
- :mod:`localq.moves.occurrences`: ``create_occurrence``, ``remove_occurrences``,
  ``occurrence_id``;
- shared: :mod:`localq.moves.rows` (``JOB_COLUMNS``, ``STATE_IS``, ``public_id``,
  ``auto_rowid``, ``rowid_of``, the id sequence) and :mod:`localq.moves.outbox` (``emit``,
  ``watch_queue``).
"""

from __future__ import annotations

from .moves.adding import add_job, add_jobs, next_rowid
from .moves.claiming import claim, extend_locks, lock_for_claim, pick_statement, promote_due
from .moves.finishing import (REMOVED_SCHEDULE_REASON, STALLED_REASON, move_to_completed,
                              move_to_failed, recover_stalled, release)
from .moves.job_admin import (add_log, promote, remove, retry, retry_failed, set_progress,
                              update_data)
from .moves.occurrences import create_occurrence, occurrence_id, remove_occurrences
from .moves.outbox import emit, watch_queue
from .moves.queue_admin import (clean, delete_queue, empty, note_drained, pause,
                                register_worker, resume, trim_events, unregister_workers)
from .moves.rows import JOB_COLUMNS, STATE_IS, auto_rowid, public_id, rowid_of

__all__ = [
    "JOB_COLUMNS", "REMOVED_SCHEDULE_REASON", "STALLED_REASON", "STATE_IS", "add_job", "add_jobs",
    "add_log", "auto_rowid", "claim", "clean", "create_occurrence", "delete_queue", "emit",
    "empty", "extend_locks", "lock_for_claim", "move_to_completed", "move_to_failed",
    "next_rowid", "note_drained", "occurrence_id", "pause", "pick_statement", "promote",
    "promote_due", "public_id", "recover_stalled", "register_worker", "release", "remove",
    "remove_occurrences", "resume", "retry", "retry_failed", "rowid_of", "set_progress",
    "trim_events", "unregister_workers", "update_data", "watch_queue",
]
