"""Bad input: every wrong option type or value, non-JSON data, bad names and paths.

Each case asserts the error type (a LocalqError that is also a ValueError / TypeError), that
the message names what to fix, and that nothing was stored (every table unchanged, or no file
created).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import localq
from localq import ConfigError, LocalqError, SerializationError
from localq.testing import FakeClock

import databases


class _Opaque:
    """An object with no useful methods and a stable repr (so pytest-xdist workers collect the
    same test ids: a plain object()'s repr holds its address)."""

    def __repr__(self) -> str:
        return "<object>"


Snap = Callable[[localq.Queue], dict[str, list[Any]]]


def expect(error: type, words: tuple[str, ...], call: Callable[[], Any]) -> LocalqError:
    """Run *call*, assert it raises *error* (a LocalqError) naming every one of *words*."""
    with pytest.raises(error) as info:
        call()
    err = info.value
    assert isinstance(err, LocalqError)
    assert isinstance(err, ValueError if error is ConfigError else TypeError)
    message = str(err)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return err


# -- add options ----------------------------------------------------------------------------

BAD_ADD_OPTIONS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"name": 5}, ("name",)),
    ({"name": ""}, ("name",)),
    ({"name": "x" * 201}, ("name", "200")),
    ({"priority": 0}, ("priority", ">= 1")),
    ({"priority": -3}, ("priority",)),
    ({"priority": 2**31}, ("priority",)),
    ({"priority": 1.5}, ("priority", "int")),
    ({"priority": "1"}, ("priority", "int")),
    ({"priority": True}, ("priority", "int")),
    ({"delay": -1}, ("delay", ">= 0")),
    ({"delay": math.nan}, ("delay", "finite")),
    ({"delay": math.inf}, ("delay", "finite")),
    ({"delay": "10"}, ("delay", "number")),
    ({"delay": None}, ("delay",)),
    ({"delay": True}, ("delay",)),
    ({"attempts": 0}, ("attempts", ">= 1")),
    ({"attempts": 2.0}, ("attempts", "int")),
    ({"attempts": "3"}, ("attempts",)),
    ({"attempts": False}, ("attempts",)),
    ({"backoff": "exponential"}, ("backoff",)),
    ({"backoff": -1}, ("backoff", ">= 0")),
    ({"backoff": True}, ("backoff",)),
    ({"backoff": {"type": 5, "delay": 1}}, ("backoff['type']",)),
    ({"backoff": {"delay": 1}}, ("backoff['type']",)),
    ({"backoff": {"type": "fixed", "delay": -2}}, ("backoff['delay']",)),
    ({"backoff": {"type": "fixed", "delay": "1"}}, ("backoff['delay']",)),
    ({"backoff": {"type": "fixed", "wait": 1}}, ("backoff", "wait")),
    ({"lifo": "yes"}, ("lifo",)),
    ({"lifo": 1}, ("lifo",)),
    ({"timeout": 0}, ("timeout", "> 0")),
    ({"timeout": -5}, ("timeout",)),
    ({"timeout": "5"}, ("timeout",)),
    ({"job_id": ""}, ("job_id",)),
    ({"job_id": "123"}, ("job_id", "digits")),
    ({"job_id": 7}, ("job_id", "digits")),
    ({"job_id": "x" * 401}, ("job_id",)),
    ({"job_id": ["a"]}, ("job_id", "str")),
    ({"job_id": True}, ("job_id",)),
    ({"remove_on_complete": -1}, ("remove_on_complete",)),
    ({"remove_on_complete": "yes"}, ("remove_on_complete",)),
    ({"remove_on_complete": 1.5}, ("remove_on_complete",)),
    ({"remove_on_complete": {}}, ("remove_on_complete",)),
    ({"remove_on_complete": {"keep": 1}}, ("remove_on_complete", "keep")),
    ({"remove_on_complete": {"age": -1}}, ("remove_on_complete['age']",)),
    ({"remove_on_fail": {"count": -1}}, ("remove_on_fail['count']",)),
    ({"remove_on_fail": {"count": "3"}}, ("remove_on_fail['count']",)),
    ({"remove_on_fail": None}, ("remove_on_fail",)),
    ({"stack_trace_limit": -1}, ("stack_trace_limit",)),
    ({"stack_trace_limit": 2.5}, ("stack_trace_limit",)),
    ({"timestamp": -1}, ("timestamp",)),
    ({"timestamp": "now"}, ("timestamp",)),
    ({"repeat": "every minute"}, ("repeat",)),
    ({"retries": 3}, ("unknown", "retries")),
    ({"jobId": "x"}, ("unknown", "jobId", "job_id")),
]


