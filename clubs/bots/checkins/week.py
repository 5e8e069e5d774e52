"""When a member's weekly check-in falls: chosen weekdays at a wall time in the member's own
IANA zone. Pure.

A slot is keyed by its wall time (`2026-10-29T19:00`), never by a fixed number of seconds after
the last one, so 19:00 stays 19:00 when the zone changes its offset (Berlin: 18:00 UTC in
winter, 17:00 UTC in summer). A wall time that does not exist (the spring-forward gap) falls
forward by the gap; an ambiguous one (the autumn hour that happens twice) takes the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

DAY_CODES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekdays as stored (Monday = 0, as `date.weekday()`)."""


@dataclass(frozen=True)
class WeeklyPlan:
    """When a member wants their check-in: weekdays (0 = Monday), hour and minute, zone."""

    days: frozenset[int]
    hour: int
    minute: int
    tz: str

    def __post_init__(self) -> None:
        if not self.days or not all(0 <= d <= 6 for d in self.days):
            raise ValueError("days must be a non-empty set of weekdays 0..6")
        if not (0 <= self.hour <= 23 and 0 <= self.minute <= 59):
            raise ValueError("hour 0..23 and minute 0..59")
        if not is_zone(self.tz):
            raise ValueError("unknown time zone")

    @property
    def days_text(self) -> str:
        """`mon,thu`: how the days are stored."""
        return ",".join(DAY_CODES[d] for d in sorted(self.days))

    @property
    def clock(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"


@dataclass(frozen=True)
class Slot:
    """One check-in: its wall time in the member's zone (the key) and its UTC instant."""

    local: datetime
    at: float

    @property
    def key(self) -> str:
        return slot_key(self.local)


def slot_key(local: datetime) -> str:
    return local.strftime("%Y-%m-%dT%H:%M")


def parse_slot_key(key: str) -> datetime:
    return datetime.strptime(key, "%Y-%m-%dT%H:%M")


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_zone(name: str) -> bool:
    """An IANA zone this machine knows (a fixed list: no path or file name ever reaches
    `ZoneInfo`)."""
    return name in _zones()


def days_from_text(text: str) -> frozenset[int]:
    return frozenset(DAY_CODES.index(d) for d in text.split(",") if d in DAY_CODES)


def instant(local: datetime, tz: str) -> float:
    """The UTC instant of a wall time in `tz`: a time in the spring-forward gap falls forward
    by the gap, an ambiguous one takes its first occurrence (fold 0)."""
    return local.replace(tzinfo=ZoneInfo(tz), fold=0).timestamp()


def next_slot(plan: WeeklyPlan, after: float) -> Slot:
    """The first check-in strictly after the UTC instant `after`."""
    zone = ZoneInfo(plan.tz)
    start: date = datetime.fromtimestamp(after, UTC).astimezone(zone).date() - timedelta(days=1)
    for offset in range(16):
        day = start + timedelta(days=offset)
        if day.weekday() not in plan.days:
            continue
        local = datetime.combine(day, time(plan.hour, plan.minute))
        at = instant(local, plan.tz)
        if at > after:
            return Slot(local, at)
    raise AssertionError("a weekly plan has a slot within 16 days")  # pragma: no cover


def iso_week(local: datetime) -> str:
    """`2026-W44`: the week a check-in counts in for the aggregates (the member's own week)."""
    year, week, _ = local.isocalendar()
    return f"{year}-W{week:02d}"
