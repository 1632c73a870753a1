"""Bad input, generated: every wrong type and range of every option, and JSON that is not
strict, is refused with a LocalqError that names what to fix, and stores nothing.

The plain cases live in tests/unit/test_bad_input.py; these generate the values. "Stores
nothing" is checked by comparing every row of every table before and after the call (the
``snapshot`` fixture). Every test runs on both backends (``db_path``): a SQLite file and a
schema of its own on the test PostgreSQL server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import localq
from localq.options import JOB_OPTION_NAMES, MAX_PRIORITY
from localq.testing import FakeClock

Snapshot = Callable[[localq.Queue], dict[str, list[Any]]]


@pytest.fixture
def shared(db_path: str) -> Iterator[localq.Queue]:
    """One queue for all examples of a test: a refused call leaves it as it was, so they can
    share (a fresh PostgreSQL schema per example would cost more than the examples)."""
    with localq.Queue("q", path=db_path, clock=FakeClock(1767225600.0),
                      settings={"max_data_bytes": 4096}) as q:
        q.add({"existing": True}, job_id="existing")
        yield q


# --- values of the wrong type or out of range, per option ------------------------------------

_not_number = st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2), st.booleans(),
                        st.just(object()), st.binary(max_size=3), st.complex_numbers())
_non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
_negative = st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-9, allow_nan=False,
                                                           allow_infinity=False))
_seconds = st.one_of(_not_number, _non_finite, _negative,
                     st.builds(timedelta, seconds=st.integers(-10**6, -1)))
# A lone surrogate is not valid Unicode: no database stores it as text.
_surrogate = st.text(max_size=5).map(lambda s: s + "\udc80")

BAD_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(st.just(""), st.text(min_size=201, max_size=300), st.integers(),
                      st.binary(max_size=4), st.lists(st.text(), max_size=2), _surrogate),
    "priority": st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_PRIORITY + 1),
                          st.floats(), st.text(max_size=3), st.booleans()),
    "delay": _seconds,
    "attempts": st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=3),
                          st.booleans(), st.none()),
    "backoff": st.one_of(_non_finite, _negative, st.text(max_size=4), st.lists(st.integers()),
                         st.dictionaries(st.text(max_size=5).filter(
                             lambda k: k not in ("type", "delay", "options")),
                             st.integers(), min_size=1, max_size=2),
                         st.fixed_dictionaries({"type": st.sampled_from(["", None, 3])}),
                         st.fixed_dictionaries({"type": _surrogate}),
                         st.fixed_dictionaries({"type": st.just("fixed"), "delay": _seconds}),
                         # options are stored with the job's options: strict JSON only
                         st.fixed_dictionaries({"type": st.just("custom"), "options": st.one_of(
                             _non_finite, st.just({1, 2}), st.binary(min_size=1, max_size=3),
                             _surrogate, st.builds(object))})),
    "lifo": st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats()),
    "timeout": st.one_of(st.just(0), _non_finite, _negative, st.text(max_size=3), st.booleans()),
    "job_id": st.one_of(st.just(""), st.text(min_size=401, max_size=450),
                        st.integers(min_value=0).map(str), st.integers(min_value=0),
                        st.floats(), st.booleans(), st.lists(st.text(), max_size=1),
                        _surrogate),
    "remove_on_complete": st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3),
                                    st.just({}), st.fixed_dictionaries({"age": _seconds}),
                                    st.fixed_dictionaries({"count": st.integers(max_value=-1)}),
                                    st.fixed_dictionaries({"keep": st.integers()})),
    "remove_on_fail": st.one_of(st.integers(max_value=-1), st.floats(), st.lists(st.integers()),
                                st.just({})),
    "repeat": st.one_of(st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=2)),
    "stack_trace_limit": st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3)),
    "timestamp": st.one_of(_non_finite, _negative, st.text(max_size=3), st.booleans()),
}


@st.composite
def bad_option(draw: st.DrawFn) -> tuple[str, Any]:
    """Return (option, value) with a value of the wrong type or out of range.

    (An int ``job_id`` is refused too: all-digit ids are reserved for automatic ids.)
    """
    key = draw(st.sampled_from(sorted(BAD_OPTIONS)))
    return key, draw(BAD_OPTIONS[key])


@given(option=bad_option())
def test_a_bad_option_to_add_is_a_config_error_naming_it_and_stores_nothing(
    shared: localq.Queue, snapshot: Snapshot, option: tuple[str, Any]
) -> None:
    key, value = option
    before = snapshot(shared)
    with pytest.raises(localq.ConfigError) as caught:
        shared.add({"n": 1}, **{key: value})
    assert key in str(caught.value), (key, value, str(caught.value))
    assert snapshot(shared) == before


# ("data" is add()'s own first parameter: passed by keyword it is the data, not an option.)
@given(key=st.text(min_size=1, max_size=20).filter(
    lambda k: k not in JOB_OPTION_NAMES | {"data"} and k.isidentifier()))
def test_an_unknown_option_is_refused_with_the_list_of_valid_ones(
    shared: localq.Queue, snapshot: Snapshot, key: str
) -> None:
    before = snapshot(shared)
    with pytest.raises(localq.ConfigError, match="unknown job option") as caught:
        shared.add({"n": 1}, **{key: 1})
    assert repr(key) in str(caught.value) and "attempts" in str(caught.value)
    assert snapshot(shared) == before


@given(good=st.integers(1, 5), position=st.integers(0, 5), option=bad_option())
def test_one_bad_entry_in_add_bulk_stores_none_of_the_batch(
    shared: localq.Queue, snapshot: Snapshot, good: int, position: int,
    option: tuple[str, Any]
) -> None:
    key, value = option
    entries: list[dict[str, Any]] = [{"data": {"i": i}} for i in range(good)]
    bad = {"data": {"bad": True}, "opts": {key: value}} if key != "name" else {"name": value}
    entries.insert(min(position, good), bad)
    before = snapshot(shared)
    with pytest.raises(localq.ConfigError) as caught:
        shared.add_bulk(entries)
    assert key in str(caught.value), str(caught.value)
    assert snapshot(shared) == before


# --- text the database cannot store as text -------------------------------------------------

def _text_calls(q: localq.Queue, value: str) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Every call that stores *value* as text: (the word its error must name, the call)."""
    existing = q.get_job("existing")
    assert existing is not None
    return {
        "add name": ("name", lambda: q.add({"n": 1}, name=value)),
        "add job_id": ("job_id", lambda: q.add({"n": 1}, job_id=value)),
        "add_bulk name": ("name", lambda: q.add_bulk([{"data": 1}, {"name": value}])),
        "add_bulk job_id": ("job_id", lambda: q.add_bulk([{"opts": {"job_id": value}}])),
        "log row": ("log row", lambda: existing.log(value)),
        "worker name": ("name", lambda: q.process(lambda job: None, name=value)),
        "repeat job_id": ("job_id", lambda: q.add({"n": 1}, repeat={"every": 5,
                                                                  "job_id": value})),
        "backoff type": ("backoff", lambda: q.add({"n": 1}, backoff={"type": value})),
    }


