"""A member's calendar feed, as their calendar app fetches it: the link comes only in a DM,
holds the sessions of the member's own clubs (not another club's), the address only of the
session where they have a place, and stops working when revoked. Unknown, malformed and revoked
links are all 404."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import icalendar
from mautrix.types import RoomID
from prometheus_client.parser import text_string_to_metric_families

from clubs.bots.httpd import serving
from clubs.core.homeserver import find_free_port
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedscene import club_scene
from tests.integration.bots.support import joined, send_text
from tests.integration.bots.test_scheduling import dms, make_club_rooms

VENUE = f"Linden Court {secrets.randbelow(900) + 100}"


async def test_a_members_feed_has_their_clubs_sessions_and_only_their_places_address(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    port = find_free_port()
    public = f"http://127.0.0.1:{port}"
    async with (
        club_scene(synapse, tmp_path, settings={"name": "Vilnius"}, public_url=public + "/") as s,
        serving(s.host.runtimes, "127.0.0.1", port),
        aiohttp.ClientSession() as web,
    ):
        bot, bot_user, fac, mem, ours = s.bot, s.bot_user, s.fac, s.mem, s.rooms
        # Another club of the same bot, which the member is not in.
        theirs = await make_club_rooms(
            synapse,
            s.network,
            bot_user,
            [s.facilitator],
            club="c2",
            powers={s.facilitator.user_id: 50},
        )
        for room in theirs.values():
            await eventually(lambda room=room: joined(s.facilitator, room, bot_user), within=20)
        club_rooms = set(ours.values()) | set(theirs.values())
        await send_text(
            fac, ours["sessions"], f"!session Tea evening; 2030-05-02 18:00; offline; venue {VENUE}"
        )
        await send_text(fac, theirs["sessions"], "!session Other club lecture; 2030-05-03 18:00")

        occ = await eventually(lambda: s.announced(1, "2030-05-02T18:00"), within=30)
        await eventually(lambda: _is(bot.store.occurrence(2, "2030-05-03T18:00")), within=30)
        await mem.send_poll_response(RoomID(ours["sessions"]), str(occ.poll_event), ["a1"])

        async def placed() -> list[Any]:
            return [
                r
                for r in mem.received
                if r.sender == bot_user
                and r.room_id not in club_rooms
                and r.body.startswith("You have a place")
            ]

        (place,) = await eventually(placed, within=30)
        dm_room = place.room_id

        # In a club room: no link, only where to ask.
        asked = await send_text(mem, ours["sessions"], "!feed")

        async def refused() -> list[str]:
            return [r.body for r in mem.received if r.reply_to == asked]

        (no_link,) = await eventually(refused, within=30)
        assert "direct message" in no_link
        assert public not in no_link

        await send_text(mem, dm_room, "!feed")

        async def link() -> list[str]:
            # A DM has no club: the bot answers in the member's club's language (English here).
            return dms(mem, bot_user, club_rooms, "Your calendar link")

        (message,) = await eventually(link, within=30)
        url = next(w for w in message.split() if w.startswith(public))
        assert url.endswith(".ics")
        async with web.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/calendar")
            assert "no-store" in resp.headers["Cache-Control"]
            body = await resp.read()
        events = icalendar.Calendar.from_ical(body).walk("VEVENT")
        assert {str(e["summary"]) for e in events} == {"Tea evening"}
        assert [str(e["location"]) for e in events if "location" in e] == [VENUE]
        assert b"Other club lecture" not in body

        # Health, and links that do not work: all 404, nothing else told.
        async with web.get(public + "/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["bots"] == {"scheduling": True}
        # Metrics for monitoring: commands by name and outcome, the last sync; no user, room
        # or link in them.
        async with web.get(public + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            metrics = await resp.text()
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        feeds = [
            s.value
            for s in families["clubs_bot_commands"].samples
            if s.labels == {"bot": "scheduling", "command": "feed", "outcome": "ok"}
            and s.name == "clubs_bot_commands_total"
        ]
        # The registry is the process's: another test in this run may have asked for feeds too.
        assert len(feeds) == 1
        assert feeds[0] >= 2
        (synced,) = [
            s.value
            for s in families["clubs_bot_last_sync_timestamp_seconds"].samples
            if s.labels == {"bot": "scheduling"}
        ]
        assert abs(synced - time.time()) < 120  # wall time, whatever the bots' clock says
        for secret in (mem.user_id, dm_room, url.rsplit("/", 1)[1], ours["sessions"]):
            assert secret not in metrics
        forged = public + "/calendar/" + secrets.token_urlsafe(32) + ".ics"
        odd = public + "/calendar/" + "A" * 42 + "%21.ics"  # one character outside the alphabet
        for wrong in (forged, public + "/calendar/short.ics", odd):
            async with web.get(wrong) as resp:
                assert resp.status == 404, wrong

        # Revoked: the old link is dead.
        await send_text(mem, dm_room, "!feed off")

        async def revoked() -> list[str]:
            return dms(mem, bot_user, club_rooms, "Your calendar link is revoked")

        await eventually(revoked, within=30)
        async with web.get(url) as resp:
            assert resp.status == 404


async def _is(value: Any) -> bool:
    return bool(await value)
