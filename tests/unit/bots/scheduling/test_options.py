"""The `!session` line: title; when; options in any order, Russian or English."""

from __future__ import annotations

from datetime import datetime

import pytest

from clubs.bots.scheduling.options import SessionUsage, parse_session

NOW = datetime(2026, 12, 6, 10, 0)  # a Sunday


def test_a_full_offline_line_in_russian() -> None:
    d = parse_session(
        "Вечер клуба; каждый четверг в 19:00; 1,5 ч; семинар; офлайн; место ул. Абая 10; мест 12",
        NOW,
    )
    assert d.title == "Вечер клуба"
    assert (d.when.start, d.when.rrule) == (datetime(2026, 12, 10, 19, 0), "FREQ=WEEKLY;BYDAY=TH")
    assert (d.duration_s, d.kind, d.online, d.venue, d.capacity) == (
        5400,
        "seminar",
        False,
        "ул. Абая 10",
        12,
    )
    assert d.link is None
    assert "Абая" not in repr(d)


def test_an_online_line_in_english_with_defaults() -> None:
    d = parse_session(
        "Lecture;  every other Wednesday 18:30 ; lecture; online https://meet.example.org/x1; "
        "materials https://example.org/slides",
        NOW,
    )
    assert d.when.rrule == "FREQ=WEEKLY;INTERVAL=2;BYDAY=WE"
    assert (d.duration_s, d.kind, d.online) == (7200, "lecture", True)
    assert d.link == "https://meet.example.org/x1"
    assert d.materials == "https://example.org/slides"
    bare = parse_session("Call; tomorrow 19:00; online", NOW)
    assert (bare.online, bare.link) == (True, None)  # the bot makes a call link


@pytest.mark.parametrize(
    ("line", "part"),
    [
        ("only a title", "shape"),
        ("; every Thursday 19:00", "shape"),
        ("x" * 121 + "; every Thursday 19:00", "title"),
        ("Evening; whenever", "when"),
        ("Evening; 2020-01-01 19:00", "when"),
        ("Evening; every Thursday 19:00; online http://insecure.example/x", "link"),
        ("Evening; every Thursday 19:00; cap 0", "capacity"),
        ("Evening; every Thursday 19:00; мест много", "capacity"),
        ("Evening; every Thursday 19:00; materials ftp://x", "materials"),
        ("Evening; every Thursday 19:00; bring snacks", "option"),
        ("Evening; every Thursday 19:00; online; cap 10", "format"),
        ("Evening; every Thursday 19:00; 30 hours", "option"),
    ],
)
def test_what_is_wrong_is_named(line: str, part: str) -> None:
    with pytest.raises(SessionUsage) as caught:
        parse_session(line, NOW)
    assert caught.value.part == part
