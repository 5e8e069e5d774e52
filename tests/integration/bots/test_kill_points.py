"""Kill points (docs/security.md): a bot process killed anywhere loses no command and answers
none twice.

For each named kill point of the runtime (`clubs.core.crash`) the bot process is killed there
ten times across restarts (`CLUBS_CRASH_AT=<point>:<n>`, n varying, exit status 137 exactly as a
SIGKILL) while a member of an encrypted managed room keeps sending `!echo <k>` commands, some
while the bot is down, some while it starts; the outbox's points cover a reply recorded but not
sent (`outbox_written`) and sent but not marked sent (`outbox_acked`). A last case SIGKILLs it
at random moments. After
a final run without crashes, every command has exactly one reply — counted twice: decrypted by
the independent cross-signed-only client, and as raw events on the server (so a duplicate the
member could not decrypt would still be caught). The bot still has exactly one device.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from pathlib import Path

import pytest

from clubs.core.http import path
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    BotProcess,
    bot_process,
    create_bot_account,
    device_count,
    echo_room,
    joined,
    managed_room,
    new_network,
    send_text,
    wait_replies,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

KILLS_PER_POINT = 10
KILL_POINTS = (
    "after_sync",
    "outbox_written",
    "before_send",
    "after_send",
    "outbox_acked",
    "before_commit",
)


async def raw_replies(member: Account, room_id: str, bot_user: str) -> Counter[str]:
    """The bot's events in the room per event they answer, straight from the server.

    Encrypted events carry `m.relates_to` in the clear (nio copies it out, as the spec asks),
    so this counts even replies that nobody could decrypt."""
    counts: Counter[str] = Counter()
    token: str | None = None
    while True:
        query = {"dir": "b", "limit": "500"} | ({"from": token} if token else {})
        page = await member.http.get(path(*CS, "rooms", room_id, "messages"), query=query)
        for event in page.get("chunk", []):
            if event.get("sender") != bot_user or event.get("type") not in (
                "m.room.encrypted",
                "m.room.message",
            ):
                continue
            reply = event.get("content", {}).get("m.relates_to", {}).get("m.in_reply_to", {})
            if isinstance(reply.get("event_id"), str):
                counts[reply["event_id"]] += 1
        token = page.get("end")
        if not token or not page.get("chunk"):
            return counts


class Member:
    """The member who keeps sending unique commands."""

    def __init__(self, peer: MautrixPeer, room_id: str) -> None:
        self.peer = peer
        self.room_id = room_id
        self.commands: list[str] = []

    async def send(self, how_many: int) -> None:
        for _ in range(how_many):
            self.commands.append(
                await send_text(self.peer, self.room_id, f"!echo k{len(self.commands)}")
            )


async def crash_runs(bp: BotProcess, member: Member, point: str) -> None:
    """Ten runs, each ending at the kill point: commands wait in the backlog while the bot is
    down (so the first sync after a restart carries them) and arrive while it starts."""
    for i in range(KILLS_PER_POINT):
        await member.send(2)
        await bp.start(crash_at=f"{point}:{1 + i % 3}")
        await member.send(1)
        code = await bp.wait_exit(within=30)
        assert code == 137, f"run {i} ended with {code}, not at {point}; {bp}"


async def sigkill_runs(bp: BotProcess, member: Member) -> None:
    """Ten runs SIGKILLed from outside at random moments while commands flow."""
    rng = random.Random(4)  # reproducible moments
    for i in range(KILLS_PER_POINT):
        await member.send(2)
        await bp.start()
        await member.send(1)
        await asyncio.sleep(rng.uniform(0.3, 1.6))  # the moment of the power cut
        assert bp.running, f"run {i} ended before it was killed; {bp}"
        await bp.kill()
        assert bp.exits[-1] == -9


@pytest.mark.parametrize("point", [*KILL_POINTS, "sigkill"])
async def test_every_command_is_answered_exactly_once_across_kills(
    synapse: SynapseHarness, tmp_path: Path, point: str
) -> None:
    network, account, member_account, room = await echo_room(synapse, tmp_path)
    async with (
        bot_process(synapse.url, tmp_path, [account], network, synapse.admin.user_id) as bp,
        mautrix_peer(member_account, synapse.url) as peer,
    ):
        member = Member(peer, room)
        # A first clean run: the bot joins, takes its sync position and shares its keys.
        await bp.start()
        await bp.wait_ready()
        await eventually(lambda: joined(member_account, room, account.user_id), within=20)
        await member.send(1)
        await wait_replies(peer, account.user_id, room, member.commands, within=20)
        await bp.stop()

        if point == "sigkill":
            await sigkill_runs(bp, member)
        else:
            await crash_runs(bp, member, point)

        await bp.start()  # the final run, with no kill point
        await bp.wait_ready()
        await member.send(1)  # sent last: its reply comes after any replay of older ones
        counts = await wait_replies(peer, account.user_id, room, member.commands, within=60)
        await bp.stop()

    assert {c: counts[c] for c in member.commands} == dict.fromkeys(member.commands, 1)
    raw = await raw_replies(member_account, room, account.user_id)
    assert {c: raw[c] for c in member.commands} == dict.fromkeys(member.commands, 1)
    assert sum(raw.values()) == len(member.commands)
    assert peer.undecryptable == []
    assert await device_count(synapse.url, tmp_path, account.user_id) == 1


async def test_room_keys_received_just_before_a_kill_are_still_usable(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """R2's C6: the process dies right after nio stored the room keys of a sync (to-device),
    before the position is committed. Synapse delivers those to-device messages again (their
    Olm layer no longer decrypts: the one-time key is spent), but the keys were kept: every
    command from the new members is answered once, nothing stays undecryptable."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    room = await managed_room(synapse, network, invite=[account.user_id])
    async with contextlib.AsyncExitStack() as stack:
        bp = await stack.enter_async_context(
            bot_process(synapse.url, tmp_path, [account], network, synapse.admin.user_id)
        )
        await bp.start()
        await bp.wait_ready()
        await eventually(lambda: joined(synapse.admin, room, account.user_id), within=20)
        await bp.stop()
        members: list[Member] = []
        for i in range(3):
            # A new member, whose first message is the bot's first key from them: the key
            # waits on the server as a to-device message while the bot is down.
            person = await synapse.new_user(f"newcomer{i}")
            await synapse.admin.http.post(
                path(*CS, "rooms", room, "invite"), {"user_id": person.user_id}
            )
            await person.http.post(path(*CS, "join", room), {})
            member = Member(
                await stack.enter_async_context(mautrix_peer(person, synapse.url)), room
            )
            await member.send(1)
            members.append(member)
            await bp.start(crash_at="after_to_device:1")
            assert await bp.wait_exit(within=30) == 137, f"run {i} did not die there; {bp}"
        await bp.start()
        await bp.wait_ready()
        for member in members:
            await member.send(1)  # after the restart, on the same (kept) session
        for member in members:
            counts = await wait_replies(
                member.peer, account.user_id, room, member.commands, within=60
            )
            assert {c: counts[c] for c in member.commands} == dict.fromkeys(member.commands, 1)
            assert member.peer.undecryptable == []
        await bp.stop()
    assert await device_count(synapse.url, tmp_path, account.user_id) == 1
