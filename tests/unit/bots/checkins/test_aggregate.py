"""Facilitators' figures never reveal a single member: nothing below three answers."""

from __future__ import annotations

import pytest

from clubs.bots.checkins.aggregate import Answered, weekly_figures

W = "2026-W44"


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_answers_show_no_figure_at_all(n: int) -> None:
    (week,) = weekly_figures([Answered(W, 1) for _ in range(n)])
    assert week.suppressed
    assert week.answered is None
    assert week.mood_avg is None


def test_three_answers_show_the_count_and_the_average() -> None:
    (week,) = weekly_figures([Answered(W, 1), Answered(W, 2), Answered(W, 4)])
    assert not week.suppressed
    assert week.answered == 3
    assert week.mood_avg == 2.3


def test_ten_answers() -> None:
    rows = [Answered(W, m) for m in (1, 2, 3, 4, 5, 5, 4, 3, 2, 1)]
    (week,) = weekly_figures(rows)
    assert (week.suppressed, week.answered, week.mood_avg) == (False, 10, 3.0)


def test_the_average_needs_three_moods_even_when_three_answered() -> None:
    (week,) = weekly_figures([Answered(W, 5), Answered(W, None), Answered(W, None)])
    assert week.answered == 3
    assert week.mood_avg is None


def test_each_week_is_judged_alone_newest_first() -> None:
    rows = [Answered("2026-W43", 3)] * 3 + [Answered(W, 1)]
    new, old = weekly_figures(rows)
    assert (new.week, new.suppressed) == (W, True)
    assert (old.week, old.suppressed, old.answered) == ("2026-W43", False, 3)
