"""The spec's power-level rules, pure: a user's level, the level an action or event needs, and
who a room version 12 room's creators are (they are above every level)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CREATOR_POWER = 1 << 62
"""Room v12 creators are above every power level; any number larger than a real level will do."""

PRIVILEGED_CREATOR_VERSIONS = frozenset({"12", "org.matrix.hydra.11"})

# The spec's defaults for keys missing from m.room.power_levels.
_DEFAULTS = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}


def as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def threshold(power_levels: Mapping[str, Any], key: str) -> int:
    """A top-level threshold (`ban`, `kick`, `events_default`…), with the spec's default."""
    found = as_int(power_levels.get(key))
    return found if found is not None else _DEFAULTS.get(key, 50)


def event_level(power_levels: Mapping[str, Any], event_type: str, *, state: bool) -> int:
    """The level needed to send `event_type` (state events fall back to `state_default`)."""
    events = power_levels.get("events")
    if isinstance(events, Mapping):
        found = as_int(events.get(event_type))
        if found is not None:
            return found
    return threshold(power_levels, "state_default" if state else "events_default")


def level_of(
    power_levels: Mapping[str, Any], user_id: str, creators: frozenset[str] = frozenset()
) -> int:
    """A user's power level by the spec's rules (v12: creators are above everyone)."""
    if user_id in creators:
        return CREATOR_POWER
    users = power_levels.get("users")
    if isinstance(users, Mapping):
        found = as_int(users.get(user_id))
        if found is not None:
            return found
    return threshold(power_levels, "users_default")


def creators_of(create_event: Mapping[str, Any]) -> frozenset[str]:
    """The privileged creators of a room from its `m.room.create` event (the whole event: v12
    creators are its sender and `content.additional_creators`; older versions have none)."""
    content = create_event.get("content")
    if not isinstance(content, Mapping):
        return frozenset()
    if str(content.get("room_version", "1")) not in PRIVILEGED_CREATOR_VERSIONS:
        return frozenset()
    found = {s for s in (create_event.get("sender"),) if isinstance(s, str)}
    extra = content.get("additional_creators")
    if isinstance(extra, list):
        found |= {u for u in extra if isinstance(u, str)}
    return frozenset(found)
