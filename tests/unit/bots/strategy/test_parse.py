"""`!strategy …` in words: Russian and English verbs, numbers, levels, dates and refusals."""

from __future__ import annotations

from datetime import date

import pytest

from clubs.bots.strategy.parse import (
    MAX_LABEL,
    Add,
    Log,
    Nudge,
    Person,
    Read,
    SetField,
    Share,
    Simple,
    StrategyUsage,
    parse_strategy,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Simple("list")),
        ("помощь", Simple("help")),
        ("stats", Simple("stats")),
        ("итоги", Simple("stats")),
        ("доступные", Simple("shared")),
        ("добавить  мама   Лены", Add("мама Лены")),
        ("add colleague A", Add("colleague A")),
        ("2", Person("show", 2)),
        ("показать 2", Person("show", 2)),
        ("график", Person("chart", None)),
        ("chart 3", Person("chart", 3)),
        ("удалить 1", Person("delete", 1)),
        ("отозвать 1", Person("unshare", 1)),
        ("revoke 1", Person("unshare", 1)),
        ("цель 1 спросить про её опыт", SetField(1, "goal", "спросить про её опыт")),
        ("works 2 questions", SetField(2, "works", "questions")),
        ("избегать 1 споров", SetField(1, "avoid", "споров")),
        ("шаг 1 позвонить", SetField(1, "next", "позвонить")),
        ("переименовать 1 тётя", SetField(1, "label", "тётя")),
        ("запись 1 4", Log(1, 4, None, "")),
        ("log 1 5 2026-11-30 she asked back", Log(1, 5, date(2026, 11, 30), "she asked back")),
        ("запись 2 1 тяжело", Log(2, 1, None, "тяжело")),
        ("напоминание вкл", Nudge(True)),
        ("nudge OFF", Nudge(False)),
        ("поделиться 1", Share(1, None)),
        ("share 1 @boris:club.example", Share(1, "@boris:club.example")),  # type: ignore[arg-type]
        ("читать A1B2C3", Read("a1b2c3")),
    ],
)
def test_requests(text: str, expected: object) -> None:
    assert parse_strategy(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("maybe", "unknown"),
        ("2 more", "extra"),
        ("stats please", "extra"),
        ("показать", "number"),
        ("показать 0", "number"),
        ("показать 100", "number"),
        ("показать ٣", "number"),  # not an ASCII digit
        ("цель 1", "missing_text"),
        ("цель x text", "number"),
        ("добавить", "missing_label"),
        ("добавить " + "я" * (MAX_LABEL + 1), "label_long"),
        ("добавить @mama:example.org", "label_id"),
        ("запись 1", "level"),
        ("запись 1 6", "level"),
        ("запись 1 0", "level"),
        ("запись 1 44", "level"),
        ("запись 1 3 2026-13-01", "date"),
        ("напоминание иногда", "on_off"),
        ("поделиться 1 boris", "not_a_user"),
        ("читать ../x", "code"),
        ("цель 1 " + "x" * 1001, "too_long"),
    ],
)
def test_refusals_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(StrategyUsage) as caught:
        parse_strategy(text)
    assert caught.value.problem == problem


def test_a_quoted_word_is_clipped() -> None:
    with pytest.raises(StrategyUsage) as caught:
        parse_strategy("x" * 300)
    word = caught.value.values["word"]
    assert len(word) == 20
    assert word.endswith("…")
