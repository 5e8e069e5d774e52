"""A full disk loses nothing: the bot stops advancing, alerts the staff once, and catches up.

The bot process runs with `CLUBS_STORE_FAULT=<flag>`: while the flag file exists, every write to
its database fails as SQLite fails on a full disk (no root mounts needed). Members send commands
meanwhile. The bot answers none of them (it could not record them), keeps its sync position,
logs one error and posts one alert to the staff room by a path that needs no database. When the
flag goes, every command is answered exactly once and the staff hear that it recovered.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clubs.core.crash import STORE_FAULT_ENV
from clubs.core.http import path
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_process,
    echo_room,
    joined,
    managed_room,
    send_text,
    wait_replies,
)
from tests.mautrix_client import mautrix_peer

FAULT_NEEDLE = "cannot write its database"
RECOVERED_NEEDLE = "can write its database again"


async def test_a_full_disk_loses_no_command_alerts_once_and_recovers(
    synapse: SynapseHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    staff_room = await managed_room(
        synapse,
        network,
        invite=[account.user_id, member.user_id],
        key="moderators",
        audience="staff",
    )
    await member.http.post(path(*CS, "join", staff_room), {})
    flag = tmp_path / "disk-full"
    monkeypatch.setenv(STORE_FAULT_ENV, str(flag))
    async with (
        bot_process(synapse.url, tmp_path, [account], network, synapse.admin.user_id) as bp,
        mautrix_peer(member, synapse.url) as peer,
    ):
        await bp.start()
        await bp.wait_ready()
        for r in (room, staff_room):
            await eventually(lambda r=r: joined(member, r, account.user_id), within=20)
        warm = await send_text(peer, room, "!echo warm")
        await wait_replies(peer, account.user_id, room, [warm], within=30)

        def staff_notices(needle: str) -> int:
            return sum(
                1
                for r in peer.received
                if r.room_id == staff_room and r.sender == account.user_id and needle in r.body
            )

        flag.touch()
        during = [await send_text(peer, room, f"!echo during {i}") for i in range(3)]
        await eventually(lambda: asyncio.sleep(0, staff_notices(FAULT_NEEDLE)), within=30)
        await asyncio.sleep(3)  # retries while the disk stays full: no answer, no second alert
        answered = {r.reply_to for r in peer.received if r.sender == account.user_id}
        assert not answered & set(during)
        assert bp.running

        flag.unlink()
        after = await send_text(peer, room, "!echo after")
        counts = await wait_replies(peer, account.user_id, room, [*during, after], within=60)
        await eventually(lambda: asyncio.sleep(0, staff_notices(RECOVERED_NEEDLE)), within=30)
        await bp.stop()

    assert {c: counts[c] for c in [*during, after]} == dict.fromkeys([*during, after], 1)
    assert staff_notices(FAULT_NEEDLE) == 1
    assert staff_notices(RECOVERED_NEEDLE) == 1
    errors = [line for line in bp.log_text().splitlines() if "refuses writes" in line]
    assert len(errors) == 1
    assert peer.undecryptable == []
