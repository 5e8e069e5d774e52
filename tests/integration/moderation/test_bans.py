"""Network bans, unbans and kicks across rooms, and the people the bot never acts against."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from clubs.core.http import RoomId, UserId
from tests.harness import SynapseHarness
from tests.integration.moderation.helpers import make_room, membership, moderator_for, new_club


async def test_network_ban_reaches_every_club_room_and_unban_lifts_it(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    rooms = [await make_room(club, joined=[club.member]) for _ in range(3)]
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        report = await mod.ban_everywhere(club.member_id, "spam", rooms, actor=club.moderator_id)
        assert sorted(report.done) == sorted(rooms)
        assert report.ok
        for room in rooms:
            assert await membership(club.owner.http, room, club.member.user_id) == "ban"

        writes = club.bot.http.writes
        again = await mod.ban_everywhere(club.member_id, "other reason", rooms)
        assert sorted(again.skipped) == sorted(rooms)
        assert club.bot.http.writes == writes

        lifted = await mod.unban_everywhere(club.member_id, rooms)
        assert sorted(lifted.done) == sorted(rooms)
        for room in rooms:
            assert await membership(club.owner.http, room, club.member.user_id) == "leave"

        history = await mod.store.history(club.member.user_id)
        assert [(e.action, e.rooms, e.room_id) for e in history] == [
            ("unban", 3, None),
            ("ban", 3, None),
        ]
        assert history[1].actor == club.moderator.user_id
        assert history[1].reason == "spam"


async def test_one_failing_room_does_not_stop_the_others(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    good = await make_room(club, joined=[club.member])
    # A room the bot was never in: its reads fail with 403, the ban elsewhere goes ahead.
    resp = await club.owner.http.post("/_matrix/client/v3/createRoom", {"room_version": "12"})
    foreign = RoomId(resp["room_id"])
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        report = await mod.ban_everywhere(club.member_id, "spam", [foreign, good])
    assert report.done == [good]
    assert report.failed == {foreign: "M_FORBIDDEN"}


async def test_unban_for_a_policy_keeps_bans_made_by_people(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    by_bot, by_person = [await make_room(club, joined=[club.member]) for _ in range(2)]
    await club.moderator.http.post(
        f"/_matrix/client/v3/rooms/{by_person}/ban", {"user_id": club.member.user_id}
    )
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        await mod.ban_everywhere(club.member_id, "", [by_bot])
        report = await mod.unban_everywhere(club.member_id, [by_bot, by_person], only_own_bans=True)
    assert report.done == [by_bot]
    assert report.skipped == [by_person]
    assert await membership(club.owner.http, by_person, club.member.user_id) == "ban"


async def test_kick_reaches_joined_rooms_and_skips_the_others(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    inside = await make_room(club, joined=[club.member])
    outside = await make_room(club)
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        report = await mod.kick(club.member_id, [inside, outside], reason="calm down")
    assert report.done == [inside]
    assert report.skipped == [outside]
    assert await membership(club.owner.http, inside, club.member.user_id) == "leave"


async def test_moderators_bots_and_creators_are_never_acted_against(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    other_bot = await synapse.new_user("bot2", user_type="bot")
    room = await make_room(club, joined=[club.member, other_bot], levels={other_bot.user_id: 0})
    async with moderator_for(club, tmp_path / "mod.db", bots=[other_bot.user_id]) as mod:
        writes = club.bot.http.writes
        refused = {
            who: (await mod.ban_everywhere(UserId(who), "", [room])).refused.get(room)
            for who in (club.moderator.user_id, other_bot.user_id, club.owner.user_id)
        }
        muted = await mod.mute(room, UserId(club.moderator.user_id), time.time() + 60)
        kicked = await mod.kick(UserId(other_bot.user_id), [room])
        redacted = await mod.redact_recent(UserId(club.moderator.user_id), [room], 5)
        assert club.bot.http.writes == writes
    assert refused == {
        club.moderator.user_id: "moderator",
        other_bot.user_id: "bot",
        club.owner.user_id: "creator",
    }
    assert muted.refused == "moderator"
    assert kicked.refused == {room: "bot"}
    assert redacted.refused == {room: "moderator"}
    for who in (club.moderator.user_id, other_bot.user_id, club.owner.user_id):
        assert await membership(club.owner.http, room, who) == "join"


async def test_ban_in_100_rooms_completes(
    synapse: SynapseHarness, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Not a timed test: the wall time is printed and recorded (bench/moderation.py measures)."""
    club = await new_club(synapse)
    gate = asyncio.Semaphore(8)

    async def room() -> RoomId:
        async with gate:
            return await make_room(club, joined=[club.member])

    rooms = list(await asyncio.gather(*(room() for _ in range(100))))
    async with moderator_for(club, tmp_path / "mod.db") as mod:
        started = time.monotonic()
        report = await mod.ban_everywhere(club.member_id, "spam", rooms)
        wall = time.monotonic() - started
    assert len(report.done) == 100
    assert report.ok
    record_property("ban_100_rooms_s", round(wall, 3))
    print(f"\nban_everywhere over 100 rooms: {wall:.3f} s wall")
