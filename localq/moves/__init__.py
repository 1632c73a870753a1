"""The SQLite job moves, one module per kind of move, behind :mod:`localq.transitions`.

Callers (the Queue, the repeat schedules, the queries) use :mod:`localq.transitions`, which
re-exports these modules' functions and whose docstring holds the state machine; the
PostgreSQL twin, :mod:`localq.pg.transitions`, has the same functions. These modules and
that twin are the only writers of job rows (``tests/unit/test_layering.py`` checks it).

- :mod:`.rows`: the job row's columns, ids and queue positions (the id sequence);
- :mod:`.outbox`: the global event rows written inside each move's transaction;
- :mod:`.adding`: new jobs; :mod:`.claiming`: taking jobs and keeping their locks;
- :mod:`.finishing`: moves out of ``active`` (completed, failed, stalled, released);
- :mod:`.job_admin`: writes to one job outside its run (progress, logs, data, retry,
  promote, remove); :mod:`.queue_admin`: a whole queue (clean, empty, delete, pause,
  resume) and housekeeping (events, drained, workers);
- :mod:`.occurrences`: the jobs of repeat schedules.
"""

from __future__ import annotations
