"""Any text a user can store comes back verbatim: SQL-looking strings, quotes, NUL, bidi
marks, emoji, combining characters, 10,000 characters. Through every place text is stored:
data (values and keys), job name, custom job id, log rows, progress, updated data, the
return value and the failure reason.

On both backends (``db_path``). Where they differ, the difference is the contract: a
PostgreSQL text column cannot hold NUL, so there a name, job id or log row holding NUL is
refused with a ConfigError naming it (nothing stored), and a failure reason keeps it as the
escape ``\\x00`` (see localq/text.py). JSON payloads hold NUL on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import localq
from localq.testing import FakeClock, run_until_idle

Snapshot = Callable[[localq.Queue], dict[str, list[Any]]]

HOSTILE = [
    "'; DROP TABLE jobs;--",
    "\" OR 1=1 --",
    "Robert'); DELETE FROM events; --",
    "a\x00b",
    "\x00",
    "\u202eevil\u202c",          # right-to-left override
    "\u200f\u200e\u2066x\u2069",  # RTL/LTR marks, isolates
    "🧨💥👩‍👩‍👧‍👦",               # emoji, a ZWJ sequence
    "e\u0301\u0301\u0301",        # combining marks
    "\ufeffbom",
    "line\nbreak\r\n\ttab",
    "%s %d {0} $1 ?1 :name @p",  # placeholders of every SQL and format dialect
    "%(name)s %% $$ E'\\x00' U&'\\0000'",  # psycopg's placeholders, PostgreSQL's quoting
    "\\u0000 \\\\u0000",          # a JSON NUL escape, as text
    "\\' \\\" \\\\",
    "x" * 10_000,
]

# Text without lone surrogates (they are not valid Unicode, and refused: see the bad-input
# properties); hypothesis' text() never makes them.
text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=60),
                 st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30))
# A job id must not be all digits (reserved for automatic ids) and is at most 400 chars.
job_ids = text.filter(lambda s: 0 < len(s) <= 400 and not s.isdigit())
names = text.filter(lambda s: 0 < len(s) <= 200)


@pytest.fixture
def queue(db_path: str) -> Iterator[localq.Queue]:
    """One queue for every example of a test, emptied by each example."""
    with localq.Queue("q", path=db_path, clock=FakeClock(1767225600.0)) as q:
        yield q


def _refused(q: localq.Queue, snapshot: Snapshot, what: str, call: Callable[[], Any]) -> None:
    """Check that *call* is refused with a ConfigError naming *what* and NUL, storing nothing."""
    before = snapshot(q)
    with pytest.raises(localq.ConfigError, match="NUL") as caught:
        call()
    assert what in str(caught.value), str(caught.value)
    assert snapshot(q) == before


def _text_column(q: localq.Queue, value: str, what: str, snapshot: Snapshot,
                 call: Callable[[str], Any]) -> str:
    """Return *value* if the queue's database stores it in a text column; on PostgreSQL,
    with NUL, first check that *call* refuses it, and return it without NUL."""
    if q._backend.nul_in_text or "\x00" not in value:
        return value
    _refused(q, snapshot, what, lambda: call(value))
    return value.replace("\x00", "?")


@given(value=text, key=text, name=names, job_id=job_ids, other=text)
@example(value="'; DROP TABLE jobs;--", key="\x00", name="\u202e", job_id="a\x00b",
         other="x" * 10_000)
@example(value="\x00", key="k", name="n\x00", job_id="j", other="\x00")
def test_any_text_round_trips_through_every_stored_field(
    queue: localq.Queue, snapshot: Snapshot, value: str, key: str, name: str, job_id: str,
    other: str
) -> None:
    queue.obliterate(force=True)
    data = {key: value, "list": [value, other], "nested": {other: key}}
    name = _text_column(queue, name, "name", snapshot,
                        lambda n: queue.add(data, name=n, job_id=job_id.replace("\x00", "?")))
    job_id = _text_column(queue, job_id, "job_id", snapshot,
                          lambda j: queue.add(data, name=name, job_id=j))
    added = queue.add(data, name=name, job_id=job_id)
    assert (added.id, added.name, added.data) == (job_id, name, data)

    job = queue.get_job(job_id)
    assert job is not None and (job.id, job.name, job.data) == (job_id, name, data)
    assert [j.id for j in queue.get_waiting()] == [job_id]

    active = queue.get_next_job()
    assert active is not None and active.id == job_id
    rows = [_text_column(queue, row, "log row", snapshot, active.log) for row in (value, other)]
    assert active.log(rows[0]) == 1 and active.log(rows[1]) == 2
    active.progress({"p": value})
    active.update({"u": other, key: value})
    active.move_to_completed({"r": value, key: other}, not_fetch=True)

    done = queue.get_job(job_id)
    assert done is not None
    assert done.data == {"u": other, key: value}
    assert done.progress() == {"p": value}
    assert done.returnvalue == {"r": value, key: other}
    assert done.finished(timeout=0) == {"r": value, key: other}
    assert queue.get_job_logs(job_id) == {"logs": rows, "count": 2}


@given(reason=text.filter(bool))
def test_a_failure_reason_round_trips(queue: localq.Queue, reason: str) -> None:
    """... but for NUL on PostgreSQL, written ``\\x00`` there: a failure is never refused."""
    queue.obliterate(force=True)
    queue.add({"n": 1}, job_id="failing")
    job = queue.get_next_job()
    assert job is not None
    job.move_to_failed(reason)
    stored = reason if queue._backend.nul_in_text else reason.replace("\x00", "\\x00")
    assert job.failed_reason == stored
    failed = queue.get_job("failing")
    assert failed is not None and failed.failed_reason == stored
    with pytest.raises(localq.JobFailed) as caught:
        failed.finished(timeout=0)
    assert caught.value.reason == stored


@given(value=text)
def test_a_plain_string_as_data_or_result_round_trips(queue: localq.Queue, value: str) -> None:
    queue.obliterate(force=True)
    queue.add(value, job_id="plain")
    job = queue.get_next_job()
    assert job is not None and job.data == value
    job.move_to_completed(value, not_fetch=True)
    assert queue.get_job("plain").returnvalue == value  # type: ignore[union-attr]


# --- text no database can store as text, and what holds it ------------------------------------

SURROGATE = "bad \udc80 byte"   # what os.fsdecode() makes of a non-UTF-8 file name


def test_an_exception_with_a_lone_surrogate_still_fails_its_job(queue: localq.Queue) -> None:
    """A handler's exception message (a file name decoded with surrogateescape) is written
    with the surrogate escaped: the failure is recorded, not lost with the job left active;
    the stack trace, stored as JSON, keeps the character."""
    queue.add({"n": 1}, job_id="j")

    def handler(job: localq.Job) -> None:
        raise FileNotFoundError(SURROGATE)

    assert run_until_idle(queue, handler) == 1
    failed = queue.get_job("j")
    assert failed is not None and failed.get_state() == "failed"
    assert failed.failed_reason == "bad \\udc80 byte"
    assert SURROGATE in failed.stacktrace[0]


@pytest.mark.parametrize("lookup", ["\x00", "a\x00b", SURROGATE])
def test_looking_up_an_id_no_job_can_have_finds_nothing(queue: localq.Queue,
                                                         lookup: str) -> None:
    """A NUL (storable on SQLite only) or a lone surrogate (on neither) finds no job, no
    log and no schedule instead of a driver error; on SQLite a NUL id is found."""
    queue.add({"n": 1}, job_id="a")
    found = queue._backend.nul_in_text and lookup != SURROGATE
    if found:
        queue.add({"n": 2}, job_id=lookup)
    assert (queue.get_job(lookup) is not None) == found
    if not found:
        with pytest.raises(localq.JobNotFound):
            queue.get_job_logs(lookup)
    assert queue.remove_repeatable_by_key(lookup) is False
    assert queue.count() == 1 + found


@pytest.mark.parametrize("where", ["group", "elsewhere"])
def test_data_holding_nul_never_stops_a_group_limited_queue(
    db_path: str, clock: FakeClock, where: str
) -> None:
    """The limiter reads each job's group from its data: a NUL there, or anywhere in the data
    (PostgreSQL's JSON parser refuses the whole document), must not fail the claims."""
    with localq.Queue("lim", path=db_path, clock=clock,
                      limiter={"max": 1, "duration": 10, "group_key": "customer"}) as q:
        if where == "group":
            groups = ["a\x00", "a\x00", "b", "\\u0000"]   # the last: an escape, as text
            jobs = [q.add({"customer": g, "i": i}) for i, g in enumerate(groups)]
        else:
            groups = ["a", "a", "b", "c"]
            jobs = [q.add({"customer": g, "note": "x\x00y"}) for g in groups]
        ran = []
        assert run_until_idle(q, lambda job: ran.append(job.id)) == 3   # one per group
        assert ran == [jobs[0].id, jobs[2].id, jobs[3].id]
        clock.advance(10.001)
        assert run_until_idle(q, lambda job: ran.append(job.id)) == 1
        assert ran[-1] == jobs[1].id
