"""Organisers' figures: per cohort and month, nothing below three members, and no club total
that would give a suppressed cell back."""

from __future__ import annotations

from clubs.bots.strategy.counts import Cell, Update, monthly_counts


def updates(club: str, cohort: str, month: str, whos: str) -> list[Update]:
    return [Update(club, cohort, month, w) for w in whos]


def test_cells_below_three_members_are_suppressed_whatever_the_updates() -> None:
    rows = updates("almaty", "spring", "2026-12", "aaaaabbbbb")  # 10 updates, 2 members
    (month,) = monthly_counts(rows)
    assert month.cohorts == (Cell("spring", True, None, None),)
    assert (month.total_updates, month.total_people) == (None, None)


def test_three_members_are_shown_with_their_update_count() -> None:
    (month,) = monthly_counts(updates("almaty", "spring", "2026-12", "aabc"))
    assert month.cohorts == (Cell("spring", False, 4, 3),)
    assert (month.total_updates, month.total_people) == (4, 3)


def test_a_club_total_is_hidden_when_a_cohort_cell_is_suppressed() -> None:
    rows = updates("almaty", "spring", "2026-12", "abc") + updates(
        "almaty", "autumn", "2026-12", "d"
    )
    (month,) = monthly_counts(rows)
    assert month.cohorts == (Cell("autumn", True, None, None), Cell("spring", False, 3, 3))
    assert month.total_updates is None  # 4 - 3 would give the autumn cohort's 1


def test_months_newest_first_clubs_apart() -> None:
    rows = (
        updates("almaty", "spring", "2026-11", "abc")
        + updates("almaty", "spring", "2026-12", "abc")
        + updates("berlin", "one", "2026-12", "xyz")
    )
    got = [(m.club, m.month) for m in monthly_counts(rows)]
    assert got == [("almaty", "2026-12"), ("almaty", "2026-11"), ("berlin", "2026-12")]
