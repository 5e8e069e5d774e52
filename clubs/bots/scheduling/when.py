"""A session's time as facilitators type it, in Russian or English, read into a start and a rule.

Facilitators write "every Thursday 19:00", «по четвергам в 19:00», «каждый первый четверг месяца
в 19:00» or «10 декабря в 19:00». :func:`parse_when` reads such a phrase against the current wall
time in the club's zone and gives the first occurrence's wall time plus an RFC 5545 RRULE (or
``None`` for a one-off). :func:`parse_duration` reads "1h30", «полтора часа» and the like.

The reader works on words, not on one big regular expression: the phrase is bounded in length,
split on spaces, the time of day is taken from its end (or its start), and every remaining word
must be known. Anything else is a :class:`WhenError` whose message names the wrong part in
English without repeating the phrase (it may hold personal text and must not reach the logs).

One Russian subtlety: «каждый второй четверг» is every other Thursday (INTERVAL=2), while
«каждый второй четверг месяца» is the second Thursday of each month. English "every second
Thursday" is read the same way; "every first/last Thursday" can only mean the month's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

MAX_CHARS = 200
"""Longer phrases are refused before they are read."""

MIN_DURATION_S = 5 * 60
MAX_DURATION_S = 12 * 3600
MAX_YEARS_AHEAD = 5
"""A one-off date further ahead than this many years is refused as a likely typo."""

_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


class WhenError(ValueError):
    """A phrase that is not a time; str(e) says in English which part is wrong (never logged with
    the phrase)."""


@dataclass(frozen=True)
class When:
    """The first occurrence's naive wall time in the club's zone and its RRULE (None: once)."""

    start: datetime
    rrule: str | None


def _forms(stem: str, endings: str) -> list[str]:
    return [stem + e for e in endings.split("|")]


_RU_M = "|а|у|ом|е|и|ов|ам|ами|ах"  # понедельник, вторник, четверг
_RU_F = "а|ы|е|у|ой|ою||ам|ами|ах"  # среда, суббота
_WEEKDAY_WORDS: dict[str, int] = {}
for _i, _names in enumerate(
    [
        ["monday", "mon", "пн", *_forms("понедельник", _RU_M)],
        ["tuesday", "tue", "tues", "вт", *_forms("вторник", _RU_M)],
        ["wednesday", "wed", "ср", *_forms("сред", _RU_F)],
        ["thursday", "thu", "thur", "thurs", "чт", *_forms("четверг", _RU_M)],
        ["friday", "fri", "пт", *_forms("пятниц", "а|ы|е|у|ей|ею||ам|ами|ах")],
        ["saturday", "sat", "сб", *_forms("суббот", _RU_F)],
        ["sunday", "sun", "вс", *_forms("воскресень", "е|я|ю|ем|и|ям|ями|ях"), "воскресений"],
    ]
):
    for _w in _names:
        _WEEKDAY_WORDS[_w] = _i
    for _w in _names[:1]:
        _WEEKDAY_WORDS[_w + "s"] = _i  # English plural: "on Thursdays"

_ORDINALS: dict[str, int] = {
    "first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3,
    "fourth": 4, "4th": 4, "fifth": 5, "5th": 5, "last": -1,
}  # fmt: skip
for _n, _stem, _ends in [
    (1, "перв", "ый|ая|ое|ую|ого|ой|ом"),
    (2, "втор", "ой|ая|ое|ую|ого|ом"),
    (3, "трет", "ий|ья|ье|ью|ьего|ьей|ьем"),
    (4, "четверт", "ый|ая|ое|ую|ого|ой|ом"),
    (5, "пят", "ый|ая|ое|ую|ого|ой|ом"),
    (-1, "последн", "ий|яя|ее|юю|его|ей|ем"),
]:
    for _w in _forms(_stem, _ends):
        _ORDINALS[_w] = _n

_MONTH_NAMES: dict[str, int] = {}
for _i, _names in enumerate(
    [
        ["jan", "january", "янв", "января", "январь"],
        ["feb", "february", "фев", "февр", "февраля", "февраль"],
        ["mar", "march", "мар", "марта", "март"],
        ["apr", "april", "апр", "апреля", "апрель"],
        ["may", "мая", "май"],
        ["jun", "june", "июн", "июня", "июнь"],
        ["jul", "july", "июл", "июля", "июль"],
        ["aug", "august", "авг", "августа", "август"],
        ["sep", "sept", "september", "сен", "сент", "сентября", "сентябрь"],
        ["oct", "october", "окт", "октября", "октябрь"],
        ["nov", "november", "ноя", "нояб", "ноября", "ноябрь"],
        ["dec", "december", "дек", "декабря", "декабрь"],
    ],
    start=1,
):
    for _w in _names:
        _MONTH_NAMES[_w] = _i

_EVERY = {"every", "each", *_forms("кажд", "ый|ую|ое|ая|ые|ого|ой|ом")}
_OTHER = {"other", "через"}
_WEEK = {"week", "weeks", "неделю", "недели", "недель", "неделя", "неделе"}
_MONTH = {"month", "months", "месяца", "месяц", "месяце"}
_DAY = {"day", "days", "день", "дня", "дней"}
_WEEKLY = {"weekly", "еженедельно"}
_BIWEEKLY = {"biweekly", "fortnightly"}
_DAILY = {"daily", "ежедневно"}
_NUMBERS = {"two": 2, "две": 2, "два": 2, "three": 3, "три": 3, "four": 4, "четыре": 4}
_RELATIVE = {"today": 0, "сегодня": 0, "tomorrow": 1, "завтра": 1, "послезавтра": 2}
_FILLER = {"at", "on", "the", "of", "in", "this", "next", "в", "во", "на", "and", "и", "&", "раз",
           "года", "г", "starting", "from", "с", "со"}  # fmt: skip
_AT = {"at", "в", "во"}
# am/pm and the Russian «в 7 вечера», «в 2 дня», «в 6 утра», «в 1 ночи» (hour 1..12 like am/pm).
_AMPM = {"am": 0, "a.m": 0, "pm": 12, "p.m": 12, "утра": 0, "ночи": 0, "дня": 12, "вечера": 12}
_HOURS_WORD = {"ч", "час", "часа", "часов"}  # «в 19 часов»

_TIME = re.compile(r"([0-9]{1,2})[:.]([0-9]{2})")
_TIME_AMPM = re.compile(r"([0-9]{1,2})(?:[:.]([0-9]{2}))?(am|pm|a\.m|p\.m)")
_HOUR = re.compile(r"[0-9]{1,2}")
_ISO = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_DOTTED = re.compile(r"([0-9]{1,2})\.([0-9]{1,2})(?:\.([0-9]{4}|[0-9]{2}))?")
_DAY_NUMBER = re.compile(r"([0-9]{1,2})(?:st|nd|rd|th|-?го|-?е)?")
_YEAR = re.compile(r"[0-9]{4}")


def _words(text: str, limit: int, *, commas: str = ",") -> list[str]:
    if not isinstance(text, str):
        raise WhenError("the phrase is not text")
    if len(text) > limit:
        raise WhenError(f"the phrase is longer than {limit} characters")
    cleaned = text.lower().replace("ё", "е")
    for ch in commas + ";!?()«»\"'":
        cleaned = cleaned.replace(ch, " ")
    words = [w.rstrip(".") for w in cleaned.split()]
    words = [w for w in words if w]
    if not words:
        raise WhenError("the phrase is empty")
    return words


def _clock(hour: int, minute: int, ampm: str | None) -> time:
    if ampm is not None:
        if not 1 <= hour <= 12:
            raise WhenError("with am/pm (утра, дня, вечера, ночи) the hour must be 1..12")
        hour = hour % 12 + _AMPM[ampm]
    if hour > 23:
        raise WhenError("the hour must be 0..23")
    if minute > 59:
        raise WhenError("the minutes must be 0..59")
    return time(hour, minute)


def _time_at(words: list[str], i: int) -> tuple[time, int] | None:
    """The time of day starting at word ``i`` and how many words it takes, if there is one."""
    word = words[i]
    nxt = words[i + 1] if i + 1 < len(words) else None
    if m := _TIME_AMPM.fullmatch(word):
        return _clock(int(m.group(1)), int(m.group(2) or 0), m.group(3)), 1
    if m := _TIME.fullmatch(word):
        if nxt in _AMPM:
            return _clock(int(m.group(1)), int(m.group(2)), nxt), 2
        return _clock(int(m.group(1)), int(m.group(2)), None), 1
    if _HOUR.fullmatch(word):
        if nxt in _AMPM:
            return _clock(int(word), 0, nxt), 2
        if nxt in _HOURS_WORD:
            return _clock(int(word), 0, None), 2
        if i > 0 and words[i - 1] in _AT:
            return _clock(int(word), 0, None), 1
    return None


def _take_time(words: list[str]) -> tuple[time, list[str]]:
    """The time of day from the end of the phrase (or else its start) and the other words."""
    for i in (len(words) - 1, len(words) - 2):
        if i < 0:
            continue
        found = _time_at(words, i)
        if found is not None and i + found[1] == len(words):
            rest = words[:i]
            while rest and rest[-1] in _AT:
                rest.pop()
            return found[0], rest
    i = 1 if words[0] in _AT and len(words) > 1 else 0
    found = _time_at(words, i)
    if found is not None:
        return found[0], words[i + found[1] :]
    raise WhenError("no time of day (like 19:00 or 7pm)")


@dataclass
class _Parts:
    weekdays: list[int]
    ordinals: list[int]
    numbers: list[int]
    every: bool = False
    other: bool = False
    po: bool = False
    plural: bool = False
    weekly: bool = False
    biweekly: bool = False
    daily: bool = False
    week: bool = False
    month: bool = False
    day: bool = False
    relative: int | None = None
    date: tuple[int | None, int, int] | None = None  # (year or None, month, day)
    month_name: int | None = None
    year: int | None = None


def _classify(words: list[str]) -> _Parts:
    parts = _Parts([], [], [])
    for pos, word in enumerate(words, start=1):
        if word in _WEEKDAY_WORDS:
            wd = _WEEKDAY_WORDS[word]
            if wd not in parts.weekdays:
                parts.weekdays.append(wd)
            if (word.endswith("s") and len(word) > 5) or word.endswith(("ам", "ям")):
                parts.plural = True
        elif word in _ORDINALS:
            parts.ordinals.append(_ORDINALS[word])
        elif word in _EVERY:
            parts.every = True
        elif word in _OTHER:
            parts.other = True
        elif word == "по":
            parts.po = True
        elif word in _WEEK:
            parts.week = True
        elif word in _MONTH:
            parts.month = True
        elif word in _DAY:
            parts.day = True
        elif word in _WEEKLY:
            parts.weekly = True
        elif word in _BIWEEKLY:
            parts.biweekly = True
        elif word in _DAILY:
            parts.daily = True
        elif word in _NUMBERS:
            parts.numbers.append(_NUMBERS[word])
        elif word in _RELATIVE:
            if parts.relative is not None:
                raise WhenError("more than one relative day")
            parts.relative = _RELATIVE[word]
        elif word in _MONTH_NAMES:
            if parts.month_name is not None:
                raise WhenError("more than one month name")
            parts.month_name = _MONTH_NAMES[word]
        elif m := _ISO.fullmatch(word):
            _set_date(parts, (int(m.group(1)), int(m.group(2)), int(m.group(3))))
        elif m := _DOTTED.fullmatch(word):
            year = m.group(3)
            y = None if year is None else int(year) + (2000 if len(year) == 2 else 0)
            _set_date(parts, (y, int(m.group(2)), int(m.group(1))))
        elif _YEAR.fullmatch(word):
            if parts.year is not None:
                raise WhenError("more than one year")
            parts.year = int(word)
        elif m := _DAY_NUMBER.fullmatch(word):
            parts.numbers.append(int(m.group(1)))
        elif word not in _FILLER:
            raise WhenError(f"word {pos} of the phrase is not a day, date or rule word")
    return parts


def _set_date(parts: _Parts, value: tuple[int | None, int, int]) -> None:
    if parts.date is not None:
        raise WhenError("more than one date")
    parts.date = value


def parse_when(text: str, now_local: datetime) -> When:
    """Read a facilitator's phrase: the first occurrence strictly after ``now_local`` and its rule.

    ``now_local`` is the naive current wall time in the club's zone. A one-off date or time that
    is not after it is refused ("in the past"); a date without a year is the next such date.
    """
    now = now_local.replace(tzinfo=None)
    words = _words(text, MAX_CHARS)
    clock, rest = _take_time(words)
    parts = _classify(rest)
    if parts.date is not None or parts.month_name is not None or parts.relative is not None:
        return When(_one_off_date(parts, clock, now), None)
    if parts.year is not None:
        raise WhenError("a year without a date")
    if (parts.daily or (parts.every and parts.day)) and not parts.weekdays:
        if parts.ordinals or parts.numbers or parts.month or parts.week or parts.other:
            raise WhenError("a daily rule takes no numbers, weeks or months")
        return When(_first_weekly(set(range(7)), clock, now), "FREQ=DAILY")
    if not parts.weekdays:
        raise WhenError("no day, date or weekday")
    if parts.day:
        raise WhenError("a weekday and 'day' together")
    if parts.ordinals:
        return _nth_rule(parts, clock, now)
    interval = _interval(parts)
    if interval is None:
        if len(parts.weekdays) > 1:
            raise WhenError("a one-off session needs a single weekday")
        if parts.month or parts.week:
            raise WhenError("weeks or months without 'every'")
        return When(_first_weekly(set(parts.weekdays), clock, now), None)
    if parts.month:
        raise WhenError("a month with a weekly rule")
    return When(_first_weekly(set(parts.weekdays), clock, now), _weekly_rule(parts, interval))


def parse_clock(text: str) -> time | None:
    """The time of day of a phrase that gives nothing else («в 19:30», "at 7pm"), else None
    (a phrase with a day, a date or a rule in it: read it with :func:`parse_when`). A bare
    «10.12» is a date to people, not a time: None."""
    if _DOTTED.fullmatch(text.strip()):
        return None
    try:
        words = _words(text, MAX_CHARS)
        clock, rest = _take_time(words) if words else (None, [])
        parts = _classify(rest)
    except WhenError:
        return None
    if clock is None or parts != _Parts([], [], []):
        return None
    return clock


def _interval(parts: _Parts) -> int | None:
    """The weekly interval the words ask for, or None when nothing says 'repeat'."""
    if len(parts.numbers) > 1:
        raise WhenError("more than one number")
    if parts.numbers:
        if not parts.week:
            raise WhenError("a number without 'weeks'")
        n = parts.numbers[0]
        if not 1 <= n <= 8:
            raise WhenError("the number of weeks must be 1..8")
        if parts.other:
            raise WhenError("'other' together with a number")
        return n
    if parts.other or parts.biweekly:
        return 2
    if parts.every or parts.po or parts.weekly or parts.plural:
        return 1
    return None


def _weekly_rule(parts: _Parts, interval: int) -> str:
    days = ",".join(_CODES[d] for d in sorted(parts.weekdays))
    if interval == 1:
        return f"FREQ=WEEKLY;BYDAY={days}"
    return f"FREQ=WEEKLY;INTERVAL={interval};BYDAY={days}"


def _nth_rule(parts: _Parts, clock: time, now: datetime) -> When:
    if len(parts.ordinals) > 1:
        raise WhenError("more than one ordinal (first, last...)")
    if parts.numbers or parts.other or parts.week:
        raise WhenError("an ordinal together with weeks or numbers")
    n = parts.ordinals[0]
    if parts.every and not parts.month and 2 <= n <= 4:
        # «каждый второй четверг» / "every second Thursday": every n-th week.
        return When(
            _first_weekly(set(parts.weekdays), clock, now),
            _weekly_rule(parts, n),
        )
    if len(parts.weekdays) > 1:
        raise WhenError("a monthly rule takes a single weekday")
    weekday = parts.weekdays[0]
    start = _first_nth(weekday, n, clock, now)
    return When(start, f"FREQ=MONTHLY;BYDAY={n}{_CODES[weekday]}")


def _first_weekly(weekdays: set[int], clock: time, now: datetime) -> datetime:
    for ahead in range(8):
        day = now.date() + timedelta(days=ahead)
        candidate = datetime.combine(day, clock)
        if day.weekday() in weekdays and candidate > now:
            return candidate
    raise AssertionError("unreachable: every weekday comes within 8 days")


def nth_weekday(year: int, month: int, weekday: int, n: int) -> date | None:
    """The n-th (1..5, or -1 for the last) given weekday of a month, or None if it has none."""
    if n == -1:
        nxt = date(year + month // 12, month % 12 + 1, 1)
        last = nxt - timedelta(days=1)
        return last - timedelta(days=(last.weekday() - weekday) % 7)
    first = date(year, month, 1)
    day = first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    return day if day.month == month else None


def _first_nth(weekday: int, n: int, clock: time, now: datetime) -> datetime:
    year, month = now.year, now.month
    for _ in range(15):
        day = nth_weekday(year, month, weekday, n)
        if day is not None and datetime.combine(day, clock) > now:
            return datetime.combine(day, clock)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable: a fifth weekday comes within 15 months")


def _one_off_date(parts: _Parts, clock: time, now: datetime) -> datetime:
    if parts.every or parts.po or parts.ordinals or parts.other or parts.week or parts.month:
        raise WhenError("a date together with a repeat rule")
    if parts.daily or parts.weekly or parts.biweekly or parts.day or parts.plural:
        raise WhenError("a date together with a repeat rule")
    if parts.relative is not None:
        if parts.date or parts.month_name or parts.numbers or parts.year:
            raise WhenError("a relative day together with a date")
        day = now.date() + timedelta(days=parts.relative)
        start = datetime.combine(day, clock)
    else:
        year, month, dom = _date_parts(parts)
        if year is None:
            start = _next_date(month, dom, clock, now)
        else:
            try:
                start = datetime.combine(date(year, month, dom), clock)
            except ValueError:
                raise WhenError("no such date") from None
    if start <= now:
        raise WhenError("the date and time are in the past")
    if start.year > now.year + MAX_YEARS_AHEAD:
        raise WhenError(f"the date is more than {MAX_YEARS_AHEAD} years ahead")
    if parts.weekdays and parts.weekdays != [start.weekday()]:
        raise WhenError("the weekday does not match the date")
    return start


def _date_parts(parts: _Parts) -> tuple[int | None, int, int]:
    if parts.date is not None:
        if parts.month_name is not None or parts.numbers:
            raise WhenError("a date given twice")
        year, month, dom = parts.date
        if parts.year is not None:
            if year is not None:
                raise WhenError("more than one year")
            year = parts.year
        return year, month, dom
    assert parts.month_name is not None
    if len(parts.numbers) != 1:
        raise WhenError("a month name needs one day number")
    return parts.year, parts.month_name, parts.numbers[0]


def _next_date(month: int, dom: int, clock: time, now: datetime) -> datetime:
    for year in range(now.year, now.year + 9):
        try:
            candidate = datetime.combine(date(year, month, dom), clock)
        except ValueError:
            continue
        if candidate > now:
            return candidate
    raise WhenError("no such date")


_DURATION = re.compile(
    r"(?:(?P<h>[0-9]{1,2}(?:[.,][0-9]{1,2})?) ?(?:h|hr|hrs|hour|hours|ч|час|часа|часов))?"
    r" ?(?:(?P<m>[0-9]{1,3}) ?(?:m|min|mins|minute|minutes|м|мин|минут|минуты|минута)?)?"
)
_CLOCK_DURATION = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_WORD_DURATIONS = {
    "полтора часа": 90 * 60,
    "полтора ч": 90 * 60,
    "полчаса": 30 * 60,
    "час": 3600,
    "an hour": 3600,
    "one hour": 3600,
    "half an hour": 30 * 60,
    "hour and a half": 90 * 60,
    "an hour and a half": 90 * 60,
    "два часа": 2 * 3600,
    "три часа": 3 * 3600,
}


def parse_duration(text: str) -> int:
    """A session's length in seconds from "90m", "1h30", "1.5h", «2 ч», «полтора часа»...

    A bare number (no unit) is refused as ambiguous; the result must be 5 minutes .. 12 hours.
    """
    words = _words(text, 40, commas="")
    phrase = " ".join(words)
    seconds: int | None = _WORD_DURATIONS.get(phrase)
    if seconds is None and (m := _CLOCK_DURATION.fullmatch(phrase)):
        if int(m.group(2)) > 59:
            raise WhenError("the minutes must be 0..59")
        seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60
    if seconds is None:
        seconds = _unit_duration(phrase)
    if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:
        raise WhenError("a session lasts 5 minutes to 12 hours")
    return seconds


def _unit_duration(phrase: str) -> int:
    m = _DURATION.fullmatch(phrase)
    if m is None or (m.group("h") is None and m.group("m") is None):
        raise WhenError("not a duration (like 90m, 1h30 or 2 hours)")
    hours_text, minutes_text = m.group("h"), m.group("m")
    if hours_text is None:
        # Minutes alone need their unit: "90" could mean anything.
        if not re.search(r"[a-zа-я]$", phrase):
            raise WhenError("a duration needs a unit (m, min, h, ч, мин)")
        return int(minutes_text) * 60
    minutes = round(float(hours_text.replace(",", ".")) * 60)
    if minutes_text is not None:
        if "." in hours_text or "," in hours_text:
            raise WhenError("fractional hours together with minutes")
        extra = int(minutes_text)
        if extra > 59:
            raise WhenError("the minutes must be 0..59")
        minutes += extra
    return minutes * 60