@pytest.mark.parametrize("options, words", BAD_ADD_OPTIONS,
                         ids=[f"{next(iter(o))}={o[next(iter(o))]!r}"[:40] for o, _ in
                              BAD_ADD_OPTIONS])
def test_add_with_a_bad_option_is_a_config_error_and_stores_nothing(
        queue: localq.Queue, snapshot: Snap, options: dict[str, Any],
        words: tuple[str, ...]) -> None:
    queue.add()
    before = snapshot(queue)
    expect(ConfigError, words, lambda: queue.add({"ok": 1}, **options))
    assert snapshot(queue) == before


@pytest.mark.parametrize("options, words", BAD_ADD_OPTIONS[:12] + BAD_ADD_OPTIONS[-2:])
def test_add_bulk_with_a_bad_option_stores_nothing(queue: localq.Queue, snapshot: Snap,
                                                   options: dict[str, Any],
                                                   words: tuple[str, ...]) -> None:
    before = snapshot(queue)
    entries: list[Any] = [{"data": 1}, {"data": 2, "opts": options}, {"data": 3}]
    expect(ConfigError, words[:1], lambda: queue.add_bulk(entries))
    assert snapshot(queue) == before


@pytest.mark.parametrize("jobs", [None, {"data": 1}, "jobs", b"x", 5, [5], [{"data": 1}, None],
                                  [{"data": 1, "delay": 5}], [{"opts": [1]}]])
def test_add_bulk_needs_a_list_of_entry_dicts(queue: localq.Queue, snapshot: Snap,
                                              jobs: Any) -> None:
    before = snapshot(queue)
    expect(ConfigError, ("add_bulk",), lambda: queue.add_bulk(jobs))
    assert snapshot(queue) == before


# -- non-JSON data --------------------------------------------------------------------------

class Opaque:
    """Not JSON."""


NOT_JSON: list[tuple[Any, tuple[str, ...]]] = [
    (math.nan, ("NaN",)),
    (math.inf, ("NaN and Infinity",)),
    ({"x": -math.inf}, ("Infinity",)),
    ({1, 2}, ("set",)),
    ({"s": frozenset()}, ("frozenset",)),
    (b"bytes", ("bytes",)),
    (bytearray(b"x"), ("bytearray",)),
    (Opaque(), ("Opaque",)),
    ({"when": _Opaque()}, ("_Opaque", "not JSON serializable")),
    (10 ** 5000, ("digits",)),
    ({(1, 2): "tuple key"}, ("keys",)),
    ({1: "int key"}, ("key", "int", "'1'", "str")),
    ({"outer": [{"ok": 1}, {None: "none key"}]}, ("key", "NoneType", "'null'")),
    ({"deep": {"deeper": {True: 1}}}, ("key", "bool", "'true'")),
    ({2.5: "float key"}, ("key", "float", "'2.5'")),
    ("lone \ud800 surrogate", ("surrogate",)),
    ({"k": ["\udfff"]}, ("surrogate",)),
    (complex(1, 2), ("complex",)),
]


def _deep(n: int) -> Any:
    value: Any = 0
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize("data, words", NOT_JSON, ids=[type(d).__name__ for d, _ in NOT_JSON])
def test_non_json_data_is_a_serialization_error_and_stores_nothing(
        queue: localq.Queue, snapshot: Snap, data: Any, words: tuple[str, ...]) -> None:
    before = snapshot(queue)
    err = expect(SerializationError, ("data",) + words, lambda: queue.add(data))
    assert snapshot(queue) == before
    assert "strict JSON" in str(err) or "surrogate" in str(err)


