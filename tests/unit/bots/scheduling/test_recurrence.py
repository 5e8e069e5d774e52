"""Occurrences of session series: wall time kept across DST, gaps, folds, skips, hostile rules."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clubs.bots.scheduling.recurrence import (
    HORIZON_DAYS,
    MAX_OCCURRENCES,
    Occurrence,
    RuleError,
    check_rule,
    occurrence_key,
    occurrences,
    parse_key,
    zone,
)

WEEKLY_TH = "FREQ=WEEKLY;BYDAY=TH"
FIRST_TH = datetime(2027, 1, 7, 19, 0)  # a Thursday
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("tzid", "winter_utc_hour", "summer_utc_hour"),
    [("Europe/Berlin", 18, 17), ("Asia/Almaty", 14, 14), ("Asia/Tbilisi", 15, 15)],
)
def test_a_year_of_weekly_sessions_stays_at_19_local(
    tzid: str, winter_utc_hour: int, summer_utc_hour: int
) -> None:
    occ = occurrences(FIRST_TH, tzid, WEEKLY_TH, after=LONG_AGO, limit=100, skip=())
    year = [o for o in occ if o.local.year == 2027]
    assert len(year) == 52
    assert year[0].local == FIRST_TH
    assert year[-1].local == datetime(2027, 12, 30, 19, 0)
    tz = zone(tzid)
    for o in year:
        assert o.local.weekday() == 3
        assert (o.local.hour, o.local.minute) == (19, 0)
        assert o.start.tzinfo is UTC
        assert o.start.astimezone(tz).replace(tzinfo=None) == o.local
        # Berlin: CEST from 2027-03-28 to 2027-10-31 (the last Sundays of March and October).
        in_summer = datetime(2027, 3, 28) < o.local < datetime(2027, 10, 31)
        assert o.start.hour == (summer_utc_hour if in_summer else winter_utc_hour)
    offsets = {o.start.astimezone(tz).utcoffset() for o in year}
    assert len(offsets) == (2 if tzid == "Europe/Berlin" else 1)
    if tzid == "Europe/Berlin":
        assert [o.start for o in year if o.local.month == 3][-1] == _utc(2027, 3, 25, 18)
        assert next(o.start for o in year if o.local.month == 4) == _utc(2027, 4, 1, 17)
        assert [o.start for o in year if o.local.month == 10][-1] == _utc(2027, 10, 28, 17)
        assert next(o.start for o in year if o.local.month == 11) == _utc(2027, 11, 4, 18)


def test_almaty_moved_to_plus_five_on_2024_03_01() -> None:
    occ = occurrences(datetime(2024, 2, 22, 19), "Asia/Almaty", WEEKLY_TH, after=LONG_AGO, limit=2)
    assert [o.start for o in occ] == [_utc(2024, 2, 22, 13), _utc(2024, 2, 29, 13)]
    occ = occurrences(
        datetime(2024, 2, 22, 19), "Asia/Almaty", WEEKLY_TH, after=_utc(2024, 3, 1), limit=1
    )
    assert occ == [Occurrence(datetime(2024, 3, 7, 19), _utc(2024, 3, 7, 14))]


def test_spring_gap_moves_forward_by_the_gap_and_keeps_the_key() -> None:
    occ = occurrences(
        datetime(2027, 3, 27, 2, 30), "Europe/Berlin", "FREQ=DAILY", after=LONG_AGO, limit=3
    )
    assert [o.local for o in occ] == [
        datetime(2027, 3, 27, 2, 30),
        datetime(2027, 3, 28, 2, 30),
        datetime(2027, 3, 29, 2, 30),
    ]
    assert [o.start for o in occ] == [
        _utc(2027, 3, 27, 1, 30),
        _utc(2027, 3, 28, 1, 30),  # 03:30 CEST: 02:30 does not exist that night
        _utc(2027, 3, 29, 0, 30),
    ]
    berlin = zone("Europe/Berlin")
    assert occ[1].start.astimezone(berlin).replace(tzinfo=None) == datetime(2027, 3, 28, 3, 30)


def test_autumn_fold_takes_the_first_instance() -> None:
    occ = occurrences(
        datetime(2027, 10, 30, 2, 30), "Europe/Berlin", "FREQ=DAILY", after=LONG_AGO, limit=3
    )
    assert [o.start for o in occ] == [
        _utc(2027, 10, 30, 0, 30),
        _utc(2027, 10, 31, 0, 30),  # the first 02:30, still CEST
        _utc(2027, 11, 1, 1, 30),
    ]


def test_after_is_strict_and_limit_is_kept() -> None:
    first = occurrences(FIRST_TH, "Asia/Tbilisi", WEEKLY_TH, after=LONG_AGO, limit=3)
    assert [o.local.day for o in first] == [7, 14, 21]
    later = occurrences(FIRST_TH, "Asia/Tbilisi", WEEKLY_TH, after=first[0].start, limit=2)
    assert later == first[1:3]
    assert occurrences(FIRST_TH, "Asia/Tbilisi", WEEKLY_TH, after=LONG_AGO, limit=0) == []


def test_skip_leaves_out_cancelled_occurrences() -> None:
    occ = occurrences(
        FIRST_TH,
        "Europe/Berlin",
        WEEKLY_TH,
        after=LONG_AGO,
        limit=3,
        skip={datetime(2027, 1, 14, 19), datetime(2027, 1, 28, 19)},
    )
    assert [o.local for o in occ] == [
        datetime(2027, 1, 7, 19),
        datetime(2027, 1, 21, 19),
        datetime(2027, 2, 4, 19),
    ]


def test_one_off_is_zero_or_one() -> None:
    start = datetime(2027, 5, 6, 19)
    one = occurrences(start, "Europe/Berlin", None, after=LONG_AGO)
    assert one == [Occurrence(start, _utc(2027, 5, 6, 17))]
    assert occurrences(start, "Europe/Berlin", None, after=_utc(2027, 5, 6, 17)) == []
    assert occurrences(start, "Europe/Berlin", None, after=LONG_AGO, skip=[start]) == []


@pytest.mark.parametrize(
    ("rule", "days"),
    [
        ("FREQ=MONTHLY;BYDAY=1TH", [7, 4, 4, 1]),
        ("FREQ=MONTHLY;BYDAY=TH;BYSETPOS=1", [7, 4, 4, 1]),
        ("FREQ=MONTHLY;BYDAY=-1FR", [29, 26, 26, 30]),
        ("FREQ=WEEKLY;INTERVAL=2;BYDAY=TH", [7, 21, 4, 18]),
        ("FREQ=WEEKLY;BYDAY=MO,TH", [7, 11, 14, 18]),
        ("RRULE:FREQ=DAILY;COUNT=2", [7, 8]),
        ("FREQ=WEEKLY;UNTIL=20270121", [7, 14, 21]),
        ("FREQ=WEEKLY;UNTIL=20270114T180000Z", [7, 14]),
    ],
)
def test_rule_shapes(rule: str, days: list[int]) -> None:
    occ = occurrences(FIRST_TH, "Europe/Berlin", rule, after=LONG_AGO, limit=4)
    assert [o.local.day for o in occ] == days
    assert all(o.local.time() == FIRST_TH.time() for o in occ)


def test_nothing_beyond_the_horizon_from_the_time_asked_about() -> None:
    occ = occurrences(FIRST_TH, "Asia/Almaty", WEEKLY_TH, after=LONG_AGO, limit=1000)
    assert len(occ) == HORIZON_DAYS // 7 + 1
    assert occ[-1].local <= FIRST_TH + timedelta(days=HORIZON_DAYS)
    # Years later a weekly series still goes on: the horizon counts from the time asked about.
    later = FIRST_TH.replace(tzinfo=UTC) + timedelta(days=HORIZON_DAYS * 3)
    (nxt,) = occurrences(FIRST_TH, "Asia/Almaty", WEEKLY_TH, after=later, limit=1)
    assert later < nxt.start <= later + timedelta(days=7)
    assert nxt.local.weekday() == FIRST_TH.weekday()
    assert (nxt.local.hour, nxt.local.minute) == (FIRST_TH.hour, FIRST_TH.minute)


def test_count_at_the_limit_is_fine() -> None:
    check_rule(f"FREQ=DAILY;COUNT={MAX_OCCURRENCES}", FIRST_TH)
    with pytest.raises(RuleError, match="COUNT"):
        check_rule(f"FREQ=DAILY;COUNT={MAX_OCCURRENCES + 1}", FIRST_TH)


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=DAILY;COUNT=10000",
        "FREQ=WEEKLY;COUNT=99999999999999999999",
        "FREQ=SECONDLY",
        "FREQ=MINUTELY;COUNT=5",
        "FREQ=HOURLY",
        "FREQ=YEARLY",
        "garbage",
        "",
        "FREQ=WEEKLY;BYDAY=XX",
        "FREQ=WEEKLY;BYDAY=1TH",
        "FREQ=WEEKLY;FREQ=DAILY",
        "FREQ=WEEKLY;BYHOUR=1,2,3",
        "FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=DAILY;INTERVAL=7;BYDAY=MO",
        "FREQ=MONTHLY;BYDAY=TH;BYSETPOS=1,2,3,4,5,6,7,8,9,10",
        "FREQ=MONTHLY;BYDAY=TH;BYSETPOS=366",
        "FREQ=WEEKLY;INTERVAL=0",
        "FREQ=WEEKLY;INTERVAL=1000",
        "FREQ=WEEKLY;COUNT=0",
        "FREQ=WEEKLY;COUNT=3;UNTIL=20270301",
        "FREQ=WEEKLY;UNTIL=20260101",
        "FREQ=WEEKLY;UNTIL=20270230",
        "FREQ=WEEKLY;X-NAME=1",
        "FREQ=WEEKLY;BYDAY=" + ",".join(["TH"] * 5000),
        "FREQ=WEEKLY;" * 2000,
        "FREQ=WEEKLY\nRRULE:FREQ=DAILY",
    ],
)
def test_hostile_rules_are_refused_quickly(rule: str) -> None:
    began = time.monotonic()
    with pytest.raises(RuleError):
        check_rule(rule, FIRST_TH)
    with pytest.raises(RuleError):
        occurrences(FIRST_TH, "Europe/Berlin", rule, after=LONG_AGO)
    assert time.monotonic() - began < 0.5


def test_a_rule_that_never_happens_is_refused_quickly() -> None:
    began = time.monotonic()
    with pytest.raises(RuleError, match="no occurrence"):
        check_rule("FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=30", datetime(2027, 2, 1, 19))
    with pytest.raises(RuleError, match="no occurrence"):
        check_rule("FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=-31", datetime(2027, 4, 1, 19))
    assert time.monotonic() - began < 0.5


def test_an_aware_start_is_refused() -> None:
    with pytest.raises(RuleError, match="naive"):
        check_rule(WEEKLY_TH, FIRST_TH.replace(tzinfo=UTC))


def test_a_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        occurrences(FIRST_TH, "Europe/Berlin", WEEKLY_TH, after=datetime(2027, 1, 1))


@pytest.mark.parametrize(
    "tzid", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Europe/../../etc", "x" * 300]
)
def test_unknown_or_path_like_zones_are_refused(tzid: str) -> None:
    with pytest.raises(RuleError):
        zone(tzid)
    with pytest.raises(RuleError):
        occurrences(FIRST_TH, tzid, WEEKLY_TH, after=LONG_AGO)


def test_known_zones() -> None:
    assert str(zone("Asia/Almaty")) == "Asia/Almaty"
    assert zone("Europe/Berlin").utcoffset(datetime(2027, 7, 1)) == timedelta(hours=2)


def test_keys_round_trip() -> None:
    assert occurrence_key(datetime(2026, 12, 10, 19, 0)) == "2026-12-10T19:00"
    assert parse_key("2026-12-10T19:00") == datetime(2026, 12, 10, 19, 0)


@pytest.mark.parametrize(
    "key",
    ["", "2026-12-10", "2026-12-10T25:00", "2026-02-30T19:00", "x" * 1000, "2026-12-10T19:00Z"],
)
def test_garbage_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match=r"key|does not match|out of range|unconverted"):
        parse_key(key)


_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


@settings(max_examples=150, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2029, 12, 31)).map(
        lambda d: d.replace(second=0, microsecond=0)
    ),
    weekday=st.integers(0, 6),
    interval=st.integers(1, 4),
    tzid=st.sampled_from(["Europe/Berlin", "Asia/Almaty", "Asia/Tbilisi"]),
    after_days=st.integers(-30, 400),
)
def test_weekly_rule_property(
    start: datetime, weekday: int, interval: int, tzid: str, after_days: int
) -> None:
    rule = f"FREQ=WEEKLY;INTERVAL={interval};BYDAY={_DAYS[weekday]}"
    after = start.replace(tzinfo=UTC) + timedelta(days=after_days)
    occ = occurrences(start, tzid, rule, after=after, limit=8)
    assert occ, "an unbounded weekly rule always has a next occurrence before the horizon"
    tz = zone(tzid)
    for o in occ:
        assert o.local.weekday() == weekday
        assert o.local.time() == start.time()
        assert o.local >= start
        assert o.start > after
        assert o.start == o.local.replace(tzinfo=tz).astimezone(UTC)
        assert parse_key(occurrence_key(o.local)) == o.local
    gaps = {(b.local - a.local).days for a, b in itertools.pairwise(occ)}
    assert gaps <= {7 * interval}
    assert [o.start for o in occ] == sorted({o.start for o in occ})
