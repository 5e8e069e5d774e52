"""What organisers may see of a club's cases: per month, how many cases were posted with each
tag, never a case. Pure.

A month with fewer than `MIN_CASES` cases shows no figure at all, and a tag used by fewer than
`MIN_CASES` of the month's cases is not shown (only how many such rare tags there were): a
count of one or two points at a person.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

MIN_CASES = 3


@dataclass(frozen=True)
class Posted:
    """One posted case, as far as the figures read it."""

    month: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class MonthFigures:
    month: str
    suppressed: bool
    cases: int | None
    """None when suppressed."""
    tags: tuple[tuple[str, int], ...]
    """(tag, count) with at least MIN_CASES cases, most used first."""
    rare: int
    """How many tags were left out for being used by fewer than MIN_CASES cases."""


def monthly_tags(rows: Iterable[Posted], *, min_cases: int = MIN_CASES) -> list[MonthFigures]:
    """Per month (newest first): the number of cases and the counts by tag, or suppressed."""
    by_month: dict[str, list[tuple[str, ...]]] = {}
    for row in rows:
        by_month.setdefault(row.month, []).append(row.tags)
    out = []
    for month in sorted(by_month, reverse=True):
        cases = by_month[month]
        if len(cases) < min_cases:
            out.append(MonthFigures(month, True, None, (), 0))
            continue
        counts = Counter(tag for tags in cases for tag in set(tags))
        shown = sorted(((t, c) for t, c in counts.items() if c >= min_cases), key=_order)
        out.append(MonthFigures(month, False, len(cases), tuple(shown), len(counts) - len(shown)))
    return out


def _order(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])
