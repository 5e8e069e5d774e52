"""A privileged command the bot sees long after it was sent is never executed silently.

The moderation bot is down (an outage, or a crash before it recorded the command); a moderator
sends `!ban`; when the bot is back, the command is older than the runtime's limit. The bot asks
the moderator to confirm, says how old the command is, and bans nobody until `!confirm`.
Harmless commands from the same outage are answered as usual.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mautrix.types import RoomID

from clubs.bots.runtime import RuntimeSettings
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import bot_host, joined
from tests.integration.bots.test_moderation_bot import factory, make_club, membership
from tests.mautrix_client import mautrix_peer

STALE_S = 2.0


async def test_a_stale_ban_waits_for_confirmation_and_bans_nobody_until_then(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await make_club(synapse, tmp_path, n_rooms=1)
    room = club.rooms[0]
    troll = await synapse.new_user("troll")
    settings = RuntimeSettings(sync_timeout_ms=1000, stale_command_s=STALE_S)

    def host() -> object:
        return bot_host(
            synapse,
            tmp_path,
            [club.bot],
            {"moderation": factory()},
            network=club.network,
            settings=settings,
        )

    async with mautrix_peer(club.moderator, synapse.url) as mod_peer:
        async with host():  # the bot joins and takes its position, then goes away
            await eventually(lambda: joined(club.member, room, club.bot.user_id), within=20)
        await mod_peer.send_text(RoomID(room), f"!ban {troll.user_id} spam")
        await mod_peer.send_text(RoomID(room), "!ping")
        await asyncio.sleep(STALE_S + 1)  # the outage lasts longer than the limit

        def from_bot(needle: str) -> list[str]:
            return [
                r.body
                for r in mod_peer.received
                if r.sender == club.bot.user_id and needle in r.body
            ]

        async with host():
            asked = await eventually(lambda: asyncio.sleep(0, from_bot("!confirm")), within=30)
            await eventually(lambda: asyncio.sleep(0, from_bot("Pong")), within=10)
            assert "!ban was sent" in asked[0]
            assert "minute ago" in asked[0]
            code = asked[0].split("!confirm ")[1][:6]
            await asyncio.sleep(1.0)  # nothing happens while it waits
            assert await membership(club.member, room, troll.user_id) is None
            assert not from_bot("banned")

            started = time.monotonic()
            await mod_peer.send_text(RoomID(room), f"!confirm {code}")

            async def banned() -> bool:
                return await membership(club.member, room, troll.user_id) == "ban"

            await eventually(banned, within=15)
            print(f"\nconfirmed ban applied in {time.monotonic() - started:.2f}s")
            await mod_peer.send_text(RoomID(room), f"!confirm {code}")  # twice: nothing left
            await eventually(
                lambda: asyncio.sleep(0, from_bot("Nothing here is waiting")), within=10
            )
    assert len(from_bot("!confirm")) == 1
