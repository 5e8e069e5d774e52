"""The moderation store: mutes, locks, cursor, processed reports, audit, policy rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clubs.bots.moderation.reports import parse_report
from clubs.bots.moderation.store import AuditEntry, Lock, ModerationStore, Mute
from clubs.core.db import Database
from clubs.core.http import RoomId, UserId

ROOM = RoomId("!r")
ANNA = UserId("@anna:c.example")
BOT = UserId("@bot:c.example")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ModerationStore]:
    db = await Database.open(tmp_path / "mod.db")
    yield await ModerationStore.open(db)
    await db.close()


async def test_mutes_are_due_in_order_and_survive_reopening(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "mod.db")
    s = await ModerationStore.open(db)
    await s.put_mute(Mute(ROOM, ANNA, None, -1, 200.5))
    await s.put_mute(Mute(RoomId("!b"), ANNA, 7, -1, 100.0))
    await db.close()
    db = await Database.open(tmp_path / "mod.db")
    s = await ModerationStore.open(db)
    assert await s.next_mute_due() == 100.0
    assert [m.room_id for m in await s.due_mutes(150)] == ["!b"]
    assert await s.find_mute(ROOM, ANNA) == Mute(ROOM, ANNA, None, -1, 200.5)
    await s.delete_mute(ROOM, ANNA)
    assert [m.previous_level for m in await s.mutes()] == [7]
    await db.close()


async def test_lock_keeps_the_previous_join_rules_as_they_were(store: ModerationStore) -> None:
    restricted = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}
    await store.put_lock(Lock(ROOM, {"join_rule": "public"}, 1.0))
    await store.put_lock(Lock(ROOM, restricted, 2.0))
    lock = await store.find_lock(ROOM)
    assert lock == Lock(ROOM, restricted, 2.0)
    await store.delete_lock(ROOM)
    assert await store.locks() == []


async def test_report_cursor_and_processed_ids(store: ModerationStore) -> None:
    assert await store.cursor() == 0
    await store.set_cursor(12)
    assert await store.cursor() == 12
    await store.mark_report_processed(3, 1.0)
    await store.mark_report_processed(3, 2.0)
    assert await store.processed_reports([1, 3, 5]) == {3}
    assert await store.processed_reports([]) == set()


async def test_history_is_newest_first_per_target(store: ModerationStore) -> None:
    for at, action in ((1.0, "mute"), (3.0, "ban"), (2.0, "unmute")):
        await store.record(AuditEntry(BOT, action, ANNA, ROOM, "why", "command", at))
    await store.record(AuditEntry(BOT, "kick", "@other:x", ROOM, None, "protection", 4.0))
    history = await store.history(ANNA, limit=2)
    assert [(e.action, e.at) for e in history] == [("ban", 3.0), ("unmute", 2.0)]
    assert history[0].id is not None


async def test_policy_room_cache(store: ModerationStore) -> None:
    assert await store.find_policy_room("net", "bans") is None
    await store.set_policy_room("net", "bans", RoomId("!p"))
    await store.set_policy_room("net", "bans", RoomId("!q"))
    assert await store.find_policy_room("net", "bans") == "!q"


def test_malformed_report_entries_are_skipped() -> None:
    good = {
        "id": 4,
        "room_id": "!r",
        "event_id": "$e",
        "user_id": "@rep:x",
        "sender": "@bad:x",
        "reason": "why",
        "received_ts": 5,
    }
    report = parse_report(good)
    assert report is not None
    assert (report.report_id, report.sender, report.reason) == (4, "@bad:x", "why")
    assert parse_report({**good, "id": "4"}) is None
    assert parse_report({**good, "room_id": None}) is None
    assert parse_report([good]) is None
    missing = parse_report({**good, "sender": None, "reason": None})
    assert missing is not None
    assert (missing.sender, missing.reason) == (None, None)
