"""A series as an iCalendar file (RFC 5545): what a member imports into their own calendar. Pure.

The event carries the series' wall time in its IANA zone with the zone's VTIMEZONE (so calendar
apps keep 19:00 across daylight-saving changes, as the bot does), the rule, the cancelled or
moved occurrences as EXDATE and the moved ones' new times as RDATE, the duration, and in the
description the kind, the call link of an online session and the materials link. Never the
venue's address in an `.ics` file: a file outlives the chat on people's devices and in their
calendar accounts; the address comes by DM to people with a place. A member's own feed
(`feed_ics`, fetched with their secret link) adds it, as an override of the occurrences where
they hold a place, and only there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import icalendar

from clubs.bots.scheduling.recurrence import parse_key, zone
from clubs.bots.scheduling.store import Changes, Series

PRODID = "-//Matrix Clubs//scheduling//EN"
KIND_WORDS = {
    "ru": {
        "meeting": "Встреча",
        "lecture": "Лекция",
        "seminar": "Семинар",
        "training": "Тренинг",
    },
    "en": {
        "meeting": "Meeting",
        "lecture": "Lecture",
        "seminar": "Seminar",
        "training": "Training",
    },
}
ADDRESS_NOTE = {
    "ru": "Адрес приходит в личном сообщении тем, у кого есть место.",
    "en": "The address comes by direct message to people with a place.",
}


@dataclass(frozen=True)
class FeedEntry:
    """One series in a member's calendar feed, with the occurrences whose address they may see
    (offline ones where they hold a place): occurrence key → address."""

    series: Series
    changes: Changes
    place: str | None = None
    """The club's name, the location of an offline session without its address."""
    addresses: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # addresses never reach a log through a repr
        return f"FeedEntry(series={self.series.id}, addresses={len(self.addresses)})"


def series_ics(
    series: Series,
    changes: Changes,
    *,
    lang: str,
    uid_domain: str,
    now: float,
    place: str | None = None,
) -> bytes:
    """The series as a one-event VCALENDAR (never an address)."""
    return _calendar(
        _events(FeedEntry(series, changes, place), lang=lang, uid_domain=uid_domain, now=now)
    )


def feed_ics(entries: Iterable[FeedEntry], *, lang: str, uid_domain: str, now: float) -> bytes:
    """A member's calendar: every series of their clubs, and for each occurrence where they
    hold a place, an override (RECURRENCE-ID) carrying the address as its LOCATION."""
    events = []
    for entry in entries:
        events += _events(entry, lang=lang, uid_domain=uid_domain, now=now)
    return _calendar(events)


def _calendar(events: list[icalendar.Event]) -> bytes:
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    for event in events:
        cal.add_component(event)
    cal.add_missing_timezones()
    data: bytes = cal.to_ical()
    return data


def _events(entry: FeedEntry, *, lang: str, uid_domain: str, now: float) -> list[icalendar.Event]:
    series, changes = entry.series, entry.changes
    tz = zone(series.tz)
    lang = "ru" if lang.startswith("ru") else "en"
    start = parse_key(series.start_local).replace(tzinfo=tz)
    added = sorted(parse_key(k).replace(tzinfo=tz) for k in changes.added)
    if not series.rrule and added:
        start = added.pop(0)  # a one-off session that was moved
    uid = f"clubs-series-{series.id}@{uid_domain}"
    event = icalendar.Event()
    event.add("uid", uid)
    event.add("dtstamp", datetime.fromtimestamp(now, UTC))
    event.add("summary", series.title)
    event.add("dtstart", start)
    event.add("duration", timedelta(seconds=series.duration_s))
    if series.rrule:
        event.add("rrule", icalendar.vRecur.from_ical(series.rrule))
        skipped = sorted(parse_key(k).replace(tzinfo=tz) for k in changes.skipped)
        if skipped:
            event.add("exdate", skipped)
        if added:
            event.add("rdate", added)
    lines = [KIND_WORDS[lang].get(series.kind, series.kind)]
    if series.online and series.link:
        lines.append(series.link)
        event.add("url", series.link)
    elif not series.online:
        lines.append(ADDRESS_NOTE[lang])
        if entry.place:
            event.add("location", entry.place)
    if series.materials:
        lines.append(series.materials)
    event.add("description", "\n".join(lines))
    events = [event]
    for key, address in sorted(entry.addresses.items()):
        if series.online:
            continue
        at = parse_key(key).replace(tzinfo=tz)
        override = icalendar.Event()
        override.add("uid", uid)
        override.add("dtstamp", datetime.fromtimestamp(now, UTC))
        if series.rrule:
            override.add("recurrence-id", at)
        override.add("summary", series.title)
        override.add("dtstart", at)
        override.add("duration", timedelta(seconds=series.duration_s))
        override.add("location", address)
        override.add("description", KIND_WORDS[lang].get(series.kind, series.kind))
        if not series.rrule:
            events = [override]  # a one-off: the event itself, with its address
        else:
            events.append(override)
    return events
