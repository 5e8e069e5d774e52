"""An independent E2EE client that behaves like Element with "exclude insecure devices".

Built on mautrix-python (libolm through python-olm), not on nio, so a round trip with our nio bot
proves interoperability rather than agreement with itself. Its OlmMachine shares room keys only
with devices that their owner cross-signed (`send_keys_min_trust = CROSS_SIGNED_TOFU`, the same
threshold for answering key requests) and sends `m.room_key.withheld` (`m.unverified`) to the
rest; it cross-signs its own device the way Element does at first login (recovery key, SSSS,
`/keys/device_signing/upload`, `/keys/signatures/upload`), so a bot with the same policy shares
with it. The crypto store is in memory: the test may lose it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from mautrix.api import HTTPAPI
from mautrix.client import Client
from mautrix.client.encryption_manager import DecryptionDispatcher
from mautrix.client.state_store import MemoryStateStore, MemorySyncStore
from mautrix.crypto import OlmMachine
from mautrix.crypto.attachments import decrypt_attachment
from mautrix.crypto.cross_signing_key import CrossSigningSeeds
from mautrix.crypto.store import MemoryCryptoStore
from mautrix.crypto.store import StateStore as CryptoStateStore
from mautrix.errors import DecryptionError, SessionNotFound
from mautrix.types import (
    CrossSigningUsage,
    DeviceID,
    EncryptedEvent,
    EncryptedMegolmEventContent,
    EventID,
    EventType,
    Filter,
    Membership,
    MessageEvent,
    MessageType,
    RoomEventFilter,
    RoomFilter,
    RoomID,
    SigningKey,
    TextMessageEventContent,
    TOFUSigningKey,
    TrustState,
    UserID,
)

from tests.harness import Account

log = logging.getLogger(__name__)

MIN_TRUST = TrustState.CROSS_SIGNED_TOFU


class _StateStore(MemoryStateStore, CryptoStateStore):  # type: ignore[misc]
    async def find_shared_rooms(self, user_id: UserID) -> list[RoomID]:
        return [
            room_id
            for room_id, members in self.members.items()
            if (m := members.get(user_id)) is not None and m.membership == Membership.JOIN
        ]


class _CryptoStore(MemoryCryptoStore):  # type: ignore[misc]
    """mautrix 0.21.1's memory store assigns to a field of the `TOFUSigningKey` NamedTuple when a
    known user's key is stored again ("can't set attribute"); keep the first-seen key the same
    way, with a new tuple."""

    async def put_cross_signing_key(
        self, user_id: UserID, usage: CrossSigningUsage, key: SigningKey
    ) -> None:
        current = self._cross_signing_keys.get(user_id, {}).get(usage)
        first = current.first if current is not None else key
        self._cross_signing_keys.setdefault(user_id, {})[usage] = TOFUSigningKey(key, first)


@dataclass(frozen=True)
class Received:
    """A decrypted message as the independent client saw it."""

    room_id: RoomID
    event_id: EventID
    sender: UserID
    msgtype: str
    body: str
    trust: TrustState
    reply_to: EventID | None = None
    """The event this one answers (`m.relates_to.m.in_reply_to`), if any."""
    formatted_body: str | None = None
    origin_server_ts: int = 0
    """When the homeserver received it (ms since the epoch; same clock here: loopback)."""
    arrived_at: float = 0.0
    """`time.time()` when this client had it decrypted."""
    content: dict[str, Any] = field(default_factory=dict)
    """The whole decrypted content (e.g. an `m.file`'s `file`)."""


SYNC_FILTER = Filter(room=RoomFilter(timeline=RoomEventFilter(limit=1000)))
"""A timeline limit well above any burst a test makes. Synapse's default is 10, and a sync that
has more new events in a room answers `limited` with only the last ten; mautrix does not fetch
the gap, so a burst of bot replies that lands between two syncs of a slow peer (a loaded CI
machine) would lose all but ten of them to this client."""


@dataclass
class MautrixPeer:
    account: Account
    client: Client
    crypto: OlmMachine
    crypto_store: _CryptoStore
    received: list[Received] = field(default_factory=list)
    undecryptable: list[EventID] = field(default_factory=list)
    withheld: list[dict[str, Any]] = field(default_factory=list)
    """Contents of the `m.room_key.withheld` to-device events this device received."""
    key_wait_s: float = 10.0
    """How long to wait for a room key that is still on its way before calling it undecryptable."""
    _session: aiohttp.ClientSession | None = None

    @property
    def user_id(self) -> UserID:
        return UserID(self.account.user_id)

    @classmethod
    async def start(
        cls, account: Account, base_url: str, *, cross_sign: bool = True, key_wait_s: float = 10.0
    ) -> MautrixPeer:
        """Upload device keys, cross-sign the own device (recovery key flow; skipped with
        `cross_sign=False`, which makes this an insecure device), start syncing."""
        session = aiohttp.ClientSession()
        api = HTTPAPI(base_url, account.session.access_token, client_session=session)
        state_store = _StateStore()
        client = Client(
            mxid=UserID(account.user_id),
            device_id=DeviceID(account.session.device_id),
            api=api,
            state_store=state_store,
            sync_store=MemorySyncStore(),
        )
        crypto_store = _CryptoStore(account.user_id, "test-pickle-key")
        crypto = OlmMachine(client, crypto_store, state_store)
        crypto.send_keys_min_trust = MIN_TRUST
        crypto.share_keys_min_trust = MIN_TRUST
        client.crypto = crypto
        # Decrypt ourselves, waiting briefly for a room key that is still on its way.
        client.remove_dispatcher(DecryptionDispatcher)
        peer = cls(account, client, crypto, crypto_store, key_wait_s=key_wait_s, _session=session)
        client.add_event_handler(EventType.ROOM_ENCRYPTED, peer._on_encrypted)
        client.add_event_handler(EventType.ROOM_KEY_WITHHELD, peer._on_withheld)
        await crypto.load()
        await crypto.share_keys()
        if cross_sign:
            await crypto.generate_recovery_key()
        client.start(SYNC_FILTER)
        return peer

    async def stop(self) -> None:
        self.client.stop()
        if self._session is not None:
            await self._session.close()

    async def _on_withheld(self, evt: Any) -> None:
        self.withheld.append(evt.content.serialize())

    async def _on_encrypted(self, evt: EncryptedEvent) -> None:
        content = evt.content
        if not isinstance(content, EncryptedMegolmEventContent):
            return
        try:
            try:
                decrypted = await self.crypto.decrypt_megolm_event(evt)
            except SessionNotFound:
                await self.crypto.wait_for_session(
                    evt.room_id, content.session_id, timeout=self.key_wait_s
                )
                decrypted = await self.crypto.decrypt_megolm_event(evt)
        except DecryptionError:
            self.undecryptable.append(evt.event_id)
            return
        if isinstance(decrypted, MessageEvent):
            trust = decrypted["mautrix"]["trust_state"]
            self.received.append(
                Received(
                    evt.room_id,
                    evt.event_id,
                    evt.sender,
                    str(decrypted.content.msgtype),
                    str(decrypted.content.body),
                    trust,
                    decrypted.content.get_reply_to(),
                    _formatted_body(decrypted.content),
                    int(evt.timestamp),
                    time.time(),
                    decrypted.content.serialize(),
                )
            )

    async def download_encrypted(self, file: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """(ciphertext as stored on the server, plaintext) of an `EncryptedFile`: downloaded
        through authenticated media and decrypted by mautrix, which checks `hashes.sha256`
        first (a mismatch raises)."""
        server, _, media_id = str(file["url"]).removeprefix("mxc://").partition("/")
        assert self._session is not None
        base = str(self.client.api.base_url).rstrip("/")
        url = f"{base}/_matrix/client/v1/media/download/{server}/{media_id}"
        headers = {"Authorization": f"Bearer {self.account.session.access_token}"}
        async with self._session.get(url, headers=headers) as resp:
            assert resp.status == 200, f"media download answered {resp.status}"
            ciphertext = await resp.read()
        plaintext = decrypt_attachment(
            ciphertext, file["key"]["k"], file["hashes"]["sha256"], file["iv"]
        )
        return ciphertext, plaintext

    async def send_text(self, room_id: RoomID, body: str) -> None:
        await self.client.send_message_event(
            room_id,
            EventType.ROOM_MESSAGE,
            TextMessageEventContent(msgtype=MessageType.TEXT, body=body),
        )

    async def send_with_late_key(self, room_id: str, body: str) -> tuple[EventID, Any]:
        """Send an encrypted `m.text` under a fresh Megolm session that nobody has the key to
        yet (what a member's new or slow device does); `deliver_key` shares it later, as the
        same `m.room_key` over Olm that a normal send shares first. Returns (event id, key):
        the key as it stood before the message (index 0), so it decrypts the message."""
        room = RoomID(room_id)
        await self.crypto_store.remove_outbound_group_session(room)
        session = await self.crypto._new_outbound_group_session(room)
        key = session.share_content  # before the ratchet moves past the message
        session.shared = True  # shared with no one: the key stays with us for now
        await self.crypto_store.add_outbound_group_session(session)
        event_id: EventID = await self.client.send_message_event(
            room,
            EventType.ROOM_MESSAGE,
            TextMessageEventContent(msgtype=MessageType.TEXT, body=body),
        )
        # The next send starts a session shared the usual way.
        await self.crypto_store.remove_outbound_group_session(room)
        return event_id, key

    async def reset_identity(self) -> None:
        """What Element's "reset" does for a member who lost their recovery key: brand-new
        cross-signing keys (master, self-signing, user-signing), uploaded with the account's
        password (Synapse asks for it to replace keys), and this device signed by the new
        self-signing key."""
        auth: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.account.user_id},
            "password": self.account.password,
        }
        seeds = CrossSigningSeeds.generate()
        await self.crypto._publish_cross_signing_keys(seeds.to_keys(), auth=auth)
        await self.crypto.sign_own_device(self.crypto.own_identity)

    async def deliver_key(self, key: Any, user_id: str) -> int:
        """Share a key kept by `send_with_late_key` with `user_id`'s devices now: an Olm
        `m.room_key` to-device message per device, as mautrix shares keys. Returns the devices
        reached."""
        user = UserID(user_id)
        devices = await self.crypto_store.get_devices(user)
        if not devices:
            devices = (await self.crypto._fetch_keys([user], include_untracked=True)).get(user, {})
        await self.crypto._create_outbound_sessions({user: dict(devices)})
        messages: dict[Any, dict[Any, Any]] = {}
        async with self.crypto._olm_lock:
            for device_id, device in devices.items():
                olm_session = await self.crypto_store.get_latest_session(device.identity_key)
                if olm_session is None:
                    continue
                messages.setdefault(user, {})[device_id] = await self.crypto._encrypt_olm_event(
                    olm_session, device, EventType.ROOM_KEY, key
                )
        if messages:
            await self.client.send_to_device(EventType.TO_DEVICE_ENCRYPTED, messages)
        return sum(len(d) for d in messages.values())

    async def send_poll_response(
        self, room_id: RoomID, poll_id: str, answers: list[str]
    ) -> EventID:
        """Vote exactly as Element (matrix-js-sdk `PollResponseEvent`) does: the unstable type
        and block, a reference to the poll, encrypted (the relation stays in clear)."""
        content = {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll_id},
            "org.matrix.msc3381.poll.response": {"answers": answers},
        }
        event_type = EventType.find("org.matrix.msc3381.poll.response", EventType.Class.MESSAGE)
        event_id: EventID = await self.client.send_message_event(room_id, event_type, content)
        return event_id

    async def trust_of(self, user_id: str, device_id: str) -> TrustState:
        """How this client rates another device right now (fetched fresh from the server)."""
        device = await self.crypto.get_or_fetch_device(UserID(user_id), DeviceID(device_id))
        if device is None:
            return TrustState.UNKNOWN_DEVICE
        return await self.crypto.resolve_trust(device)

    async def outbound_shared_with(self, room_id: RoomID) -> tuple[set[Any], set[Any]]:
        """(devices the current room session went to, devices it was withheld from)."""
        sess = await self.crypto_store.get_outbound_group_session(room_id)
        if sess is None:
            return set(), set()
        return set(sess.users_shared_with), set(sess.users_ignored)


def _formatted_body(content: Any) -> str | None:
    formatted = getattr(content, "formatted_body", None)
    return formatted if isinstance(formatted, str) else None


@contextlib.asynccontextmanager
async def mautrix_peer(account: Account, base_url: str, **kw: Any) -> Any:
    peer = await MautrixPeer.start(account, base_url, **kw)
    try:
        yield peer
    finally:
        await peer.stop()
        await asyncio.sleep(0)
