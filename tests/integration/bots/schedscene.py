"""One club as the scheduling tests meet it: its announcements and sessions rooms, a facilitator
and a member on the independent client, and the scheduling bot in a host of its own on a manual
clock, every room joined before the test begins."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clubs.bots.host import BotFactory, HostServices
from clubs.bots.runtime import RuntimeSettings
from clubs.bots.scheduling.bot import SchedulingBot
from clubs.bots.scheduling.store import Occurrence
from clubs.core.clock import ManualClock
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.support import (
    RunningHost,
    bot_host,
    create_bot_account,
    joined,
    new_network,
)
from tests.integration.bots.test_scheduling import accepting_invites, make_club_rooms
from tests.mautrix_client import MautrixPeer, mautrix_peer


@dataclass
class Scene:
    bot: SchedulingBot
    bot_user: str
    host: RunningHost
    clock: ManualClock
    network: str
    facilitator: Account
    member: Account
    fac: MautrixPeer
    mem: MautrixPeer
    rooms: dict[str, str]
    """key → room id of the club's announcements and sessions rooms."""

    async def announced(self, series: int, key: str) -> Occurrence | None:
        """The occurrence once its poll is out (None before)."""
        occ = await self.bot.store.occurrence(series, key)
        return occ if occ is not None and occ.poll_event else None


@contextlib.asynccontextmanager
async def club_scene(
    synapse: SynapseHarness,
    tmp_path: Path,
    *,
    settings: Mapping[str, Any],
    public_url: str | None = None,
) -> AsyncIterator[Scene]:
    """`settings`: the club's settings state (name, reminders, …); `public_url`: the bots'
    HTTP endpoint as members reach it (calendar links)."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    facilitator = await synapse.new_user("facil")
    member = await synapse.new_user("mem")
    rooms = await make_club_rooms(
        synapse,
        network,
        account.user_id,
        [facilitator, member],
        powers={facilitator.user_id: 50},
        settings=dict(settings),
    )
    holder: list[SchedulingBot] = []

    def make(services: HostServices) -> SchedulingBot:
        assert services.sealer is not None
        bot = SchedulingBot(services.db, services.sealer, services.clock, public_url=public_url)
        holder.append(bot)
        return bot

    factories: dict[str, BotFactory] = {"scheduling": make}
    clock = ManualClock(start=time.time())
    async with contextlib.AsyncExitStack() as stack:
        host = await stack.enter_async_context(
            bot_host(
                synapse,
                tmp_path,
                [account],
                factories,
                network=network,
                clock=clock,
                settings=RuntimeSettings(sync_timeout_ms=1000, commands_per_window=100),
            )
        )
        fac = await stack.enter_async_context(mautrix_peer(facilitator, synapse.url))
        mem = await stack.enter_async_context(mautrix_peer(member, synapse.url))
        await stack.enter_async_context(accepting_invites([member]))
        for room in rooms.values():
            await eventually(
                lambda room=room: joined(facilitator, room, account.user_id), within=20
            )
        (bot,) = holder
        yield Scene(
            bot, account.user_id, host, clock, network, facilitator, member, fac, mem, rooms
        )