def test_deeply_nested_data_is_refused(queue: localq.Queue, snapshot: Snap) -> None:
    before = snapshot(queue)
    expect(SerializationError, ("nested too deeply",), lambda: queue.add(_deep(100_000)))
    assert snapshot(queue) == before


def test_big_but_representable_values_round_trip(queue: localq.Queue) -> None:
    data = {"big": 2**200, "neg": -(10**300), "tiny": 5e-324, "deep": _deep(200)}
    assert queue.get_job(queue.add(data).id).data == data


def test_oversized_payloads_are_refused_over_max_data_bytes(db_path: str, clock: FakeClock,
                                                            snapshot: Snap) -> None:
    with localq.Queue("q", path=db_path, clock=clock, settings={"max_data_bytes": 100}) as q:
        q.add("x" * 90)  # 92 bytes of JSON: fits
        job = q.get_next_job()
        assert job is not None
        before = snapshot(q)
        expect(SerializationError, ("101", "100", "max_data_bytes"), lambda: q.add("x" * 99))
        expect(SerializationError, ("max_data_bytes",),
               lambda: q.add_bulk([{"data": 1}, {"data": "é" * 60}]))
        expect(SerializationError, ("progress", "max_data_bytes"),
               lambda: job.progress({"p": "y" * 100}))
        expect(SerializationError, ("data",), lambda: job.update("z" * 200))
        expect(SerializationError, ("return value", "max_data_bytes"),
               lambda: job.move_to_completed("r" * 200))
        assert snapshot(q) == before
        assert job.get_state() == "active"


def test_non_json_results_and_progress_are_refused(queue: localq.Queue) -> None:
    queue.add()
    job = queue.get_next_job()
    assert job is not None
    expect(SerializationError, ("return value",), lambda: job.move_to_completed({1}))
    expect(SerializationError, ("progress",), lambda: job.progress(math.nan))
    assert job.get_state() == "active" and job.progress() == 0


_bad_leaf = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.sets(st.integers(), max_size=3),
    st.binary(max_size=5),
    st.builds(Opaque),
    st.sampled_from(["\ud800", "a\udc00b"]),
    st.complex_numbers(allow_nan=False, allow_infinity=False),
)
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                       st.floats(allow_nan=False, allow_infinity=False))


def _with_bad_leaf(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).flatmap(
            lambda items: st.lists(_json_leaf, max_size=2).map(lambda good: good + items)),
        st.dictionaries(st.text(max_size=3), children, min_size=1, max_size=3),
    )


@settings(max_examples=60)
@given(data=st.recursive(_bad_leaf, _with_bad_leaf, max_leaves=6))
def test_random_non_json_data_is_refused(queue: localq.Queue, snapshot: Snap, data: Any) -> None:
    before = snapshot(queue)
    with pytest.raises(SerializationError):
        queue.add(data)
    with pytest.raises(SerializationError):
        queue.add_bulk([{"data": 1}, {"data": data}])
    assert snapshot(queue) == before


# -- queue names ----------------------------------------------------------------------------

_GOOD_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


@pytest.mark.parametrize("name", ["", " ", "a b", "émails", "x" * 201, "a/b", "../x", "q\n",
                                  "q\x00", None, 5, b"q", ["q"]])
def test_bad_queue_names_are_config_errors_and_create_no_file(db_path: str, name: Any) -> None:
    expect(ConfigError, ("queue name", "letters, digits"),
           lambda: localq.Queue(name, path=db_path))
    assert not databases.exists(db_path)  # no file, no schema


@settings(max_examples=80)
@given(name=st.text(max_size=210).filter(lambda s: not _GOOD_NAME.fullmatch(s)))
def test_random_bad_queue_names_are_refused(db_path: str, name: str) -> None:
    with pytest.raises(ConfigError):
        localq.Queue(name, path=db_path)
    assert not databases.exists(db_path)


@settings(max_examples=20)
@given(name=st.from_regex(_GOOD_NAME, fullmatch=True))
def test_random_good_queue_names_work(db_path: str, name: str) -> None:
    with localq.Queue(name, path=db_path) as q:
        assert q.get_job(q.add(name=name[:200]).id).name == name[:200]


