"""`!checkin` / `!чекин` words in Russian and English; anything else is refused."""

from __future__ import annotations

import pytest

from clubs.bots.checkins.parse import (
    Alert,
    CheckinUsage,
    Language,
    OptIn,
    Pause,
    Simple,
    parse_checkin,
)

THU = frozenset({3})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Simple("status")),
        ("status", Simple("status")),
        ("статус", Simple("status")),
        ("on", OptIn(THU, 19, 0, None, None)),
        ("вкл", OptIn(THU, 19, 0, None, None)),
        ("on thu 19:00", OptIn(THU, 19, 0, None, None)),
        ("вкл чт 19:00", OptIn(THU, 19, 0, None, None)),
        ("вкл четверг 9.30", OptIn(THU, 9, 30, None, None)),
        ("on mon,thu 20:15 Asia/Almaty", OptIn(frozenset({0, 3}), 20, 15, "Asia/Almaty", None)),
        (
            "вкл пн, ср, пт 7:05 Europe/Berlin",
            OptIn(frozenset({0, 2, 4}), 7, 5, "Europe/Berlin", None),
        ),
        ("on sun 18:00 utc", OptIn(frozenset({6}), 18, 0, "UTC", None)),
        ("on thu 19:00 almaty", OptIn(THU, 19, 0, None, "almaty")),
        ("off", Simple("off")),
        ("выкл", Simple("off")),
        ("pause 2", Pause(2)),
        ("пауза 12", Pause(12)),
        ("back", Simple("back")),
        ("вернуть", Simple("back")),
        ("alert on", Alert(True)),
        ("сигнал выкл", Alert(False)),
        ("lang en", Language("en")),
        ("язык ru", Language("ru")),
        ("язык англ", Language("en")),
        ("LANGUAGE English", Language("en")),
        ("stats", Simple("stats")),
        ("итоги", Simple("stats")),
        ("ON THU 19:00", OptIn(THU, 19, 0, None, None)),
    ],
)
def test_what_members_type(text: str, expected: object) -> None:
    assert parse_checkin(text, ["almaty", "astana"]) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("maybe", "action"),
        ("on thursday 25:00", "word"),
        ("on 19:00 20:00", "time"),
        ("on thu 19:00 Mars/Olympus", "zone"),
        ("on thu 19:00 ../../etc/passwd", "zone"),
        ("on thu 19:00 Europe/Berlin Asia/Almaty", "zone"),
        ("on " + "x/" * 40, "zone"),
        ("pause", "weeks"),
        ("pause 0", "weeks"),
        ("pause 13", "weeks"),
        ("pause two", "weeks"),
        ("pause ١", "weeks"),  # Arabic-Indic digit: isdigit, not ASCII
        ("pause 999999999999999999999", "weeks"),
        ("alert", "alert"),
        ("alert maybe", "alert"),
        ("lang", "lang"),
        ("lang de", "lang"),
        ("язык ru en", "lang"),
        ("off now", "extra"),
        ("on almaty astana", "club"),
        ("on thu 19:00 <script>", "word"),
        ("on " + "thu " * 20, "too_many"),
        ("on thu\u202e19:00", "word"),
    ],
)
def test_bad_words_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(CheckinUsage) as refused:
        parse_checkin(text, ["almaty", "astana"])
    assert refused.value.problem == problem


def test_a_club_key_counts_only_if_it_is_one_of_the_members_clubs() -> None:
    with pytest.raises(CheckinUsage):
        parse_checkin("on thu 19:00 tbilisi", ["almaty"])
