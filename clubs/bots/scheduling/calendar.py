"""A series as an iCalendar file (RFC 5545): what a member imports into their own calendar. Pure.

The event carries the series' wall time in its IANA zone with the zone's VTIMEZONE (so calendar
apps keep 19:00 across daylight-saving changes, as the bot does), the rule, the cancelled
occurrences as EXDATE, the duration, and in the description the kind, the call link of an online
session and the materials link. Never the venue's address: a file outlives the chat on people's
devices and in their calendar accounts; the address comes by DM to people with a place.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import icalendar

from clubs.bots.scheduling.recurrence import parse_key, zone
from clubs.bots.scheduling.store import Series

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


def series_ics(
    series: Series,
    cancelled: Iterable[str],
    *,
    lang: str,
    uid_domain: str,
    now: float,
    place: str | None = None,
) -> bytes:
    """The series as a one-event VCALENDAR; `cancelled` are occurrence keys."""
    tz = zone(series.tz)
    lang = "ru" if lang.startswith("ru") else "en"
    start = parse_key(series.start_local).replace(tzinfo=tz)
    event = icalendar.Event()
    event.add("uid", f"clubs-series-{series.id}@{uid_domain}")
    event.add("dtstamp", datetime.fromtimestamp(now, UTC))
    event.add("summary", series.title)
    event.add("dtstart", start)
    event.add("duration", timedelta(seconds=series.duration_s))
    if series.rrule:
        event.add("rrule", icalendar.vRecur.from_ical(series.rrule))
        skipped = sorted(parse_key(k).replace(tzinfo=tz) for k in cancelled)
        if skipped:
            event.add("exdate", skipped)
    lines = [KIND_WORDS[lang].get(series.kind, series.kind)]
    if series.online and series.link:
        lines.append(series.link)
        event.add("url", series.link)
    elif not series.online:
        lines.append(ADDRESS_NOTE[lang])
        if place:
            event.add("location", place)
    if series.materials:
        lines.append(series.materials)
    event.add("description", "\n".join(lines))
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add_component(event)
    cal.add_missing_timezones()
    data: bytes = cal.to_ical()
    return data
