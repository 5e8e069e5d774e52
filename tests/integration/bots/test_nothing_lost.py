"""Nothing lost at the edges of sync: more events than one sync carries, keys that come late.

- Synapse puts at most 10 events per room into one sync response and marks the timeline
  `limited`; the rest must be fetched, or commands sent while the bot was down (or in a busy
  room) vanish without a trace.
- Element often sends a message before its room key reaches the bot (the key travels as a
  to-device message, possibly in a later sync). The bot says once that it could not decrypt,
  and must run the command when the key arrives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mautrix.crypto.sessions import OutboundGroupSession
from mautrix.types import EventType, MessageType, RoomID, TextMessageEventContent, UserID

from clubs.bots.runtime import RuntimeSettings
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.botproc import echo_catalog, echo_factory
from tests.integration.bots.support import (
    bot_host,
    echo_room,
    joined,
    replies_per_command,
    send_text,
    wait_replies,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer


async def test_commands_piled_up_while_the_bot_was_down_are_all_answered(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    catalog = echo_catalog(tmp_path / "templates")
    factories = {"echo": echo_factory("echo")}
    settings = RuntimeSettings(sync_timeout_ms=1000, commands_per_window=100)
    async with mautrix_peer(member, synapse.url) as peer:
        async with bot_host(
            synapse,
            tmp_path,
            [account],
            factories,
            network=network,
            catalog=catalog,
            settings=settings,
        ):
            await eventually(lambda: joined(member, room, account.user_id), within=20)
            first = await send_text(peer, room, "!echo first")
            await wait_replies(peer, account.user_id, room, [first], within=20)
        # The bot is down: 25 commands, more than twice what one sync carries per room.
        commands = [await send_text(peer, room, f"!echo while down {i}") for i in range(25)]
        async with bot_host(
            synapse,
            tmp_path,
            [account],
            factories,
            network=network,
            catalog=catalog,
            settings=settings,
        ):
            await wait_replies(peer, account.user_id, room, commands, within=30)
            last = await send_text(peer, room, "!echo last")
            await wait_replies(peer, account.user_id, room, [last], within=20)
    counts = replies_per_command(peer, account.user_id, room)
    assert [counts[c] for c in [first, *commands, last]] == [1] * 27


async def send_before_its_key(peer: MautrixPeer, room_id: str, body: str) -> str:
    """Send a message encrypted with a fresh Megolm session that nobody has yet; the session,
    still at index 0, becomes the room's unshared outbound session, so the next
    `share_group_session` delivers its key (as a client whose key share was delayed would)."""
    room = RoomID(room_id)
    fresh = await peer.crypto._new_outbound_group_session(room)  # mautrix's own first step
    at_zero = OutboundGroupSession.from_pickle(
        fresh.pickle("copy"),
        "copy",
        fresh.max_age,
        fresh.max_messages,
        fresh.creation_time,
        fresh.use_time,
        0,
        room,
        shared=False,
    )
    fresh.shared = True  # only to let it encrypt: no device has the key
    await peer.crypto_store.add_outbound_group_session(fresh)
    content: Any = await peer.crypto.encrypt_megolm_event(
        room,
        EventType.ROOM_MESSAGE,
        TextMessageEventContent(msgtype=MessageType.TEXT, body=body),
    )
    event_id: str = await peer.client.send_message_event(
        room, EventType.ROOM_ENCRYPTED, content, disable_encryption=True
    )
    await peer.crypto_store.add_outbound_group_session(at_zero)
    return event_id


async def test_a_command_whose_key_arrives_late_runs_when_it_arrives(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    catalog = echo_catalog(tmp_path / "templates")
    async with (
        bot_host(
            synapse,
            tmp_path,
            [account],
            {"echo": echo_factory("echo")},
            network=network,
            catalog=catalog,
        ),
        mautrix_peer(member, synapse.url) as peer,
    ):
        await eventually(lambda: joined(member, room, account.user_id), within=20)
        first = await send_text(peer, room, "!echo first")
        await wait_replies(peer, account.user_id, room, [first], within=20)

        late = await send_before_its_key(peer, room, "!echo late")
        notice = await wait_replies(peer, account.user_id, room, [late], within=20)
        assert notice[late] == 1  # "could not decrypt", told once

        await peer.crypto.share_group_session(RoomID(room), [UserID(account.user_id), peer.user_id])
        # Index 0 of that session is spent: the member's next message starts a new session.
        await peer.crypto_store.remove_outbound_group_session(RoomID(room))

        async def answered() -> bool:
            return replies_per_command(peer, account.user_id, room)[late] >= 2

        await eventually(answered, within=20)
        bodies = [r.body for r in peer.received if r.reply_to == late]
        last = await send_text(peer, room, "!echo last")
        await wait_replies(peer, account.user_id, room, [last], within=20)
    assert "Echo: late" in bodies
    assert replies_per_command(peer, account.user_id, room)[late] == 2
