"""The bot runtime against a real Synapse, with an independent cross-signed-only client."""

from __future__ import annotations

from pathlib import Path

from mautrix.types import RoomID, TrustState

from clubs.bots.args import FreeText
from clubs.bots.base import Bot, on_event
from clubs.bots.commands import command
from clubs.bots.context import CommandContext, EventContext
from clubs.bots.runtime import RuntimeSettings
from clubs.core.http import path
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    echo_room,
    joined,
    managed_room,
    new_network,
    simple_factory,
)
from tests.mautrix_client import MautrixPeer, Received, mautrix_peer


class Echo(Bot):
    name = "echo"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @command("echo", help_key="bots/ping.help", params=(FreeText("text", max_length=200),))
    async def echo(self, ctx: CommandContext, text: str) -> None:
        await ctx.reply("bots/ping")  # any template: the reply is what we count

    @command("secret", help_key="bots/help.help", min_power=50)
    async def secret(self, ctx: CommandContext) -> None:
        await ctx.reply("bots/ping")

    @on_event("m.room.message")
    async def saw(self, ctx: EventContext) -> None:
        self.seen.append(ctx.event.event_id)


def replies_from(peer: MautrixPeer, bot_user: str, room_id: str) -> list[Received]:
    return [r for r in peer.received if r.room_id == room_id and r.sender == bot_user]


async def wait_reply(peer: MautrixPeer, bot_user: str, room_id: str, before: int) -> Received:
    async def new() -> list[Received]:
        return replies_from(peer, bot_user, room_id)[before:]

    got = await eventually(new, within=20)
    return got[0]


