"""A club's reminder settings: how long before a session its members are reminded, and where
(DM or the sessions room). Shared by the network file's checks and the bot, which reads them
from the club's settings state. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_REMINDERS = 4
REMINDER_MIN_S, REMINDER_MAX_S = 5 * 60, 14 * 24 * 3600
TARGETS = ("dm", "room")


def club_reminders(settings: Mapping[str, Any]) -> tuple[tuple[int, ...], str]:
    """The club's reminder lead times (empty: the bot's default) and where reminders go (`dm`
    or `room`), from its settings state; anything malformed there counts as not set."""
    raw = settings.get("reminders")
    if not isinstance(raw, Mapping):
        return (), "dm"
    to = "room" if raw.get("to") == "room" else "dm"
    before = raw.get("before_s")
    if not isinstance(before, list) or not 1 <= len(before) <= MAX_REMINDERS:
        return (), to
    offsets = {
        b
        for b in before
        if isinstance(b, int) and not isinstance(b, bool) and REMINDER_MIN_S <= b <= REMINDER_MAX_S
    }
    return tuple(sorted(offsets, reverse=True)), to
