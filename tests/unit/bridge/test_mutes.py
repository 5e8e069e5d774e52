"""Which ghosts a room's power levels mute (followed in the Telegram chat)."""

from __future__ import annotations

from clubs.bridge.relay import muted_ghosts

SERVER = "clubs.test"


def test_a_ghost_below_the_message_level_is_muted_and_others_are_not() -> None:
    levels = {
        "events_default": 0,
        "users": {
            f"@tg_101:{SERVER}": -1,  # muted
            f"@tg_102:{SERVER}": 0,
            "@tg_103:other.server": -1,  # not our ghost
            f"@anna:{SERVER}": -1,  # a member: not followed in Telegram
            "@tg_bridge:" + SERVER: 50,
        },
    }
    assert muted_ghosts(levels, SERVER) == {101}


def test_the_message_type_level_wins_over_events_default() -> None:
    levels = {
        "events_default": 0,
        "events": {"m.room.message": 10},
        "users": {f"@tg_101:{SERVER}": 5, f"@tg_102:{SERVER}": 10},
    }
    assert muted_ghosts(levels, SERVER) == {101}


def test_hostile_power_levels_mute_nobody() -> None:
    for levels in (None, [], {"users": []}, {"events_default": "0", "users": {}}):
        assert muted_ghosts(levels, SERVER) == set()
    assert muted_ghosts({"users": {f"@tg_101:{SERVER}": True}}, SERVER) == set()
    assert muted_ghosts({"users": {f"@tg_101:{SERVER}": "-1"}}, SERVER) == set()
