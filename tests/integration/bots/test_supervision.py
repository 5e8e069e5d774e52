"""Supervision: one bot's failure never stops the others, and no background task dies silently.

Two bots share one host (`run_bots`, the production composition root). The second one's
`start()` raises, then raises again after a while: it is logged and restarted with backoff each
time, and meanwhile the first bot keeps answering. The third start works, and the command sent
to it while it was down is answered then, once. A background task spawned as a coroutine
function is restarted after each failure; a one-shot coroutine that fails is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest

from clubs.bots.base import Bot
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.host import HostConfig, run_bots
from clubs.bots.runtime import RuntimeSettings
from clubs.core.http import path
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    send_text,
    simple_factory,
    wait_replies,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer


class Steady(Bot):
    """Answers `!ping` (the host's primary bot) and nothing else."""

    name = "steady"


class Flaky(Bot):
    """Its first start fails at once, its second when the test says so; then it works."""

    name = "flaky"

    def __init__(self) -> None:
        self.starts = 0
        self.second_may_fail = asyncio.Event()

    async def start(self, ctx: Any) -> None:
        self.starts += 1
        if self.starts == 1:
            raise RuntimeError("first start fails")
        if self.starts == 2:
            await self.second_may_fail.wait()
            raise RuntimeError("second start fails")

    @command("flaky", help_key="bots/ping.help")
    async def flaky(self, ctx: CommandContext) -> None:
        await ctx.reply("bots/ping")


def senders_of_replies(peer: MautrixPeer, event_id: str) -> list[str]:
    return [r.sender for r in peer.received if r.reply_to == event_id]


def supervisor_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "clubs.bots.supervise"]


async def test_a_bot_whose_start_fails_is_restarted_while_the_other_keeps_answering(
    synapse: SynapseHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clubs.bots")
    network = new_network()
    steady_account = await create_bot_account(synapse, tmp_path, "steady")
    flaky_account = await create_bot_account(synapse, tmp_path, "flaky")
    member = await synapse.new_user("member")
    room = await managed_room(
        synapse,
        network,
        invite=[steady_account.user_id, flaky_account.user_id, member.user_id],
    )
    await member.http.post(path(*CS, "join", room), {})
    flaky = Flaky()
    config = HostConfig(
        homeserver_url=synapse.url,
        var_dir=tmp_path,
        accounts=[steady_account, flaky_account],
        network=network,
        provisioner=synapse.admin.user_id,
        settings=RuntimeSettings(sync_timeout_ms=1000),
    )
    host = asyncio.create_task(
        run_bots(config, {"steady": simple_factory(Steady()), "flaky": simple_factory(flaky)})
    )

    async def host_alive() -> None:
        if host.done():
            host.result()
            raise AssertionError("the bot host stopped")

    try:
        async with mautrix_peer(member, synapse.url) as peer:

            async def flaky_down_again() -> bool:
                await host_alive()
                return flaky.starts == 2

            await eventually(flaky_down_again, within=30)  # failed once, stuck in start

            async def both_joined() -> bool:
                return all(
                    [await joined(member, room, b.user_id) for b in (steady_account, flaky_account)]
                )

            await eventually(both_joined, within=20)

            # While the flaky bot is down, the other answers; a command for it waits.
            ping = await send_text(peer, room, "!ping")
            await wait_replies(peer, steady_account.user_id, room, [ping], within=20)
            waited = await send_text(peer, room, "!flaky")
            await host_alive()
            assert flaky.starts == 2

            flaky.second_may_fail.set()
            await wait_replies(peer, flaky_account.user_id, room, [waited], within=30)
            assert flaky.starts == 3
            again = await send_text(peer, room, "!ping")
            fresh = await send_text(peer, room, "!flaky")
            await wait_replies(peer, steady_account.user_id, room, [again], within=20)
            await wait_replies(peer, flaky_account.user_id, room, [fresh], within=20)
            await host_alive()
            last = await send_text(peer, room, "!ping")  # anything replayed comes before it
            await wait_replies(peer, steady_account.user_id, room, [last], within=20)
    finally:
        host.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await host

    for event_id, bot in (
        (ping, steady_account),
        (waited, flaky_account),
        (again, steady_account),
        (fresh, flaky_account),
    ):
        assert senders_of_replies(peer, event_id) == [bot.user_id]
    lines = supervisor_lines(caplog)
    assert [line.split(" in ")[0] for line in lines] == [
        "bot flaky failed (RuntimeError); restart 1",
        "bot flaky failed (RuntimeError); restart 2",
    ]
    assert all("start fails" not in r.getMessage() for r in caplog.records)  # type only


class Ticker(Bot):
    """Spawns a restartable task that fails twice, and a one-shot task that fails."""

    name = "ticker"

    def __init__(self) -> None:
        self.ticks = 0
        self.steady = asyncio.Event()

    async def start(self, ctx: BotContext) -> None:
        ctx.spawn(self.tick, "tick")
        ctx.spawn(self.once(), "once")

    async def tick(self) -> None:
        self.ticks += 1
        if self.ticks <= 2:
            raise RuntimeError("tick fails")
        self.steady.set()

    async def once(self) -> None:
        raise ValueError("once fails")


async def test_a_failing_background_task_is_logged_and_restarted(
    synapse: SynapseHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clubs.bots")
    account = await create_bot_account(synapse, tmp_path, "ticker")
    bot = Ticker()
    async with bot_host(
        synapse, tmp_path, [account], {"ticker": simple_factory(bot)}, network=new_network()
    ) as host:

        async def ticking() -> bool:
            host.check_alive()
            return bot.steady.is_set()

        await eventually(ticking, within=20)
        host.check_alive()
    assert bot.ticks == 3
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("clubs.bots")]
    assert [line.split(" in ")[0] for line in lines if line.startswith("ticker:tick")] == [
        "ticker:tick failed (RuntimeError); restart 1",
        "ticker:tick failed (RuntimeError); restart 2",
    ]
    assert "ticker:once failed: ValueError" in lines
    assert all("fails" not in line for line in lines)
