"""A club's own reminder settings (`reminders:` in the network file → its settings state): one
reminder an hour before, posted in the sessions room instead of by DM. Nothing goes out at the
default lead times, nobody gets a reminder DM, and the room's reminder carries no address."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from mautrix.types import RoomID

from clubs.bots.scheduling.bot import SchedulingBot
from clubs.bots.scheduling.store import Occurrence
from clubs.core.clock import ManualClock
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import create_bot_account, joined, new_network, send_text
from tests.integration.bots.test_scheduling import (
    accepting_invites,
    dms,
    in_rooms,
    make_club_rooms,
    scheduling_host,
)
from tests.mautrix_client import mautrix_peer

VENUE = "Quiet Yard 7"


async def test_a_club_reminds_once_an_hour_before_in_its_sessions_room(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    bot_user = account.user_id
    facilitator = await synapse.new_user("facil")
    member = await synapse.new_user("mem")
    rooms = await make_club_rooms(
        synapse,
        network,
        bot_user,
        [facilitator, member],
        powers={facilitator.user_id: 50},
        settings={"name": "Tbilisi", "reminders": {"before_s": [3600], "to": "room"}},
    )
    sessions = rooms["sessions"]
    club_rooms = set(rooms.values())
    clock = ManualClock(start=time.time())
    holder: list[SchedulingBot] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            scheduling_host(synapse, tmp_path, account, network, holder, clock=clock)
        )
        fac = await stack.enter_async_context(mautrix_peer(facilitator, synapse.url))
        mem = await stack.enter_async_context(mautrix_peer(member, synapse.url))
        await stack.enter_async_context(accepting_invites([member]))
        (bot,) = holder
        await eventually(lambda: joined(facilitator, sessions, bot_user), within=20)
        await send_text(fac, sessions, f"!session Tea; 2030-03-07 18:00; offline; venue {VENUE}")

        async def announced() -> Occurrence | None:
            occ = await bot.store.occurrence(1, "2030-03-07T18:00")
            return occ if occ is not None and occ.poll_event else None

        occ = await eventually(announced, within=30)
        await mem.send_poll_response(RoomID(sessions), str(occ.poll_event), ["a1"])
        await eventually(lambda: _some(dms(mem, bot_user, club_rooms, "You have a place")))

        def room_reminders() -> list[str]:
            return [b for b in in_rooms(mem, bot_user, sessions) if b.startswith("Reminder: Tea")]

        for quiet in (occ.start_utc - 24 * 3600, occ.start_utc - 15 * 60 - 3600):
            await clock.set(quiet)
            await asyncio.sleep(1.5)  # the job runner's moment: nothing is due at these times
            assert room_reminders() == []
        await clock.set(occ.start_utc - 3600)
        (reminder,) = await eventually(lambda: _some(room_reminders()), within=30)
        assert VENUE not in reminder
        await clock.set(occ.start_utc - 15 * 60)
        await asyncio.sleep(1.5)
        assert len(room_reminders()) == 1
        assert dms(mem, bot_user, club_rooms, "Reminder") == []


async def _some(items: list[str]) -> list[str]:
    return items