async def test_ping_in_managed_encrypted_room_is_answered_and_trusted(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    bot = Echo()
    async with (
        bot_host(
            synapse, tmp_path, [account], {"echo": simple_factory(bot)}, network=network
        ) as host,
        mautrix_peer(member, synapse.url) as peer,
    ):
        await eventually(lambda: joined(member, room, account.user_id), within=20)
        await peer.send_text(RoomID(room), "!ping")
        reply = await wait_reply(peer, account.user_id, room, 0)
        assert (reply.msgtype, reply.body) == ("m.notice", "Pong 🏓")
        assert reply.trust >= TrustState.CROSS_SIGNED_TOFU
        host.check_alive()


async def test_commands_check_power_and_usage(synapse: SynapseHarness, tmp_path: Path) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    bot = Echo()
    async with (
        bot_host(synapse, tmp_path, [account], {"echo": simple_factory(bot)}, network=network),
        mautrix_peer(member, synapse.url) as peer,
    ):
        await eventually(lambda: joined(member, room, account.user_id), within=20)
        await peer.send_text(RoomID(room), "!secret")
        refused = await wait_reply(peer, account.user_id, room, 0)
        assert "50" in refused.body
        assert "0" in refused.body
        await peer.send_text(RoomID(room), "!echo")
        usage = await wait_reply(peer, account.user_id, room, 1)
        assert usage.body == "Missing text.\nUsage: !echo <text...>"
        await peer.send_text(RoomID(room), "!help")
        listing = await wait_reply(peer, account.user_id, room, 2)
        assert "!echo" in listing.body
        assert "!secret" not in listing.body  # the sender may not use it
        await peer.send_text(RoomID(room), "just chatting")

        async def chat_seen() -> bool:
            return len(bot.seen) >= 1

        await eventually(chat_seen, within=10)


async def test_invites_from_strangers_are_declined(synapse: SynapseHarness, tmp_path: Path) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    stranger = await synapse.new_user("stranger")
    room = await stranger.http.post(path(*CS, "createRoom"), {"invite": [account.user_id]})
    async with bot_host(
        synapse, tmp_path, [account], {"echo": simple_factory(Echo())}, network=network
    ) as host:

        async def declined() -> bool:
            state = await stranger.http.get_list(path(*CS, "rooms", room["room_id"], "state"))
            return any(
                e["type"] == "m.room.member"
                and e["state_key"] == account.user_id
                and e["content"]["membership"] == "leave"
                for e in state
            )

        await eventually(declined, within=20)
        host.check_alive()


async def test_backlog_of_the_first_sync_is_not_replayed(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    # The bot joins (through a first run) and leaves a position; then a command arrives
    # while nothing runs; the second run must answer it (not lost) exactly once.
    bot = Echo()
    async with bot_host(
        synapse, tmp_path, [account], {"echo": simple_factory(bot)}, network=network
    ):
        await eventually(lambda: joined(member, room, account.user_id), within=20)
    async with mautrix_peer(member, synapse.url) as peer:
        await peer.send_text(RoomID(room), "!ping")
        async with bot_host(
            synapse, tmp_path, [account], {"echo": simple_factory(Echo())}, network=network
        ):
            reply = await wait_reply(peer, account.user_id, room, 0)
            assert reply.body == "Pong 🏓"
        assert len(replies_from(peer, account.user_id, room)) == 1


async def test_commands_sent_before_the_bot_ever_ran_are_not_executed(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    await member.http.put(
        path(*CS, "rooms", room, "send", "m.room.message", "t1"),
        {"msgtype": "m.text", "body": "!ping"},
    )
    bot = Echo()
    async with bot_host(
        synapse, tmp_path, [account], {"echo": simple_factory(bot)}, network=network
    ) as host:
        await eventually(lambda: joined(member, room, account.user_id), within=20)
        rt = host.runtime("echo")
        start = rt.syncs

        async def two_more_syncs() -> bool:
            return rt.syncs >= start + 2

        await eventually(two_more_syncs, within=20)
        messages = await member.http.get(
            path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "50"}
        )
        from_bot = [
            e
            for e in messages["chunk"]
            if e["sender"] == account.user_id
            and e["type"] in ("m.room.encrypted", "m.room.message")
        ]
        assert from_bot == []


async def test_private_description_is_posted_encrypted_once_and_pinned(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    member = await synapse.new_user("member")
    room = await managed_room(
        synapse, network, invite=[account.user_id, member.user_id], powers={account.user_id: 50}
    )
    await member.http.post(path(*CS, "join", room), {})
    text = "Что сказано здесь — остаётся здесь."
    descriptions = {("club_room", "c1", None, "general"): text}
    async with mautrix_peer(member, synapse.url) as peer:
        for _ in range(2):  # a restart must not post it again
            async with bot_host(
                synapse,
                tmp_path,
                [account],
                {"echo": simple_factory(Echo())},
                network=network,
                descriptions=descriptions,
            ) as host:
                await wait_reply(peer, account.user_id, room, 0)
                rt = host.runtime("echo")
                start = rt.syncs

                async def settled(rt=rt, start=start) -> bool:  # type: ignore[no-untyped-def]
                    return rt.syncs >= start + 2

                await eventually(settled, within=20)
        posted = replies_from(peer, account.user_id, room)
        assert [r.body for r in posted] == [text]
        pinned = await member.http.get(
            path(*CS, "rooms", room, "state", "m.room.pinned_events", "")
        )
        assert pinned["pinned"] == [posted[0].event_id]
        messages = await member.http.get(
            path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "50"}
        )
        assert all(text not in str(e) for e in messages["chunk"])  # never in clear on the server


async def test_a_member_who_joins_later_can_read_the_private_description(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """History is visible from one's join only, so the copy pinned before a member joined is
    not there for them: the bot posts a new encrypted copy for newcomers and moves the pin to
    it (here at once; by default at most once a day per room). A later restart posts nothing."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    member = await synapse.new_user("member")
    late = await synapse.new_user("late")
    room = await managed_room(
        synapse, network, invite=[account.user_id, member.user_id], powers={account.user_id: 50}
    )
    await member.http.post(path(*CS, "join", room), {})
    text = "Правила комнаты: что сказано здесь, остаётся здесь."
    descriptions = {("club_room", "c1", None, "general"): text}
    settings = RuntimeSettings(sync_timeout_ms=1000, description_repost_s=0)
    factories = {"echo": simple_factory(Echo())}
    async with (
        mautrix_peer(member, synapse.url) as peer,
        mautrix_peer(late, synapse.url) as newcomer,
    ):
        async with bot_host(
            synapse,
            tmp_path,
            [account],
            factories,
            network=network,
            settings=settings,
            descriptions=descriptions,
        ):
            first = await wait_reply(peer, account.user_id, room, 0)
            await synapse.admin.http.post(
                path(*CS, "rooms", room, "invite"), {"user_id": late.user_id}
            )
            await late.http.post(path(*CS, "join", room), {})
            copy = await wait_reply(newcomer, account.user_id, room, 0)
            assert copy.body == text
        async with bot_host(
            synapse,
            tmp_path,
            [account],
            factories,
            network=network,
            settings=settings,
            descriptions=descriptions,
        ) as host:
            rt = host.runtime("echo")
            start = rt.syncs

            async def settled() -> bool:
                return rt.syncs >= start + 2

            await eventually(settled, within=20)

    pinned = await late.http.get(path(*CS, "rooms", room, "state", "m.room.pinned_events", ""))
    assert pinned["pinned"] == [copy.event_id]  # the pin moved to the copy newcomers can read
    fetched = await late.http.get(path(*CS, "rooms", room, "event", copy.event_id))
    assert fetched["type"] == "m.room.encrypted"  # encrypted, and there for the newcomer
    assert [r.body for r in replies_from(peer, account.user_id, room)] == [text, text]
    assert first.event_id != copy.event_id
    assert [r.body for r in replies_from(newcomer, account.user_id, room)] == [text]


async def test_privileged_commands_need_a_cross_signed_device_and_encryption(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    staff = await synapse.new_user("staff")
    witness = await synapse.new_user("witness")
    room = await managed_room(
        synapse,
        network,
        invite=[account.user_id, staff.user_id, witness.user_id],
        powers={staff.user_id: 50},
    )
    for who in (staff, witness):
        await who.http.post(path(*CS, "join", room), {})
    async with (
        bot_host(synapse, tmp_path, [account], {"echo": simple_factory(Echo())}, network=network),
        mautrix_peer(staff, synapse.url, cross_sign=False) as unverified,
        mautrix_peer(witness, synapse.url) as seen,
    ):
        await eventually(lambda: joined(staff, room, account.user_id), within=20)
        # Plaintext into an encrypted room (only HTTP, no client does that): never obeyed.
        await staff.http.put(
            path(*CS, "rooms", room, "send", "m.room.message", "plain-1"),
            {"msgtype": "m.text", "body": "!secret"},
        )
        # From a session its owner did not cross-sign: refused, with the reason.
        await unverified.send_text(RoomID(room), "!secret")
        reply = await wait_reply(seen, account.user_id, room, 0)
        assert reply.body == (
            "!secret is accepted only from a verified session. "
            "Verify this session (Settings → Sessions) and try again."
        )
        await unverified.send_text(RoomID(room), "!ping")  # unprivileged: answered
        pong = await wait_reply(seen, account.user_id, room, 1)
        assert pong.body == "Pong 🏓"
        assert len(replies_from(seen, account.user_id, room)) == 2