TEXT_CALLS = ["add name", "add job_id", "add_bulk name", "add_bulk job_id", "log row",
              "worker name", "repeat job_id", "backoff type"]


@given(where=st.sampled_from(TEXT_CALLS), before=st.text(max_size=5), after=st.text(max_size=5), nul=st.booleans())
def test_text_the_database_cannot_store_is_refused_naming_it_and_stores_nothing(
    shared: localq.Queue, snapshot: Snapshot, backend: str, where: str, before: str,
    after: str, nul: bool
) -> None:
    """A lone surrogate (both backends) or NUL (PostgreSQL: its text cannot hold it) in a
    name, job id, log row or backoff type: a ConfigError naming it, nothing stored."""
    bad = "\x00" if nul and backend == "postgres" else "\udc80"
    calls = _text_calls(shared, before + bad + after)
    assert sorted(calls) == sorted(TEXT_CALLS)
    word, call = calls[where]
    rows = snapshot(shared)
    with pytest.raises(localq.ConfigError) as caught:
        call()
    message = str(caught.value)
    assert word in message and ("NUL" if bad == "\x00" else "surrogate") in message, message
    assert snapshot(shared) == rows


# --- data that is not strict JSON -------------------------------------------------------------

class _Opaque:
    """An object json cannot encode."""


