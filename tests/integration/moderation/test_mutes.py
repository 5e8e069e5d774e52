"""Timed mutes: power level below what any event needs, restored exactly, across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from clubs.core.clock import ManualClock
from clubs.core.errors import Forbidden
from clubs.core.http import RoomId, path
from tests.harness import SynapseHarness
from tests.integration.moderation.helpers import (
    CS,
    Club,
    make_room,
    moderator_for,
    new_club,
    power_levels,
    send_fake_encrypted,
)

NOW = 1_900_000_000.0


async def _muted_room(synapse: SynapseHarness, member_level: int | None) -> tuple[Club, RoomId]:
    club = await new_club(synapse)
    levels = {} if member_level is None else {club.member.user_id: member_level}
    room = await make_room(club, joined=[club.member], levels=levels)
    return club, room


@pytest.mark.parametrize("member_level", [None, 5])
async def test_mute_silences_and_lifting_restores_the_exact_previous_level(
    synapse: SynapseHarness, tmp_path: Path, member_level: int | None
) -> None:
    club, room = await _muted_room(synapse, member_level)
    before = await power_levels(club.owner.http, room)
    clock = ManualClock(NOW)
    async with moderator_for(club, tmp_path / "mod.db", clock=clock) as mod:
        result = await mod.mute(room, club.member_id, NOW + 600, reason="flood")
        assert result.changed
        muted = await power_levels(club.owner.http, room)
        assert muted["users"][club.member.user_id] == -1
        assert {k: v for k, v in muted.items() if k != "users"} == {
            k: v for k, v in before.items() if k != "users"
        }
        with pytest.raises(Forbidden):
            await send_fake_encrypted(club.member, room, 1, "muted")

        assert await mod.lift_due_mutes(NOW + 599) == []
        lifted = await mod.lift_due_mutes(NOW + 600)
        assert [(m.room_id, m.user_id) for m in lifted] == [(room, club.member_id)]
    assert await power_levels(club.owner.http, room) == before
    await send_fake_encrypted(club.member, room, 1, "unmuted")


async def test_mute_is_lifted_by_a_fresh_moderator_after_a_restart(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club, room = await _muted_room(synapse, 7)
    before = await power_levels(club.owner.http, room)
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        await mod.mute(room, club.member_id, NOW + 60)
        assert await mod.store.next_mute_due() == NOW + 60
    # A new process: new store connection, new Moderator, nothing in memory.
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        assert len(await mod.lift_due_mutes(NOW + 61)) == 1
        assert await mod.store.mutes() == []
    assert await power_levels(club.owner.http, room) == before


async def test_muting_again_extends_and_keeps_the_first_previous_level(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club, room = await _muted_room(synapse, 3)
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        await mod.mute(room, club.member_id, NOW + 60)
        again = await mod.mute(room, club.member_id, NOW + 120)
        assert not again.changed
        assert again.mute is not None
        assert (again.mute.previous_level, again.mute.until) == (3, NOW + 120)
        assert await mod.lift_due_mutes(NOW + 61) == []
        await mod.lift_due_mutes(NOW + 121)
    assert (await power_levels(club.owner.http, room))["users"][club.member.user_id] == 3


async def test_lifting_never_overwrites_a_level_someone_set_meanwhile(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club, room = await _muted_room(synapse, None)
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        await mod.mute(room, club.member_id, NOW + 60)
        # A moderator promotes the member by hand while the mute runs.
        content = await power_levels(club.moderator.http, room)
        content["users"][club.member.user_id] = 20
        await club.moderator.http.put(
            path(*CS, "rooms", room, "state", "m.room.power_levels", ""), content
        )
        assert len(await mod.lift_due_mutes(NOW + 60)) == 1
        assert await mod.store.mutes() == []
    assert (await power_levels(club.owner.http, room))["users"][club.member.user_id] == 20


async def test_mute_level_also_blocks_event_types_set_lower_than_events_default(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    room = await make_room(club, joined=[club.member], events_default=10, events={"m.reaction": 0})
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        result = await mod.mute(room, club.member_id, NOW + 60)
    assert result.mute is not None
    assert result.mute.muted_level == -1
    assert (await power_levels(club.owner.http, room))["users"][club.member.user_id] == -1
