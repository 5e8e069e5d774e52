"""What the case store keeps: sealed and pseudonymous at rest, found by keyed terms within the
asker's clubs and network-shared cases only, once per command event, nothing left after
forgetting."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clubs.bots.cases.box import BoxError, CaseBox
from clubs.bots.cases.parse import terms_of
from clubs.bots.cases.store import CaseStore, Draft
from clubs.core.db import Database
from clubs.core.ids import UserId

USER = "@anna:test.local"
OTHER = "@boris:test.local"
CANARY = "canary-5e1f0a"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CaseStore]:
    db = await Database.open(tmp_path / "bots.db")
    try:
        yield await CaseStore.open(db, "facilitation", CaseBox(os.urandom(32)))
    finally:
        await db.close()


async def dump(store: CaseStore) -> str:
    text = []
    for table in ("cs_drafts", "cs_cases", "cs_terms"):
        rows = await store.db.fetchall(f"SELECT * FROM {table}")  # noqa: S608 - constant names
        text += [repr(tuple(r)) for r in rows]
    return "\n".join(text)


async def add(
    store: CaseStore, club: str, relation: str, tags: tuple[str, ...], source: str, **kw: bool
) -> int:
    case = await store.add(
        user=OTHER if kw.get("other") else USER,
        club=club,
        answers={"relation": relation, "topic": CANARY, "tags": ", ".join(tags)},
        tags=tags,
        terms=terms_of(relation, tags),
        named=False,
        shared=kw.get("shared", False),
        pending=kw.get("pending", False),
        month="2026-12",
        source=source,
        now=1.0,
    )
    return case.id


async def test_nothing_readable_at_rest(store: CaseStore) -> None:
    await add(store, "almaty", "мама", ("тв", "мобилизация"), "$a")
    await store.save_draft(
        Draft(store.owner(USER), "!dm:x", 2, UserId(USER), "almaty", {"topic": CANARY}), 2.0
    )
    text = await dump(store)
    for needle in (USER, CANARY, "мама", "мобилизация", "тв"):
        assert needle not in text
    (case,) = await store.mine(USER)
    assert case.answers["topic"] == CANARY
    assert case.user == USER
    draft = await store.draft(USER)
    assert draft is not None
    assert draft.answers == {"topic": CANARY}


async def test_a_sealed_case_moved_to_another_row_does_not_open(store: CaseStore) -> None:
    a = await add(store, "almaty", "мама", ("тв",), "$a")
    b = await add(store, "almaty", "папа", ("тв",), "$b", other=True)
    row = await store.db.fetchone("SELECT sealed FROM cs_cases WHERE id = ?", (a,))
    assert row is not None
    await store.db.execute("UPDATE cs_cases SET sealed = ? WHERE id = ?", (row["sealed"], b))
    with pytest.raises(BoxError):
        await store.get(b)


async def test_search_is_scoped_to_clubs_and_shared_cases(store: CaseStore) -> None:
    mine = await add(store, "almaty", "мама", ("тв", "мобилизация"), "$1")
    other_club = await add(store, "tbilisi", "мама", ("тв",), "$2", other=True)
    shared = await add(store, "tbilisi", "мать", ("тв",), "$3", other=True, shared=True)
    pending = await add(store, "almaty", "мама", ("тв",), "$4", pending=True)
    found, total = await store.search({"almaty"}, ["мама", "тв"])
    assert [c.id for c in found] == [mine]
    assert total == 1
    found, _ = await store.search({"almaty"}, ["тв"])
    assert [c.id for c in found] == [shared, mine]
    found, _ = await store.search({"tbilisi"}, ["тв"])
    assert [c.id for c in found] == [shared, other_club]
    found, _ = await store.search(set(), ["тв"])
    assert [c.id for c in found] == [shared]
    found, _ = await store.search({"almaty"}, [])
    assert pending not in [c.id for c in found]
    found, _ = await store.search({"almaty"}, ["мобилизация", "санкции"])
    assert found == []


async def test_more_results_than_shown_are_counted_and_the_newest_shown(
    store: CaseStore,
) -> None:
    ids = [await add(store, "almaty", "мама", ("тв",), f"$m{i}") for i in range(13)]
    found, total = await store.search({"almaty"}, ["тв", "мама", "тв"])  # a word twice: once
    assert total == 13
    assert [c.id for c in found] == sorted(ids, reverse=True)[:10]


async def test_a_search_reads_the_terms_through_their_index(store: CaseStore) -> None:
    """Each term is one range of `cs_terms_scope` (not a scan of the bot's terms), so a search
    over 10,000 cases takes about a millisecond (bench/cases.py)."""
    terms = [store.box.term(w) for w in ("мама", "тв")]
    one = "SELECT case_id FROM cs_terms WHERE bot = ? AND term = ? AND (club IN (?) OR shared = 1)"
    plan = await store.db.fetchall(
        f"EXPLAIN QUERY PLAN {one} INTERSECT {one}",
        ("facilitation", terms[0], "almaty", "facilitation", terms[1], "almaty"),
    )
    details = [str(r["detail"]) for r in plan]
    assert any("cs_terms_scope" in d for d in details), details
    assert not any(d.startswith("SCAN") for d in details), details


async def test_once_per_source_and_forgetting_leaves_nothing(store: CaseStore) -> None:
    first = await add(store, "almaty", "мама", ("тв",), "$same")
    again = await add(store, "almaty", "мама", ("тв",), "$same")
    assert first == again
    await add(store, "almaty", "папа", ("тв",), "$other", other=True)
    await store.save_draft(Draft(store.owner(USER), "!dm:x", 0, UserId(USER), "almaty"), 1.0)
    cases, gone = await store.forget(USER)
    assert [c.id for c in cases] == [first]
    assert gone == 2  # the case and the draft
    assert await store.mine(USER) == []
    assert await store.draft(USER) is None
    assert store.owner(USER) not in await dump(store)
    found, _ = await store.search({"almaty"}, ["тв"])
    assert [c.user for c in found] == [OTHER]
