"""Moderation across the bridge, against a real Synapse and the fake Telegram: a Matrix message
is held for `hold_s` before it leaves, so a redaction in that time keeps it out of Telegram;
then the real moderation bot on the same homeserver: its word protection removes a Telegram
message (deleted in Telegram) and a Matrix message during the hold (never sent), and its
network-wide ban of a ghost bans the Telegram user in the chat."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from clubs.core.http import RoomId, UserId, cs
from tests.faketelegram import FakeTelegram
from tests.harness import eventually
from tests.integration.bridge.conftest import (
    NETWORK,
    BridgeWorld,
    active,
    holds,
    say,
    unique_key,
)

pytestmark = pytest.mark.integration


async def test_a_message_redacted_during_the_hold_never_reaches_telegram(
    bridge_world: BridgeWorld, telegram: FakeTelegram, tmp_path: Path
) -> None:
    chat = -1001000000041
    telegram.add_chat(chat)
    key = unique_key()
    bridge = await bridge_world.bridge(
        telegram, [bridge_world.portal(key, chat, "mirror")], tmp_path, hold_s=2
    )
    try:
        anna = await bridge_world.synapse.new_user("anna", displayname="Анна")
        room = await bridge_world.room(key, [anna])
        await eventually(lambda: active(bridge, room), within=15)
        sent_at = time.time()
        bad = await say(anna, room, {"msgtype": "m.text", "body": "мой номер +7 900 000-00-00"})
        await bridge_world.synapse.admin.http.put(
            cs("rooms", room, "redact", bad, secrets.token_hex(8)), {"reason": "personal_data"}
        )
        await say(anna, room, {"msgtype": "m.text", "body": "без номера"})
        await eventually(lambda: holds(telegram.texts(chat) == ["Анна: без номера"]), within=15)
        [call] = telegram.method_calls("sendMessage")
        assert call.at - time.monotonic() + time.time() - sent_at >= 1.9  # held, then sent
        assert not [c for c in telegram.calls if "900" in str(c.params)]
        assert await bridge.relay.store.inbox_size() == 0
    finally:
        await bridge.stop()


async def test_the_moderation_bots_ban_and_protections_reach_telegram(
    bridge_world: BridgeWorld, telegram: FakeTelegram, tmp_path: Path
) -> None:
    """The real moderation bot on the bridge's homeserver: its mute of a ghost restricts the
    Telegram user in the chat until lifted; its network-wide ban of a ghost bans the Telegram
    user in the chat; its word protection removes a Telegram message (deleted in
    Telegram too) and a Matrix message during the hold (never sent)."""
    from clubs.bots.moderation.bot import ModerationBot
    from tests.integration.bots.support import bot_host, create_bot_account, managed_room
    from tests.integration.bots.test_moderation_bot import factory

    synapse = bridge_world.synapse
    chat = -1001000000042
    telegram.add_chat(chat)
    key = unique_key()
    bridge = await bridge_world.bridge(
        telegram, [bridge_world.portal(key, chat)], tmp_path / "bridge", hold_s=2
    )
    try:
        modbot = await create_bot_account(synapse, tmp_path, "moderation")
        anna = await synapse.new_user("anna", displayname="Анна")
        room = RoomId(
            await managed_room(
                synapse,
                NETWORK,
                invite=[modbot.user_id, anna.user_id, bridge.relay.bot],
                powers={modbot.user_id: 100, bridge.relay.bot: 50},
                key=key,
                club="almaty",
                encrypted=False,
                settings={"moderation": {"words": ["запрещёнка"]}},
            )
        )
        await anna.http.post(cs("join", room), {})
        await eventually(lambda: active(bridge, room), within=15)
        async with bot_host(
            synapse, tmp_path, [modbot], {"moderation": factory()}, network=NETWORK
        ) as host:

            async def bot_joined() -> bool:
                members = await anna.http.get(cs("rooms", room, "joined_members"))
                return modbot.user_id in members.get("joined", {})

            await eventually(bot_joined, within=20)
            # A Telegram message the word protection removes is deleted in Telegram as well.
            await telegram.user_says(chat, IVAN, "привет всем")
            bad = await telegram.user_says(chat, IVAN, "вот запрещёнка")
            await eventually(lambda: holds(bad not in telegram.chats[chat].messages), within=20)
            assert [m["text"] for m in telegram.chats[chat].messages.values()] == ["привет всем"]
            # A Matrix message it removes during the hold never leaves; the next one does.
            await say(anna, room, {"msgtype": "m.text", "body": "и у меня запрещёнка"})
            await say(anna, room, {"msgtype": "m.text", "body": "чистое"})
            await eventually(lambda: holds("Анна: чистое" in telegram.texts(chat)), within=20)
            assert not [c for c in telegram.calls if "запрещёнка" in str(c.params)]
            bot = host.runtime("moderation").bot
            assert isinstance(bot, ModerationBot)
            ghost = UserId(f"@tg_{IVAN['id']}:{synapse.server_name}")
            # Its mute (what a flood or !mute does) restricts the Telegram user in the chat,
            # and lifting it lifts the restriction.
            muted = await bot.net.mod.mute(room, ghost, time.time() + 600, reason="flood")
            assert muted.changed
            await eventually(
                lambda: holds(telegram.chats[chat].restricted == {IVAN["id"]}), within=15
            )
            assert await bot.net.mod.unmute(room, ghost)
            await eventually(lambda: holds(telegram.chats[chat].restricted == set()), within=15)
            # Its network-wide ban (what !ban does) bans the Telegram user in the chat.
            rooms = await bot.net.managed_rooms()
            report = await bot.net.mod.ban_everywhere(ghost, "spam", rooms)
            assert room in report.done
            await eventually(lambda: holds(telegram.chats[chat].banned == {IVAN["id"]}), within=15)
    finally:
        await bridge.stop()


IVAN = {"id": 5550041, "is_bot": False, "first_name": "Иван"}
