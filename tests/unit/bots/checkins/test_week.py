"""Weekly check-in slots in the member's zone, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from clubs.bots.checkins.week import WeeklyPlan, iso_week, next_slot

THURSDAY = frozenset({3})


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def chain(plan: WeeklyPlan, start: float, n: int) -> list[datetime]:
    out, after = [], start
    for _ in range(n):
        slot = next_slot(plan, after)
        out.append(datetime.fromtimestamp(slot.at, ZoneInfo(plan.tz)))
        after = slot.at
    return out


def test_berlin_thursday_19_stays_19_across_the_october_change() -> None:
    plan = WeeklyPlan(THURSDAY, 19, 0, "Europe/Berlin")
    slots = chain(plan, utc(2026, 10, 12), 4)
    assert [s.strftime("%Y-%m-%d %H:%M") for s in slots] == [
        "2026-10-15 19:00",
        "2026-10-22 19:00",
        "2026-10-29 19:00",
        "2026-11-05 19:00",
    ]
    # 17:00 UTC in summer time, 18:00 UTC once the clocks went back (25 October 2026).
    assert [s.astimezone(UTC).hour for s in slots] == [17, 17, 18, 18]
    gaps = [b.timestamp() - a.timestamp() for a, b in pairwise(slots)]
    # the week with the change is an hour longer in real time
    assert gaps == [7 * 86400, 7 * 86400 + 3600, 7 * 86400]


def test_almaty_thursday_19_is_always_14_utc() -> None:
    plan = WeeklyPlan(THURSDAY, 19, 0, "Asia/Almaty")
    slots = chain(plan, utc(2026, 10, 12), 4)
    assert all(s.hour == 19 and s.weekday() == 3 for s in slots)
    assert {s.astimezone(UTC).hour for s in slots} == {14}


def test_a_time_in_the_spring_gap_falls_forward_and_fires_once() -> None:
    plan = WeeklyPlan(frozenset({6}), 2, 30, "Europe/Berlin")  # Sunday 02:30
    slot = next_slot(plan, utc(2026, 3, 28))
    local = datetime.fromtimestamp(slot.at, ZoneInfo("Europe/Berlin"))
    assert (local.month, local.day, local.hour, local.minute) == (3, 29, 3, 30)
    assert slot.key == "2026-03-29T02:30"
    assert next_slot(plan, slot.at).key == "2026-04-05T02:30"


def test_an_ambiguous_autumn_time_fires_once_at_its_first_occurrence() -> None:
    plan = WeeklyPlan(frozenset({6}), 2, 30, "Europe/Berlin")
    slot = next_slot(plan, utc(2026, 10, 24))
    assert slot.key == "2026-10-25T02:30"
    assert slot.at == utc(2026, 10, 25, 0, 30)  # 02:30 CEST, the first of the two
    assert next_slot(plan, slot.at).key == "2026-11-01T02:30"


def test_several_days_a_week_each_once() -> None:
    plan = WeeklyPlan(frozenset({0, 3}), 9, 15, "Asia/Almaty")
    keys = [s.strftime("%a %H:%M") for s in chain(plan, utc(2026, 12, 1), 4)]
    assert keys == ["Thu 09:15", "Mon 09:15", "Thu 09:15", "Mon 09:15"]


def test_the_slot_of_now_is_not_repeated() -> None:
    plan = WeeklyPlan(THURSDAY, 19, 0, "Asia/Almaty")
    first = next_slot(plan, utc(2026, 12, 1))
    assert next_slot(plan, first.at).at == first.at + 7 * 86400
    assert next_slot(plan, first.at - 1).at == first.at


def test_the_week_is_the_members_own() -> None:
    assert iso_week(datetime(2026, 10, 29, 19, 0)) == "2026-W44"


@pytest.mark.parametrize(
    ("days", "hour", "minute", "tz"),
    [
        (frozenset(), 19, 0, "UTC"),
        (frozenset({7}), 19, 0, "UTC"),
        (THURSDAY, 24, 0, "UTC"),
        (THURSDAY, 19, 60, "UTC"),
        (THURSDAY, 19, 0, "../../etc/passwd"),
        (THURSDAY, 19, 0, "Mars/Olympus"),
    ],
)
def test_a_bad_plan_is_refused(days: frozenset[int], hour: int, minute: int, tz: str) -> None:
    with pytest.raises(ValueError, match=r"days|hour|zone"):
        WeeklyPlan(days, hour, minute, tz)
