"""Who may be acted against, and at which level a mute sits: pure decisions over power levels.

The server enforces the spec's authorisation rules anyway (a ban needs the `ban` level and more
power than the target). These checks add the project's own rule on top: the bot never mutes,
kicks, bans or redacts anyone at or above the moderator threshold, nor a bot, nor a room creator
(room version 12 gives creators infinite power), whatever a command, a protection or a policy
rule says. They also let the bot refuse with a reason instead of collecting a 403.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from clubs.core.power import (
    as_int,
    event_level,
    level_of,
    threshold,
)

Action = Literal["ban", "kick", "mute", "redact"]
Refusal = Literal["self", "bot", "creator", "moderator", "outranks_actor", "actor_lacks_power"]
"""Why an action is refused: the target is the actor, a bot, a room creator, at or above the
moderator threshold, at or above the actor's level; or the actor lacks the level to do it."""

MODERATOR_LEVEL = 50


def required_level(power_levels: Mapping[str, Any], action: Action) -> int:
    if action == "mute":
        return event_level(power_levels, "m.room.power_levels", state=True)
    return threshold(power_levels, action)


def refusal(
    power_levels: Mapping[str, Any],
    actor: str,
    target: str,
    *,
    action: Action = "ban",
    creators: frozenset[str] = frozenset(),
    bots: frozenset[str] = frozenset(),
    moderator_level: int = MODERATOR_LEVEL,
) -> Refusal | None:
    """Why `actor` must not `action` `target` in a room with these power levels, or None."""
    if target == actor:
        return "self"
    if target in bots:
        return "bot"
    if target in creators:
        return "creator"
    target_level = level_of(power_levels, target, creators)
    if target_level >= moderator_level:
        return "moderator"
    actor_level = level_of(power_levels, actor, creators)
    if actor_level <= target_level:
        return "outranks_actor"
    if actor_level < required_level(power_levels, action):
        return "actor_lacks_power"
    return None


def may_act_against(
    power_levels: Mapping[str, Any],
    actor: str,
    target: str,
    *,
    action: Action = "ban",
    creators: frozenset[str] = frozenset(),
    bots: frozenset[str] = frozenset(),
    moderator_level: int = MODERATOR_LEVEL,
) -> bool:
    """Whether `actor` may `action` `target` here (see `refusal` for the reason when not)."""
    return (
        refusal(
            power_levels,
            actor,
            target,
            action=action,
            creators=creators,
            bots=bots,
            moderator_level=moderator_level,
        )
        is None
    )


def mute_level(power_levels: Mapping[str, Any]) -> int:
    """The level at which a user can send nothing: one below the lowest level any event needs
    (`events_default` and every per-type level, so `m.reaction: 0` in an announcements room with
    `events_default: 50` does not leave a muted member able to react)."""
    levels = [threshold(power_levels, "events_default")]
    events = power_levels.get("events")
    if isinstance(events, Mapping):
        levels += [v for v in map(as_int, events.values()) if v is not None]
    return min(levels) - 1


def with_user_level(
    power_levels: Mapping[str, Any], user_id: str, level: int | None
) -> dict[str, Any]:
    """A copy of the content with one user's entry set (`None` removes the entry), every other
    key and entry untouched."""
    content = dict(power_levels)
    users = power_levels.get("users")
    new_users = dict(users) if isinstance(users, Mapping) else {}
    if level is None:
        new_users.pop(user_id, None)
    else:
        new_users[user_id] = level
    content["users"] = new_users
    return content
