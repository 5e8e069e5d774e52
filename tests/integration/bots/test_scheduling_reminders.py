"""A club's own reminder settings (`reminders:` in the network file → its settings state): one
reminder an hour before, posted in the sessions room instead of by DM. Nothing goes out at the
default lead times, nobody gets a reminder DM, and the room's reminder carries no address."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mautrix.types import RoomID

from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedscene import club_scene
from tests.integration.bots.support import send_text
from tests.integration.bots.test_scheduling import dms, in_rooms

VENUE = "Quiet Yard 7"


async def test_a_club_reminds_once_an_hour_before_in_its_sessions_room(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    settings = {"name": "Tbilisi", "reminders": {"before_s": [3600], "to": "room"}}
    async with club_scene(synapse, tmp_path, settings=settings) as s:
        sessions, club_rooms = s.rooms["sessions"], set(s.rooms.values())
        await send_text(s.fac, sessions, f"!session Tea; 2030-03-07 18:00; offline; venue {VENUE}")
        occ = await eventually(lambda: s.announced(1, "2030-03-07T18:00"), within=30)
        await s.mem.send_poll_response(RoomID(sessions), str(occ.poll_event), ["a1"])
        await eventually(lambda: _some(dms(s.mem, s.bot_user, club_rooms, "You have a place")))

        def room_reminders() -> list[str]:
            return [
                b for b in in_rooms(s.mem, s.bot_user, sessions) if b.startswith("Reminder: Tea")
            ]

        for quiet in (occ.start_utc - 24 * 3600, occ.start_utc - 15 * 60 - 3600):
            await s.clock.set(quiet)
            await asyncio.sleep(1.5)  # the job runner's moment: nothing is due at these times
            assert room_reminders() == []
        await s.clock.set(occ.start_utc - 3600)
        (reminder,) = await eventually(lambda: _some(room_reminders()), within=30)
        assert VENUE not in reminder
        await s.clock.set(occ.start_utc - 15 * 60)
        await asyncio.sleep(1.5)
        assert len(room_reminders()) == 1
        assert dms(s.mem, s.bot_user, club_rooms, "Reminder") == []


async def _some(items: list[str]) -> list[str]:
    return items
