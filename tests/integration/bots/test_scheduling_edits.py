"""Editing a series as a facilitator does in Element: move one evening, then change this and the
following ones. A member said "going" from the independent client; the moved evening keeps its
announcement, poll and vote, the announcement is edited to the new time, the member is told by
DM once, and the reminders follow the new time — none fires at the old one. Commands the bot
will not carry out get a usage reply and change nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mautrix.types import RoomID

from clubs.bots.scheduling.store import Changes, Occurrence
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedscene import club_scene
from tests.integration.bots.support import send_text
from tests.integration.bots.test_scheduling import dms, in_rooms, pinned

BERLIN = ZoneInfo("Europe/Berlin")


def key_of(local: datetime) -> str:
    return local.strftime("%Y-%m-%dT%H:%M")


async def test_a_moved_evening_keeps_its_poll_and_reminds_at_the_new_time_then_the_rest_changes(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    async with club_scene(synapse, tmp_path, settings={"name": "Berlin"}) as s:
        bot, bot_user, clock, fac, mem = s.bot, s.bot_user, s.clock, s.fac, s.mem
        facilitator = s.facilitator
        announcements, sessions = s.rooms["announcements"], s.rooms["sessions"]
        club_rooms = set(s.rooms.values())
        await send_text(fac, sessions, "!session Club evening; every Thursday 19:00; 2h; online")
        now_local = datetime.fromtimestamp(clock.now(), BERLIN).replace(tzinfo=None)
        days = (3 - now_local.weekday()) % 7 or 7
        thursday = (now_local + timedelta(days=days)).replace(
            hour=19, minute=0, second=0, microsecond=0
        )
        if thursday <= now_local:
            thursday += timedelta(days=7)

        def announced(key: str, series: int = 1) -> Awaitable[Occurrence | None]:
            return s.announced(series, key)

        occ = await eventually(lambda: announced(key_of(thursday)), within=30)

        async def thread() -> list[Any]:
            # The discussion: a thread under the poll, as Element shows threads.
            return [
                r
                for r in mem.received
                if r.sender == bot_user
                and r.room_id == sessions
                and r.content.get("m.relates_to", {}).get("rel_type") == "m.thread"
                and r.content["m.relates_to"].get("event_id") == occ.poll_event
            ]

        (opened,) = await eventually(thread, within=30)
        assert "Club evening" in opened.body
        await mem.send_poll_response(RoomID(sessions), str(occ.poll_event), ["a1"])

        async def counted() -> bool:
            edits = in_rooms(mem, bot_user, announcements)
            return bool(edits) and "Going: 1" in edits[-1]

        await eventually(counted, within=30)

        # Commands the bot will not carry out: a usage reply each, nothing changes.
        next_thursday = thursday + timedelta(days=7)
        refused = [
            "!move 1 next every Friday 19:00",
            "!move 1 next 25:00",
            "!move 1 next " + next_thursday.strftime("%d.%m.%Y") + " 19:00",  # taken
            "!move 1 next 19:00",  # the same time
            "!move 1 next 01.01.2020 19:00",  # the past
            "!change 1 next sometime",
        ]
        sent = [await send_text(fac, sessions, text) for text in refused]

        async def answered() -> list[str]:
            got = {r.reply_to: r.body for r in fac.received if r.reply_to in sent}
            return list(got.values()) if len(got) == len(sent) else []

        replies = await eventually(answered, within=40)
        assert all(r.startswith("That did not work") for r in replies), replies
        assert await bot.store.changes(1) == Changes()

        # Move this Thursday's evening to Friday 19:30.
        friday = thursday + timedelta(days=1, minutes=30)
        await send_text(fac, sessions, "!move 1 next " + friday.strftime("%d.%m.%Y") + " 19:30")

        async def told() -> list[str]:
            return dms(mem, bot_user, club_rooms, '"Club evening" has moved')

        (moved_dm,) = await eventually(told, within=30)
        assert "19:30" in moved_dm
        moved = await eventually(lambda: announced(key_of(friday)), within=10)
        assert (moved.announce_event, moved.poll_event) == (occ.announce_event, occ.poll_event)
        assert moved.start_utc == friday.replace(tzinfo=BERLIN).timestamp()
        assert await bot.store.occurrence(1, key_of(thursday)) is None

        async def edited_to_friday() -> bool:
            edits = in_rooms(mem, bot_user, announcements)
            return bool(edits) and "19:30" in edits[-1] and "Going: 1" in edits[-1]

        await eventually(edited_to_friday, within=30)
        assert await pinned(facilitator, announcements) == [occ.announce_event]

        # The old time's reminders are gone; the new time's come once each.
        def reminders() -> list[str]:
            return dms(mem, bot_user, club_rooms, "Reminder: Club evening")

        for old_due in (thursday - timedelta(hours=24), thursday - timedelta(minutes=15)):
            await clock.set(old_due.replace(tzinfo=BERLIN).timestamp())
            await asyncio.sleep(1.5)  # the job runner's moment at the old time: nothing is due
            assert reminders() == []
        for n, new_due in enumerate(
            (friday - timedelta(hours=24), friday - timedelta(minutes=15)), 1
        ):
            await clock.set(new_due.replace(tzinfo=BERLIN).timestamp())

            async def reminded(n: int = n) -> bool:
                return len(reminders()) == n

            await eventually(reminded, within=30)
        assert all("19:30" in r for r in reminders())

        # From next Thursday on the evenings start at 20:00: series 2 goes on from there.
        await clock.set(friday.replace(tzinfo=BERLIN).timestamp() + 2 * 3600)
        nxt = await eventually(lambda: announced(key_of(next_thursday)), within=30)
        await mem.send_poll_response(RoomID(sessions), str(nxt.poll_event), ["a1"])

        async def counted_next() -> bool:
            edits = in_rooms(mem, bot_user, announcements)
            return bool(edits) and "Going: 1" in edits[-1] and "19:00" in edits[-1]

        await eventually(counted_next, within=30)
        # The manual clock is days ahead of the server's: the bot holds the command as stale
        # until the facilitator confirms it (as after an outage).
        change = await send_text(fac, sessions, "!change 1 next 20:00")

        async def held() -> list[str]:
            return [r.body for r in fac.received if r.reply_to == change]

        (hold,) = await eventually(held, within=30)
        code = hold.split('"!confirm ')[1].split('"')[0]
        confirm = await send_text(fac, sessions, f"!confirm {code}")

        async def changed() -> list[str]:
            return [
                r.body
                for r in fac.received
                if r.reply_to in (change, confirm) and r.body.startswith("From ")
            ]

        (reply,) = await eventually(changed, within=30)
        assert "#2" in reply
        later = next_thursday + timedelta(hours=1)
        carried = await eventually(lambda: announced(key_of(later), series=2), within=10)
        assert carried.poll_event == nxt.poll_event
        assert await bot.store.occurrence(1, key_of(next_thursday)) is None
        series_1, series_2 = await bot.store.series(1), await bot.store.series(2)
        assert series_1 is not None
        assert series_2 is not None
        assert series_1.rrule is not None
        assert "UNTIL=" in series_1.rrule
        assert (series_2.start_local, series_2.rrule) == (key_of(later), "FREQ=WEEKLY;BYDAY=TH")
        assert (series_2.title, series_2.link) == (series_1.title, series_1.link)

        async def told_again() -> list[str]:
            return dms(mem, bot_user, club_rooms, '"Club evening" has moved')

        await eventually(lambda: _at_least(told_again, 2), within=30)
        assert "20:00" in (await told_again())[-1]

        # The week after: announced once, by series 2 at 20:00, and series 1 is over.
        await clock.set(later.replace(tzinfo=BERLIN).timestamp() + 2 * 3600)
        week3 = later + timedelta(days=7)
        await eventually(lambda: announced(key_of(week3), series=2), within=30)
        assert await bot.store.occurrence(1, key_of(next_thursday + timedelta(days=7))) is None
        assert [s.id for s in await bot.store.active_series("c1")] == [2]
        assert len(await told_again()) == 2


async def _at_least(probe: Any, n: int) -> bool:
    return len(await probe()) >= n
