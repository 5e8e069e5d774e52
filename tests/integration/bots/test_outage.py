"""Server outage (docs/security.md): the homeserver goes away for 30 s while the bot runs.

A Synapse of this module's own (no other test may see it go down) sits behind a counting TCP
proxy; the bot process talks to the proxy, long-polling as in production. The member sends a
command and Synapse is stopped at once; a second command is sent while it is down (the member's
client retries it, under one transaction id, until the server takes it); 30 s later Synapse is
started again with the same database and the member sends a third. While Synapse is down the
bot makes at most one request per second on average (its backoff: 1 s doubling to 10 s, with
jitter); it is back within 30 s of Synapse answering, and every command (before, during and
after) is answered exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from mautrix.types import EventType, MessageType, RoomID, TextMessageEventContent

from clubs.core.homeserver import Homeserver, Settings
from tests.harness import SynapseHarness, bootstrap_admin, eventually
from tests.integration.bots.proxy import counting_proxy
from tests.integration.bots.support import (
    bot_process,
    echo_room,
    joined,
    replies_per_command,
    send_text,
    wait_replies,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

OUTAGE_S = 30.0


@pytest.fixture(scope="module")
async def own_synapse(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[SynapseHarness]:
    """A Synapse only this module uses: it is stopped and started again."""
    hs = Homeserver(
        Settings(
            data_dir=tmp_path_factory.mktemp("outage-synapse"), port=0, server_name="test.local"
        )
    )
    hs.start()
    try:
        server = SynapseHarness(hs, await bootstrap_admin(hs))
        yield server
        await server.admin.http.close()
        await server.close()
    finally:
        hs.stop()


async def send_until_accepted(peer: MautrixPeer, room: str, body: str) -> str:
    """What a member's client does with a message typed while the server is down: it keeps
    trying, under the same transaction id, until the server takes it."""
    txn = f"outage-{time.monotonic_ns()}"
    while True:
        try:
            event_id: str = await peer.client.send_message_event(
                RoomID(room),
                EventType.ROOM_MESSAGE,
                TextMessageEventContent(msgtype=MessageType.TEXT, body=body),
                txn_id=txn,
            )
            return event_id
        except Exception:  # the server is down: any failure means "try again"
            await asyncio.sleep(1)


async def test_bot_rides_out_a_homeserver_outage(
    own_synapse: SynapseHarness, tmp_path: Path
) -> None:
    synapse = own_synapse
    network, account, member, room = await echo_room(synapse, tmp_path)
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
                sync_timeout_ms=30_000,  # the production long-poll
            ) as bp,
            mautrix_peer(member, synapse.url) as peer,
        ):
            await bp.start()
            await bp.wait_ready()
            await eventually(lambda: joined(member, room, account.user_id), within=20)
            warmup = await send_text(peer, room, "!echo warm-up")
            await wait_replies(peer, account.user_id, room, [warmup], within=20)

            # A command, and at once the server goes away (the member's client pauses too:
            # it comes back with its own backoff, which is not what is measured here).
            before = await send_text(peer, room, "!echo just before the outage")
            peer.client.stop()
            synapse.hs.stop()
            down_at = time.monotonic()
            during_task = asyncio.create_task(
                send_until_accepted(peer, room, "!echo during the outage")
            )
            await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for a condition
            assert bp.running, f"the bot process died during the outage; {bp}"
            synapse.hs.start()  # returns once Synapse answers /versions
            up_at = time.monotonic()
            attempts = proxy.requests_between(down_at, up_at)

            peer.client.start(None)  # resumes from its stored position
            during = await asyncio.wait_for(during_task, timeout=30)
            after = await send_text(peer, room, "!echo right after the outage")
            counts = await wait_replies(
                peer, account.user_id, room, [before, during, after], within=30
            )
            back_after = time.monotonic() - up_at
            # A sentinel answered after both: any late duplicate would have arrived by now.
            last = await send_text(peer, room, "!echo last")
            await wait_replies(peer, account.user_id, room, [last], within=20)
            counts = replies_per_command(peer, account.user_id, room)
            await bp.stop()

    outage = up_at - down_at
    assert attempts / outage <= 1.0, f"{attempts} requests in {outage:.0f}s of outage"
    assert attempts >= 3, f"only {attempts} requests in {outage:.0f}s: was the bot retrying?"
    assert back_after <= 30, f"answered {back_after:.1f}s after the homeserver was back"
    assert [counts[e] for e in (warmup, before, during, after, last)] == [1, 1, 1, 1, 1]
    assert sum(counts.values()) == 5
    assert peer.undecryptable == []
    assert " ERROR " not in bp.log_text()


def _room_send(head: bytes) -> bool:
    """`PUT /_matrix/client/v3/rooms/{room}/send/{type}/{txn}` (not sendToDevice)."""
    first_line = head.split(b"\r\n", 1)[0]
    return first_line.startswith(b"PUT /_matrix/client/v3/rooms/") and b"/send/" in first_line


async def test_a_reply_the_homeserver_did_not_take_is_sent_again_not_lost(
    own_synapse: SynapseHarness, tmp_path: Path
) -> None:
    """The server goes away exactly while the bot sends its reply (here: only room sends are
    cut, sync keeps working): the command is handled again until the reply is through, once."""
    synapse = own_synapse
    network, account, member, room = await echo_room(synapse, tmp_path)
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

            proxy.drop = _room_send
            cut = await send_text(peer, room, "!echo while sends fail")

            async def tried_twice() -> bool:
                return len(proxy.dropped) >= 2

            await eventually(tried_twice, within=20)
            proxy.drop = None
            await wait_replies(peer, account.user_id, room, [cut], within=30)
            last = await send_text(peer, room, "!echo last")
            await wait_replies(peer, account.user_id, room, [last], within=20)
            await bp.stop()
    counts = replies_per_command(peer, account.user_id, room)
    assert [counts[e] for e in (warmup, cut, last)] == [1, 1, 1]
    assert bp.running is False
    assert "failed (Unreachable); retried in" in bp.log_text()