_poison = st.one_of(
    _non_finite,
    st.sets(st.integers(), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=2),
    st.binary(max_size=8),
    st.binary(max_size=4).map(bytearray),
    st.complex_numbers(allow_nan=False, allow_infinity=False),
    st.builds(_Opaque),
    st.just(range(3)),
    st.integers(min_value=10**4301, max_value=10**4400),          # over int's str() limit
    st.text(min_size=1, max_size=5).map(lambda s: s + "\ud800"),   # a lone surrogate
    st.text(min_size=1, max_size=5).map(lambda s: {s + "\udfff": 1}),  # ... in a key
    st.tuples(st.integers()).map(lambda t: {t: 1}),                # a key json cannot take
)

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                       st.floats(allow_nan=False, allow_infinity=False),
                       st.text(max_size=10).filter(lambda s: not any(
                           0xD800 <= ord(c) <= 0xDFFF for c in s)))


@st.composite
def poisoned(draw: st.DrawFn) -> Any:
    """Strict JSON with one value that is not, somewhere inside."""
    poison = draw(_poison)
    depth = draw(st.integers(0, 4))
    value = poison
    for _ in range(depth):
        if draw(st.booleans()):
            items = draw(st.lists(_json_leaf, max_size=3))
            items.insert(draw(st.integers(0, len(items))), value)
            value = items
        else:
            other = draw(st.dictionaries(st.text(max_size=4), _json_leaf, max_size=3))
            other[draw(st.text(min_size=5, max_size=8))] = value
            value = other
    return value


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value] if depth % 2 else {"k": value}
    return value


def _explains(message: str) -> bool:
    return ("strict JSON" in message or "surrogate" in message) and "data" in message


@given(data=poisoned())
def test_data_that_is_not_strict_json_is_refused_and_stores_nothing(
    shared: localq.Queue, snapshot: Snapshot, data: Any
) -> None:
    before = snapshot(shared)
    with pytest.raises(localq.SerializationError) as caught:
        shared.add(data)
    assert _explains(str(caught.value)), str(caught.value)
    with pytest.raises(localq.SerializationError):
        shared.add_bulk([{"data": {"ok": 1}}, {"data": data}])
    assert snapshot(shared) == before


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_nesting_deeper_than_python_can_encode_is_refused(
    shared: localq.Queue, snapshot: Snapshot, depth: int
) -> None:
    before = snapshot(shared)
    with pytest.raises(localq.SerializationError, match="nested too deeply"):
        shared.add(_deep(depth))
    assert snapshot(shared) == before


@given(data=poisoned())
def test_results_progress_and_updates_that_are_not_strict_json_change_nothing(
    shared: localq.Queue, snapshot: Snapshot, data: Any
) -> None:
    job = shared.get_job("existing")
    assert job is not None
    before = snapshot(shared)
    with pytest.raises(localq.SerializationError, match="progress"):
        job.progress(data)
    with pytest.raises(localq.SerializationError):
        job.update(data)
    assert snapshot(shared) == before


# --- the size cap -------------------------------------------------------------------------------

@given(size=st.integers(3900, 4200), wide=st.booleans())
def test_a_payload_is_stored_exactly_when_its_json_fits_the_cap(
    shared: localq.Queue, snapshot: Snapshot, size: int, wide: bool
) -> None:
    """The cap counts UTF-8 bytes of the encoded JSON: 4096 with max_data_bytes=4096."""
    char = "é" if wide else "x"
    data = {"s": char * (size // len(char.encode()))}
    encoded = len(('{"s":"' + data["s"] + '"}').encode())
    before = snapshot(shared)
    if encoded <= 4096:
        job = shared.add(data)
        assert job.data == data
        job.remove()
    else:
        with pytest.raises(localq.SerializationError, match=r"over the 4096-byte cap") as caught:
            shared.add(data)
        assert f"is {encoded} bytes" in str(caught.value)
        assert "max_data_bytes" in str(caught.value)
        assert snapshot(shared) == before


def test_the_default_cap_is_one_mebibyte(db_path: str) -> None:
    with localq.Queue("q", path=db_path) as q:
        assert q.settings.max_data_bytes == 1024 * 1024
        q.add("x" * (1024 * 1024 - 2))    # 2 quotes: exactly the cap
        with pytest.raises(localq.SerializationError, match="1048576-byte cap"):
            q.add("x" * (1024 * 1024 - 1))
        assert q.count() == 1


# --- Queue options ----------------------------------------------------------------------------

BAD_SETTINGS: dict[str, st.SearchStrategy[Any]] = {
    "lock_duration": st.one_of(st.just(0), _seconds),
    "lock_renew_time": st.one_of(st.just(0), _seconds),
    "stalled_interval": _seconds,
    "max_stalled_count": st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=2)),
    "guard_interval": _seconds,
    "retry_process_delay": _seconds,
    "drain_delay": _seconds,
    "backoff_strategies": st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=3),
                                    st.dictionaries(st.text(max_size=3), st.integers(),
                                                    min_size=1, max_size=2)),
    "max_data_bytes": st.one_of(st.integers(max_value=15), st.floats(), st.text(max_size=2)),
    "busy_timeout": _seconds,
    "allow_network_fs": st.one_of(st.integers(), st.text(max_size=2), st.none()),
    "max_events": st.one_of(st.integers(max_value=99), st.floats(), st.none()),
}


