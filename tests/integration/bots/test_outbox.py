"""The outbox: a reply the homeserver did not take, or to a room not synced yet, is not lost.

The bot process talks to Synapse through a proxy that fails every room send. A member asks for
an echo in the managed room and for a DM (a room the bot has just created and not synced yet).
Both commands are handled and recorded as done, the sync position moves past them, and both
sends wait in the outbox — sealed: the database file (and its write-ahead log) never holds the
reply text. The process is then SIGKILLed; nothing of the commands is replayed after the
restart, so only the outbox can deliver them: each arrives exactly once.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clubs.core.http import path
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.jobbot import label_of, notice_text
from tests.integration.bots.proxy import counting_proxy
from tests.integration.bots.support import (
    CS,
    bot_process,
    create_bot_account,
    echo_room,
    joined,
    managed_room,
    new_network,
    replies_per_command,
    send_text,
    wait_replies,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer


def room_send(head: bytes) -> bool:
    """`PUT /_matrix/client/v3/rooms/{room}/send/{type}/{txn}` (not sendToDevice)."""
    first_line = head.split(b"\r\n", 1)[0]
    return first_line.startswith(b"PUT /_matrix/client/v3/rooms/") and b"/send/" in first_line


def query(db: Path, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read the bot's database while the bot runs (read-only, closed at once)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return list(conn.execute(sql, tuple(args)))
    finally:
        conn.close()


def database_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


async def invites(member: Account) -> list[str]:
    """The rooms the member is invited to now (a filter of its own per call: Synapse caches
    a sync response for a while and would answer the same request with the old one)."""
    nonce = secrets.token_hex(4)
    sync_filter = f'{{"room":{{"timeline":{{"limit":1}}}},"presence":{{"not_types":["{nonce}"]}}}}'
    sync = await member.http.get(path(*CS, "sync"), query={"timeout": "0", "filter": sync_filter})
    return sorted(sync.get("rooms", {}).get("invite", {}))


async def bot_events(member: Account, room_id: str, bot_user: str) -> list[dict[str, Any]]:
    page = await member.http.get(
        path(*CS, "rooms", room_id, "messages"), query={"dir": "b", "limit": "100"}
    )
    return [
        e
        for e in page.get("chunk", [])
        if e.get("sender") == bot_user and e.get("type") in ("m.room.encrypted", "m.room.message")
    ]


def dm_texts(peer: MautrixPeer, bot_user: str, managed: str) -> list[str]:
    return [r.body for r in peer.received if r.sender == bot_user and r.room_id != managed]


async def test_replies_waiting_in_the_outbox_survive_a_kill_and_go_out_once(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    db = tmp_path / "bots" / "bots.db"
    canary = f"canary-{secrets.token_hex(8)}"
    upstream = urlsplit(synapse.url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    with counting_proxy(upstream.hostname, upstream.port) as proxy:
        async with (
            bot_process(proxy.url, tmp_path, [account], network, synapse.admin.user_id) as bp,
            mautrix_peer(member, synapse.url) as peer,
        ):
            await bp.start()
            await bp.wait_ready()
            await eventually(lambda: joined(member, room, account.user_id), within=20)
            warmup = await send_text(peer, room, "!echo warm-up")
            await wait_replies(peer, account.user_id, room, [warmup], within=20)

            proxy.drop = room_send
            echo = await send_text(peer, room, f"!echo {canary}")
            dm = await send_text(peer, room, "!dmme")

            async def waiting_in_the_outbox() -> bool:
                done = query(
                    db,
                    "SELECT count(*) FROM processed WHERE bot = ? AND event_id IN (?, ?)",
                    (account.name, echo, dm),
                )[0][0]
                rows = query(
                    db,
                    "SELECT room_id, state, attempts, length(content) FROM outbox "
                    "WHERE bot = ? AND state = 'pending'",
                    (account.name,),
                )
                in_room = [r for r in rows if r[0] == room and r[2] >= 1 and r[3] > 0]
                in_dm = [r for r in rows if r[0] != room and r[3] > 0]
                return done == 2 and len(in_room) == 1 and len(in_dm) == 1

            # Both commands are done and recorded; only the outbox still has their sends.
            await eventually(waiting_in_the_outbox, within=30)
            await eventually(lambda: _true(len(proxy.dropped) >= 2), within=20)
            assert canary.encode() not in database_bytes(db)
            await bp.kill()
            assert bp.exits[-1] == -9
            assert canary.encode() not in database_bytes(db)
            assert replies_per_command(peer, account.user_id, room)[echo] == 0

            proxy.drop = None
            await bp.start()
            await bp.wait_ready()
            await wait_replies(peer, account.user_id, room, [echo], within=30)
            (dm_room,) = await eventually(lambda: invites(member), within=30)
            await member.http.post(path(*CS, "join", dm_room), {})
            await eventually(lambda: _true(dm_texts(peer, account.user_id, room)), within=30)
            last = await send_text(peer, room, "!echo last")  # anything replayed comes before
            await wait_replies(peer, account.user_id, room, [last], within=20)
            await bp.stop()
            assert canary.encode() not in database_bytes(db)

    counts = replies_per_command(peer, account.user_id, room)
    assert [counts[e] for e in (warmup, echo, last)] == [1, 1, 1]
    echoed = [r for r in peer.received if r.reply_to == echo]
    assert canary in echoed[0].body
    assert dm_texts(peer, account.user_id, room) == ["Echo: dm"]
    assert len(await bot_events(member, dm_room, account.user_id)) == 1
    assert len(await bot_events(member, room, account.user_id)) == 3
    assert query(
        db, "SELECT count(*) FROM outbox WHERE bot = ? AND state != 'sent'", (account.name,)
    ) == [(0,)]


async def test_a_failed_job_notice_is_retried_on_time_in_a_quiet_room(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """The retry of a failed send is timed by the outbox itself, not by the next sync. A job's
    notice is not part of a sync batch (nothing replays it): in a room where nothing else
    happens, the bot's long-poll sync returns only after 30 s, and so would the retry."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "jobs")
    member = await synapse.new_user("member")
    room = await managed_room(synapse, network, invite=[account.user_id, member.user_id])
    await member.http.post(path(*CS, "join", room), {})
    upstream = urlsplit(synapse.url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    with counting_proxy(upstream.hostname, upstream.port) as proxy:
        async with (
            bot_process(
                proxy.url,
                tmp_path,
                [account],
                network,
                synapse.admin.user_id,
                bot="jobs",
                sync_timeout_ms=30_000,  # the production long-poll
            ) as bp,
            mautrix_peer(member, synapse.url) as peer,
        ):
            await bp.start()
            await bp.wait_ready()
            await eventually(lambda: joined(member, room, account.user_id), within=20)

            proxy.reject = room_send
            command = await send_text(peer, room, "!remind 1")
            await eventually(lambda: _true(proxy.rejected), within=20)
            proxy.reject = None  # the first retry (1-2 s later) goes through
            healed = time.monotonic()
            want = notice_text(label_of(command, 0))
            await eventually(lambda: _true(notices(peer, account.user_id, want)), within=40)
            took = time.monotonic() - healed
            await bp.stop()

    assert took < 15, f"the retry came {took:.1f}s after the homeserver took sends again"
    assert len(notices(peer, account.user_id, want)) == 1


def notices(peer: MautrixPeer, bot_user: str, text: str) -> list[str]:
    return [r.body for r in peer.received if r.sender == bot_user and r.body == text]


async def _true(value: object) -> bool:
    return bool(value)
