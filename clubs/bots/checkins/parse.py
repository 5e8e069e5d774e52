"""What members type after `!checkin` / `!чекин`, in Russian or English. Pure.

    !checkin on [days] [time] [zone]   вкл   opt in (default: Thursday 19:00 in the club's zone)
    !checkin off                       выкл  opt out (the schedule is deleted)
    !checkin pause <weeks>             пауза  no check-ins for 1..12 weeks
    !checkin back                      вернуть  check-ins again from the next slot
    !checkin alert on|off              сигнал вкл|выкл  consent: mood 1 twice in a row tells
                                       the club's peer supporters
    !checkin stats                     итоги  facilitators: the club's weekly aggregates
    !checkin lang ru|en                язык ru|en  the language the bot writes to the member in
    !checkin                           статус  what is set now

Days: `mon,thu` / `пн,чт` (also full names, separated by commas or blanks); time `19:00`,
`9:30` or `19.00`; zone an IANA name (`Asia/Almaty`). A club's key may be added when the member
is in several clubs. Anything else is refused with the reason, and nothing is changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from clubs.bots.checkins.week import is_zone

DEFAULT_DAYS = frozenset({3})  # Thursday
DEFAULT_HOUR, DEFAULT_MINUTE = 19, 0
MAX_PAUSE_WEEKS = 12
MAX_TOKENS = 16

_DAY_WORDS: dict[str, int] = {}
for _i, _words in enumerate(
    (
        ("mon", "monday", "пн", "пон", "понедельник", "понедельникам"),
        ("tue", "tuesday", "вт", "вторник", "вторникам"),
        ("wed", "wednesday", "ср", "среда", "среду", "средам"),
        ("thu", "thursday", "чт", "четверг", "четвергам"),
        ("fri", "friday", "пт", "пятница", "пятницу", "пятницам"),
        ("sat", "saturday", "сб", "суббота", "субботу", "субботам"),
        ("sun", "sunday", "вс", "воскресенье", "воскресеньям"),
    )
):
    for _w in _words:
        _DAY_WORDS[_w] = _i

_ACTIONS = {
    "on": "on",
    "вкл": "on",
    "включить": "on",
    "off": "off",
    "выкл": "off",
    "выключить": "off",
    "pause": "pause",
    "пауза": "pause",
    "back": "back",
    "вернуть": "back",
    "снова": "back",
    "alert": "alert",
    "сигнал": "alert",
    "stats": "stats",
    "итоги": "stats",
    "status": "status",
    "статус": "status",
    "lang": "lang",
    "language": "lang",
    "язык": "lang",
}
_LANGS = {"ru": "ru", "рус": "ru", "русский": "ru", "en": "en", "англ": "en", "english": "en"}
_ON_OFF = {"on": True, "вкл": True, "off": False, "выкл": False}
_TIME = re.compile(r"([01]?\d|2[0-3])[:.]([0-5]\d)")
_CLUB_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class CheckinUsage(Exception):
    """The words do not make a check-in command; `problem` names the part for the reply."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class OptIn:
    days: frozenset[int]
    hour: int
    minute: int
    tz: str | None
    club: str | None


@dataclass(frozen=True)
class Simple:
    """`off`, `back`, `stats`, `status` (with the club's key, if one was named)."""

    action: str
    club: str | None = None


@dataclass(frozen=True)
class Pause:
    weeks: int


@dataclass(frozen=True)
class Alert:
    consent: bool


@dataclass(frozen=True)
class Language:
    lang: str


Request = OptIn | Simple | Pause | Alert | Language


def parse_checkin(text: str, clubs: Iterable[str] = ()) -> Request:
    """The request in the words after `!checkin`; `clubs` are the keys of the member's clubs
    (a word naming one chooses the club). Raises CheckinUsage."""
    tokens = text.replace(",", " ").split()
    if len(tokens) > MAX_TOKENS:
        raise CheckinUsage("too_many")
    if not tokens:
        return Simple("status")
    action = _ACTIONS.get(tokens[0].lower())
    if action is None:
        raise CheckinUsage("action")
    rest = tokens[1:]
    known = set(clubs)
    club = None
    picked = [t for t in rest if t.lower() in known and _CLUB_KEY.fullmatch(t.lower())]
    if len(picked) > 1:
        raise CheckinUsage("club")
    if picked:
        club = picked[0].lower()
        rest = [t for t in rest if t is not picked[0]]
    if action == "on":
        return _opt_in(rest, club)
    if action == "pause":
        if len(rest) != 1 or not (rest[0].isascii() and rest[0].isdigit()) or len(rest[0]) > 2:
            raise CheckinUsage("weeks")
        weeks = int(rest[0])
        if not 1 <= weeks <= MAX_PAUSE_WEEKS:
            raise CheckinUsage("weeks")
        return Pause(weeks)
    if action == "alert":
        if len(rest) != 1 or rest[0].lower() not in _ON_OFF:
            raise CheckinUsage("alert")
        return Alert(_ON_OFF[rest[0].lower()])
    if action == "lang":
        if len(rest) != 1 or rest[0].lower() not in _LANGS:
            raise CheckinUsage("lang")
        return Language(_LANGS[rest[0].lower()])
    if rest:
        raise CheckinUsage("extra")
    return Simple(action, club)


def _opt_in(words: list[str], club: str | None) -> OptIn:
    days: set[int] = set()
    hour_minute: tuple[int, int] | None = None
    tz: str | None = None
    for word in words:
        low = word.lower()
        if low in _DAY_WORDS:
            days.add(_DAY_WORDS[low])
        elif (m := _TIME.fullmatch(word)) is not None:
            if hour_minute is not None:
                raise CheckinUsage("time")
            hour_minute = (int(m.group(1)), int(m.group(2)))
        elif "/" in word or word in ("UTC", "utc"):
            name = "UTC" if word.lower() == "utc" else word
            if tz is not None or len(name) > 64 or not is_zone(name):
                raise CheckinUsage("zone")
            tz = name
        else:
            raise CheckinUsage("word")
    hour, minute = hour_minute or (DEFAULT_HOUR, DEFAULT_MINUTE)
    return OptIn(frozenset(days) or DEFAULT_DAYS, hour, minute, tz, club)
