"""Who may be acted against, mute levels, and power-level edits that touch one entry only."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clubs.bots.moderation.power import may_act_against, mute_level, refusal, with_user_level
from clubs.core.power import CREATOR_POWER, creators_of, level_of

BOT = "@bot-moderation:c.example"
MOD = "@mod:c.example"
MEMBER = "@anna:c.example"
OTHER_BOT = "@bot-checkins:c.example"
PL: dict[str, Any] = {
    "users": {BOT: 50, MOD: 50, OTHER_BOT: 50, "@helper:c.example": 20},
    "users_default": 0,
    "events_default": 0,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "events": {"m.room.power_levels": 50},
}


def test_member_may_be_acted_against() -> None:
    for action in ("ban", "kick", "mute", "redact"):
        assert may_act_against(PL, BOT, MEMBER, action=action)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (MOD, "moderator"),
        (OTHER_BOT, "bot"),
        (BOT, "self"),
        ("@founder:c.example", "creator"),
    ],
)
def test_moderators_bots_self_and_creators_are_refused(target: str, expected: str) -> None:
    why = refusal(
        PL, BOT, target, creators=frozenset({"@founder:c.example"}), bots=frozenset({OTHER_BOT})
    )
    assert why == expected


def test_the_moderator_threshold_is_configurable() -> None:
    assert may_act_against(PL, BOT, "@helper:c.example")
    assert refusal(PL, BOT, "@helper:c.example", moderator_level=20) == "moderator"


def test_actor_without_the_needed_level_is_refused() -> None:
    pl = {**PL, "ban": 60, "events": {"m.room.power_levels": 100}}
    assert refusal(pl, BOT, MEMBER, action="ban") == "actor_lacks_power"
    assert refusal(pl, BOT, MEMBER, action="mute") == "actor_lacks_power"
    assert refusal(pl, BOT, MEMBER, action="kick") is None


def test_target_at_the_actors_level_is_refused_even_below_the_threshold() -> None:
    pl = {**PL, "users": {BOT: 30, MEMBER: 30}, "ban": 30}
    assert refusal(pl, BOT, MEMBER, moderator_level=50) == "outranks_actor"


def test_missing_keys_take_the_spec_defaults() -> None:
    assert refusal({}, BOT, MEMBER) == "outranks_actor"  # both at users_default 0
    assert refusal({"users": {BOT: 50}}, BOT, MEMBER) is None
    assert refusal({"users": {BOT: 40}}, BOT, MEMBER) == "actor_lacks_power"  # ban: 50


def test_bool_and_junk_levels_are_not_numbers() -> None:
    pl = {"users": {MEMBER: True, BOT: 50}, "users_default": "9"}
    assert level_of(pl, MEMBER) == 0


def test_v12_creators_come_from_the_create_event() -> None:
    create = {
        "sender": "@founder:c.example",
        "content": {"room_version": "12", "additional_creators": ["@co:c.example", 5]},
    }
    assert creators_of(create) == {"@founder:c.example", "@co:c.example"}
    assert creators_of({"sender": "@x:c", "content": {"room_version": "10"}}) == frozenset()
    assert creators_of({"sender": "@x:c", "content": {}}) == frozenset()
    assert level_of({}, "@co:c.example", creators_of(create)) == CREATOR_POWER


def test_mute_level_is_below_every_event_level() -> None:
    assert mute_level(PL) == -1
    assert mute_level({"events_default": 50, "events": {"m.reaction": 10}}) == 9
    assert mute_level({}) == -1


@given(
    st.dictionaries(st.sampled_from(["@a:x", "@b:x", "@c:x"]), st.integers(-100, 100)),
    st.sampled_from(["@a:x", "@b:x", "@c:x"]),
    st.one_of(st.none(), st.integers(-100, 100)),
)
def test_with_user_level_changes_one_entry_and_nothing_else(
    users: dict[str, int], user: str, level: int | None
) -> None:
    content = {"users": users, "ban": 50, "events": {"x": 1}}
    changed = with_user_level(content, user, level)
    assert content["users"] == users  # the input is not mutated
    assert {k: v for k, v in changed["users"].items() if k != user} == {
        k: v for k, v in users.items() if k != user
    }
    assert changed["users"].get(user) == level
    assert {k: v for k, v in changed.items() if k != "users"} == {"ban": 50, "events": {"x": 1}}
