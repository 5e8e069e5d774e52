"""What organisers may see of the strategies: per club, cohort and month, how many updates
and how many members made them; never content, never who. Pure.

A cell (one cohort's month) with fewer than `MIN_PEOPLE` members shows no figure at all. The
club's total of a month is shown only when none of its cohorts' cells that month is suppressed:
otherwise the total minus the shown cells would give the suppressed cell back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MIN_PEOPLE = 3


@dataclass(frozen=True)
class Update:
    """One strategy update as the counts read it: where, when, and a pseudonym of who."""

    club: str
    cohort: str
    month: str
    who: str


@dataclass(frozen=True)
class Cell:
    cohort: str
    suppressed: bool
    updates: int | None
    people: int | None


@dataclass(frozen=True)
class MonthFigures:
    club: str
    month: str
    cohorts: tuple[Cell, ...]
    total_updates: int | None
    """None when any cohort's cell that month is suppressed, or the club's people are fewer
    than MIN_PEOPLE."""
    total_people: int | None


def monthly_counts(
    updates: Iterable[Update], *, min_people: int = MIN_PEOPLE
) -> list[MonthFigures]:
    """Per club and month (clubs by name, months newest first) the cohorts' cells and total."""
    cells: dict[tuple[str, str], dict[str, list[str]]] = {}
    for u in updates:
        cells.setdefault((u.club, u.month), {}).setdefault(u.cohort, []).append(u.who)
    out = []
    for club, month in sorted(cells, key=lambda k: (k[0], _desc(k[1]))):
        by_cohort = cells[(club, month)]
        row = []
        for cohort in sorted(by_cohort):
            whos = by_cohort[cohort]
            people = len(set(whos))
            if people < min_people:
                row.append(Cell(cohort, True, None, None))
            else:
                row.append(Cell(cohort, False, len(whos), people))
        everyone = [w for whos in by_cohort.values() for w in whos]
        total_people = len(set(everyone))
        hidden = any(c.suppressed for c in row) or total_people < min_people
        out.append(
            MonthFigures(
                club,
                month,
                tuple(row),
                None if hidden else len(everyone),
                None if hidden else total_people,
            )
        )
    return out


def _desc(month: str) -> str:
    """Sort key that puts later months first (`2026-12` before `2026-11`)."""
    return "".join(chr(0x7F - ord(c)) for c in month)
