"""An encrypted bridged room with its admins' consent, against a real Synapse, the fake Telegram
and an independent E2EE client (mautrix, Element's trust rules: room keys only for cross-signed
devices) standing in for the member: refused before consent, then the bridge's own cross-signed
device pins a notice, decrypts the member's new messages for Telegram and posts Telegram's
messages encrypted as "Имя (Telegram): …"; images cross both ways as encrypted attachments
without their metadata; a message sent before the consent never crosses.

(Named so that it runs before test_kills.py, whose bridge processes work on a copy of the vault.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mautrix.types import EventType, MessageType, RoomID, TextMessageEventContent, TrustState

from clubs.bridge.consent import find_room, record_consent
from clubs.bridge.relay import BRIDGED_NOTICE
from clubs.bridge.service import Bridge
from clubs.core.admin import login_password
from clubs.core.attachments import encrypt, encrypted_file
from clubs.core.errors import NotFound
from clubs.core.http import MatrixHttp, RoomId, UserId, cs, path
from tests.faketelegram import FakeTelegram
from tests.harness import eventually
from tests.integration.bridge.conftest import NETWORK, BridgeWorld, unique_key
from tests.mautrix_client import Received, mautrix_peer
from tests.unit.bridge.test_media import photo_with_gps

pytestmark = pytest.mark.integration

IVAN = {"id": 5550007, "is_bot": False, "first_name": "Иван", "last_name": "П."}


async def _true(value: bool) -> bool:
    return value


async def test_an_encrypted_room_with_consent_is_relayed_from_the_bots_own_device(
    bridge_world: BridgeWorld, telegram: FakeTelegram, tmp_path: Path
) -> None:
    world = bridge_world
    synapse = world.synapse
    admin = synapse.admin
    chat = -1001000000070
    telegram.add_chat(chat)
    key = unique_key()
    anna = await synapse.new_user("anna", displayname="Анна")
    bridge: Bridge = await world.bridge(telegram, [world.portal(key, chat)], tmp_path)
    try:
        assert bridge.device is not None, "the bridge's E2EE device did not open"
        bot = bridge.relay.bot
        async with mautrix_peer(anna, synapse.url) as peer:
            # Without consent: refused, as before.
            room = await world.room(key, [anna], encrypted=True)

            async def refused() -> bool:
                portal = bridge.relay._rooms.get(room)
                return portal is not None and portal.state == "refused"

            await eventually(refused, within=15)

            async def bot_left() -> bool:
                members = await admin.http.get(cs("rooms", room, "members"))
                return any(
                    e["state_key"] == bot and e["content"]["membership"] == "leave"
                    for e in members["chunk"]
                )

            await eventually(bot_left, within=15)
            await peer.send_text(RoomID(room), "сказано до согласия")

            # A member (power 0) cannot record consent; the admin (power 100) does.
            with pytest.raises(Exception, match="not an admin"):
                await record_consent(anna.http, room, UserId(anna.user_id), chat)
            await record_consent(admin.http, room, UserId(admin.user_id), chat)
            await admin.http.post(cs("rooms", room, "invite"), {"user_id": bot})

            async def consented() -> bool:
                portal = bridge.relay._rooms.get(room)
                return portal is not None and portal.state == "active" and portal.encrypted

            await eventually(consented, within=15)

            # The notice: posted once by the bot's device, encrypted, pinned, readable and
            # trusted by the member's client (the device is cross-signed).
            async def pinned() -> list[str]:
                try:
                    content = await admin.http.get(
                        cs("rooms", room, "state", "m.room.pinned_events", "")
                    )
                except NotFound:
                    return []
                return list(content.get("pinned", []))

            [notice_id] = await eventually(pinned, within=20)

            def from_bot() -> list[Received]:
                return [r for r in peer.received if r.room_id == room and r.sender == bot]

            async def notice_seen() -> list[Received]:
                return [r for r in from_bot() if r.event_id == notice_id]

            [notice] = await eventually(notice_seen, within=15)
            assert notice.body == BRIDGED_NOTICE
            assert notice.msgtype == "m.notice"
            assert notice.trust >= TrustState.CROSS_SIGNED_TOFU

            # Matrix → Telegram: the member's encrypted message arrives decrypted, and so does
            # her edit of it (its m.relates_to travels in the clear).
            first = await peer.client.send_message_event(
                RoomID(room),
                EventType.ROOM_MESSAGE,
                TextMessageEventContent(msgtype=MessageType.TEXT, body="Привет <всем>"),
            )
            await eventually(
                lambda: _true(telegram.texts(chat) == ["Анна: Привет <всем>"]), within=20
            )
            edit: dict[str, Any] = {
                "msgtype": "m.text",
                "body": "* Привет <всем> из Matrix",
                "m.new_content": {"msgtype": "m.text", "body": "Привет <всем> из Matrix"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": first},
            }
            await peer.client.send_message_event(
                RoomID(room),
                EventType.ROOM_MESSAGE,
                edit,
            )
            await eventually(
                lambda: _true(telegram.texts(chat) == ["Анна: Привет <всем> из Matrix"]),
                within=20,
            )

            # A message whose room key is late: the bridge asks the sender's devices for it
            # (a second device of anna's, signed in for this, sees the request), and relays the
            # message once the key comes.
            async with MatrixHttp(synapse.url) as anonymous:
                second = await login_password(anonymous, anna.user_id, anna.password)
            other_device = MatrixHttp(synapse.url, second.access_token)
            no_rooms = {"filter": '{"room":{"rooms":[]}}'}
            since = str((await other_device.get(cs("sync"), query=no_rooms))["next_batch"])
            _, late_key = await peer.send_with_late_key(room, "ключ опоздал")

            async def key_requested() -> bool:
                # Incremental: Synapse answers a repeated identical sync from its cache.
                nonlocal since
                sync = await other_device.get(
                    cs("sync"), query={**no_rooms, "since": since, "timeout": "2000"}
                )
                since = str(sync["next_batch"])
                return any(
                    e.get("type") == "m.room_key_request"
                    and e.get("sender") == bot
                    and e.get("content", {}).get("action") == "request"
                    for e in sync.get("to_device", {}).get("events", [])
                )

            await eventually(key_requested, within=20)
            await other_device.close()
            assert await peer.deliver_key(late_key, bot) >= 1
            await eventually(
                lambda: _true(telegram.texts(chat)[-1:] == ["Анна: ключ опоздал"]), within=20
            )

            # Telegram → Matrix: from the bot, encrypted, "Имя (Telegram): …", trusted.
            await telegram.user_says(chat, IVAN, "Привет из Telegram")

            async def relayed() -> list[Received]:
                return [r for r in from_bot() if r.event_id != notice_id]

            [incoming] = await eventually(relayed, within=20)
            assert incoming.body == "Иван П. (Telegram): Привет из Telegram"
            assert incoming.trust >= TrustState.CROSS_SIGNED_TOFU
            trust = await peer.trust_of(bot, bridge.device.device_id)
            assert trust >= TrustState.CROSS_SIGNED_TOFU

            # On the server, every message the bot sent since the consent is ciphertext, and no
            # ghost was created in the encrypted room.
            events = await _timeline(admin.http, room)
            after = [e for e in events if e["origin_server_ts"] >= _consent_ts(events)]
            sent = [e for e in after if e["sender"] == bot and "state_key" not in e]
            assert {e["type"] for e in sent} == {"m.room.encrypted"}
            assert len(sent) == 2  # the notice and Ivan's message
            assert not [e for e in events if e["sender"].startswith("@tg_5550007:")]

            # A member who joins now is followed by the device's sync (its timeline carries
            # memberships, never messages) and can read what Telegram says next.
            boris = await synapse.new_user("boris", displayname="Борис")
            async with mautrix_peer(boris, synapse.url) as late:
                await admin.http.post(cs("rooms", room, "invite"), {"user_id": boris.user_id})
                await boris.http.post(cs("join", room), {})

                async def boris_known() -> bool:
                    assert bridge.device is not None
                    return UserId(boris.user_id) in await bridge.device.client.members(room)

                await eventually(boris_known, within=15)
                await telegram.user_says(chat, IVAN, "И новому участнику")

                async def late_read() -> list[Received]:
                    return [r for r in late.received if r.room_id == room and r.sender == bot]

                [for_boris] = await eventually(late_read, within=20)
                assert for_boris.body == "Иван П. (Telegram): И новому участнику"

            # Nothing from before the consent crossed, and nothing was relayed twice.
            texts = [str(m["text"]) for m in telegram.sent(chat)]
            assert texts == ["Анна: Привет <всем> из Matrix", "Анна: ключ опоздал"]
            assert not [t for t in texts if "до согласия" in t]
            assert len(peer.received) == len({r.event_id for r in peer.received})

            # Images cross as encrypted attachments, without their metadata, both ways.
            photo = photo_with_gps()
            sealed = encrypt(photo)
            uploaded = await anna.http.request_bytes(
                "POST", path("_matrix", "media", "v3", "upload"), sealed.ciphertext
            )
            file = encrypted_file(str(uploaded["content_uri"]), sealed.keys)
            await peer.client.send_message_event(
                RoomID(room),
                EventType.ROOM_MESSAGE,
                {"msgtype": "m.image", "body": "фото", "filename": "IMG.jpg", "file": file},
            )
            await eventually(lambda: _true(len(telegram.photos(chat)) == 1), within=20)
            [relayed_photo] = telegram.photos(chat)
            assert b"Exif" not in relayed_photo
            assert b"CanaryPhone" not in relayed_photo
            assert telegram.texts(chat)[-1] == "Анна: фото"
            await telegram.user_sends_photo(chat, IVAN, photo_with_gps(size=(16, 8)))

            async def image_in() -> list[Received]:
                return [r for r in from_bot() if r.msgtype == "m.image"]

            [image] = await eventually(image_in, within=20)
            assert image.body == "Иван П. (Telegram)"  # the caption names the sender
            assert image.trust >= TrustState.CROSS_SIGNED_TOFU
            events = await _timeline(admin.http, room)
            since = _consent_ts(events)
            assert {
                e["type"]
                for e in events
                if e["sender"] == bot and "state_key" not in e and e["origin_server_ts"] >= since
            } == {"m.room.encrypted"}

            # What `clubs bridge consent` does, by the room's locator; then withdrawn: refused.
            assert await find_room(admin.http, NETWORK, "almaty", key) == room
            await record_consent(admin.http, room, UserId(admin.user_id), chat, withdraw=True)
            await eventually(refused, within=15)
            await eventually(bot_left, within=15)
            # The notice no longer holds: it is unpinned. Consent given again: a new one.
            assert notice_id not in await pinned()
            await record_consent(admin.http, room, UserId(admin.user_id), chat)
            await admin.http.post(cs("rooms", room, "invite"), {"user_id": bot})
            await eventually(consented, within=15)

            async def new_notice() -> list[str]:
                return [e for e in await pinned() if e != notice_id]

            [again] = await eventually(new_notice, within=20)

            async def renewed_seen() -> list[Received]:
                return [r for r in from_bot() if r.event_id == again]

            [renewed] = await eventually(renewed_seen, within=15)
            assert renewed.body == BRIDGED_NOTICE
    finally:
        await bridge.stop()


async def _timeline(http: Any, room: RoomId) -> list[dict[str, Any]]:
    resp = await http.get(cs("rooms", room, "messages"), query={"dir": "b", "limit": "200"})
    return [e for e in resp.get("chunk", []) if isinstance(e, dict)][::-1]


def _consent_ts(events: list[dict[str, Any]]) -> int:
    [ts] = [e["origin_server_ts"] for e in events if e["type"] == "org.commclubs.bridge_consent"]
    return int(ts)
