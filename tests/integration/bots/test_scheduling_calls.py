"""A club whose sessions meet in Element Call (`calls: {provider: element_call}` in the network
file → its settings): a new online session's link is the sessions room itself, not a Jitsi
room, and the encrypted announcement carries it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedscene import club_scene
from tests.integration.bots.support import send_text
from tests.integration.bots.test_scheduling import in_rooms


async def test_an_online_session_of_an_element_call_club_meets_in_its_sessions_room(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    settings = {"name": "Riga", "calls": {"provider": "element_call"}}
    async with club_scene(synapse, tmp_path, settings=settings) as s:
        sessions, announcements = s.rooms["sessions"], s.rooms["announcements"]
        await send_text(s.fac, sessions, "!session Talk; 2030-06-06 18:00; online")
        await eventually(lambda: s.announced(1, "2030-06-06T18:00"), within=30)
        series = await s.bot.store.series(1)
        assert series is not None
        assert series.link == f"https://matrix.to/#/{sessions}"

        async def announcement() -> list[Any]:
            return [b for b in in_rooms(s.mem, s.bot_user, announcements) if "Talk" in b]

        (text, *_) = await eventually(announcement, within=30)
        assert f"https://matrix.to/#/{sessions}" in text
        assert "meet.jit.si" not in text
