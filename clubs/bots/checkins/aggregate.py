"""What facilitators may see of a club's check-ins: per week, how many answered and the
average mood, never one person's answer. Pure.

A week in which fewer than `MIN_PEOPLE` members answered shows no figure at all (not even the
count: "1 answered, average 1.0" would be that person's mood). The mood average is shown only
when at least `MIN_PEOPLE` gave a mood.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MIN_PEOPLE = 3


@dataclass(frozen=True)
class Answered:
    """One member's check-in of one week, as far as the aggregates read it."""

    week: str
    mood: int | None


@dataclass(frozen=True)
class WeekFigures:
    week: str
    suppressed: bool
    answered: int | None
    """None when suppressed."""
    mood_avg: float | None
    """None when suppressed or when fewer than MIN_PEOPLE gave a mood."""


def weekly_figures(rows: Iterable[Answered], *, min_people: int = MIN_PEOPLE) -> list[WeekFigures]:
    """Per week (newest first): the count and the average mood, or suppressed."""
    by_week: dict[str, list[int | None]] = {}
    for row in rows:
        by_week.setdefault(row.week, []).append(row.mood)
    out = []
    for week in sorted(by_week, reverse=True):
        moods = by_week[week]
        if len(moods) < min_people:
            out.append(WeekFigures(week, True, None, None))
            continue
        given = [m for m in moods if m is not None]
        avg = round(sum(given) / len(given), 1) if len(given) >= min_people else None
        out.append(WeekFigures(week, False, len(moods), avg))
    return out
