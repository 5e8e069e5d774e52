"""Sessions declared in the club's state: checked like a facilitator's command, skipped if not."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bots.scheduling.declared import declared_sessions

WEEKLY: dict[str, Any] = {
    "key": "weekly",
    "title": "Встреча клуба",
    "kind": "meeting",
    "start": "2027-01-07T19:00",
    "rrule": "FREQ=WEEKLY;BYDAY=TH",
    "duration_s": 7200,
    "online": False,
    "capacity": 20,
    "materials": None,
}


def test_a_valid_entry_becomes_a_series_draft_named_by_club_key_and_content() -> None:
    (d,), skipped = declared_sessions("almaty", {"sessions": [WEEKLY]})
    assert skipped == 0
    assert d.source.startswith("state:almaty:weekly:")
    assert (d.title, d.kind, d.start_local, d.rrule, d.duration_s, d.capacity) == (
        "Встреча клуба",
        "meeting",
        "2027-01-07T19:00",
        "FREQ=WEEKLY;BYDAY=TH",
        7200,
        20,
    )
    (same,), _ = declared_sessions("almaty", {"sessions": [dict(WEEKLY)]})
    (moved,), _ = declared_sessions(
        "almaty", {"sessions": [{**WEEKLY, "start": "2027-01-07T20:00"}]}
    )
    assert same.source == d.source
    assert moved.source != d.source
    assert moved.source.startswith("state:almaty:weekly:")


@pytest.mark.parametrize(
    "change",
    [
        {"rrule": "FREQ=SECONDLY"},
        {"rrule": "FREQ=WEEKLY;COUNT=10000"},
        {"start": "next thursday"},
        {"key": "../etc"},
        {"title": ""},
        {"title": "x" * 500},
        {"kind": "rave"},
        {"duration_s": 10},
        {"duration_s": "2h"},
        {"online": True},  # with a capacity
        {"capacity": 0},
        {"materials": "javascript:alert(1)"},
        {"online": "yes"},
    ],
)
def test_a_bad_entry_is_skipped_and_the_others_kept(change: dict[str, Any]) -> None:
    other = {**WEEKLY, "key": "monthly", "rrule": "FREQ=MONTHLY;BYDAY=1TH"}
    good, skipped = declared_sessions("almaty", {"sessions": [{**WEEKLY, **change}, other]})
    assert skipped == 1
    assert [d.source.split(":")[2] for d in good] == ["monthly"]


@pytest.mark.parametrize("content", [None, {}, {"sessions": "all"}, {"sessions": [1, "x", None]}])
def test_garbage_content_gives_nothing(content: Any) -> None:
    good, _ = declared_sessions("almaty", content)
    assert good == []
