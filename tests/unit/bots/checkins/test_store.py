"""What the check-ins store keeps: sealed at rest, once per command, and nothing left after
forgetting."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from clubs.bots.checkins.box import Box
from clubs.bots.checkins.store import CheckinStore
from clubs.bots.checkins.week import WeeklyPlan
from clubs.core.db import Database

USER = "@anna:test.local"
PLAN = WeeklyPlan(frozenset({3}), 19, 0, "Asia/Almaty")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CheckinStore]:
    db = await Database.open(tmp_path / "bots.db")
    try:
        yield await CheckinStore.open(db, "checkins", Box(os.urandom(32)))
    finally:
        await db.close()


async def test_a_replayed_win_command_adds_no_second_entry(store: CheckinStore) -> None:
    assert await store.add_win(USER, "мама спросила", 1.0, source="$e1")
    assert not await store.add_win(USER, "мама спросила", 2.0, source="$e1")
    assert await store.count_wins(USER) == 1


async def test_a_replayed_delete_command_deletes_no_second_entry(store: CheckinStore) -> None:
    for n in range(3):
        await store.add_win(USER, f"entry {n}", float(n), source=f"$add{n}")
    newest, middle, _ = await store.wins(USER, 30)
    assert await store.delete_win(USER, newest.id, source="$del", now=10.0)
    # The replay after a crash sees the list shifted: "1" is now the middle entry.
    assert not await store.delete_win(USER, middle.id, source="$del", now=11.0)
    assert [w.text for w in await store.all_wins(USER)] == ["entry 0", "entry 1"]
    # Someone else's entry is never deleted by a member's command.
    await store.add_win("@boris:test.local", "his", 1.0, source="$b")
    (his,) = await store.wins("@boris:test.local", 30)
    assert await store.delete_win(USER, his.id, source="$del2", now=12.0)
    assert await store.count_wins("@boris:test.local") == 1


async def test_saving_answers_never_undoes_what_a_job_recorded(store: CheckinStore) -> None:
    member = await store.opt_in(USER, "almaty", "ru", PLAN, 1.0)
    stale = await store.add_checkin(member.token, "almaty", "2026-10-22T19:00", "W", "!r", 1.0)
    await store.set_sent(stale.id, "$poll")
    await store.mark_reminded(stale.id)
    stale.content.answers[1] = "да"
    await store.save(replace(stale, step=2, answered=True))
    now = await store.checkin(stale.id)
    assert now is not None
    assert (now.poll_id, now.reminded, now.step, now.content.answers) == (
        "$poll",
        True,
        2,
        {1: "да"},
    )


async def test_answers_are_sealed_in_the_file(store: CheckinStore, tmp_path: Path) -> None:
    member = await store.opt_in(USER, "almaty", "ru", PLAN, 1.0)
    c = await store.add_checkin(member.token, "almaty", "2026-10-22T19:00", "W", "!r", 1.0)
    c.content.answers[1] = "secret-words-123"
    await store.save(c)
    await store.add_win(USER, "secret-win-456", 1.0, source="$w")
    await store.set_help(USER, "secret-help-789", 10.0)
    await store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for secret in (b"secret-words-123", b"secret-win-456", b"secret-help-789"):
        assert secret not in data


async def test_forgetting_leaves_no_row_about_the_member(store: CheckinStore) -> None:
    member = await store.opt_in(USER, "almaty", "ru", PLAN, 1.0)
    await store.add_checkin(member.token, "almaty", "2026-10-22T19:00", "W", "!r", 1.0)
    await store.add_checkin(member.token, "almaty", "2026-10-29T19:00", "W", "!r", 2.0)
    await store.add_win(USER, "шаг", 1.0, source="$w")
    await store.set_supporter("almaty", USER, True, 1.0)
    await store.set_help(USER, "текст", 10.0)
    digest = await store.set_digest(USER, "Asia/Almaty", "ru")
    other = await store.opt_in("@boris:test.local", "almaty", "ru", PLAN, 1.0)
    gone = await store.forget(USER)
    assert (gone.schedule, gone.checkins, gone.wins, gone.supporter, gone.help) == (
        True,
        2,
        1,
        1,
        1,
    )
    assert set(gone.tokens) == {member.token, digest.token}
    for table in ("ci_members", "ci_checkins", "ci_wins", "ci_supporters", "ci_help", "ci_digests"):
        rows = await store.db.fetchall(f"SELECT * FROM {table}")  # noqa: S608 - constant names
        text = " ".join(str(tuple(r)) for r in rows)
        assert USER not in text
        assert member.token not in text
        assert digest.token not in text
    assert await store.member("@boris:test.local") == other