# -- paths ----------------------------------------------------------------------------------

@pytest.mark.sqlite_only  # file paths: a PostgreSQL URL has its own checks (tests/pg)
def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "q.db"
    expect(ConfigError, ("does not exist", "nope"), lambda: localq.Queue("q", path=missing))
    assert not missing.parent.exists()


@pytest.mark.sqlite_only  # file paths: a PostgreSQL URL has its own checks (tests/pg)
def test_a_directory_as_path_is_a_config_error(tmp_path: Path) -> None:
    expect(ConfigError, ("is a directory",), lambda: localq.Queue("q", path=tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.sqlite_only  # file paths: a PostgreSQL URL has its own checks (tests/pg)
def test_a_symlink_path_is_a_config_error(tmp_path: Path) -> None:
    target = tmp_path / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(target)
    expect(ConfigError, ("symlink", "target"), lambda: localq.Queue("q", path=link))
    assert not target.exists()
    localq.Queue("q", path=target).close()
    expect(ConfigError, ("symlink",), lambda: localq.Queue("q", path=link))


@pytest.mark.sqlite_only  # file paths: a PostgreSQL URL has its own checks (tests/pg)
@pytest.mark.parametrize("path", [":memory:", "", "file:q.db?mode=memory"])
def test_memory_and_uri_paths_are_refused_with_what_to_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.chdir(tmp_path)
    expect(ConfigError, ("file path", "tmp_path"), lambda: localq.Queue("q", path=path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", [5, 1.5, ["q.db"], b"q.db"])
def test_a_path_of_the_wrong_type_is_a_config_error(path: Any) -> None:
    expect(ConfigError, ("path",), lambda: localq.Queue("q", path=path))


# -- Queue(...) options ---------------------------------------------------------------------

BAD_QUEUE_ARGS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"durability": "fast"}, ("durability", "safe")),
    ({"durability": None}, ("durability",)),
    ({"clock": _Opaque()}, ("clock", "now")),
    ({"default_job_options": [("attempts", 2)]}, ("default_job_options",)),
    ({"default_job_options": {"attempts": 0}}, ("attempts",)),
    ({"default_job_options": {"tries": 2}}, ("unknown", "tries")),
    ({"limiter": 5}, ("limiter", "max")),
    ({"limiter": {"max": 5}}, ("limiter", "duration")),
    ({"limiter": {"duration": 1}}, ("limiter", "max")),
    ({"limiter": {"max": 0, "duration": 1}}, ("limiter['max']",)),
    ({"limiter": {"max": 1.5, "duration": 1}}, ("limiter['max']", "int")),
    ({"limiter": {"max": 1, "duration": 0}}, ("limiter['duration']", "> 0")),
    ({"limiter": {"max": 1, "duration": "1s"}}, ("limiter['duration']",)),
    ({"limiter": {"max": 1, "duration": 1, "group_key": 5}}, ("group_key",)),
    ({"limiter": {"max": 1, "duration": 1, "group_key": ""}}, ("group_key",)),
    ({"limiter": {"max": 1, "duration": 1, "bounce_back": True}}, ("limiter", "bounce_back")),
    ({"settings": "fast"}, ("settings", "dict")),
    ({"settings": {"lockDuration": 1}}, ("unknown", "lockDuration", "lock_duration")),
    ({"settings": {"lock_duration": 0}}, ("lock_duration", "> 0")),
    ({"settings": {"lock_duration": "30"}}, ("lock_duration",)),
    ({"settings": {"lock_duration": 10, "lock_renew_time": 10}}, ("lock_renew_time",)),
    ({"settings": {"lock_renew_time": -1}}, ("lock_renew_time",)),
    ({"settings": {"stalled_interval": -1}}, ("stalled_interval",)),
    ({"settings": {"guard_interval": math.nan}}, ("guard_interval", "finite")),
    ({"settings": {"retry_process_delay": None}}, ("retry_process_delay",)),
    ({"settings": {"drain_delay": -0.5}}, ("drain_delay",)),
    ({"settings": {"max_stalled_count": -1}}, ("max_stalled_count",)),
    ({"settings": {"max_stalled_count": 1.0}}, ("max_stalled_count", "int")),
    ({"settings": {"backoff_strategies": {"x": 5}}}, ("backoff_strategies", "callable")),
    ({"settings": {"backoff_strategies": [print]}}, ("backoff_strategies",)),
    ({"settings": {"max_data_bytes": 1}}, ("max_data_bytes",)),
    ({"settings": {"busy_timeout": -1}}, ("busy_timeout",)),
    ({"settings": {"allow_network_fs": "yes"}}, ("allow_network_fs",)),
    ({"settings": {"max_events": 5}}, ("max_events",)),
]


@pytest.mark.parametrize("kwargs, words", BAD_QUEUE_ARGS,
                         ids=[repr(k)[:50] for k, _ in BAD_QUEUE_ARGS])
def test_bad_queue_arguments_are_config_errors_and_create_no_file(
        db_path: str, kwargs: dict[str, Any], words: tuple[str, ...]) -> None:
    expect(ConfigError, words, lambda: localq.Queue("q", path=db_path, **kwargs))
    assert not databases.exists(db_path)  # no file, no schema


def test_bad_queue_arguments_leave_an_existing_file_untouched(db_path: str,
                                                              snapshot: Snap) -> None:
    with localq.Queue("q", path=db_path) as q:
        q.add()
        before = snapshot(q)
        for kwargs, _ in BAD_QUEUE_ARGS:
            with pytest.raises(ConfigError):
                localq.Queue("q", path=db_path, **kwargs)
        assert snapshot(q) == before


# -- query and admin arguments --------------------------------------------------------------

@pytest.mark.parametrize("call, words", [
    (lambda q: q.get_jobs("running"), ("unknown state", "running")),
    (lambda q: q.get_jobs(["waiting", "done"]), ("done",)),
    (lambda q: q.get_jobs("waiting", "0"), ("start", "int")),
    (lambda q: q.get_jobs("waiting", 0, 1.5), ("end", "int")),
    (lambda q: q.get_jobs("waiting", True), ("start",)),
    (lambda q: q.get_job_counts("nope"), ("unknown state",)),
    (lambda q: q.get_job(None), ("job_id",)),
    (lambda q: q.get_job_logs("1", "a"), ("start",)),
    (lambda q: q.clean(-1), ("grace", ">= 0")),
    (lambda q: q.clean("1h"), ("grace", "number")),
    (lambda q: q.clean(math.nan), ("grace", "finite")),
    (lambda q: q.clean(0, "done"), ("status", "completed")),
    (lambda q: q.clean(0, "completed", -1), ("limit",)),
    (lambda q: q.clean(0, "completed", 1.5), ("limit",)),
    (lambda q: q.clean(0, "completed", True), ("limit",)),
    (lambda q: q.retry_jobs(-1), ("count",)),
    (lambda q: q.retry_jobs("all"), ("count",)),
    (lambda q: q.retry_jobs(True), ("count",)),
    (lambda q: q.get_next_job(timeout=-1), ("timeout",)),
    (lambda q: q.get_next_job(timeout="1"), ("timeout",)),
], ids=lambda v: "" if callable(v) else str(v[0]))
def test_bad_query_and_admin_arguments_are_config_errors(queue: localq.Queue, snapshot: Snap,
                                                         call: Callable[[localq.Queue], Any],
                                                         words: tuple[str, ...]) -> None:
    queue.add()
    queue.add(delay=5)
    before = snapshot(queue)
    expect(ConfigError, words, lambda: call(queue))
    assert snapshot(queue) == before


def test_move_to_failed_with_a_bad_error_value_changes_nothing(queue: localq.Queue,
                                                               snapshot: Snap) -> None:
    queue.add()
    job = queue.get_next_job()
    assert job is not None
    before = snapshot(queue)
    expect(ConfigError, ("move_to_failed",), lambda: job.move_to_failed(42))
    assert snapshot(queue) == before and job.get_state() == "active"
