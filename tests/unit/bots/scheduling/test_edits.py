"""The pure parts of editing a series: a time alone, a rule cut off where a split begins, and
the store's record of moves, re-keyed occurrences and resolved commands."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.bots.scheduling.recurrence import RuleError, occurrences, with_until
from clubs.bots.scheduling.store import Changes, NewSeries, Occurrence, ScheduleStore
from clubs.bots.scheduling.when import parse_clock
from clubs.core.db import Database
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.sealed import Sealer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19:30", time(19, 30)),
        ("в 19:30", time(19, 30)),
        ("в 19.30", time(19, 30)),
        ("at 7pm", time(19, 0)),
        ("at 7:15 pm", time(19, 15)),
        ("10.12", None),  # a date to people, not 10:12
        ("завтра в 19:00", None),
        ("every Wednesday 18:30", None),
        ("11.12 19:30", None),
        ("25:00", None),
        ("", None),
        ("soon", None),
    ],
)
def test_a_time_alone_is_read_and_anything_more_is_left_to_the_phrase_reader(
    text: str, expected: time | None
) -> None:
    assert parse_clock(text) == expected


def test_a_rule_cut_off_ends_the_minute_before_the_split_and_keeps_the_rest() -> None:
    cut = with_until("FREQ=WEEKLY;BYDAY=TH;COUNT=20", datetime(2026, 12, 17, 18, 59))
    assert cut == "FREQ=WEEKLY;BYDAY=TH;UNTIL=20261217T185900"
    start = datetime(2026, 12, 3, 19, 0)
    after = datetime(2026, 12, 1, tzinfo=UTC)
    left = occurrences(start, "Asia/Almaty", cut, after=after, limit=10)
    assert [o.local.day for o in left] == [3, 10]
    assert with_until("FREQ=WEEKLY;UNTIL=20270101", datetime(2026, 12, 9, 0, 0)).endswith(
        "UNTIL=20261209T000000"
    )
    with pytest.raises(RuleError):
        with_until("FREQ=SECONDLY", datetime(2026, 12, 9, 0, 0))


async def store(tmp_path: Path) -> tuple[Database, ScheduleStore]:
    db = await Database.open(tmp_path / "s.db")
    return db, await ScheduleStore.open(db, "scheduling", Sealer(Fernet.generate_key()))


def new_series() -> NewSeries:
    return NewSeries(
        club="c1",
        room_id=RoomId("!s:hs"),
        kind="meeting",
        tz="Europe/Berlin",
        start_local="2026-12-10T19:00",
        rrule="FREQ=WEEKLY;BYDAY=TH",
        duration_s=7200,
        online=True,
        capacity=None,
        title="Evening",
        link="https://meet.example/x",
        venue=None,
        materials=None,
        created_by=UserId("@f:hs"),
    )


async def test_a_moved_occurrence_skips_its_slot_and_moving_it_again_keeps_one_new_time(
    tmp_path: Path,
) -> None:
    db, s = await store(tmp_path)
    try:
        series = await s.add_series(new_series(), source="$cmd", now=0.0)
        await s.move(series.id, "2026-12-17T19:00", "2026-12-18T19:30")
        assert await s.changes(series.id) == Changes(
            frozenset({"2026-12-17T19:00"}), frozenset({"2026-12-18T19:30"})
        )
        await s.move(series.id, "2026-12-18T19:30", "2026-12-19T12:00")
        assert await s.changes(series.id) == Changes(
            frozenset({"2026-12-17T19:00"}), frozenset({"2026-12-19T12:00"})
        )
        assert await s.cancel(series.id, "2026-12-19T12:00")
        changes = await s.changes(series.id)
        assert changes.added == frozenset()
        assert "2026-12-17T19:00" in changes.skipped
    finally:
        await db.close()


async def test_a_rekeyed_occurrence_takes_its_posts_and_places_and_a_new_generation(
    tmp_path: Path,
) -> None:
    db, s = await store(tmp_path)
    try:
        series = await s.add_series(new_series(), source="$cmd", now=0.0)
        old = Occurrence(
            series.id,
            "2026-12-17T19:00",
            1.0,
            RoomId("!a:hs"),
            EventId("$ann"),
            RoomId("!s:hs"),
            EventId("$poll"),
            "upcoming",
        )
        await s.record_occurrence(old)
        await s.set_places(series.id, old.occ_key, {UserId("@m:hs"): ("confirmed", "$v")})
        moved = await s.rekey_occurrence(old, series.id, "2026-12-18T19:30", 2.0)
        assert (moved.occ_key, moved.start_utc, moved.gen) == ("2026-12-18T19:30", 2.0, 1)
        assert moved.announce_event == "$ann"
        assert moved.poll_event == "$poll"
        assert await s.occurrence(series.id, old.occ_key) is None
        assert await s.places(series.id, moved.occ_key) == {UserId("@m:hs"): ("confirmed", "$v")}
        assert await s.occurrence_by_poll("$poll") == moved
    finally:
        await db.close()


async def test_a_command_resolves_once_and_a_replay_gets_the_first_intent(tmp_path: Path) -> None:
    db, s = await store(tmp_path)
    try:
        first = await s.resolve("$cmd", {"key": "2026-12-17T19:00"}, now=10.0)
        again = await s.resolve("$cmd", {"key": "2026-12-24T19:00"}, now=11.0)
        assert first == again == {"key": "2026-12-17T19:00"}
        assert await s.prune_commands(before=5.0) == 0
        assert await s.prune_commands(before=20.0) == 1
        assert await s.resolved("$cmd") is None
    finally:
        await db.close()
