"""Encrypted files from a bot, as a member's client (mautrix, not nio) receives them."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from clubs.bots.base import Bot
from clubs.bots.context import BotContext
from clubs.core.attachments import AttachmentTooLarge
from clubs.core.errors import ClubsError
from clubs.core.http import RoomId, path
from clubs.core.sealed import Sealer
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    send_text,
    simple_factory,
)
from tests.mautrix_client import MautrixPeer, Received, mautrix_peer

ICS = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//clubs//test//EN\r\nBEGIN:VEVENT\r\n"
    b"UID:session-1@clubs.test\r\nDTSTART:20270110T180000Z\r\nSUMMARY:Club evening\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n"
)


class Files(Bot):
    name = "files"


async def files_room(synapse: SynapseHarness, tmp_path: Path) -> tuple[Any, Account, str, str]:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "files")
    member = await synapse.new_user("member")
    room = await managed_room(synapse, network, invite=[account.user_id, member.user_id])
    await member.http.post(path(*CS, "join", room), {})
    return account, member, room, network


async def ready_context(ctx: BotContext, member: Account, room: str) -> None:
    if ctx.sealer is None:
        ctx.sealer = Sealer(Fernet.generate_key())
    await eventually(lambda: joined(member, room, ctx.user_id), within=20)

    async def synced() -> bool:
        return ctx.client.knows_room(RoomId(room))

    await eventually(synced, within=20)


def files_from(peer: MautrixPeer, sender: str) -> list[Received]:
    return [r for r in peer.received if r.sender == sender and r.msgtype == "m.file"]


async def files_seen(peer: MautrixPeer, sender: str) -> list[Received]:
    return files_from(peer, sender)


async def seen(peer: MautrixPeer, event_id: str) -> bool:
    return any(r.event_id == event_id for r in peer.received)


async def bot_events(member: Account, room: str, bot: str) -> list[dict[str, Any]]:
    """The messages `bot` sent into the room (encrypted or not), newest first."""
    page = await member.http.get(
        path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "100"}
    )
    return [
        e
        for e in page.get("chunk", [])
        if e.get("sender") == bot and e.get("type") in ("m.room.encrypted", "m.room.message")
    ]


async def uploads_by(synapse: SynapseHarness, user_id: str) -> list[dict[str, Any]]:
    """Every media id the user created, uploaded or only reserved."""
    listed = await synapse.admin.http.get(
        path("_synapse", "admin", "v1", "users", user_id, "media")
    )
    media = listed.get("media", [])
    return media if isinstance(media, list) else []


async def test_a_file_arrives_encrypted_and_a_retried_job_sends_it_once(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    account, member, room, network = await files_room(synapse, tmp_path)
    async with (
        bot_host(
            synapse, tmp_path, [account], {"files": simple_factory(Files())}, network=network
        ) as host,
        mautrix_peer(member, synapse.url) as peer,
    ):
        ctx = host.runtime("files").ctx
        await ready_context(ctx, member, room)
        job = ("files", "session-1", "ics")
        event_id = await ctx.send_file(RoomId(room), "session.ics", ICS, "text/calendar", job=job)
        assert event_id is not None

        got = await eventually(lambda: files_seen(peer, account.user_id), within=20)
        assert str(got[0].event_id) == event_id
        content = got[0].content
        assert "url" not in content
        assert (content["body"], content["filename"]) == ("session.ics", "session.ics")
        assert content["info"] == {"mimetype": "text/calendar", "size": len(ICS)}
        file = content["file"]
        assert file["v"] == "v2"
        assert file["key"]["alg"] == "A256CTR"
        ciphertext, plaintext = await peer.download_encrypted(file)
        assert plaintext == ICS
        assert ciphertext != ICS
        assert b"VCALENDAR" not in ciphertext  # the server holds no plaintext
        digest = hashlib.sha256(ciphertext).digest()
        assert file["hashes"]["sha256"] == base64.b64encode(digest).rstrip(b"=").decode()

        # The same job again: answered from the record, no second upload, no second event.
        assert await ctx.send_file(RoomId(room), "session.ics", ICS, "text/calendar", job=job) == (
            event_id
        )
        # A crash after the upload, before the send was recorded: the retry PUTs the same
        # ciphertext (409: already there) and sends with the same txn (Synapse deduplicates).
        await ctx.store.db.execute(
            "UPDATE attachments SET state = 'reserved', event_id = NULL WHERE bot = ?",
            ("files",),
        )
        assert await ctx.send_file(RoomId(room), "session.ics", ICS, "text/calendar", job=job) == (
            event_id
        )
        assert len(await uploads_by(synapse, account.user_id)) == 1

        marker = await send_text(peer, room, "after the retries")
        await eventually(lambda: seen(peer, marker), within=20)
        assert [str(r.event_id) for r in files_from(peer, account.user_id)] == [event_id]
        assert [e["event_id"] for e in await bot_events(member, room, account.user_id)] == [
            event_id
        ]
        assert not peer.undecryptable
        host.check_alive()


async def test_changed_bytes_on_retry_get_a_new_key_and_mxc(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    account, member, room, network = await files_room(synapse, tmp_path)
    async with bot_host(
        synapse, tmp_path, [account], {"files": simple_factory(Files())}, network=network
    ) as host:
        ctx = host.runtime("files").ctx
        await ready_context(ctx, member, room)
        job = ("files", "minutes", "1")
        first = await ctx.send_file(RoomId(room), "minutes.txt", b"draft", "text/plain", job=job)
        row = await ctx.store.db.fetchone("SELECT mxc, sealed_keys FROM attachments")
        assert row is not None
        # Crashed after the upload; the retry renders other bytes. They must not be encrypted
        # with the old key stream and uploaded: a new key and mxc, and the event stays the one.
        await ctx.store.db.execute("UPDATE attachments SET state = 'uploaded', event_id = NULL")
        again = await ctx.send_file(RoomId(room), "minutes.txt", b"final", "text/plain", job=job)
        assert again == first
        new = await ctx.store.db.fetchone("SELECT mxc, sealed_keys, state FROM attachments")
        assert new is not None
        assert new["mxc"] != row["mxc"]
        assert new["sealed_keys"] != row["sealed_keys"]
        assert new["state"] == "sent"
        assert [e["event_id"] for e in await bot_events(member, room, account.user_id)] == [first]


async def test_oversized_files_and_a_missing_sealer_are_refused_before_any_upload(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    account, member, room, network = await files_room(synapse, tmp_path)
    async with bot_host(
        synapse, tmp_path, [account], {"files": simple_factory(Files())}, network=network
    ) as host:
        ctx = host.runtime("files").ctx
        sealer, ctx.sealer = ctx.sealer, None
        with pytest.raises(ClubsError, match="needs a sealer"):
            await ctx.send_file(RoomId(room), "a.txt", b"a", "text/plain", job=("files", "x"))
        ctx.sealer = sealer
        await ready_context(ctx, member, room)
        limit = await ctx.http.get(path("_matrix", "client", "v1", "media", "config"))
        size = int(limit["m.upload.size"])
        with pytest.raises(AttachmentTooLarge, match=f"at most {size} bytes"):
            await ctx.send_file(
                RoomId(room), "big.bin", bytes(size + 1), "application/pdf", job=("files", "big")
            )
        assert await uploads_by(synapse, account.user_id) == []
        assert await bot_events(member, room, account.user_id) == []
