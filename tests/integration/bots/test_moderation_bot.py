"""The moderation bot end to end: real Synapse, encrypted rooms, independent clients."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mautrix.types import RoomID

from clubs.bots.base import Bot
from clubs.bots.host import BotAccount, HostServices
from clubs.bots.moderation.bot import ModerationBot
from clubs.bots.moderation.detect import Thresholds
from clubs.bots.moderation.network import Network
from clubs.core.clock import Clock, ManualClock
from clubs.core.errors import Forbidden, NotFound
from clubs.core.http import path
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    RunningHost,
    bot_host,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    send_text,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

# Two members join while the club is set up: a wave of 4 needs raiders (after the moderator
# is in the management room, where the alert goes).
WAVE = Thresholds(join_wave_joins=4, join_wave_window_s=60)
FAST = Thresholds(
    flood_messages=5, flood_window_s=10, mute_s=4, join_wave_joins=3, join_wave_window_s=60
)


def factory(thresholds: Thresholds = FAST, clock: Clock | None = None) -> Any:
    def make(services: HostServices) -> Bot:
        return ModerationBot(
            Network(
                services.db,
                network=services.network,
                admin=services.admin_view,
                other_bots=services.service_accounts,
                thresholds=thresholds,
                clock=clock or services.clock,
            )
        )

    return make


@dataclass
class Club:
    network: str
    bot: BotAccount
    moderator: Account
    member: Account
    rooms: list[str]


async def make_club(synapse: SynapseHarness, tmp_path: Path, n_rooms: int = 3) -> Club:
    network = new_network()
    bot = await create_bot_account(synapse, tmp_path, "moderation")
    moderator = await synapse.new_user("mod")
    member = await synapse.new_user("member")
    rooms = []
    for i in range(n_rooms):
        room = await managed_room(
            synapse,
            network,
            invite=[bot.user_id, moderator.user_id, member.user_id],
            powers={bot.user_id: 100, moderator.user_id: 50},
            club=f"club{i}",
        )
        for who in (moderator, member):
            await who.http.post(path(*CS, "join", room), {})
        rooms.append(room)
    return Club(network, bot, moderator, member, rooms)


@asynccontextmanager
async def running(
    synapse: SynapseHarness,
    tmp_path: Path,
    club: Club,
    thresholds: Thresholds = FAST,
    clock: Clock | None = None,
) -> AsyncIterator[RunningHost]:
    async with bot_host(
        synapse,
        tmp_path,
        [club.bot],
        {"moderation": factory(thresholds, clock)},
        network=club.network,
    ) as host:
        for room in club.rooms:
            await eventually(
                lambda room=room: joined(club.member, room, club.bot.user_id), within=20
            )
        yield host


@asynccontextmanager
async def with_peers(
    synapse: SynapseHarness, tmp_path: Path, club: Club
) -> AsyncIterator[tuple[RunningHost, MautrixPeer, MautrixPeer]]:
    """The running bot, and the member's and the moderator's cross-signed clients."""
    async with (
        running(synapse, tmp_path, club) as host,
        mautrix_peer(club.member, synapse.url) as peer,
        mautrix_peer(club.moderator, synapse.url) as mod_peer,
    ):
        yield host, peer, mod_peer


async def member_level(user: Account, room: str, who: str) -> int:
    pl = await user.http.get(path(*CS, "rooms", room, "state", "m.room.power_levels", ""))
    return int(pl.get("users", {}).get(who, pl.get("users_default", 0)))


async def membership(user: Account, room: str, who: str) -> str | None:
    try:
        ev = await user.http.get(path(*CS, "rooms", room, "state", "m.room.member", who))
    except NotFound:
        return None
    return str(ev.get("membership"))


async def policy_room_of(host: RunningHost) -> str:
    bot = host.runtime("moderation").bot
    assert isinstance(bot, ModerationBot)
    assert bot.policy_room is not None
    return bot.policy_room


async def test_flood_is_muted_quickly_and_lifted_also_across_a_restart(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=1)
    room = club.rooms[0]
    async with running(synapse, tmp_path, club), mautrix_peer(club.member, synapse.url) as peer:
        for i in range(5):
            await peer.send_text(RoomID(room), f"flood {i}")
        crossed = time.monotonic()

        async def muted() -> bool:
            return await member_level(club.member, room, club.member.user_id) < 0

        await eventually(muted, within=10, interval=0.02)
        assert time.monotonic() - crossed < 2.0
    # The bot is down when the mute runs out; it lifts it after the restart.
    async with running(synapse, tmp_path, club):

        async def lifted() -> bool:
            return await member_level(club.member, room, club.member.user_id) == 0

        await eventually(lifted, within=20)


async def test_ban_reaches_every_club_and_policy_rules_from_other_clients_apply(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=3)
    troll = await synapse.new_user("troll")
    for room in club.rooms:
        await synapse.admin.http.post(
            path(*CS, "rooms", room, "invite"), {"user_id": troll.user_id}
        )
        await troll.http.post(path(*CS, "join", room), {})
    async with (
        running(synapse, tmp_path, club) as host,
        mautrix_peer(club.moderator, synapse.url) as mod_peer,
    ):
        await mod_peer.send_text(RoomID(club.rooms[0]), f"!ban {troll.user_id} spam")

        async def banned_everywhere() -> bool:
            states = [await membership(club.member, r, troll.user_id) for r in club.rooms]
            return states == ["ban"] * 3

        await eventually(banned_everywhere, within=15)
        # A moderator with another client removes the rule directly in the policy room ...
        policy = await policy_room_of(host)
        await eventually(lambda: _join(club.moderator, policy), within=15)
        state = await club.moderator.http.get_list(path(*CS, "rooms", policy, "state"))
        rules = [e for e in state if e["type"] == "m.policy.rule.user" and e["content"]]
        assert len(rules) == 1
        await club.moderator.http.put(
            path(*CS, "rooms", policy, "state", "m.policy.rule.user", rules[0]["state_key"]), {}
        )

        async def unbanned_everywhere() -> bool:
            states = [await membership(club.member, r, troll.user_id) for r in club.rooms]
            return "ban" not in states

        await eventually(unbanned_everywhere, within=15)
        # ... and adds one: it applies everywhere too.
        await club.moderator.http.put(
            path(*CS, "rooms", policy, "state", "m.policy.rule.user", "by-hand"),
            {"entity": troll.user_id, "recommendation": "m.ban", "reason": "again"},
        )
        await eventually(banned_everywhere, within=15)


async def test_purge_bans_everywhere_and_removes_everything_the_person_wrote(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=2)
    doxxer = await synapse.new_user("doxxer")
    written: dict[str, list[str]] = {}
    for room in club.rooms:
        await synapse.admin.http.post(
            path(*CS, "rooms", room, "invite"), {"user_id": doxxer.user_id}
        )
        await doxxer.http.post(path(*CS, "join", room), {})
    async with (
        running(synapse, tmp_path, club),
        mautrix_peer(club.moderator, synapse.url) as mod_peer,
    ):
        for i, room in enumerate(club.rooms):
            written[room] = [
                (
                    await doxxer.http.put(
                        path(*CS, "rooms", room, "send", "m.room.message", f"t{i}{n}"),
                        {"msgtype": "m.text", "body": f"someone's address, part {n}"},
                    )
                )["event_id"]
                for n in range(3)
            ]
        command = await send_text(mod_peer, club.rooms[0], f"!purge {doxxer.user_id} doxxing")

        async def banned_everywhere() -> bool:
            states = [await membership(club.member, r, doxxer.user_id) for r in club.rooms]
            return states == ["ban"] * len(club.rooms)

        await eventually(banned_everywhere, within=15)
        ban = await club.member.http.get(
            path(*CS, "rooms", club.rooms[1], "state", "m.room.member", doxxer.user_id)
        )
        assert ban["org.matrix.msc4293.redact_events"] is True
        assert ban["reason"] == "doxxing"
        # Every message the person wrote, in every room, now reaches members redacted.
        for room, event_ids in written.items():
            for event_id in event_ids:
                ev = await club.member.http.get(path(*CS, "rooms", room, "event", event_id))
                assert ev["content"] == {}, (room, event_id)

        async def answered() -> list[str]:
            return [r.body for r in mod_peer.received if r.reply_to == command]

        bodies = await eventually(lambda: _at_least(answered, 2), within=20)
        assert any(doxxer.user_id in b and "2" in b for b in bodies)  # banned in 2 rooms
        assert any("6" in b for b in bodies)  # 6 messages redacted one by one as well


async def test_server_rule_sets_the_server_acl_of_every_room_but_never_denies_our_own(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=2)
    async with running(synapse, tmp_path, club) as host:
        policy = await policy_room_of(host)
        await eventually(lambda: _join(club.moderator, policy), within=20)

        async def denies() -> list[list[str]]:
            out = []
            for room in club.rooms:
                try:
                    acl = await club.member.http.get(
                        path(*CS, "rooms", room, "state", "m.room.server_acl", "")
                    )
                except NotFound:
                    acl = {}
                out.append(sorted(acl.get("deny", [])))
            return out

        async def rule(key: str, entity: str | None) -> None:
            content = {"entity": entity, "recommendation": "m.ban", "reason": "raids"}
            await club.moderator.http.put(
                path(*CS, "rooms", policy, "state", "m.policy.rule.server", key),
                content if entity else {},
            )

        await rule("evil", "evil.example")
        await rule("everyone", "*")  # would lock our own members out: never in an ACL
        await eventually(lambda: _is_value(denies, [["evil.example"]] * 2), within=20)
        acl = await club.member.http.get(
            path(*CS, "rooms", club.rooms[0], "state", "m.room.server_acl", "")
        )
        assert acl["allow"] == ["*"]
        assert acl["allow_ip_literals"] is False
        # ... and our own members are unaffected: they still talk.
        await club.member.http.put(
            path(*CS, "rooms", club.rooms[0], "send", "m.room.message", "after-acl"),
            {"msgtype": "m.text", "body": "still here"},
        )
        await rule("evil", None)  # removing the rule lifts the denial
        await eventually(lambda: _is_value(denies, [[]] * 2), within=20)


async def _is_value(probe: Any, expected: Any) -> bool:
    return bool(await probe() == expected)


async def _at_least(probe: Any, n: int) -> Any:
    got = await probe()
    return got if len(got) >= n else None


async def join_management_room(host: RunningHost, moderator: Account) -> str:
    """Join the management room once invited, and wait until the bot's device knows it (room
    keys go only to members the sender's client has seen: an earlier alert stays unreadable)."""
    policy = await policy_room_of(host)
    await eventually(lambda: _join(moderator, policy), within=20)
    client = host.runtime("moderation").client

    async def bot_sees_member() -> bool:
        return moderator.user_id in await client.members(policy)  # type: ignore[arg-type]

    await eventually(bot_sees_member, within=20)
    return policy


