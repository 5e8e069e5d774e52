"""Helpers for bot tests: managed rooms as the provisioner makes them, a bot host, a peer."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from clubs.bots.base import Bot
from clubs.bots.host import BotAccount, BotFactory, HostConfig, HostServices, open_runtimes
from clubs.bots.runtime import BotRuntime, RuntimeSettings
from clubs.core.admin import ensure_ratelimit_override, ensure_service_account
from clubs.core.http import path
from clubs.core.namespace import CLUB_SETTINGS, LOCATOR
from clubs.core.secrets import MASTER_KEY_ENV, Vault
from tests.harness import Account, SynapseHarness, eventually

CS = ("_matrix", "client", "v3")


def new_network() -> str:
    return f"t-{secrets.token_hex(4)}"


async def create_bot_account(synapse: SynapseHarness, var_dir: Path, name: str) -> BotAccount:
    """A bot account as `clubs up` makes it: credentials in var/secrets/vault."""
    vault = Vault(var_dir / "secrets" / "vault")
    session, _ = await ensure_service_account(
        synapse.client(),
        vault,
        synapse.hs.registration_shared_secret(),
        f"{name}-{secrets.token_hex(4)}",
        server_name=synapse.server_name,
    )
    await ensure_ratelimit_override(synapse.admin.http, session.user_id)
    return BotAccount(name, session.user_id)


async def managed_room(
    synapse: SynapseHarness,
    network: str,
    *,
    invite: Sequence[str],
    powers: Mapping[str, int] | None = None,
    language: str = "en",
    key: str = "general",
    encrypted: bool = True,
) -> str:
    """A room as the provisioner creates it: locator and settings in initial_state."""
    initial_state: list[dict[str, Any]] = [
        {
            "type": LOCATOR,
            "state_key": "",
            "content": {
                "network": network,
                "kind": "club_room",
                "club": "c1",
                "key": key,
                "schema": 1,
                "state": "active",
            },
        },
        {
            "type": CLUB_SETTINGS,
            "state_key": "",
            "content": {"language": language, "time_zone": "Europe/Berlin"},
        },
        {
            "type": "m.room.history_visibility",
            "state_key": "",
            "content": {"history_visibility": "joined"},
        },
    ]
    if encrypted:
        initial_state.append(
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        )
    created = await synapse.admin.http.post(
        path(*CS, "createRoom"),
        {
            "preset": "private_chat",
            "room_version": "12",
            "name": key,
            "invite": list(invite),
            "initial_state": initial_state,
            "power_level_content_override": {"users": dict(powers or {}), "invite": 50},
        },
    )
    return str(created["room_id"])


@dataclass
class RunningHost:
    runtimes: list[BotRuntime]
    task: asyncio.Task[None]

    def runtime(self, name: str) -> BotRuntime:
        return next(r for r in self.runtimes if r.bot.name == name)

    def check_alive(self) -> None:
        if self.task.done():
            self.task.result()
            raise AssertionError("the bot host stopped")


@contextlib.asynccontextmanager
async def bot_host(
    synapse: SynapseHarness,
    var_dir: Path,
    accounts: Sequence[BotAccount],
    factories: Mapping[str, BotFactory],
    *,
    network: str,
    settings: RuntimeSettings | None = None,
) -> AsyncIterator[RunningHost]:
    config = HostConfig(
        homeserver_url=synapse.url,
        var_dir=var_dir,
        accounts=accounts,
        network=network,
        provisioner=synapse.admin.user_id,
        settings=settings or RuntimeSettings(sync_timeout_ms=1000),
    )
    async with open_runtimes(config, factories) as runtimes:

        async def run_all() -> None:
            async with asyncio.TaskGroup() as group:
                for rt in runtimes:
                    group.create_task(rt.run())

        task = asyncio.create_task(run_all())
        host = RunningHost(runtimes, task)
        try:
            for rt in runtimes:

                async def ready(rt: BotRuntime = rt) -> bool:
                    host.check_alive()
                    return rt.ready.is_set()

                await eventually(ready, within=30)
            yield host
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def joined(user: Account, room_id: str, who: str) -> bool:
    members = await user.http.get(path(*CS, "rooms", room_id, "joined_members"))
    return who in members.get("joined", {})


def fixed_master_key(monkeypatch: Any) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, Fernet.generate_key().decode())


def simple_factory(bot: Bot) -> BotFactory:
    def make(_: HostServices) -> Bot:
        return bot

    return make
