"""Raid mode (join rules to invite and back) and redacting a user's last messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clubs.core.adminview import AdminView
from clubs.core.http import EventId, RoomId, path
from tests.harness import Account, SynapseHarness
from tests.integration.moderation.helpers import (
    CS,
    make_room,
    moderator_for,
    new_club,
    send_fake_encrypted,
)


async def _join_rules(account: Account, room: RoomId) -> dict[str, Any]:
    return await account.http.get(path(*CS, "rooms", room, "state", "m.room.join_rules", ""))


async def test_lock_sets_invite_and_unlock_restores_the_exact_join_rules(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    space = await make_room(club)
    restricted = {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": space}],
    }
    room = await make_room(club, join_rules=restricted)
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        assert await mod.lock(room, reason="join wave", source="protection")
        assert await _join_rules(club.owner, room) == {"join_rule": "invite"}
        assert not await mod.lock(room)  # already locked: nothing to do, the record is kept
    async with moderator_for(club, tmp_path / "mod.db") as mod:  # survives a restart
        assert await mod.unlock(room)
        assert not await mod.unlock(room)
        history = await mod.store.history(room)
    assert await _join_rules(club.owner, room) == restricted
    assert [(e.action, e.source) for e in history] == [
        ("unlock", "command"),
        ("lock", "protection"),
    ]


async def test_lock_of_an_invite_only_room_changes_nothing(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    room = await make_room(club)
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        writes = club.bot.http.writes
        assert not await mod.lock(room)
        assert not await mod.unlock(room)
        assert club.bot.http.writes == writes


async def test_unlock_keeps_join_rules_a_moderator_changed_meanwhile(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    room = await make_room(club, join_rules={"join_rule": "knock"})
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        await mod.lock(room)
        await club.moderator.http.put(
            path(*CS, "rooms", room, "state", "m.room.join_rules", ""), {"join_rule": "public"}
        )
        assert not await mod.unlock(room)
        assert await mod.store.locks() == []
    assert await _join_rules(club.owner, room) == {"join_rule": "public"}


async def _is_redacted(account: Account, room: RoomId, event_id: EventId) -> bool:
    event = await account.http.get(path(*CS, "rooms", room, "event", event_id))
    return "redacted_because" in event.get("unsigned", {})


async def test_redact_last_n_through_the_client_api(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    room = await make_room(club, joined=[club.member])
    own = await send_fake_encrypted(club.moderator, room, 2, "mod")
    sent = await send_fake_encrypted(club.member, room, 5, "member")
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        report = await mod.redact_recent(club.member_id, [room], 3, reason="doxxing")
        assert sorted(report.redacted[room]) == sorted(sent[-3:])
        assert not report.failed
        # The same call again finds the next three (two left): redacted ones are skipped.
        again = await mod.redact_recent(club.member_id, [room], 3)
        assert sorted(again.redacted[room]) == sorted(sent[:2])
    for event_id in sent:
        assert await _is_redacted(club.owner, room, event_id)
    for event_id in own:
        assert not await _is_redacted(club.owner, room, event_id)


async def test_redact_last_n_through_the_synapse_admin_api(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    room = await make_room(club, joined=[club.member])
    sent = await send_fake_encrypted(club.member, room, 4, "member")
    async with moderator_for(club, tmp_path / "mod.db", admin=AdminView(synapse.admin.http)) as mod:
        report = await mod.redact_recent(club.member_id, [room], 2, reason="spam")
    assert report.redact_id
    assert not report.failed
    assert [await _is_redacted(club.owner, room, e) for e in sent] == [False, False, True, True]


async def test_lock_again_after_a_hand_reopening_locks_and_remembers_the_new_rules(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    room = await make_room(club, join_rules={"join_rule": "knock"})
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        await mod.lock(room)
        await club.moderator.http.put(
            path(*CS, "rooms", room, "state", "m.room.join_rules", ""), {"join_rule": "public"}
        )
        assert await mod.lock(room)
        assert await _join_rules(club.owner, room) == {"join_rule": "invite"}
        assert await mod.unlock(room)
    assert await _join_rules(club.owner, room) == {"join_rule": "public"}
