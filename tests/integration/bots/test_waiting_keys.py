"""Commands whose room key comes late survive restarts; a withheld key is explained, once.

The member's independent client (mautrix, cross-signed-only like Element) sends a command under
a Megolm session whose key it keeps for a while — a new device, a member who just joined, a
slow key share — and shares the key 8 s later with the same Olm `m.room_key` a normal send
uses. Meanwhile the bot has moved its sync position past the event (it is stored, encrypted, in
the same transaction) and is killed or stopped, once or twice. When the key arrives the
restarted bot decrypts the stored event and answers it exactly once; the "could not decrypt"
notice is not repeated after the restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from mautrix.types import TrustState

from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    BotProcess,
    bot_process,
    echo_room,
    joined,
    replies_per_command,
    send_text,
    wait_replies,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

KEY_DELAY_S = 8.0


def waiting_rows(var_dir: Path) -> int:
    """Events the bot stores while waiting for their key (read-only, beside the running bot)."""
    db = var_dir / "bots" / "bots.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM waiting_keys").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def notices_to(peer: MautrixPeer, bot: str, room: str, event_id: str, needle: str) -> int:
    return sum(
        1
        for r in peer.received
        if r.room_id == room and r.sender == bot and r.reply_to == event_id and needle in r.body
    )


async def ready_bot(bp: BotProcess, peer: MautrixPeer, room: str, bot: str) -> None:
    await bp.start()
    await bp.wait_ready()
    await eventually(lambda: joined(peer.account, room, bot), within=20)
    first = await send_text(peer, room, "!echo warm")
    await wait_replies(peer, bot, room, [first], within=30)


@pytest.mark.parametrize("restarts", ["sigkill", "stop", "two_sigkills"])
async def test_a_command_whose_key_comes_late_is_answered_once_across_restarts(
    synapse: SynapseHarness, tmp_path: Path, restarts: str
) -> None:
    network, account, member, room = await echo_room(synapse, tmp_path)
    async with (
        bot_process(synapse.url, tmp_path, [account], network, synapse.admin.user_id) as bp,
        mautrix_peer(member, synapse.url) as peer,
    ):
        await ready_bot(bp, peer, room, account.user_id)

        sent_at = time.monotonic()
        late, key = await peer.send_with_late_key(room, "!echo late")
        # The bot has seen it, told the member, and moved past it with the event stored.
        await eventually(
            lambda: asyncio.sleep(0, notices_to(peer, account.user_id, room, late, "decrypt")),
            within=20,
        )
        await eventually(lambda: asyncio.sleep(0, waiting_rows(tmp_path) >= 1), within=20)

        rounds = 2 if restarts == "two_sigkills" else 1
        for _ in range(rounds):
            if restarts == "stop":
                await bp.stop()
            else:
                await bp.kill()
            await bp.start()
            await bp.wait_ready()
        assert waiting_rows(tmp_path) >= 1

        await asyncio.sleep(max(0.0, KEY_DELAY_S - (time.monotonic() - sent_at)))
        assert await peer.deliver_key(key, account.user_id) >= 1
        await eventually(
            lambda: asyncio.sleep(0, notices_to(peer, account.user_id, room, late, "Echo")),
            within=30,
        )
        after = await send_text(peer, room, "!echo after")  # its reply follows any duplicate
        await wait_replies(peer, account.user_id, room, [after], within=30)
        await bp.stop()

    assert notices_to(peer, account.user_id, room, late, "Echo: ") == 1
    assert replies_per_command(peer, account.user_id, room)[late] == 2  # the notice, the echo
    assert notices_to(peer, account.user_id, room, late, "decrypt") == 1  # not again
    assert waiting_rows(tmp_path) == 0


async def test_a_withheld_key_is_explained_in_plain_words_once(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """A member whose client shares keys only with devices they verified themselves withholds
    the key from the bot (`m.unverified`): the bot says what to do, once, not per message."""
    network, account, member, room = await echo_room(synapse, tmp_path)
    async with (
        bot_process(synapse.url, tmp_path, [account], network, synapse.admin.user_id) as bp,
        mautrix_peer(member, synapse.url) as peer,
    ):
        await ready_bot(bp, peer, room, account.user_id)
        peer.crypto.send_keys_min_trust = TrustState.VERIFIED
        await peer.crypto_store.remove_outbound_group_session(room)
        first = await send_text(peer, room, "!echo one")
        needle = "does not consider my session verified"

        async def told() -> bool:
            return any(needle in r.body for r in peer.received if r.sender == account.user_id)

        await eventually(told, within=20)
        second = await send_text(peer, room, "!echo two")
        await bp.stop()  # and again after a restart
        await bp.start()
        await bp.wait_ready()
        third = await send_text(peer, room, "!echo three")
        peer.crypto.send_keys_min_trust = TrustState.CROSS_SIGNED_TOFU
        await peer.crypto_store.remove_outbound_group_session(room)
        probe = await send_text(peer, room, "!echo probe")
        await wait_replies(peer, account.user_id, room, [probe], within=30)
        await bp.stop()

    withheld_notices = [
        r for r in peer.received if r.sender == account.user_id and needle in r.body
    ]
    assert len(withheld_notices) == 1
    assert withheld_notices[0].reply_to in (first, second, third)
    for command in (first, second, third):  # never decrypted, never answered
        assert notices_to(peer, account.user_id, room, command, "Echo: ") == 0
