"""A club's reminder settings as the bot reads them from room state: anything malformed counts
as not set, so a hostile or broken state event cannot stop reminders or make them absurd."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bots.scheduling.reminders import club_reminders


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ((), "dm")),
        ({"reminders": {"before_s": [900, 86400], "to": "room"}}, ((86400, 900), "room")),
        ({"reminders": {"before_s": [3600]}}, ((3600,), "dm")),
        ({"reminders": {"to": "room"}}, ((), "room")),
        ({"reminders": {"before_s": [3600], "to": "email"}}, ((3600,), "dm")),
        ({"reminders": {"before_s": [1, True, "3600", 3600]}}, ((3600,), "dm")),
        ({"reminders": {"before_s": [10**9]}}, ((), "dm")),
        ({"reminders": {"before_s": [60] * 5}}, ((), "dm")),
        ({"reminders": {"before_s": 3600}}, ((), "dm")),
        ({"reminders": "often"}, ((), "dm")),
        ({"reminders": None}, ((), "dm")),
    ],
)
def test_settings_are_read_or_ignored(
    settings: dict[str, Any], expected: tuple[tuple[int, ...], str]
) -> None:
    assert club_reminders(settings) == expected
