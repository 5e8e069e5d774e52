"""File-send records: key material sealed at rest, states per job, pruning."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.bots.attachstore import AttachmentState, AttachmentStore
from clubs.core.attachments import encrypt
from clubs.core.db import Database
from clubs.core.ids import EventId, RoomId
from clubs.core.sealed import Sealer, SealError

ROOM = RoomId("!room:clubs.test")
MXC = "mxc://clubs.test/reserved1"


async def test_keys_are_sealed_at_rest_and_come_back(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "bots.db")
    store = await AttachmentStore.open(db, "scheduling", Sealer(Fernet.generate_key()))
    keys = encrypt(b"BEGIN:VCALENDAR").keys
    await store.record("txn-1", ROOM, MXC, keys, now=1000.0)
    record = await store.find("txn-1")
    assert record is not None
    assert (record.room_id, record.mxc, record.keys) == (ROOM, MXC, keys)
    assert (record.state, record.event_id) == (AttachmentState.RESERVED, None)
    assert await store.find("txn-2") is None
    await db.close()
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("bots.db"))
    assert MXC.encode() in raw  # the ids stay clear: the check below looks at the right bytes
    for secret in (keys.key, keys.iv[:8], base64.urlsafe_b64encode(keys.key).rstrip(b"=")):
        assert secret not in raw


async def test_states_follow_the_send_and_a_new_attempt_replaces_the_old(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "bots.db")
    store = await AttachmentStore.open(db, "scheduling", Sealer(Fernet.generate_key()))
    other_bot = await AttachmentStore.open(db, "facilitation", Sealer(Fernet.generate_key()))
    await store.record("txn-1", ROOM, MXC, encrypt(b"a").keys, now=1000.0)
    await store.mark_uploaded("txn-1")
    assert (await store.find("txn-1")).state is AttachmentState.UPLOADED  # type: ignore[union-attr]
    await store.mark_sent("txn-1", EventId("$sent"))
    sent = await store.find("txn-1")
    assert sent is not None
    assert (sent.state, sent.event_id) == (AttachmentState.SENT, "$sent")
    assert await other_bot.find("txn-1") is None
    fresh = encrypt(b"b").keys
    await store.record("txn-1", ROOM, "mxc://clubs.test/reserved2", fresh, now=1001.0)
    again = await store.find("txn-1")
    assert again is not None
    assert (again.mxc, again.keys, again.state, again.event_id) == (
        "mxc://clubs.test/reserved2",
        fresh,
        AttachmentState.RESERVED,
        None,
    )
    await db.close()


async def test_another_key_cannot_open_the_records(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "bots.db")
    writer = await AttachmentStore.open(db, "b", Sealer(Fernet.generate_key()))
    await writer.record("txn-1", ROOM, MXC, encrypt(b"a").keys, now=1000.0)
    with pytest.raises(SealError):
        await AttachmentStore(db, "b", Sealer(Fernet.generate_key())).find("txn-1")
    await db.close()


async def test_old_records_are_pruned(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "bots.db")
    store = await AttachmentStore.open(db, "b", Sealer(Fernet.generate_key()))
    await store.record("old", ROOM, MXC, encrypt(b"a").keys, now=1000.0)
    await store.record("new", ROOM, MXC, encrypt(b"b").keys, now=1000.0 + 3 * 24 * 3600)
    assert await store.prune(now=1000.0 + 3 * 24 * 3600) == 1
    assert await store.find("old") is None
    assert await store.find("new") is not None
    await db.close()