async def _join(user: Account, room: str) -> bool:
    try:
        await user.http.post(path(*CS, "join", room), {})
    except Exception:
        return False
    return True


async def test_join_wave_locks_the_room_and_alerts_moderators(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=1)
    room = club.rooms[0]
    await synapse.admin.http.put(
        path(*CS, "rooms", room, "state", "m.room.join_rules", ""), {"join_rule": "public"}
    )
    async with (
        running(synapse, tmp_path, club, WAVE) as host,
        mautrix_peer(club.moderator, synapse.url) as mod_peer,
    ):
        policy = await join_management_room(host, club.moderator)
        for _ in range(4):  # the members' own recent joins count too: it may close sooner
            raider = await synapse.new_user("raider")
            try:
                await raider.http.post(path(*CS, "join", room), {})
            except Forbidden:
                break

        async def locked() -> bool:
            rules = await club.member.http.get(
                path(*CS, "rooms", room, "state", "m.room.join_rules", "")
            )
            return rules.get("join_rule") == "invite"

        await eventually(locked, within=15)

        async def alerted() -> bool:
            # The management room speaks the network's default language (ru): match the room.
            return any(r.room_id == policy and room in r.body for r in mod_peer.received)

        await eventually(alerted, within=15)
        late = await synapse.new_user("raider")
        with pytest.raises(Forbidden):
            await late.http.post(path(*CS, "join", room), {})


