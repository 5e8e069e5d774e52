"""A club's check-in settings from room state: what fits is used, anything else is the default."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bots.checkins.clubconf import ClubCheckins, club_checkins

DEFAULT = ClubCheckins(None, 90)


def test_the_clubs_questions_and_retention() -> None:
    settings = {
        "checkins": {"questions": [" Как прошла неделя? ", "Что помогло?"], "keep_days": 30}
    }
    assert club_checkins(settings) == ClubCheckins(("Как прошла неделя?", "Что помогло?"), 30)


@pytest.mark.parametrize(
    "conf",
    [
        None,
        "questions",
        [],
        {"questions": []},
        {"questions": ["a", "b", "c", "d"]},
        {"questions": ["ok", 5]},
        {"questions": ["   "]},
        {"questions": ["x" * 301]},
        {"questions": "one"},
        {"keep_days": True},
        {"keep_days": 3},
        {"keep_days": 10_000},
        {"keep_days": "90"},
    ],
)
def test_anything_that_does_not_fit_is_the_default(conf: Any) -> None:
    assert club_checkins({"checkins": conf} if conf is not None else {}) == DEFAULT


def test_the_default_questions_are_as_many_as_their_templates() -> None:
    from clubs.bots.checkins.bot import TEXT_QUESTIONS
    from clubs.bots.checkins.clubconf import MAX_QUESTIONS
    from clubs.bots.checkins.store import DEFAULT_QUESTIONS

    assert len(TEXT_QUESTIONS) == DEFAULT_QUESTIONS <= MAX_QUESTIONS
