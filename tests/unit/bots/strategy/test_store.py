"""What the strategies store keeps: sealed and pseudonymous at rest, once per command event,
bound to its owner, and nothing left after forgetting."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clubs.bots.strategy.box import BoxError, StrategyBox
from clubs.bots.strategy.store import StrategyStore
from clubs.core.db import Database
from clubs.core.ids import UserId

USER = "@anna:test.local"
OTHER = "@boris:test.local"
FAC = UserId("@fac:test.local")
CANARY = "canary-label-5e1f"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StrategyStore]:
    db = await Database.open(tmp_path / "bots.db")
    try:
        yield await StrategyStore.open(db, "facilitation", StrategyBox(os.urandom(32)))
    finally:
        await db.close()


async def dump(store: StrategyStore) -> str:
    text = []
    for table in ("st_members", "st_people", "st_entries", "st_shares", "st_updates"):
        rows = await store.db.fetchall(f"SELECT * FROM {table}")  # noqa: S608 - constant names
        text += [repr(tuple(r)) for r in rows]
    return "\n".join(text)


async def test_nothing_readable_at_rest(store: StrategyStore) -> None:
    await store.ensure_member(USER, "ru", 1.0)
    person = await store.add_person(USER, "almaty", "spring", CANARY, 1.0, source="$a")
    await store.set_field(USER, person, "goal", CANARY + " goal", 2.0)
    await store.add_entry(USER, person, 3.0, 4, CANARY + " note", 3.0, source="$b")
    await store.share(USER, person, FAC, 4.0)
    await store.record_update(USER, "almaty", "spring", "2026-12", source="$b")
    text = await dump(store)
    assert CANARY not in text
    assert USER not in text
    assert "anna" not in text
    assert str(FAC) not in text
    (got,) = await store.people(USER)
    assert (got.label, got.fields["goal"]) == (CANARY, CANARY + " goal")
    (entry,) = await store.entries(USER, got)
    assert (entry.level, entry.note) == (4, CANARY + " note")


async def test_a_replayed_command_adds_once_and_numbers_are_stable(store: StrategyStore) -> None:
    first = await store.add_person(USER, "c", "k", "мама", 1.0, source="$1")
    again = await store.add_person(USER, "c", "k", "мама", 2.0, source="$1")
    second = await store.add_person(USER, "c", "k", "папа", 3.0, source="$2")
    assert (first.no, again.no, second.no) == (1, 1, 2)
    assert await store.add_entry(USER, first, 1.0, 3, "", 1.0, source="$3")
    assert not await store.add_entry(USER, first, 1.0, 3, "", 1.0, source="$3")
    await store.delete_person(USER, first)
    third = await store.add_person(USER, "c", "k", "тётя", 4.0, source="$4")
    assert third.no == 3
    assert [p.no for p in await store.people(USER)] == [2, 3]
    assert await store.people(OTHER) == []
    assert await store.person(OTHER, 2) is None


async def test_a_row_moved_to_another_member_does_not_open(store: StrategyStore) -> None:
    await store.add_person(USER, "c", "k", "мама", 1.0, source="$1")
    await store.add_person(OTHER, "c", "k", "папа", 1.0, source="$2")
    await store.db.execute(
        "UPDATE st_people SET sealed = (SELECT sealed FROM st_people WHERE source = '$1') "
        "WHERE source = '$2'"
    )
    with pytest.raises(BoxError):
        await store.people(OTHER)


async def test_shares_are_found_by_the_viewer_and_go_with_the_person(
    store: StrategyStore,
) -> None:
    person = await store.add_person(USER, "c", "k", "мама", 1.0, source="$1")
    share = await store.share(USER, person, FAC, 2.0)
    assert await store.share(USER, person, FAC, 3.0) == share
    assert [s.code for s in await store.shares_for(FAC)] == [share.code]
    assert await store.shares_for(USER) == []
    await store.add_view(share, "!dm:test.local", "$view")
    found = await store.share_by_code(share.code)
    assert found is not None
    assert found.views == [("!dm:test.local", "$view")]
    (gone,) = await store.unshare(USER, person)
    assert gone.views == [("!dm:test.local", "$view")]
    assert await store.share_by_code(share.code) is None


async def test_forget_leaves_no_row_of_the_member(store: StrategyStore) -> None:
    await store.ensure_member(USER, "ru", 1.0)
    await store.set_nudge(USER, True, 1.0)
    person = await store.add_person(USER, "c", "k", "мама", 1.0, source="$1")
    await store.add_entry(USER, person, 1.0, 3, "n", 1.0, source="$2")
    await store.record_update(USER, "c", "k", "2026-12", source="$2")
    await store.share(USER, person, FAC, 1.0)
    kept = await store.add_person(OTHER, "c", "k", "папа", 1.0, source="$3")
    await store.share(OTHER, kept, UserId(USER), 1.0)  # shared *with* the member as facilitator
    await store.record_update(OTHER, "c", "k", "2026-12", source="$3")
    gone = await store.forget(USER)
    assert (gone.people, gone.entries, gone.updates, len(gone.shares)) == (1, 1, 1, 2)
    owner = store.owner(USER)
    assert owner not in await dump(store)
    assert await store.member(USER) is None
    assert [p.label for p in await store.people(OTHER)] == ["папа"]
    assert len(await store.updates(["c"], "2026-01")) == 1
