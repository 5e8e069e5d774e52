"""The bridge process: one composition root (`Bridge`) and `run_bridge` for `clubs bridge run`.

Start-up order: the store (migrations), the bot account (registered through the application
service, no password), the HTTP listener (so the homeserver can deliver), a ping through the
homeserver (which also makes it retry transactions it held back while we were down), then the
two workers: the inbox (Matrix → Telegram) and the poller (Telegram → Matrix), and the bot's
E2EE device's sync (room keys for the encrypted rooms whose admins consented). Stopping cancels
them and closes the listener; whatever was accepted and not yet handled stays in the inbox. A
device that cannot be opened is logged as an error and the bridge runs without it: encrypted
rooms are then refused, consent or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from clubs.bridge.appservice import AppService
from clubs.bridge.config import BridgeConfig, Portal
from clubs.bridge.crypto import BridgeDevice
from clubs.bridge.matrix import AsMatrix
from clubs.bridge.pacing import Pacer
from clubs.bridge.registration import (
    BOT_LOCALPART,
    SERVICE_ID,
    TELEGRAM_TOKEN,
    bot_user,
    ensure_tokens,
    in_namespace,
)
from clubs.bridge.relay import Relay
from clubs.bridge.store import BridgeStore
from clubs.bridge.telegram import BotApi
from clubs.core.db import Database
from clubs.core.errors import ClubsError
from clubs.core.http import MatrixHttp
from clubs.core.sealed import Sealer
from clubs.core.secrets import Vault

log = logging.getLogger(__name__)

STORE_KEY = "bridge/store_key"
BOT_NAME = "Telegram"


@dataclass
class Bridge:
    config: BridgeConfig
    relay: Relay
    service: AppService
    db: Database
    http: MatrixHttp
    telegram: BotApi
    vault: Vault | None = None
    device_dir: Path | None = None
    device: BridgeDevice | None = None
    runner: web.AppRunner | None = None
    tasks: tuple[asyncio.Task[None], ...] = ()

    @classmethod
    async def build(
        cls,
        config: BridgeConfig,
        portals: Sequence[Portal],
        network: str,
        *,
        vault: Vault,
        data_dir: Path,
        device_dir: Path | None = None,
    ) -> Bridge:
        """`device_dir`: the E2EE device's store (default `data_dir/device`)."""
        tokens = ensure_tokens(vault)
        bot_token = vault.get(TELEGRAM_TOKEN)
        if not bot_token:
            raise ClubsError(
                "no Telegram bot token in the vault; store it with `clubs bridge token` "
                "(it reads the token from standard input)"
            )
        db = await Database.open(data_dir / "bridge.db")
        store = await BridgeStore.open(db, Sealer.from_vault(vault, STORE_KEY))
        http = MatrixHttp(config.homeserver, tokens.as_token)
        # A 429 is not waited out inside the call (that would hold every portal): the relay
        # puts the event off for at least `retry_after` and goes on with other rooms.
        telegram = BotApi(bot_token, config.telegram_api, max_retries=0)
        relay = Relay(
            matrix=AsMatrix(http),
            telegram=telegram,
            store=store,
            portals=tuple(portals),
            network=network,
            server_name=config.server_name,
            bot=bot_user(config.server_name),
            poll_timeout_s=config.poll_timeout_s,
            hold_s=float(config.hold_s),
            pacer=Pacer(per_minute=config.per_chat_minute),
        )
        await relay.load()
        service = AppService(
            tokens.hs_token,
            store,
            is_ours=lambda u: in_namespace(u, config.server_name),
            user_exists=relay.user_exists,
            wake=relay.wake,
            health=relay.health_view,
        )
        return cls(
            config, relay, service, db, http, telegram, vault, device_dir or data_dir / "device"
        )

    async def start(self) -> None:
        if await self.relay.matrix.ensure_registered(BOT_LOCALPART):
            await self.relay.matrix.set_displayname(self.relay.bot, BOT_NAME)
        self.device = await self._open_device()
        self.relay.device = self.device
        self.runner = web.AppRunner(self.service.app(), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.config.host, self.config.port).start()
        log.info("bridge listening on %s:%d", self.config.host, self.config.port)
        duration = await self.relay.matrix.ping(SERVICE_ID)
        if duration is not None:
            log.info("the homeserver reached the bridge in %d ms", duration)
        self.tasks = (
            asyncio.create_task(self.relay.run_inbox(), name="bridge-inbox"),
            asyncio.create_task(self.relay.run_poller(), name="bridge-poller"),
        )
        if self.device is not None:
            self.tasks += (
                asyncio.create_task(self.device.run(self._after_sync), name="bridge-device"),
            )

    async def _open_device(self) -> BridgeDevice | None:
        if self.vault is None or self.device_dir is None:
            return None
        try:
            return await BridgeDevice.open(
                self.config.homeserver,
                self.http,
                self.vault,
                self.relay.bot,
                self.device_dir,
                self.relay.store,
            )
        except Exception as e:  # the bridge still serves unencrypted rooms
            detail = str(e) if isinstance(e, ClubsError) else type(e).__name__
            log.error(
                "the bridge's E2EE device is not open (%s): encrypted rooms are refused", detail
            )
            return None

    async def _after_sync(self, keys: bool) -> None:
        if keys:
            await self.relay.keys_arrived()  # events waiting for a room key may decrypt now
        await self.relay.post_notices()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as e:  # a worker that died: already logged by type
                log.warning("bridge worker ended with %s", type(e).__name__)
        self.tasks = ()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.device is not None:
            await self.device.close()
            self.device = None
            self.relay.device = None
        await self.telegram.close()
        await self.http.close()
        await self.db.close()

    async def wait(self) -> None:
        """Until a worker ends (it never does on its own: both retry forever)."""
        await asyncio.gather(*self.tasks)


async def run_bridge(
    config: BridgeConfig,
    portals: Sequence[Portal],
    network: str,
    *,
    vault: Vault,
    data_dir: Path,
) -> int:
    if not portals:
        log.warning("the network file bridges no room: the bridge will only refuse invitations")
    bridge = await Bridge.build(config, portals, network, vault=vault, data_dir=data_dir)
    try:
        await bridge.start()
        print(f"bridge running on {config.host}:{config.port} (Ctrl-C stops it)", flush=True)
        await bridge.wait()
    finally:
        await bridge.stop()
    return 0
