"""Canary ("nothing leaked", docs/security.md): message content never reaches
a log or a file the bots write.

The bot host runs in its own process (so the member's client, which is not ours, logs
elsewhere) with every logger at DEBUG — root, nio, aiohttp, peewee, aiosqlite, asyncio — through
the production logging setup. A random canary travels in an encrypted managed room as chat, as
formatted HTML, as a command argument (echoed back in the encrypted reply), as an argument too
long for the command, in malformed messages (a list body, a missing msgtype), in a DM, and —
outside E2EE, as the homeserver sees them — in a plaintext message and the member's display
name. After
the bot has answered, the canary is in no line of its log and in no byte of any file under its
data directory (the nio store, bots.db with its WAL, the vault, everything).
The crypto store refuses nio's public `DEFAULT_KEY`, and the real store does not open with it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from mautrix.types import EventType, RoomID
from nio.store import SqliteStore

from clubs.core.e2ee import (
    E2eeClient,
    StoreError,
    check_pickle_key,
    pickle_key_name,
    store_file,
)
from clubs.core.http import path
from clubs.core.secrets import Vault
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_process,
    create_bot_account,
    echo_room,
    joined,
    open_dm,
    replies_per_command,
    send_text,
    wait_replies,
)
from tests.mautrix_client import mautrix_peer


def files_containing(root: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


async def test_a_canary_reaches_no_log_and_no_file(synapse: SynapseHarness, tmp_path: Path) -> None:
    canary = f"canary-{secrets.token_hex(12)}"
    network, account, member, room = await echo_room(synapse, tmp_path)
    async with (
        bot_process(
            synapse.url, tmp_path, [account], network, synapse.admin.user_id, debug=True
        ) as bp,
        mautrix_peer(member, synapse.url) as peer,
    ):
        await bp.start()
        await bp.wait_ready()
        await eventually(lambda: joined(member, room, account.user_id), within=20)

        async def send(content: dict[str, object]) -> str:
            event_id = await peer.client.send_message_event(
                RoomID(room), EventType.ROOM_MESSAGE, content
            )
            return str(event_id)

        await send({"msgtype": "m.text", "body": f"my secret is {canary}"})
        # Plaintext into the encrypted room (any client can) and a display name: personal
        # data the homeserver sees, which still must not reach the bot's log.
        await member.http.put(
            path(*CS, "rooms", room, "send", "m.room.message", secrets.token_hex(8)),
            {"msgtype": "m.text", "body": f"!echo in clear {canary}"},
        )
        await member.http.put(
            path(*CS, "profile", member.user_id, "displayname"), {"displayname": canary}
        )
        await send(
            {
                "msgtype": "m.text",
                "body": f"**{canary}**",
                "format": "org.matrix.custom.html",
                "formatted_body": f"<b>{canary}</b><script>{canary}</script>",
            }
        )
        await send({"msgtype": "m.text", "body": [canary]})
        await send({"body": f"!echo {canary}"})
        too_long = await send_text(peer, room, "!echo " + canary * 20)
        echoed = await send_text(peer, room, f"!echo {canary}")
        counts = await wait_replies(peer, account.user_id, room, [too_long, echoed], within=20)
        assert any(canary in r.body for r in peer.received if r.reply_to == echoed)

        dm = await open_dm(member, account.user_id)
        in_dm = await send_text(peer, dm, f"!echo {canary}")
        await wait_replies(peer, account.user_id, dm, [in_dm], within=30)
        await bp.stop()

    assert counts[echoed] == 1
    assert replies_per_command(peer, account.user_id, dm)[in_dm] == 1
    log = bp.log_text()
    assert " DEBUG nio" in log  # third-party DEBUG records did reach the log
    assert " DEBUG aiohttp" in log or " DEBUG aiosqlite" in log
    leaking_lines = [line[:200] for line in log.splitlines() if canary in line]
    assert leaking_lines == []
    assert files_containing(tmp_path, canary.encode()) == []


async def test_the_crypto_store_refuses_and_is_not_under_the_public_default_key(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    account = await create_bot_account(synapse, tmp_path, "echo")
    vault = Vault(tmp_path / "secrets" / "vault")
    store_dir = tmp_path / "bots" / "devices" / "echo"
    client = await E2eeClient.open(synapse.url, vault, account.user_id, store_dir)
    device_id = client.device_id
    await client.close()
    # The store that exists is not readable with nio's public default key...
    db = store_file(store_dir, account.user_id, device_id)
    assert db.exists()
    default = SqliteStore(
        account.user_id, device_id, str(store_dir), "DEFAULT_KEY", database_name=db.name
    )
    try:
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever vodozemac raises
            default.load_account()
    finally:
        default.database.close()
    # ... and a vault that holds the default (or a weak) key is refused before the store opens.
    for weak in ("DEFAULT_KEY", "", "short"):
        with pytest.raises(StoreError):
            check_pickle_key(weak)
    vault.set(pickle_key_name(account.user_id), "DEFAULT_KEY")
    with pytest.raises(StoreError, match="DEFAULT_KEY"):
        await E2eeClient.open(synapse.url, vault, account.user_id, store_dir)
