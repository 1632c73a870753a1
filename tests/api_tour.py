"""One pass over every Queue and Job call that takes user text, for the tests that watch what
reaches the database (the SQLite tracer in test_security, the PostgreSQL cursor recorder in
test_pg_reliability): every value must arrive as a bound parameter."""

from __future__ import annotations

import localq
from localq.testing import FakeClock

#: A marker the statements' text must never contain.
MARK = "ZQXJ"
#: Quotes, comment starts, and the placeholders of SQLite, psycopg and PostgreSQL.
HOSTILE = f"'; DROP TABLE jobs;-- \" {MARK} ) OR 1=1 /* $1 %s %(x)s :x ?"


def tour(q: localq.Queue, clock: FakeClock) -> None:
    """Add, claim, update, fail, retry, complete, list, count, clean, pause, empty and
    obliterate, with :data:`HOSTILE` in every text the calls take."""
    q.add({HOSTILE: HOSTILE}, name=f"n {HOSTILE}", job_id=f"id {HOSTILE}", attempts=2,
          backoff={"type": "fixed", "delay": 1})
    q.add_bulk([{"name": HOSTILE, "data": [HOSTILE]}, {"data": HOSTILE, "opts": {"delay": 5}}])
    job = q.get_job(f"id {HOSTILE}")
    assert job is not None and job.data == {HOSTILE: HOSTILE}
    active = q.get_next_job()
    assert active is not None and active.id == f"id {HOSTILE}"
    active.progress({"p": HOSTILE})
    active.log(HOSTILE)
    active.update({"u": HOSTILE})
    active.move_to_failed(Exception(HOSTILE))
    clock.advance(2)
    again = q.get_next_job()
    assert again is not None
    again.move_to_completed({"r": HOSTILE}, not_fetch=True)
    assert q.get_job_logs(f"id {HOSTILE}")["logs"] == [HOSTILE]
    q.get_jobs(["waiting", "delayed", "completed", "failed"])
    q.get_job_counts()
    q.clean(0, "completed")
    q.pause()
    q.resume()
    q.retry_jobs()
    q.empty()
    q.obliterate(force=True)