@st.composite
def bad_queue_arguments(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """Return Queue keyword arguments with one bad value, and the word the error must name."""
    kind = draw(st.sampled_from(["name", "settings", "unknown_setting", "limiter",
                                 "default_job_options", "durability", "clock"]))
    if kind == "name":
        name = draw(st.one_of(st.just(""), st.text(min_size=201, max_size=210),
                              st.text(min_size=1, max_size=20).filter(
                                  lambda s: any(not (c.isascii() and (c.isalnum() or c in "-_.:"))
                                                for c in s)),
                              st.integers(), st.none()))
        return {"name": name}, "queue name"
    if kind == "settings":
        key = draw(st.sampled_from(sorted(BAD_SETTINGS)))
        return {"settings": {key: draw(BAD_SETTINGS[key])}}, key
    if kind == "unknown_setting":
        key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in BAD_SETTINGS))
        return {"settings": {key: 1}}, repr(key)
    if kind == "limiter":
        return {"limiter": draw(st.one_of(
            st.fixed_dictionaries({"max": st.integers(max_value=0), "duration": st.just(1)}),
            st.fixed_dictionaries({"max": st.just(1), "duration": st.one_of(st.just(0), _seconds)}),
            st.fixed_dictionaries({"max": st.just(1)}),
            st.fixed_dictionaries({"max": st.just(1), "duration": st.just(1),
                                   "group_key": st.one_of(st.just(""), st.integers())}),
            st.lists(st.integers(), max_size=2), st.text(max_size=3)))}, "limiter"
    if kind == "default_job_options":
        key, value = draw(bad_option())
        if draw(st.booleans()):
            return {"default_job_options": {key: value}}, key
        return {"default_job_options": draw(st.lists(st.integers(), max_size=1))}, kind
    if kind == "durability":
        return {"durability": draw(st.one_of(st.text(max_size=6).filter(
            lambda d: d not in ("safe", "full", "normal")), st.integers(), st.none()))}, kind
    return {"clock": draw(st.one_of(st.integers(), st.text(max_size=3), st.builds(object)))}, kind


@pytest.fixture
def schema_made(backend: str, db_path: str) -> Iterator[Callable[[], bool]]:
    """Return whether the PostgreSQL schema of db_path exists (always False on SQLite)."""
    if backend == "sqlite":
        yield lambda: False
        return
    import psycopg

    from localq.pg.url import parse_url
    url = parse_url(db_path)
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        yield lambda: conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                   (url.schema,)).fetchall() != []


@given(case=bad_queue_arguments())
def test_bad_queue_arguments_are_config_errors_and_create_no_file(
    tmp_path_factory: pytest.TempPathFactory, backend: str, db_path: str,
    schema_made: Callable[[], bool], case: tuple[dict[str, Any], str]
) -> None:
    """... nor, on PostgreSQL, its schema: the arguments are checked before connecting."""
    arguments, word = case
    directory = tmp_path_factory.mktemp("bad-queue")
    path = str(directory / "q.db") if backend == "sqlite" else db_path
    with pytest.raises(localq.ConfigError) as caught:
        localq.Queue(**{"name": "q", "path": path, **arguments})
    assert word in str(caught.value), (arguments, str(caught.value))
    assert list(directory.iterdir()) == []
    assert not schema_made()
