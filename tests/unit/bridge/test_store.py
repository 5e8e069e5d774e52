"""The bridge's store: one acceptance per transaction, ids only in the map, migration, pruning."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.bridge.store import MAP_KEEP_S, TXN_KEEP_S, BridgeStore, PortalRow, Sent
from clubs.core.db import Database
from clubs.core.ids import EventId, RoomId
from clubs.core.sealed import Sealer

ROOM = RoomId("!room")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[BridgeStore]:
    db = await Database.open(tmp_path / "bridge.db")
    yield await BridgeStore.open(db, Sealer(Fernet.generate_key()))
    await db.close()


def event(n: int) -> dict[str, object]:
    return {"event_id": f"$e{n}", "room_id": ROOM, "type": "m.room.message", "content": {}}


async def test_a_transaction_is_accepted_once(store: BridgeStore) -> None:
    assert await store.accept("1", [event(1), event(2)]) is True
    assert await store.accept("1", [event(3)]) is False
    assert [i.event["event_id"] for i in await store.due(time.time())] == ["$e1", "$e2"]


async def test_a_handled_event_leaves_the_inbox_with_its_effects(store: BridgeStore) -> None:
    await store.accept("1", [event(1)])
    [item] = await store.due(time.time())
    await store.record([Sent(EventId("$e0"), 0, ROOM, -5, 9, "matrix")])
    await store.done(item.seq, forget=["$e0"])
    assert await store.inbox_size() == 0
    assert await store.parts_of("$e0") == []


async def test_a_postponed_event_waits_for_its_time_and_its_room_with_it(
    store: BridgeStore,
) -> None:
    other = {**event(3), "room_id": "!other"}
    await store.accept("1", [event(1), event(2), other])
    first, *_ = await store.due(time.time())
    await store.postpone(first.seq, ROOM, time.time() + 60)
    assert [i.event["event_id"] for i in await store.due(time.time())] == ["$e3"]
    later = await store.due(time.time() + 61)
    assert [i.event["event_id"] for i in later] == ["$e1", "$e2", "$e3"]
    assert [i.attempts for i in later] == [1, 0, 0]
    await store.accept("2", [event(4)])  # arrives later: still behind the room's first
    assert [i.event["event_id"] for i in await store.due(time.time())] == ["$e3"]


async def test_a_migrated_chat_takes_its_portals_and_messages(store: BridgeStore) -> None:
    await store.set_portal(PortalRow(ROOM, -5, "relay", "almaty", "general", "active"))
    await store.record([Sent(EventId("$e1"), 0, ROOM, -5, 9, "telegram")])
    assert await store.move_chat(-5, -1005) == 1
    [portal] = await store.portals()
    assert portal.chat_id == -1005
    found = await store.event_of(-1005, 9)
    assert found is not None
    assert found.event_id == "$e1"


async def test_old_map_rows_and_transactions_are_pruned(store: BridgeStore) -> None:
    await store.accept("old", [])
    await store.record([Sent(EventId("$e1"), 0, ROOM, -5, 9, "matrix")])
    await store.prune(time.time() + max(MAP_KEEP_S, TXN_KEEP_S) + 1)
    assert await store.parts_of("$e1") == []
    assert not await store.txn_seen("old")


async def test_a_row_that_cannot_be_opened_never_blocks_the_others(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "other.db")
    try:
        first = await BridgeStore.open(db, Sealer(Fernet.generate_key()))
        await first.accept("1", [event(1)])
        rekeyed = BridgeStore(db, Sealer(Fernet.generate_key()))  # a vault restored wrongly
        await rekeyed.accept("2", [event(2)])
        assert [i.event["event_id"] for i in await rekeyed.due(time.time())] == ["$e2"]
        assert await rekeyed.inbox_size() == 1
    finally:
        await db.close()
