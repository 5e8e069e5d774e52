"""The bridge bot's own end-to-end encrypted device, for encrypted rooms whose admins consented.

`@tg_bridge` is an application-service user without a password. Its device is created once by
an application-service login (`m.login.application_service` with the `as_token`); the device's
access token and id go into the vault (`@tg_bridge:<server>/access_token`, `/device_id`), where
`clubs.core.e2ee.E2eeClient` expects a bot's session. From then on the device is the project's
`E2eeClient`: an encrypted nio store under the bridge's data dir (`var/bridge/device/`, its key
in the vault), cross-signed at first start (the first upload of cross-signing keys needs no
password on Synapse), and room keys shared only with devices their owners cross-signed.

How events are read: the homeserver already delivers every event of the bridged rooms to the
application service, `m.room.encrypted` included, and the inbox stores them exactly once, in
order, across crashes. The device decrypts those events there (`decrypt`). Its own `/sync` loop
(`run`) is needed anyway for what only a device receives: the room keys members' clients send
to it (to-device), device-list changes and one-time-key uploads; its timeline is not used, so
its filter asks for the state changes nio follows (`TIMELINE_TYPES`) and no messages. An
event whose key has not arrived yet is put off by the inbox and tried again (`KeyPending`).
Synapse's MSC2409/MSC3202 extensions (to-device and device lists in transactions) would spare
the second connection but are experimental; nio cannot be fed from them either.

The sync position is kept in the bridge's store (`e2ee_next_batch`); the crypto store is the
nio store (sealed with its key from the vault). Nothing here logs content or keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from clubs.bridge.store import BridgeStore
from clubs.core.e2ee import E2eeClient, RoomEvent
from clubs.core.http import DeviceId, MatrixHttp, cs
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.secrets import Vault

log = logging.getLogger(__name__)

NEXT_BATCH_KEY = "e2ee_next_batch"
DEVICE_NAME = "Telegram bridge"
SYNC_TIMEOUT_MS = 30_000
BACKOFF_MAX_S = 60.0
TIMELINE_TYPES = (
    # The state changes nio follows to encrypt for the right devices; never messages, which
    # reach the bridge in its transactions (a busy bridged room would otherwise wake this sync
    # for every message and have nio parse and store each batch for nothing).
    "m.room.member",
    "m.room.encryption",
    "m.room.history_visibility",
    "m.room.power_levels",
    "m.room.create",
    "m.room.join_rules",
    "m.room.tombstone",
)


class KeyPending(Exception):
    """An encrypted event whose room key this device does not hold (yet): try it later."""


class DeviceNotReady(Exception):
    """The device has not seen the room in a sync yet (it just joined): try again later."""


async def ensure_device_session(as_http: MatrixHttp, vault: Vault, bot: UserId) -> DeviceId:
    """The bot's device: created by an application-service login the first time, its token and
    id kept in the vault (never logged). Later starts reuse it: logging in again would make a
    new device, and members' clients would have to trust it anew."""
    token = vault.get(f"{bot}/access_token")
    device = vault.get(f"{bot}/device_id")
    if token and device:
        return DeviceId(device)
    body: dict[str, Any] = {
        "type": "m.login.application_service",
        "identifier": {"type": "m.id.user", "user": bot},
        "initial_device_display_name": DEVICE_NAME,
    }
    if device:
        body["device_id"] = device  # a token lost from the vault: the same device again
    resp = await as_http.post(cs("login"), body, label="login (appservice)")
    new_token, new_device = resp.get("access_token"), resp.get("device_id")
    if not isinstance(new_token, str) or not isinstance(new_device, str):
        raise RuntimeError("the homeserver's login answer has no access token or device id")
    vault.set(f"{bot}/device_id", new_device)  # before the token: a crash keeps the device id
    vault.set(f"{bot}/access_token", new_token)
    log.info("created the bridge bot's device %s", new_device)
    return DeviceId(new_device)


class BridgeDevice:
    def __init__(self, client: E2eeClient, store: BridgeStore) -> None:
        self.client = client
        self.store = store

    @classmethod
    async def open(
        cls,
        homeserver: str,
        as_http: MatrixHttp,
        vault: Vault,
        bot: UserId,
        store_dir: Path,
        store: BridgeStore,
    ) -> BridgeDevice:
        await ensure_device_session(as_http, vault, bot)
        client = await E2eeClient.open(homeserver, vault, bot, store_dir)
        return cls(client, store)

    @property
    def device_id(self) -> DeviceId:
        return self.client.device_id

    async def close(self) -> None:
        await self.client.close()

    async def run(self, after_sync: Callable[[bool], Awaitable[None]]) -> None:
        """Sync forever (to-device keys, device lists); `after_sync(keys)` runs after each sync,
        `keys` true when it brought to-device messages (room keys may have arrived)."""
        backoff = 1.0
        while True:
            try:
                since = await self.store.get_setting(NEXT_BATCH_KEY)
                batch = await self.client.sync(
                    since, timeout_ms=SYNC_TIMEOUT_MS, timeline_types=TIMELINE_TYPES
                )
                await self.store.set_setting(NEXT_BATCH_KEY, batch.next_batch)
                self.client.retry_undecrypted()  # keeps nio's bounded list short; unused here
                await after_sync(batch.to_device > 0)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(
                    "the bridge device's sync failed (%s); again in %.0f s",
                    type(e).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def decrypt(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The event with its plaintext type and content; raises KeyPending without the key.

        `m.relates_to` travels in the clear (spec: edits and replies); when the plaintext has
        none, the clear one is kept, so edits and replies are recognised."""
        room = RoomId(str(event["room_id"]))
        decrypted: RoomEvent | None = await self.client.decrypt_json(room, event)
        if decrypted is None or not decrypted.decrypted:
            raise KeyPending(f"no room key for {event.get('event_id')}")
        content = dict(decrypted.content)
        clear = event.get("content")
        relates = clear.get("m.relates_to") if isinstance(clear, Mapping) else None
        if "m.relates_to" not in content and isinstance(relates, dict):
            content["m.relates_to"] = relates
        return {**event, "type": decrypted.type, "content": content}

    async def request_key(self, event: Mapping[str, Any]) -> None:
        """Ask the sender's devices for the key of an event still waiting for it (once per
        session; a lost or late `m.room_key` is then sent again by a client that shared it)."""
        await self.client.request_key_for(RoomId(str(event.get("room_id"))), event)

    async def send(
        self, room: RoomId, event_type: str, content: Mapping[str, Any], txn: str
    ) -> EventId:
        """Send encrypted from the bot's device (room keys only to cross-signed devices)."""
        if not self.client.knows_room(room):
            raise DeviceNotReady(f"the bridge device has not synced room {room} yet")
        return await self.client.send(room, event_type, content, txn_id=txn)