async def test_phone_number_is_redacted_with_a_dm_but_a_moderators_is_not(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=1)
    room = club.rooms[0]
    async with with_peers(synapse, tmp_path, club) as (host, peer, mod_peer):
        text = "мой номер +7 916 123-45-67, звоните"
        await peer.send_text(RoomID(room), text)
        await mod_peer.send_text(RoomID(room), text)

        async def redactions() -> list[str]:
            msgs = await club.member.http.get(
                path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "50"}
            )
            return [
                e["redacts"] if "redacts" in e else e["content"].get("redacts")
                for e in msgs["chunk"]
                if e["type"] == "m.room.redaction"
            ]

        redacted = await eventually(redactions, within=15)
        assert len(redacted) == 1

        async def dm_explained() -> bool:
            for dm in await host.runtime("moderation").store.dm_rooms():
                await _join(club.member, dm)
            return any(
                r.sender == club.bot.user_id and r.room_id not in club.rooms and "phone" in r.body
                for r in peer.received
            )

        await eventually(dm_explained, within=20)
        msgs = await club.member.http.get(
            path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "50"}
        )
        by_sender = {e["event_id"]: e["sender"] for e in msgs["chunk"]}
        assert by_sender[redacted[0]] == club.member.user_id


async def test_alerts_about_a_club_go_to_its_own_moderators_room(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """A club with a staff-only moderators room hears about its rooms there, and the staff of
    the network's management room do not; a club without one falls back to the latter."""
    club = await make_club(synapse, tmp_path, n_rooms=2)  # club0 and club1
    staff_room = await managed_room(
        synapse,
        club.network,
        invite=[club.bot.user_id, club.moderator.user_id],
        powers={club.bot.user_id: 100, club.moderator.user_id: 50},
        club="club0",
        key="moderators",
        audience="staff",
    )
    await club.moderator.http.post(path(*CS, "join", staff_room), {})
    async with with_peers(synapse, tmp_path, club) as (host, peer, mod_peer):
        await eventually(lambda: joined(club.member, club.rooms[0], club.bot.user_id), within=20)
        await eventually(lambda: joined(club.moderator, staff_room, club.bot.user_id), within=20)
        policy = await join_management_room(host, club.moderator)
        for room in club.rooms:
            await peer.send_text(RoomID(room), "мой номер +7 916 123-45-67")

        async def audits() -> dict[str, int]:
            where: dict[str, int] = {}
            for r in mod_peer.received:
                if r.sender == club.bot.user_id and club.member.user_id in r.body:
                    where[r.room_id] = where.get(r.room_id, 0) + 1
            return where if len(where) == 2 else {}

        where = await eventually(audits, within=30)
        # club0's redaction is told in club0's moderators room, club1's in the management room.
        assert where == {staff_room: 1, policy: 1}
        bodies = {r.room_id: r.body for r in mod_peer.received if r.room_id in where}
        assert club.rooms[0] in bodies[staff_room]
        assert club.rooms[1] in bodies[policy]


async def test_since_kicks_everyone_who_joined_recently_and_no_one_else(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=1)
    room = club.rooms[0]
    clock = ManualClock(time.time())
    async with (
        running(synapse, tmp_path, club, clock=clock),
        mautrix_peer(club.moderator, synapse.url) as mod_peer,
    ):
        # Everyone so far joined before `cut`, the raiders join after it; the bot's clock then
        # stands 4 s past it, so `!since 4s` reaches back to `cut` exactly.
        cut = time.time()
        raiders = [await synapse.new_user(f"raider{i}") for i in range(3)]
        for raider in raiders:
            await synapse.admin.http.post(
                path(*CS, "rooms", room, "invite"), {"user_id": raider.user_id}
            )
            await raider.http.post(path(*CS, "join", room), {})
        # A profile change is a member event too, but not a join: the member stays.
        await club.member.http.put(
            path(*CS, "rooms", room, "state", "m.room.member", club.member.user_id),
            {"membership": "join", "displayname": "renamed"},
        )
        await clock.set(cut + 4)
        command = await send_text(mod_peer, room, "!since 4s kick raid")

        async def replied() -> list[str]:
            return [r.body for r in mod_peer.received if r.reply_to == command]

        (reply,) = await eventually(replied, within=20)
        assert "3 of 3" in reply
        states = {r.user_id: await membership(club.member, room, r.user_id) for r in raiders}
        assert set(states.values()) == {"leave"}
        assert await membership(club.member, room, club.member.user_id) == "join"
        assert await membership(club.member, room, club.moderator.user_id) == "join"


async def test_a_club_that_only_flags_personal_data_keeps_the_message_and_tells_staff(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """Protections are per club: this club's settings (room state written by provisioning)
    say `personal_data: flag` and a lower flood threshold; the bot's defaults say redact."""
    club = await make_club(synapse, tmp_path, n_rooms=0)
    room = await managed_room(
        synapse,
        club.network,
        invite=[club.bot.user_id, club.moderator.user_id, club.member.user_id],
        powers={club.bot.user_id: 100, club.moderator.user_id: 50},
        club="club0",
        settings={"moderation": {"personal_data": "flag", "flood_messages": 3}},
    )
    for who in (club.moderator, club.member):
        await who.http.post(path(*CS, "join", room), {})
    club.rooms.append(room)
    async with with_peers(synapse, tmp_path, club) as (host, peer, mod_peer):
        policy = await join_management_room(host, club.moderator)
        await peer.send_text(RoomID(room), "мой номер +7 916 123-45-67")

        async def flagged() -> list[Any]:
            return [
                r
                for r in mod_peer.received
                if r.room_id == policy and r.sender == club.bot.user_id and "phone" in r.body
            ]

        await eventually(flagged, within=20)
        msgs = await club.member.http.get(
            path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "50"}
        )
        assert not [e for e in msgs["chunk"] if e["type"] == "m.room.redaction"]
        # The club's flood threshold (3; the bot's is 5 here) applies too.
        for i in range(3):
            await peer.send_text(RoomID(room), f"m{i}")

        async def muted() -> bool:
            return await member_level(club.member, room, club.member.user_id) < 0

        await eventually(muted, within=10)


async def test_a_moderator_who_leaves_the_management_room_is_not_invited_again(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=1)
    async with running(synapse, tmp_path, club) as host:
        policy = await join_management_room(host, club.moderator)
        bot = host.runtime("moderation").bot
        assert isinstance(bot, ModerationBot)
        assert await bot.upkeep.sync_staff() == 0  # already there
        await club.moderator.http.post(path(*CS, "rooms", policy, "leave"), {})
        assert await bot.upkeep.sync_staff() == 0
        assert await membership(club.member, club.rooms[0], club.moderator.user_id) == "join"
        state = await bot.net.mod.http.get(
            path(*CS, "rooms", policy, "state", "m.room.member", club.moderator.user_id)
        )
        assert state["membership"] == "leave"


async def test_member_without_power_cannot_ban(synapse: SynapseHarness, tmp_path: Path) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=1)
    room = club.rooms[0]
    async with running(synapse, tmp_path, club), mautrix_peer(club.member, synapse.url) as peer:
        await peer.send_text(RoomID(room), f"!ban {club.moderator.user_id} no reason")

        async def refusal() -> list[Any]:
            return [r for r in peer.received if r.sender == club.bot.user_id]

        (reply,) = await eventually(refusal, within=15)
        assert "50" in reply.body
        assert await membership(club.member, room, club.moderator.user_id) == "join"


async def test_reported_event_reaches_the_moderators_with_context(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=1)
    room = club.rooms[0]
    async with with_peers(synapse, tmp_path, club) as (host, peer, mod_peer):
        policy = await join_management_room(host, club.moderator)
        await peer.send_text(RoomID(room), "something hurtful")

        async def sent() -> list[str]:
            msgs = await club.moderator.http.get(
                path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "20"}
            )
            return [
                e["event_id"]
                for e in msgs["chunk"]
                if e["sender"] == club.member.user_id and e["type"] == "m.room.encrypted"
            ]

        (event_id, *_) = await eventually(sent, within=10)
        await club.moderator.http.post(
            path(*CS, "rooms", room, "report", event_id), {"reason": "hurtful"}
        )

        async def reported() -> list[Any]:
            return [
                r
                for r in mod_peer.received
                if r.room_id == policy and "something hurtful" in r.body
            ]

        (alert,) = await eventually(reported, within=30)
        assert "hurtful" in alert.body
