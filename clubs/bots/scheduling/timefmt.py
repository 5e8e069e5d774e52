"""Session times as members read them, in Russian or English, from small built-in tables.

Announcements and replies show a session in the club's own zone, the way people write dates at
home: «чт, 12 дек., 19:00 (Алматы)» or "Thu 12 Dec, 19:00 (Almaty)". Russian month abbreviations
follow CLDR (the genitive forms used after a day number). Rules are described in words
(«каждый четверг в 19:00», "the first Thursday of every month at 19:00"); a rule the describer
does not know gets a neutral text instead of an error, so a calendar import never breaks a reply.
Any language other than "ru" is written in English.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from clubs.bots.scheduling.recurrence import Rule, RuleError, parse_rule, zone

_RU_WEEKDAYS = ("пн", "вт", "ср", "чт", "пт", "сб", "вс")
_EN_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_RU_MONTHS = (
    "янв.", "февр.", "мар.", "апр.", "мая", "июн.",
    "июл.", "авг.", "сент.", "окт.", "нояб.", "дек.",
)  # fmt: skip
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_EN_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Accusative singular (каждый четверг, каждую среду), its gender, and the dative plural
# (по четвергам) of each weekday.
_RU_DAY_ACC = ("понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье")
_RU_DAY_GENDER = ("m", "m", "f", "m", "f", "f", "n")
_RU_DAY_DAT_PL = (
    "понедельникам", "вторникам", "средам", "четвергам", "пятницам", "субботам", "воскресеньям",
)  # fmt: skip
_RU_EVERY = {"m": "каждый", "f": "каждую", "n": "каждое"}
_RU_ORDINALS = {
    1: {"m": "первый", "f": "первую", "n": "первое"},
    2: {"m": "второй", "f": "вторую", "n": "второе"},
    3: {"m": "третий", "f": "третью", "n": "третье"},
    4: {"m": "четвёртый", "f": "четвёртую", "n": "четвёртое"},
    5: {"m": "пятый", "f": "пятую", "n": "пятое"},
    -1: {"m": "последний", "f": "последнюю", "n": "последнее"},
}
_EN_ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last"}
_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def _is_ru(lang: str) -> bool:
    return str(lang).lower().startswith("ru")


def _day_and_time(local: datetime, lang: str) -> str:
    """«чт, 12 дек., 19:00» / "Thu 12 Dec, 19:00" for a naive wall time."""
    if _is_ru(lang):
        day = f"{_RU_WEEKDAYS[local.weekday()]}, {local.day} {_RU_MONTHS[local.month - 1]}"
    else:
        day = f"{_EN_WEEKDAYS[local.weekday()]} {local.day} {_EN_MONTHS[local.month - 1]}"
    return f"{day}, {local:%H:%M}"


def _date_only(local: datetime, lang: str) -> str:
    if _is_ru(lang):
        return f"{local.day} {_RU_MONTHS[local.month - 1]} {local.year}"
    return f"{local.day} {_EN_MONTHS[local.month - 1]} {local.year}"


def _place(text: str, place: str | None) -> str:
    return text if place is None else f"{text} ({place})"


def _local(instant: datetime, tzid: str) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("the instant must be an aware datetime")
    return instant.astimezone(zone(tzid)).replace(tzinfo=None)


def format_local(instant: datetime, tzid: str, lang: str, *, place: str | None = None) -> str:
    """An aware instant as wall time in ``tzid``: «чт, 12 дек., 19:00 (Алматы)».

    Raises ValueError for a naive instant and :class:`RuleError` for an unknown zone.
    """
    return _place(_day_and_time(_local(instant, tzid), lang), place)


def format_span(
    start: datetime, duration_s: int, tzid: str, lang: str, *, place: str | None = None
) -> str:
    """A session from its aware start for ``duration_s`` seconds: «чт, 12 дек., 19:00–21:00».

    The end is computed on the UTC line, so a session across a clock change shows the real
    end time. A session that ends on another local day shows the end's date too.
    """
    begin = _local(start, tzid)
    end = _local(start.astimezone(UTC) + timedelta(seconds=duration_s), tzid)
    if end.date() == begin.date():
        text = f"{_day_and_time(begin, lang)}–{end:%H:%M}"
    else:
        text = f"{_day_and_time(begin, lang)} – {_day_and_time(end, lang)}"
    return _place(text, place)


def _ru_weeks(n: int) -> str:
    if n == 2:
        return "две недели"
    if n in (3, 4):
        return f"{n} недели"
    return f"{n} недель"


def _list(items: list[str], conjunction: str) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {conjunction} " + items[-1]


def _weekly(rule: Rule, start: datetime, lang: str) -> str | None:
    if rule.bymonthday or rule.bysetpos is not None:
        return None
    days = sorted({_CODES.index(d) for _, d in rule.byday}) if rule.byday else [start.weekday()]
    at = f"{start:%H:%M}"
    if _is_ru(lang):
        if len(days) == 1 and rule.interval == 1:
            d = days[0]
            return f"{_RU_EVERY[_RU_DAY_GENDER[d]]} {_RU_DAY_ACC[d]} в {at}"
        plural = _list([_RU_DAY_DAT_PL[d] for d in days], "и")
        if rule.interval == 1:
            return f"по {plural} в {at}"
        return f"раз в {_ru_weeks(rule.interval)}, по {plural} в {at}"
    names = _list([_EN_DAY_NAMES[d] for d in days], "and")
    if rule.interval == 1:
        return f"every {names} at {at}"
    if rule.interval == 2:
        return f"every other {names} at {at}"
    return f"every {rule.interval} weeks on {names} at {at}"


def _monthly(rule: Rule, start: datetime, lang: str) -> str | None:
    if rule.interval != 1 or rule.bymonthday or len(rule.byday) != 1:
        return None
    n, code = rule.byday[0]
    if rule.bysetpos is not None:
        if n is not None:
            return None
        n = rule.bysetpos
    if n is None or n not in _EN_ORDINALS:
        return None
    d = _CODES.index(code)
    at = f"{start:%H:%M}"
    if _is_ru(lang):
        gender = _RU_DAY_GENDER[d]
        return f"{_RU_EVERY[gender]} {_RU_ORDINALS[n][gender]} {_RU_DAY_ACC[d]} месяца в {at}"
    return f"the {_EN_ORDINALS[n]} {_EN_DAY_NAMES[d]} of every month at {at}"


def _daily(rule: Rule, start: datetime, lang: str) -> str | None:
    if rule.byday or rule.interval != 1:
        return None
    return f"каждый день в {start:%H:%M}" if _is_ru(lang) else f"every day at {start:%H:%M}"


def _ending(rule: Rule, lang: str) -> str:
    if rule.count is not None:
        return f", всего {rule.count}" if _is_ru(lang) else f", {rule.count} times"
    if rule.until is not None:
        until = _date_only(rule.until, lang)
        return f", до {until}" if _is_ru(lang) else f", until {until}"
    return ""


def _fallback(start: datetime, lang: str) -> str:
    try:
        first = _day_and_time(start, lang)
    except (AttributeError, TypeError, ValueError, IndexError):
        return "по расписанию" if _is_ru(lang) else "on a schedule"
    return f"по расписанию, с {first}" if _is_ru(lang) else f"on a schedule, from {first}"


def describe_rule(rrule: str | None, start: datetime, lang: str) -> str:
    """A rule in words, from the series' naive start wall time; never raises.

    «каждый четверг в 19:00», «раз в две недели, по четвергам в 19:00», «каждый первый четверг
    месяца в 19:00»; "every Thursday at 19:00", "every other Thursday at 19:00", "the first
    Thursday of every month at 19:00"; a one-off is «один раз: чт, 12 дек., 19:00» / "once: Thu
    12 Dec, 19:00". A COUNT or UNTIL is added at the end. Anything else reads «по расписанию,
    с …» / "on a schedule, from …".
    """
    try:
        if rrule is None:
            once = _day_and_time(start, lang)
            return f"один раз: {once}" if _is_ru(lang) else f"once: {once}"
        rule = parse_rule(rrule)
        describers = {"WEEKLY": _weekly, "MONTHLY": _monthly, "DAILY": _daily}
        text = describers[rule.freq](rule, start, lang)
        if text is None:
            return _fallback(start, lang)
        return text + _ending(rule, lang)
    except (RuleError, KeyError, AttributeError, TypeError, ValueError, IndexError):
        return _fallback(start, lang)
