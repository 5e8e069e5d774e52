"""Moderation across the bridge, against a real Synapse and the fake Telegram: a Matrix message
is held for `hold_s` before it leaves, so a redaction in that time (the moderation bot's
protections redact, as a moderator does here) keeps it out of Telegram; a message not redacted
leaves once the hold is over. (A ghost's ban reaching Telegram is in test_relay.py.)"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from clubs.core.http import cs
from tests.faketelegram import FakeTelegram
from tests.harness import eventually
from tests.integration.bridge.conftest import BridgeWorld, active, holds, say, unique_key

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
