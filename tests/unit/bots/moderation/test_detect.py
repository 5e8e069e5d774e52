"""Protection decisions: floods, waves, mentions, personal data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clubs.bots.moderation.detect import (
    SlidingWindow,
    Thresholds,
    club_thresholds,
    club_words,
    find_personal_data,
    has_link,
    mention_count,
    words_matching,
)


def test_flood_trips_once_when_the_threshold_is_crossed() -> None:
    window = SlidingWindow(limit=5, window_s=10)
    results = [window.add("@m:x", t) for t in (0, 1, 2, 3, 4, 5, 6)]
    assert results == [False, False, False, False, True, False, False]


def test_slow_messages_never_trip() -> None:
    window = SlidingWindow(limit=5, window_s=10)
    assert not any(window.add("@m:x", t * 3.0) for t in range(100))


def test_flood_trips_again_after_calming_down() -> None:
    window = SlidingWindow(limit=3, window_s=10)
    assert [window.add("k", t) for t in (0, 1, 2)] == [False, False, True]
    assert window.add("k", 30) is False  # calm again
    assert [window.add("k", t) for t in (31, 32)] == [False, True]


def test_senders_are_counted_separately_and_memory_is_bounded() -> None:
    window = SlidingWindow(limit=3, window_s=10)
    for i in range(1000):
        window.add(f"@u{i}:x", 0)
    assert not window.add("@u1:x", 1)
    window.forget_older_than(100)
    assert window._times == {}


def test_mentions_count_distinct_people_from_both_sources() -> None:
    body = "@a:x @b:x hello @a:x"
    assert mention_count(["@c:x", "@a:x", 5], body) == 3
    assert mention_count(None, "nobody") == 0


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("позвони мне +7 916 123-45-67", ["phone"]),
        ("мой номер 8 (916) 123 45 67", ["phone"]),
        ("мой телефон +49 151 23456789", ["phone"]),
        ("+995 555 12 34 56", ["phone"]),
        ("пиши на anna.k@mail.ru", ["email"]),
        ("паспорт 45 12 345678", ["passport"]),
        ("живу ул. Ленина, д. 5, кв. 12", ["address"]),
        ("д. 7 кв. 3", ["address"]),
        ("Hauptstraße 12 in Berlin", ["address"]),
        ("ul. Marszałkowska 10", ["address"]),
        ("карта 4111 1111 1111 1111", ["card"]),
    ],
)
def test_personal_data_is_found(text: str, kinds: list[str]) -> None:
    assert find_personal_data(text) == kinds


@pytest.mark.parametrize(
    "text",
    [
        "встреча в 19:30, 12.05.2026, 15 человек",
        "сумма 1500000 рублей",
        "когорта 2026-spring, комната 12",
        "мама сказала, что через три месяца всё поменялось",
        "see @anna:clubs.example at 7",
    ],
)
def test_ordinary_messages_are_not_personal_data(text: str) -> None:
    assert find_personal_data(text) == []


@given(st.text(max_size=2000))
def test_personal_data_never_raises(text: str) -> None:
    find_personal_data(text)


def test_links_and_words() -> None:
    assert has_link("смотри https://example.org/x")
    assert has_link("t.me/joinchat/abc")
    assert has_link("bit.ly/abc")
    assert not has_link("просто текст")
    assert words_matching("Купите КРИПТУ сейчас", ["крипт", "казино"]) == ["крипт"]
    assert words_matching("рекриптовать", ["крипт"]) == []


def test_a_club_overrides_the_thresholds_it_sets_and_nothing_else() -> None:
    base = Thresholds()
    assert club_thresholds(base, None) is base
    assert club_thresholds(base, {}) is base
    t = club_thresholds(base, {"personal_data": "flag", "flood_messages": 12, "mute_s": 900})
    assert (t.personal_data, t.flood_messages, t.mute_s) == ("flag", 12, 900)
    assert (t.flood_window_s, t.max_mentions) == (base.flood_window_s, base.max_mentions)


@pytest.mark.parametrize(
    "hostile",
    [
        {"flood_messages": True},  # a bool is not a number here
        {"flood_messages": 1.5},  # counts are whole numbers
        {"flood_messages": 1},  # below the range
        {"mute_s": 10**9},  # above it
        {"flood_window_s": "10"},
        {"personal_data": "maybe"},
        {"max_mentions": None},
    ],
)
def test_club_settings_of_the_wrong_type_or_range_are_ignored(hostile: dict[str, object]) -> None:
    assert club_thresholds(Thresholds(), hostile) == Thresholds()


def test_club_words_are_strings_only_and_bounded() -> None:
    assert club_words(None) == ()
    assert club_words({"words": "spam"}) == ()
    assert club_words({"words": ["spam", 7, "", " ", "x" * 101, "флуд"]}) == ("spam", "флуд")
    assert len(club_words({"words": [f"w{i}" for i in range(2000)]})) == 500
