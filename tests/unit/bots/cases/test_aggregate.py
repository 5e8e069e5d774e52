"""Organisers' figures of a club's cases: nothing for a month below three cases, no tag used by
fewer than three."""

from __future__ import annotations

from clubs.bots.cases.aggregate import MonthFigures, Posted, monthly_tags


def test_a_month_below_three_cases_shows_nothing() -> None:
    rows = [Posted("2026-11", ("тв",)), Posted("2026-11", ("тв",))]
    assert monthly_tags(rows) == [MonthFigures("2026-11", True, None, (), 0)]


def test_tags_below_three_are_left_out_and_counted_as_rare() -> None:
    rows = [
        Posted("2026-12", ("тв", "мобилизация")),
        Posted("2026-12", ("тв", "санкции", "тв")),
        Posted("2026-12", ("тв", "мобилизация")),
        Posted("2026-12", ("мобилизация",)),
        Posted("2026-11", ("тв",)),
    ]
    december, november = monthly_tags(rows)
    assert december == MonthFigures("2026-12", False, 4, (("мобилизация", 3), ("тв", 3)), 1)
    assert november.suppressed
    assert november.cases is None
