"""A series as an .ics file: its zone's wall time, rule, cancellations; never the address."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar

from clubs.bots.scheduling.calendar import FeedEntry, feed_ics, series_ics
from clubs.bots.scheduling.store import Changes, Series
from clubs.core.ids import RoomId, UserId


def series(**kw: object) -> Series:
    base: dict[str, object] = {
        "id": 3,
        "source": "$command",
        "club": "almaty",
        "room_id": RoomId("!r:hs"),
        "kind": "lecture",
        "tz": "Asia/Almaty",
        "start_local": "2026-12-10T19:00",
        "rrule": "FREQ=WEEKLY;BYDAY=TH",
        "duration_s": 5400,
        "online": False,
        "capacity": 20,
        "title": "Как говорить с родителями",
        "link": None,
        "venue": "ул. Абая 10, кв. 5",
        "materials": "https://example.org/slides",
        "created_by": UserId("@anna:hs"),
        "state": "active",
    }
    return Series(**{**base, **kw})  # type: ignore[arg-type]


def event_of(data: bytes) -> icalendar.Event:
    (event,) = icalendar.Calendar.from_ical(data).walk("VEVENT")
    return event


def test_a_weekly_series_keeps_its_wall_time_zone_rule_and_cancellations() -> None:
    data = series_ics(
        series(),
        Changes(skipped=frozenset({"2026-12-17T19:00"})),
        lang="ru",
        uid_domain="hs",
        now=1.8e9,
        place="Алматы",
    )
    event = event_of(data)
    almaty = ZoneInfo("Asia/Almaty")
    assert event.decoded("dtstart") == datetime(2026, 12, 10, 19, 0, tzinfo=almaty)
    assert event["dtstart"].params["TZID"] == "Asia/Almaty"
    assert event.decoded("duration") == timedelta(minutes=90)
    assert event["rrule"].to_ical() == b"FREQ=WEEKLY;BYDAY=TH"
    exdates = [d.dt for d in event["exdate"].dts]
    assert exdates == [datetime(2026, 12, 17, 19, 0, tzinfo=almaty)]
    assert str(event["summary"]) == "Как говорить с родителями"
    assert str(event["uid"]) == "clubs-series-3@hs"
    assert str(event["location"]) == "Алматы"
    assert b"BEGIN:VTIMEZONE" in data
    assert "Абая".encode() not in data  # the venue never goes into a file
    assert "Лекция" in str(event["description"])


def test_an_online_one_off_carries_its_link_and_no_rule() -> None:
    data = series_ics(
        series(rrule=None, online=True, link="https://meet.example/abc", venue=None, capacity=None),
        Changes(),
        lang="en",
        uid_domain="hs",
        now=1.8e9,
    )
    event = event_of(data)
    assert "rrule" not in event
    assert str(event["url"]) == "https://meet.example/abc"
    assert "https://meet.example/abc" in str(event["description"])
    assert "location" not in event


def test_a_moved_occurrence_is_an_exdate_at_its_slot_and_an_rdate_at_its_new_time() -> None:
    moved = Changes(skipped=frozenset({"2026-12-17T19:00"}), added=frozenset({"2026-12-18T19:30"}))
    event = event_of(series_ics(series(), moved, lang="en", uid_domain="hs", now=1.8e9))
    almaty = ZoneInfo("Asia/Almaty")
    assert [d.dt for d in event["exdate"].dts] == [datetime(2026, 12, 17, 19, 0, tzinfo=almaty)]
    assert [d.dt for d in event["rdate"].dts] == [datetime(2026, 12, 18, 19, 30, tzinfo=almaty)]


def test_a_moved_one_off_starts_at_its_new_time() -> None:
    moved = Changes(skipped=frozenset({"2026-12-10T19:00"}), added=frozenset({"2026-12-11T18:00"}))
    event = event_of(series_ics(series(rrule=None), moved, lang="en", uid_domain="hs", now=1.8e9))
    almaty = ZoneInfo("Asia/Almaty")
    assert event.decoded("dtstart") == datetime(2026, 12, 11, 18, 0, tzinfo=almaty)
    assert "rdate" not in event
    assert "exdate" not in event


def test_a_members_feed_has_each_series_and_the_address_only_where_they_hold_a_place() -> None:
    weekly = series(venue="ул. Абая 10")
    lecture = series(id=4, rrule=None, online=True, link="https://meet.example/x", venue=None)
    data = feed_ics(
        [
            FeedEntry(weekly, Changes(), "Алматы", {"2026-12-17T19:00": "ул. Абая 10"}),
            FeedEntry(lecture, Changes()),
        ],
        lang="ru",
        uid_domain="hs",
        now=1.8e9,
    )
    events = icalendar.Calendar.from_ical(data).walk("VEVENT")
    almaty = ZoneInfo("Asia/Almaty")
    by_uid: dict[str, list[icalendar.Event]] = {}
    for e in events:
        by_uid.setdefault(str(e["uid"]), []).append(e)
    series_event, override = by_uid["clubs-series-3@hs"]
    assert str(series_event["location"]) == "Алматы"  # the club, not the address
    assert override.decoded("recurrence-id") == datetime(2026, 12, 17, 19, 0, tzinfo=almaty)
    assert str(override["location"]) == "ул. Абая 10"
    (online,) = by_uid["clubs-series-4@hs"]
    assert "location" not in online
    assert data.count("ул. Абая 10".encode()) == 1  # in the one override only
    assert "ул. Абая 10" not in repr(FeedEntry(weekly, Changes(), None, {"k": "ул. Абая 10"}))
