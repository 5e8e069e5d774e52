"""A Synapse of the bridge tests' own, which loads the bridge's registration at start.

The shared test homeserver is left as it is: the registration must be known when Synapse starts
(it names the port the bridge listens on), so these tests start a second, small Synapse once per
session (about 10 s) with the project's template and `app_service_config_files`. Matrix is never
faked; Telegram is the in-process fake of tests/faketelegram.py.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from clubs.bridge.config import BridgeConfig, Mode, Portal
from clubs.bridge.registration import TELEGRAM_TOKEN, bot_user, write_registration
from clubs.bridge.service import Bridge
from clubs.core.homeserver import Homeserver, Settings, find_free_port
from clubs.core.http import RoomId, cs
from clubs.core.namespace import LOCATOR
from clubs.core.secrets import Vault, write_private
from tests.faketelegram import FakeTelegram
from tests.harness import Account, SynapseHarness, bootstrap_admin

NETWORK = "demo"
BOT_TOKEN = "424242:fake-telegram-bot-token"


@dataclass
class BridgeWorld:
    synapse: SynapseHarness
    config: BridgeConfig
    vault: Vault
    tmp: Path
    master_key: str
    """The vault's key, for a bridge run as a process (`CLUBS_MASTER_KEY`)."""

    def portal(self, key: str, chat: int, mode: Mode = "relay") -> Portal:
        return Portal(NETWORK, "almaty", key, chat, mode)

    async def bridge(
        self,
        telegram: FakeTelegram,
        portals: Sequence[Portal],
        data_dir: Path,
        *,
        hold_s: int = 0,
    ) -> Bridge:
        """A bridge in-process; `hold_s` 0 (no wait for moderation) unless a test needs it."""
        config = BridgeConfig(
            enabled=True,
            host=self.config.host,
            port=self.config.port,
            url=self.config.url,
            homeserver=self.synapse.url,
            server_name=self.synapse.server_name,
            telegram_api=telegram.url,
            poll_timeout_s=1,
            hold_s=hold_s,
        )
        bridge = await Bridge.build(
            config,
            portals,
            NETWORK,
            vault=self.vault,
            data_dir=data_dir,
            device_dir=self.tmp / "device",  # one E2EE device for the session's bridges
        )
        await bridge.start()
        return bridge

    async def room(
        self, key: str, members: Sequence[Account], *, encrypted: bool = False
    ) -> RoomId:
        """A club room as the provisioner makes it (locator in the initial state), unencrypted
        unless told, with the bridge's bot invited at power 50 (it invites ghosts)."""
        admin = self.synapse.admin
        bot = bot_user(self.synapse.server_name)
        initial: list[dict[str, Any]] = [
            {
                "type": LOCATOR,
                "state_key": "",
                "content": {
                    "network": NETWORK,
                    "kind": "club_room",
                    "club": "almaty",
                    "key": key,
                    "schema": 1,
                    "state": "active",
                },
            }
        ]
        if encrypted:
            initial.append(
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            )
        users = {bot: 50} | {m.user_id: 0 for m in members}  # v12: not the creator
        resp = await admin.http.post(
            cs("createRoom"),
            {
                "preset": "private_chat",
                "name": "Общий · Алматы",
                "initial_state": initial,
                "power_level_content_override": {"users": users, "invite": 50, "redact": 50},
                "invite": [m.user_id for m in members],
            },
        )
        room = RoomId(resp["room_id"])
        for m in members:
            await m.http.post(cs("join", room), {})
        await admin.http.post(cs("rooms", room, "invite"), {"user_id": bot})
        return room


class _UnencryptedHomeserver(Homeserver):
    """The project's template, except that new rooms are not encrypted by force.

    The template sets `encryption_enabled_by_default_for_room_type: all`, so on it every room is
    encrypted and the bridge refuses every room (as `test_an_encrypted_room_is_refused` shows).
    Relaying unencrypted rooms is exercised on a homeserver that lets a room be created without
    encryption: the one change to the rendered config."""

    def prepare(self) -> None:
        super().prepare()
        text = self.config_file.read_text()
        forced = "encryption_enabled_by_default_for_room_type: all"
        assert forced in text
        write_private(
            self.config_file,
            text.replace(forced, "encryption_enabled_by_default_for_room_type: off").encode(),
        )


@pytest.fixture(scope="session")
async def bridge_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BridgeWorld]:
    tmp = tmp_path_factory.mktemp("bridge")
    port = find_free_port()
    config = BridgeConfig(
        enabled=True, port=port, url=f"http://127.0.0.1:{port}", server_name="bridge.test"
    )
    master_key = Fernet.generate_key()
    vault = Vault(tmp / "secrets" / "vault", key=master_key)
    vault.set(TELEGRAM_TOKEN, BOT_TOKEN)
    registration = write_registration(config, vault, tmp)
    hs = _UnencryptedHomeserver(
        Settings(
            data_dir=tmp / "synapse",
            server_name="bridge.test",
            port=0,
            app_service_config_files=(str(registration),),
            log_level="WARNING",
        )
    )
    hs.start()
    try:
        harness = SynapseHarness(hs, await bootstrap_admin(hs))
        yield BridgeWorld(harness, config, vault, tmp, master_key.decode())
        await harness.admin.http.close()
        await harness.close()
    finally:
        hs.stop()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram(BOT_TOKEN, poll_cap_s=1.0)
    await fake.start()
    yield fake
    await fake.stop()


def unique_key() -> str:
    return "r" + secrets.token_hex(4)


async def say(user: Account, room: RoomId, content: dict[str, Any]) -> str:
    """A member sends a message (plain: the bridge tests' rooms are unencrypted unless told)."""
    resp = await user.http.put(
        cs("rooms", room, "send", "m.room.message", secrets.token_hex(8)), content
    )
    return str(resp["event_id"])


async def messages(user: Account, room: RoomId) -> list[dict[str, Any]]:
    """The room's messages as `user` reads them, oldest first (the last 100)."""
    resp = await user.http.get(cs("rooms", room, "messages"), query={"dir": "b", "limit": "100"})
    return [e for e in resp.get("chunk", []) if e.get("type") == "m.room.message"][::-1]


async def active(bridge: Bridge, room: RoomId) -> bool:
    portal = bridge.relay._rooms.get(room)
    return portal is not None and portal.state == "active"


async def holds(value: object) -> object:
    """`value` as an awaitable, for `eventually(lambda: holds(…))` on plain conditions."""
    return value
