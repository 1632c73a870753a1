"""Schedule arithmetic of repeatable jobs (localq.repeat): no database, no wall clock.

Expected DST instants are written out by hand in UTC (tz database, 2024):
Europe/Paris springs forward at 2024-03-31 01:00Z (02:00 CET -> 03:00 CEST) and falls
back at 2024-10-27 01:00Z (03:00 CEST -> 02:00 CET); America/New_York springs forward at
2024-03-10 07:00Z (02:00 EST -> 03:00 EDT) and falls back at 2024-11-03 06:00Z
(02:00 EDT -> 01:00 EST).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import example, given, settings
from hypothesis import strategies as st

from localq.errors import ConfigError
from localq.repeat import RepeatSpec, local_zone_name, parse_repeat

UTC = timezone.utc
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "Europe/Dublin", "America/Sao_Paulo"]
# Schedules whose slots are at most a day apart, so a brute-force minute scan stays cheap.
DENSE_CRONS = ["* * * * *", "*/5 * * * *", "*/20 * * * *", "30 * * * *", "0 * * * *",
               "30 2 * * *", "30 1 * * *", "0,30 2 * * *", "15 1-3 * * *", "0 */2 * * *",
               "0 0 * * *", "59 23 * * *"]
CRONS = DENSE_CRONS + ["0 9 * * mon-fri", "0 0 1 * *", "0 0 29 2 *", "0 12 * jan,jul sun"]


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Epoch ms of a UTC date written out by hand."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 1000


def iso(value: int | None) -> str | None:
    """Readable UTC form of epoch ms, so failures show dates rather than integers."""
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC).isoformat()


def slots(spec: RepeatSpec, after_ms: int, count: int) -> list[str | None]:
    """The next ``count`` slots of ``spec`` after ``after_ms``, as UTC ISO strings."""
    out: list[str | None] = []
    current: int | None = after_ms
    for _ in range(count):
        current = None if current is None else spec.next_after(current)
        out.append(iso(current))
    return out


def cron_spec(expr: str, tz: str, **extra: object) -> RepeatSpec:
    return parse_repeat({"cron": expr, "tz": tz, **extra})


# --------------------------------------------------------------------------- every


def test_every_slots_are_multiples_of_the_period_since_the_epoch() -> None:
    spec = parse_repeat({"every": 60})
    assert spec.every_ms == 60_000
    assert spec.next_after(0) == 60_000
    assert spec.next_after(59_999) == 60_000
    assert spec.next_after(60_000) == 120_000  # strictly after: a slot never repeats
    # 1_700_000_000_123 // 60_000 = 28_333_333 -> next multiple is 28_333_334 * 60_000
    assert spec.next_after(1_700_000_000_123) == 1_700_000_040_000


def test_every_accepts_fractions_of_a_second_and_timedelta() -> None:
    assert parse_repeat({"every": 0.1}).every_ms == 100
    assert parse_repeat({"every": 1.001}).every_ms == 1001  # 1.001 * 1000 is 1000.999...
    assert parse_repeat({"every": 0.001}).every_ms == 1
    assert parse_repeat({"every": timedelta(minutes=5)}).every_ms == 300_000
    assert parse_repeat({"every": 0.25}).next_after(1_000) == 1_250


def test_every_start_skips_earlier_slots_but_keeps_epoch_alignment() -> None:
    spec = parse_repeat({"every": 60, "start_date": 1_700_000_010})
    assert spec.start_ms == 1_700_000_010_000
    assert spec.next_after(0) == 1_700_000_040_000
    on_slot = parse_repeat({"every": 60, "start_date": 1_700_000_040})
    assert on_slot.next_after(0) == 1_700_000_040_000  # a slot equal to start counts
    assert on_slot.next_after(1_700_000_040_000) == 1_700_000_100_000


def test_every_end_allows_a_slot_equal_to_end_and_nothing_after() -> None:
    spec = parse_repeat({"every": 60, "end_date": 1_700_000_040})
    assert spec.next_after(1_699_999_999_999) == 1_700_000_040_000
    assert spec.next_after(1_700_000_040_000) is None
    assert spec.next_after(1_700_000_039_999) == 1_700_000_040_000


def test_limit_is_not_applied_by_next_after() -> None:
    spec = parse_repeat({"every": 1, "limit": 1})
    assert spec.next_after(spec.next_after(0) or 0) == 2_000


# --------------------------------------------------------------------------- cron basics


def test_cron_in_utc_gives_the_next_matching_minute() -> None:
    spec = cron_spec("*/5 * * * *", "UTC")
    assert spec.next_after(ms(2024, 1, 1, 0, 2) + 30_000) == ms(2024, 1, 1, 0, 5)
    assert spec.next_after(ms(2024, 1, 1, 0, 5)) == ms(2024, 1, 1, 0, 10)
    assert spec.next_after(ms(2024, 1, 1, 0, 5) - 1) == ms(2024, 1, 1, 0, 5)


def test_cron_is_read_on_the_wall_clock_of_its_zone() -> None:
    # 09:00 in Tokyo (UTC+9, no DST) is 00:00Z; on weekdays only.
    spec = cron_spec("0 9 * * mon-fri", "Asia/Tokyo")
    assert slots(spec, ms(2024, 1, 5, 1, 0), 2) == [  # Friday 10:00 JST
        "2024-01-08T00:00:00+00:00", "2024-01-09T00:00:00+00:00"]


def test_cron_honours_start_and_end() -> None:
    spec = cron_spec("0 * * * *", "UTC", start_date=ms(2024, 1, 1, 5, 30) / 1000,
                     end_date=ms(2024, 1, 1, 7, 0) / 1000)
    assert slots(spec, 0, 4) == ["2024-01-01T06:00:00+00:00", "2024-01-01T07:00:00+00:00",
                                 None, None]


def test_cron_that_only_matches_leap_days_finds_the_next_one() -> None:
    assert cron_spec("0 0 29 2 *", "UTC").next_after(ms(2024, 3, 1)) == ms(2028, 2, 29)


# --------------------------------------------------------------------------- DST


def test_paris_spring_forward_moves_a_daily_slot_in_the_gap_to_the_gap_end() -> None:
    # 02:30 does not exist on 2024-03-31; the job runs at 03:00 CEST = 01:00Z instead.
    assert slots(cron_spec("30 2 * * *", "Europe/Paris"), ms(2024, 3, 29, 12), 3) == [
        "2024-03-30T01:30:00+00:00", "2024-03-31T01:00:00+00:00", "2024-04-01T00:30:00+00:00"]


def test_paris_spring_forward_skips_gap_slots_when_the_hour_is_a_wildcard() -> None:
    # Hourly at :30: 01:30 CET (00:30Z), then 03:30 CEST (01:30Z); 02:30 is not moved to 03:00.
    assert slots(cron_spec("30 * * * *", "Europe/Paris"), ms(2024, 3, 31, 0, 0), 2) == [
        "2024-03-31T00:30:00+00:00", "2024-03-31T01:30:00+00:00"]
    # Every 30 minutes: 01:30 CET (00:30Z), then 03:00 CEST (01:00Z).
    assert slots(cron_spec("*/30 * * * *", "Europe/Paris"), ms(2024, 3, 31, 0, 15), 3) == [
        "2024-03-31T00:30:00+00:00", "2024-03-31T01:00:00+00:00", "2024-03-31T01:30:00+00:00"]


def test_paris_fall_back_runs_a_repeated_wall_time_once() -> None:
    spec = cron_spec("30 2 * * *", "Europe/Paris")
    # 02:30 CEST (00:30Z) runs; 02:30 CET (01:30Z) that day does not; next: 02:30 CET on the 28th.
    assert slots(spec, ms(2024, 10, 26, 12), 2) == [
        "2024-10-27T00:30:00+00:00", "2024-10-28T01:30:00+00:00"]
    # Asked from inside the repeated hour (02:00 CET = 01:00Z), e.g. after a restart.
    assert iso(spec.next_after(ms(2024, 10, 27, 1, 0))) == "2024-10-28T01:30:00+00:00"


def test_paris_fall_back_pauses_a_sub_hourly_cron_through_the_repeated_hour() -> None:
    # After 02:30 CEST (00:30Z) the next new wall time is 03:00 CET (02:00Z).
    spec = cron_spec("*/30 * * * *", "Europe/Paris")
    assert slots(spec, ms(2024, 10, 27, 0, 15), 3) == [
        "2024-10-27T00:30:00+00:00", "2024-10-27T02:00:00+00:00", "2024-10-27T02:30:00+00:00"]


def test_new_york_spring_forward_moves_two_thirty_to_three_edt() -> None:
    assert slots(cron_spec("30 2 * * *", "America/New_York"), ms(2024, 3, 9, 12), 2) == [
        "2024-03-10T07:00:00+00:00", "2024-03-11T06:30:00+00:00"]


def test_new_york_slots_moved_to_the_same_instant_run_once() -> None:
    # 02:00 and 02:30 both move to 03:00 EDT (07:00Z): one run, then 02:00 EDT next day.
    assert slots(cron_spec("0,30 2 * * *", "America/New_York"), ms(2024, 3, 10, 6), 2) == [
        "2024-03-10T07:00:00+00:00", "2024-03-11T06:00:00+00:00"]


def test_new_york_fall_back_runs_one_thirty_once() -> None:
    spec = cron_spec("30 1 * * *", "America/New_York")
    # 01:30 EDT = 05:30Z runs; 01:30 EST = 06:30Z that day does not.
    assert slots(spec, ms(2024, 11, 2, 12), 2) == [
        "2024-11-03T05:30:00+00:00", "2024-11-04T06:30:00+00:00"]
    assert iso(spec.next_after(ms(2024, 11, 3, 6, 10))) == "2024-11-04T06:30:00+00:00"


@pytest.mark.parametrize(("start", "end", "runs"), [
    (ms(2024, 3, 10, 5), ms(2024, 3, 11, 4), 23),  # 23-hour day: 02:00 does not exist
    (ms(2024, 11, 3, 4), ms(2024, 11, 4, 5), 24),  # 25-hour day: 01:00 runs once
    (ms(2024, 6, 1, 4), ms(2024, 6, 2, 4), 24),
])
def test_new_york_hourly_cron_runs_once_per_wall_hour_of_the_day(
        start: int, end: int, runs: int) -> None:
    spec = cron_spec("0 * * * *", "America/New_York")
    seen, current = [], start - 1
    while (current := spec.next_after(current) or end) < end:
        seen.append(current)
    assert len(seen) == runs
    walls = [datetime.fromtimestamp(s / 1000, ZoneInfo("America/New_York")).hour for s in seen]
    assert len(set(walls)) == runs


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/New_York"])
@pytest.mark.parametrize("expr", DENSE_CRONS)
def test_dst_days_match_croniter_except_repeated_wall_times(expr: str, tz: str) -> None:
    # croniter with aware datetimes is the reference for the spring gap; in the fall it
    # fires repeated wall times twice, which we drop by design.
    zone = ZoneInfo(tz)
    spec = cron_spec(expr, tz)
    for day in ([datetime(2024, 3, 30), datetime(2024, 10, 26)] if tz == "Europe/Paris"
                else [datetime(2024, 3, 9), datetime(2024, 11, 2)]):
        start = day.replace(tzinfo=zone)
        stop = ((start + timedelta(days=3)).timestamp()) * 1000
        expected, walls = [], set()
        for aware in croniter(expr, start, ret_type=datetime).all_next(datetime):
            if aware.timestamp() * 1000 >= stop:
                break
            wall = aware.replace(tzinfo=None, fold=0)
            if wall not in walls:
                walls.add(wall)
                expected.append(iso(int(aware.timestamp()) * 1000))
        got = slots(spec, int(start.timestamp()) * 1000, len(expected) + 1)
        assert got[:-1] == expected
        assert (got[-1] or "") >= (iso(int(stop)) or "")  # ISO strings in UTC sort by time


# --------------------------------------------------------------------------- properties

every_specs = st.builds(
    lambda every, start, length, job_id: RepeatSpec(
        every_ms=every, cron=None, tz=None, start_ms=start,
        end_ms=None if length is None or start is None else start + length, job_id=job_id),
    st.integers(1, 10**10), st.none() | st.integers(0, 4 * 10**12),
    st.none() | st.integers(0, 10**11), st.none() | st.text(min_size=1, max_size=5))
cron_specs = st.builds(
    lambda expr, tz, start: RepeatSpec(every_ms=None, cron=expr, tz=tz, start_ms=start),
    st.sampled_from(CRONS), st.sampled_from(ZONES),
    st.none() | st.integers(ms(2020, 1, 1), ms(2030, 1, 1)))
afters = st.integers(ms(2020, 1, 1), ms(2030, 1, 1))


@settings(deadline=None)
@given(spec=every_specs | cron_specs, after=afters, offset=st.floats(0, 1))
def test_next_after_is_strictly_increasing_and_skips_no_slot(
        spec: RepeatSpec, after: int, offset: float) -> None:
    first = spec.next_after(after)
    if first is None:
        assert spec.end_ms is not None
        return
    assert first > after
    assert spec.start_ms is None or first >= spec.start_ms
    assert spec.end_ms is None or first <= spec.end_ms
    # Any time between `after` and the slot leads to that same slot: nothing is skipped.
    between = after + int((first - 1 - after) * offset)
    assert spec.next_after(between) == first
    assert spec.next_after(first - 1) == first
    second = spec.next_after(first)
    assert second is None or second > first
    if spec.every_ms is not None:
        assert first % spec.every_ms == 0


# 2024 transitions, by hand: Paris and New York as in the module docstring; Lord Howe moves
# by 30 minutes (2024-04-06 15:00Z back, 2024-10-05 15:30Z forward).
TRANSITIONS = [("Europe/Paris", ms(2024, 3, 31, 1)), ("Europe/Paris", ms(2024, 10, 27, 1)),
               ("America/New_York", ms(2024, 3, 10, 7)), ("America/New_York", ms(2024, 11, 3, 6)),
               ("Australia/Lord_Howe", ms(2024, 4, 6, 15)),
               ("Australia/Lord_Howe", ms(2024, 10, 5, 15, 30))]


def assert_first_new_matching_minute(expr: str, tz: str, after: int) -> None:
    zone = ZoneInfo(tz)
    slot = parse_repeat({"cron": expr, "tz": tz}).next_after(after)
    assert slot is not None
    local = datetime.fromtimestamp(slot / 1000, zone)
    before = datetime.fromtimestamp((slot - 1) / 1000, zone)
    is_gap_end = before.utcoffset() != local.utcoffset() and local.fold == 0
    assert local.fold == 0  # never the second pass of a repeated hour
    # A gap end that is not itself a match stands for a moved slot: never for a wildcard hour.
    wildcard_hour = expr.split()[1] == "*"
    assert croniter.match(expr, local.replace(tzinfo=None)) or (is_gap_end and not wildcard_hour)
    # Brute force: no earlier whole minute is a first occurrence of a matching wall time.
    minute = after // 60_000 * 60_000 + 60_000
    while minute < slot:
        wall = datetime.fromtimestamp(minute / 1000, zone)
        assert wall.fold == 1 or not croniter.match(expr, wall.replace(tzinfo=None)), iso(minute)
        minute += 60_000


@settings(deadline=None, max_examples=40)
@given(expr=st.sampled_from(DENSE_CRONS), tz=st.sampled_from(ZONES), after=afters)
def test_cron_slot_is_the_first_new_matching_wall_minute_or_a_gap_end(
        expr: str, tz: str, after: int) -> None:
    assert_first_new_matching_minute(expr, tz, after)


@settings(deadline=None, max_examples=80)
@given(expr=st.sampled_from(DENSE_CRONS), transition=st.sampled_from(TRANSITIONS),
       offset=st.integers(-3 * 3600_000, 3 * 3600_000))
def test_cron_slot_near_a_dst_change_is_the_first_new_matching_wall_minute_or_a_gap_end(
        expr: str, transition: tuple[str, int], offset: int) -> None:
    tz, at = transition
    assert_first_new_matching_minute(expr, tz, at + offset)


# --------------------------------------------------------------------------- keys


def test_key_follows_bull_layout() -> None:
    spec = cron_spec("*/5 * * * *", "Europe/Paris", end_date=1_700_000_000)
    assert spec.key("emails") == "emails::1700000000000:Europe/Paris:*/5 * * * *"
    assert parse_repeat({"every": 60}).key("emails") == "emails::::60000"
    assert (parse_repeat({"every": 60, "job_id": "j", "limit": 3, "start_date": 1}).key("x")
            == "x:j:::60000:1000:3")


def test_adding_the_same_options_twice_gives_the_same_key() -> None:
    opts = {"cron": " 0 9 * * mon ", "tz": "Europe/Paris", "limit": 4, "job_id": "weekly",
            "start_date": datetime(2024, 1, 1, tzinfo=UTC), "end_date": 1_900_000_000}
    assert parse_repeat(opts).key("report") == parse_repeat(dict(opts)).key("report")
    assert parse_repeat(opts).cron == "0 9 * * mon"


@pytest.mark.parametrize("change", [
    {"cron": "0 10 * * mon"}, {"tz": "America/New_York"}, {"limit": 5}, {"limit": None},
    {"job_id": "other"}, {"job_id": None}, {"start_date": 1_700_000_000},
    {"start_date": None}, {"end_date": 1_900_000_001}, {"end_date": None},
])
def test_any_different_option_gives_a_different_key(change: dict[str, object]) -> None:
    base = {"cron": "0 9 * * mon", "tz": "Europe/Paris", "limit": 4, "job_id": "weekly",
            "start_date": 1_600_000_000, "end_date": 1_900_000_000}
    assert parse_repeat(base).key("report") != parse_repeat({**base, **change}).key("report")
    assert parse_repeat(base).key("report") != parse_repeat(base).key("report2")


@pytest.mark.parametrize(("a", "b"), [
    (("a:", None), ("a", ":")),
    (("a", "b:c"), ("a:b", "c")),
    (("a%3A", None), ("a:", None)),
])
def test_colons_and_percents_in_name_or_job_id_cannot_make_keys_collide(
        a: tuple[str, str | None], b: tuple[str, str | None]) -> None:
    def key(name: str, job_id: str | None) -> str:
        return parse_repeat({"every": 1, "job_id": job_id}).key(name)
    assert key(*a) != key(*b)


def test_every_and_cron_never_share_a_key() -> None:
    assert parse_repeat({"every": 60}).key("a") != cron_spec("* * * * *", "UTC").key("a")


small_text = st.text(alphabet=":%a", max_size=3)


@given(a=st.tuples(small_text, st.none() | small_text.filter(bool), st.none() | st.integers(0, 2),
                   st.none() | st.integers(1, 2)),
       b=st.tuples(small_text, st.none() | small_text.filter(bool), st.none() | st.integers(0, 2),
                   st.none() | st.integers(1, 2)))
def test_keys_are_equal_exactly_when_name_and_options_are(
        a: tuple[str, str | None, int | None, int | None],
        b: tuple[str, str | None, int | None, int | None]) -> None:
    def key(t: tuple[str, str | None, int | None, int | None]) -> str:
        name, job_id, start, limit = t
        return RepeatSpec(every_ms=1000, cron=None, tz=None, job_id=job_id, start_ms=start,
                          limit=limit).key(name)
    assert (key(a) == key(b)) == (a == b)


# --------------------------------------------------------------------------- round trips

any_specs = every_specs | cron_specs.map(
    lambda s: RepeatSpec(every_ms=None, cron=s.cron, tz=s.tz, start_ms=s.start_ms, limit=7,
                         end_ms=None if s.start_ms is None else s.start_ms + 10**9,
                         job_id="id:1"))


@given(spec=any_specs)
def test_to_dict_round_trips_through_json(spec: RepeatSpec) -> None:
    stored = json.loads(json.dumps(spec.to_dict()))
    assert RepeatSpec.from_dict(stored) == spec
    assert RepeatSpec.from_dict(stored).key("n") == spec.key("n")


@example(spec=RepeatSpec(every_ms=1001, cron=None, tz=None, start_ms=1001))
@given(spec=any_specs)
def test_public_form_is_accepted_by_parse_repeat_and_gives_the_same_spec(
        spec: RepeatSpec) -> None:
    public = spec.public()
    assert ("cron" in public) != ("every" in public)
    assert parse_repeat(public) == spec


def test_public_form_uses_seconds() -> None:
    spec = parse_repeat({"every": 1.5, "start_date": 10, "end_date": 20.25, "limit": 2})
    assert spec.public() == {"every": 1.5, "tz": None, "limit": 2, "start_date": 10.0,
                             "end_date": 20.25, "job_id": None}


def test_from_dict_rejects_unknown_or_bad_fields() -> None:
    with pytest.raises(ConfigError, match=r"unknown RepeatSpec field\(s\) \['every'\]"):
        RepeatSpec.from_dict({"every": 5})
    with pytest.raises(ConfigError, match="every_ms must be an int >= 1"):
        RepeatSpec.from_dict({"every_ms": "5"})
    with pytest.raises(ConfigError, match="'tz' must be a str such as 'Europe/Paris', got None"):
        RepeatSpec.from_dict({"cron": "* * * * *"})
    with pytest.raises(ConfigError, match="start_ms must be an int"):
        RepeatSpec.from_dict({"every_ms": 5, "start_ms": 1.5})


# --------------------------------------------------------------------------- bad input

NAIVE = datetime(2024, 1, 1)


@pytest.mark.parametrize(("value", "message"), [
    ("*/5 * * * *", r"repeat must be a dict .* got str"),
    (None, r"repeat must be a dict .* got NoneType"),
    ({"every": 5, "startDate": 1}, r"unknown repeat option\(s\) 'startDate'; did you mean "
                                   r"'start_date'"),
    ({"every": 5, "count": 1}, r"unknown repeat option\(s\) 'count'.*allowed: cron, tz"),
    ({"cron": "* * * * *", "every": 5}, "'cron' or 'every', not both"),
    ({}, r"needs one of 'cron' \('\*/5 \* \* \* \*'\) or 'every' \(seconds\)"),
    ({"limit": 3}, "needs one of 'cron'"),
    ({"cron": None, "every": None}, "needs one of 'cron'"),
    ({"every": 0}, r"'every' must be a finite number of seconds >= 0\.001"),
    ({"every": -1}, "'every' must be a finite number"),
    ({"every": 0.0009}, "'every' must be a finite number"),
    ({"every": True}, "'every' must be a finite number.*got True"),
    ({"every": "5"}, "'every' must be a finite number.*got '5'"),
    ({"every": math.nan}, "'every' must be a finite number"),
    ({"every": math.inf}, "'every' must be a finite number"),
    ({"every": timedelta(0)}, "'every' must be a finite number"),
    ({"cron": 5}, "'cron' must be a str"),
    ({"cron": ""}, "has 0 field"),
    ({"cron": "* * * *"}, r"has 4 field\(s\); cron needs exactly 5"),
    ({"cron": "*/5 * * * * *"}, r"has 6 field\(s\).*no seconds or year field"),
    ({"cron": "0 0 0 1 1 * 2030"}, r"has 7 field\(s\)"),
    ({"cron": "@every 5m"}, "'@' forms are not supported; write the 5 fields.*or use 'every'"),
    ({"cron": "@daily"}, r"'@' forms are not supported; write the 5 fields \('0 0 \* \* \*'"),
    ({"cron": "61 * * * *"}, r"'61 \* \* \* \*' is invalid"),
    ({"cron": "*/0 * * * *"}, "is invalid"),
    ({"cron": "0 0 * * foo"}, "is invalid"),
    ({"cron": "0 0 30 2 *"}, "never matches a date"),
    ({"cron": "0 0 L * *"}, "'L' is not supported; use numbers, '\\*', ranges"),
    ({"cron": "0 0 * * 5#2"}, "'5#2' is not supported"),
    ({"cron": "0 0 15W * *"}, "'15W' is not supported"),
    ({"cron": "0 0 * * 5L"}, "'5L' is not supported"),
    ({"cron": "H * * * *"}, "'H' is not supported"),
    ({"cron": "R * * * *"}, "'R' is not supported"),
    ({"cron": "0 0 ? * *"}, r"'\?' is not supported"),
    ({"cron": "0 jan * * *"}, "'jan' is not supported"),
    ({"cron": "0\u00a00 * * * *"}, "is not supported"),
    ({"cron": "* * * * *", "tz": 5}, "'tz' must be a str"),
    ({"cron": "* * * * *", "tz": "Mars/Olympus_Mons"}, "'Mars/Olympus_Mons' is not a known time"),
    ({"cron": "* * * * *", "tz": "../etc"}, r"'\.\./etc' is not an IANA zone name"),
    ({"cron": "* * * * *", "tz": "/etc/localtime"}, "is not an IANA zone name"),
    ({"cron": "* * * * *", "tz": "localtime"}, "is not an IANA zone name"),
    ({"cron": "* * * * *", "tz": "America"}, "is not a known time zone"),
    ({"every": 5, "tz": "UTC"}, "'tz' applies to 'cron' only"),
    ({"every": 5, "limit": 0}, "'limit' must be an int >= 1"),
    ({"every": 5, "limit": -1}, "'limit' must be an int >= 1"),
    ({"every": 5, "limit": 1.5}, "'limit' must be an int >= 1"),
    ({"every": 5, "limit": True}, "'limit' must be an int >= 1.*got True"),
    ({"every": 5, "limit": "3"}, "'limit' must be an int >= 1"),
    ({"every": 5, "start_date": NAIVE}, "'start_date' is a naive datetime; add tzinfo"),
    ({"every": 5, "end_date": NAIVE}, "'end_date' is a naive datetime; add tzinfo"),
    ({"every": 5, "start_date": "2024-01-01"}, "'start_date' must be epoch seconds"),
    ({"every": 5, "end_date": math.inf}, "'end_date' must be epoch seconds"),
    ({"every": 5, "end_date": False}, "'end_date' must be epoch seconds"),
    ({"every": 5, "start_date": 20, "end_date": 10}, "'end_date' is before 'start_date'"),
    ({"every": 5, "job_id": ""}, "'job_id' must be a non-empty str"),
    ({"every": 5, "job_id": 7}, "'job_id' must be a non-empty str"),
])
def test_bad_repeat_option_is_a_config_error_that_says_what_to_fix(
        value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_repeat(value)


def test_end_date_in_the_past_is_refused_only_when_now_is_given() -> None:
    with pytest.raises(ConfigError, match=r"'end_date' \(100\.0\) is already in the past"):
        parse_repeat({"every": 5, "end_date": 100}, now_ms=200_000)
    assert parse_repeat({"every": 5, "end_date": 100}).end_ms == 100_000
    assert parse_repeat({"every": 5, "end_date": 200}, now_ms=200_000).end_ms == 200_000


def test_epoch_seconds_round_to_the_nearest_ms() -> None:
    spec = parse_repeat({"every": 1, "start_date": 1.001, "end_date": 2.0004})
    assert (spec.start_ms, spec.end_ms) == (1001, 2000)


def test_a_spec_built_by_hand_is_normalised_like_a_parsed_one() -> None:
    by_hand = RepeatSpec(every_ms=None, cron=" */5 * * * * ", tz=" Europe/Paris ")
    assert by_hand == parse_repeat({"cron": "*/5 * * * *", "tz": "Europe/Paris"})


def test_aware_datetimes_are_converted_to_epoch_ms() -> None:
    paris = datetime(2024, 7, 1, 12, 0, 0, 500, tzinfo=ZoneInfo("Europe/Paris"))
    spec = parse_repeat({"every": 5, "start_date": paris})
    assert spec.start_ms == ms(2024, 7, 1, 10, 0) + 1  # 500 us rounds to 1 ms


def test_none_values_count_as_absent() -> None:
    spec = parse_repeat({"every": 5, "tz": None, "limit": None, "job_id": None, "cron": None})
    assert spec == RepeatSpec(every_ms=5000, cron=None, tz=None)


@settings(deadline=None)
@given(cron=st.text(alphabet="0123456789*/-, LW#?@HRjanmonsu\t\u00a0", max_size=24))
def test_any_cron_text_gives_a_spec_or_a_config_error(cron: str) -> None:
    try:
        spec = parse_repeat({"cron": cron, "tz": "UTC"})
    except ConfigError:
        return
    assert spec.cron is not None and len(spec.cron.split()) == 5


# --------------------------------------------------------------------------- local zone


def fake_zoneinfo(tmp_path: Path, name: str) -> Path:
    """A symlink named localtime pointing into a zoneinfo-like tree, as on Linux and macOS."""
    target = tmp_path / "usr/share/zoneinfo" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"")
    link = tmp_path / "localtime"
    link.symlink_to(target)
    return link


@pytest.mark.parametrize(("tz_env", "expected"), [
    ("Europe/Paris", "Europe/Paris"),
    (":America/New_York", "America/New_York"),
    ("/usr/share/zoneinfo/Asia/Tokyo", "Asia/Tokyo"),
    ("", "UTC"),
])
def test_local_zone_name_reads_tz_first(tmp_path: Path, tz_env: str, expected: str) -> None:
    link = fake_zoneinfo(tmp_path, "Europe/Berlin")
    assert local_zone_name(environ={"TZ": tz_env}, localtime=str(link),
                           timezone_file=str(tmp_path / "none")) == expected


def test_local_zone_name_falls_back_to_the_localtime_symlink(tmp_path: Path) -> None:
    link = fake_zoneinfo(tmp_path, "posix/Europe/Berlin")
    assert local_zone_name(environ={"TZ": "CET-1CEST"}, localtime=str(link),
                           timezone_file=str(tmp_path / "none")) == "Europe/Berlin"


def test_local_zone_name_falls_back_to_etc_timezone_then_utc(tmp_path: Path) -> None:
    (tmp_path / "localtime").write_bytes(b"TZif")  # a copy, not a link: no name in it
    (tmp_path / "timezone").write_text("Asia/Kolkata\n")
    assert local_zone_name(environ={}, localtime=str(tmp_path / "localtime"),
                           timezone_file=str(tmp_path / "timezone")) == "Asia/Kolkata"
    (tmp_path / "timezone").write_text("../../etc/passwd\n")
    assert local_zone_name(environ={}, localtime=str(tmp_path / "localtime"),
                           timezone_file=str(tmp_path / "timezone")) == "UTC"


def test_cron_without_tz_records_the_local_zone_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    spec = parse_repeat({"cron": "0 9 * * *"})
    assert spec.tz == "Asia/Tokyo"
    assert spec.next_after(ms(2024, 1, 1, 1)) == ms(2024, 1, 2, 0)
