"""The facilitation bot killed mid-session, in a process of its own, and started again: the
agenda, the queue, the timers and the notes are intact, and the status message is still the one
(edited, never posted twice).

The shipped facilitation bot runs in `schedproc.py` (the production host) on a clock the test
moves. A chair starts a session with an agenda, two members raise hands, one takes a note. Then
commands arrive while the process is down, and the runs that handle them die at kill points
(`clubs/core/crash.py`, exit 137 as after a SIGKILL): a command's status edit on the wire but
not recorded (`after_send`), the batch handled but the sync position not committed
(`before_commit`), a killed process with nothing pending. After a clean run the status shows
every change once; the overrun of the first item is warned once when the clock passes it; the
minutes hold both notes.
"""

from __future__ import annotations

import time
from pathlib import Path

from clubs.core.http import path
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.schedhost import SchedProcess
from tests.integration.bots.support import (
    CS,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    send_text,
)
from tests.integration.bots.test_facilitation import (
    from_bot,
    latest_status,
    status_messages,
    until,
)
from tests.integration.bots.test_scheduling_kills import killed_at_the_end, settled
from tests.mautrix_client import mautrix_peer

KILLED = 137


async def test_killed_mid_session_the_session_survives_and_the_status_is_not_doubled(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "facilitation")
    bot = account.user_id
    chair = await synapse.new_user("chair")
    anna = await synapse.new_user("anna")
    boris = await synapse.new_user("boris")
    room = await managed_room(
        synapse,
        network,
        invite=[bot, chair.user_id, anna.user_id, boris.user_id],
        key="sessions",
        powers={bot: 50, chair.user_id: 50},
    )
    for person in (chair, anna, boris):
        await person.http.post(path(*CS, "join", room), {})
    a, b = (p.user_id.split(":")[0].removeprefix("@") for p in (anna, boris))  # as shown
    bp = SchedProcess(synapse.url, tmp_path, [account], network, synapse.admin.user_id)
    async with (
        killed_at_the_end(bp),
        mautrix_peer(chair, synapse.url) as ch,
        mautrix_peer(anna, synapse.url) as an,
        mautrix_peer(boris, synapse.url) as bo,
    ):
        await bp.start()
        await bp.wait_ready()
        await eventually(lambda: joined(chair, room, bot), within=20)

        await send_text(ch, room, "!start Kill evening")
        await until(lambda: status_messages(an, bot, room))
        await send_text(ch, room, "!agenda add 10m Intro")
        await until(lambda: "Item 1 of 1: Intro" in latest_status(an, bot, room))
        await send_text(ch, room, "!agenda add 5m method story")
        await send_text(an, room, "+")
        await until(lambda: f"Queue: {a}" in latest_status(an, bot, room))
        await send_text(bo, room, "+")
        await send_text(an, room, "#info keep-me-one")
        await until(lambda: f"Queue: {a}, {b}" in latest_status(an, bot, room))
        await settled(bp)

        # Down: the chair gives anna the floor; the run that handles it dies with the status
        # edit on the wire, the next one before the sync position is stored.
        await bp.kill()
        await send_text(ch, room, "!next")
        for point in ("after_send:1", "before_commit:1"):
            await bp.start(crash_at=point)
            assert await bp.wait_exit() == KILLED, point
        await bp.start()
        await bp.wait_ready()
        await until(lambda: f"Speaking: {a}" in latest_status(an, bot, room))
        await settled(bp)
        status = latest_status(an, bot, room)
        assert "Item 1 of 2: Intro" in status
        assert f"Queue: {b}" in status

        # Killed with nothing pending: the next commands go on from the same state.
        await bp.kill()
        await send_text(bo, room, "#idea keep-me-two")
        await send_text(ch, room, "!next")
        await bp.start()
        await bp.wait_ready()
        await until(lambda: f"Speaking: {b}" in latest_status(an, bot, room))
        await settled(bp)
        assert len(status_messages(an, bot, room)) == 1  # edited in place, never posted again
        assert len(status_messages(bo, bot, room)) == 1

        # The item's timer survived: past its 10 minutes the chairs are warned, once.
        bp.jump_to(time.time() + 11 * 60)
        warned = await until(
            lambda: [r for r in from_bot(ch, bot, room) if "the time for “Intro” is up" in r.body]
        )
        bp.jump_to(time.time() + 13 * 60)
        await settled(bp)
        assert (
            len([r for r in from_bot(ch, bot, room) if "the time for “Intro” is up" in r.body]) == 1
        )
        assert warned

        await send_text(ch, room, "!end")
        (minutes,) = await until(
            lambda: [r for r in from_bot(an, bot, room) if r.body.startswith("Minutes")]
        )
        assert "keep-me-one" in minutes.body
        assert "keep-me-two" in minutes.body
        await settled(bp)
