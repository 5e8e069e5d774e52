"""Hostile input: a flood of events nobody can decrypt stays within the bounds.

A member's account sends `m.room.encrypted` events under made-up Megolm sessions (no key will
ever come): a hundred more than `WAITING_MAX` here, so that the bound is crossed; set
`CLUBS_KEY_FLOOD=10000` for the long run (about 5 minutes on two cores, almost all of it Synapse
taking the events in). The bot keeps at most `WAITING_MAX` of them (the oldest are given up,
with one log line per batch), asks the sender for keys only a bounded number of times, its
memory does not grow with the flood, and it still answers the next command.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time
from pathlib import Path

from clubs.bots.store import WAITING_MAX
from clubs.core.e2ee import KEY_REQUESTS_PER_SENDER
from clubs.core.http import path
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_process,
    echo_room,
    joined,
    send_text,
    wait_replies,
)
from tests.mautrix_client import mautrix_peer

FLOOD = int(os.environ.get("CLUBS_KEY_FLOOD", str(WAITING_MAX + 100)))
CONCURRENCY = 32
RSS_GROWTH_MAX_KB = 60_000


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def waiting_rows(var_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{var_dir / 'bots' / 'bots.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM waiting_keys").fetchone()[0])
    finally:
        conn.close()


def garbage() -> dict[str, str]:
    """What a Megolm event looks like from outside, under a session nobody has."""
    return {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": secrets.token_urlsafe(96),
        "sender_key": secrets.token_urlsafe(32)[:43],
        "session_id": secrets.token_urlsafe(32)[:43],
        "device_id": "FLOODER",
    }


async def test_a_flood_of_undecryptable_events_stays_within_bounds(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    flooder = await synapse.new_user("flooder")
    await synapse.admin.http.post(path(*CS, "rooms", room, "invite"), {"user_id": flooder.user_id})
    await flooder.http.post(path(*CS, "join", room), {})
    async with (
        bot_process(
            synapse.url, tmp_path, [account], network, synapse.admin.user_id, verbosity=0
        ) as bp,
        mautrix_peer(member, synapse.url) as peer,
    ):
        await bp.start()
        await bp.wait_ready()
        await eventually(lambda: joined(member, room, account.user_id), within=20)
        warm = await send_text(peer, room, "!echo warm")
        await wait_replies(peer, account.user_id, room, [warm], within=30)
        assert bp.proc is not None
        before = rss_kb(bp.proc.pid)

        gate = asyncio.Semaphore(CONCURRENCY)
        run = secrets.token_hex(4)

        async def one(i: int) -> None:
            async with gate:
                await flooder.http.put(
                    path(*CS, "rooms", room, "send", "m.room.encrypted", f"flood-{run}-{i}"),
                    garbage(),
                )

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(FLOOD)))
        sent_s = time.monotonic() - started
        probe = await send_text(peer, room, "!echo after the flood")
        await wait_replies(peer, account.user_id, room, [probe], within=180)
        caught_up_s = time.monotonic() - started
        after = rss_kb(bp.proc.pid)
        rows = waiting_rows(tmp_path)
        print(
            f"\nflood of {FLOOD}: sent in {sent_s:.1f}s, bot caught up after {caught_up_s:.1f}s;"
            f" waiting rows {rows}; RSS {before // 1024} -> {after // 1024} MiB"
        )
        assert bp.running
        await bp.stop()
        sync = await flooder.http.get(
            path(*CS, "sync"), query={"timeout": "0", "filter": '{"room":{"rooms":[]}}'}
        )
        requests = [
            e
            for e in sync.get("to_device", {}).get("events", [])
            if e.get("type") == "m.room_key_request"
        ]

    assert rows <= WAITING_MAX
    assert after - before < RSS_GROWTH_MAX_KB
    assert "are given up" in bp.log_text()  # said, not silent
    assert 1 <= len(requests) <= KEY_REQUESTS_PER_SENDER
