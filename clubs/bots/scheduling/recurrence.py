"""Occurrences of a club's session series: wall-clock correct across daylight-saving changes.

A series is stored as the naive wall-clock time of its first session in the club's zone, the
zone's IANA name and an RFC 5545 RRULE value. Rules are expanded on naive wall times (so a
weekly 19:00 stays 19:00 when Berlin changes its clocks) and each occurrence is only then placed
on the UTC time line with ``zoneinfo``. Nothing here does I/O.

Placing a wall time that the zone skips or repeats follows PEP 495 with ``fold=0``:

* a time in the spring-forward gap (02:30 on the last Sunday of March in Berlin) does not exist;
  it is read with the offset from before the change, which moves it forward by the gap: the
  session happens at 03:30 local (01:30 UTC);
* a time that happens twice in the autumn (02:30 on the last Sunday of October in Berlin) takes
  the first of the two (still summer time, 00:30 UTC).

The occurrence's key stays the series' own wall time in both cases, so a cancellation keyed by
it keeps matching.

Rules come from facilitators and from calendar files, so they are treated as hostile: only the
parts a club schedule needs are accepted (see :func:`check_rule`), the rule text and COUNT are
bounded, and nothing is produced more than :data:`HORIZON_DAYS` after the series' start or the
time asked about, whichever is later (a weekly series goes on for years; a rule whose next
occurrence is further away than that has none).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dateutil.rrule as du

MAX_OCCURRENCES = 520
"""A rule whose COUNT is above this is refused: ten years of weekly sessions is plenty."""

HORIZON_DAYS = 730
"""Occurrences later than this many days after the series' start (or after the time asked
about, if later) are never produced; a rule without an end (or with a later UNTIL) is cut there
rather than refused."""

MAX_RULE_CHARS = 200
"""Longer rule text is refused before it is looked at."""

_MAX_INTERVAL = {"DAILY": 31, "WEEKLY": 52, "MONTHLY": 12}
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]{0,40}(?:/[A-Za-z0-9_+\-]{1,40}){0,2}")
_PLAIN_DAY = re.compile(r"(MO|TU|WE|TH|FR|SA|SU)")
_NTH_DAY = re.compile(r"([+-]?)([1-5])?(MO|TU|WE|TH|FR|SA|SU)")
_INT = re.compile(r"[+-]?[0-9]{1,3}")
_KEY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")
_UNTIL = re.compile(r"([0-9]{8})(?:T([0-9]{6})(Z?))?")


class RuleError(ValueError):
    """A recurrence rule or zone the scheduler will not use; the message says why, in English."""


@dataclass(frozen=True)
class Occurrence:
    """One session of a series.

    ``local`` is the naive wall time the series gives this session (its stable key, even when
    the zone skipped that wall time); ``start`` is the aware UTC instant it really begins.
    """

    local: datetime
    start: datetime


@dataclass(frozen=True)
class Rule:
    """A checked rule, split into the parts the scheduler understands.

    ``until`` is naive; ``until_utc`` says whether it is a UTC instant (a trailing ``Z``) or a
    wall time in the club's zone. ``byday`` holds ``(n, "TH")`` pairs, n ``None`` for "every".
    """

    freq: str
    interval: int
    count: int | None
    until: datetime | None
    until_utc: bool
    byday: tuple[tuple[int | None, str], ...]
    bymonthday: tuple[int, ...]
    bysetpos: int | None
    wkst: str | None


def zone(tzid: str) -> ZoneInfo:
    """The zone for an IANA name; :class:`RuleError` for an unknown, empty or path-like name."""
    if not isinstance(tzid, str) or not _ZONE_NAME.fullmatch(tzid) or ".." in tzid:
        raise RuleError("the time zone name is not an IANA zone name")
    try:
        return ZoneInfo(tzid)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:
        raise RuleError("unknown time zone") from e


def parse_rule(text: str) -> Rule:
    """Split an RRULE value into its parts, refusing what a club schedule has no use for.

    Accepted: FREQ (DAILY, WEEKLY, MONTHLY), INTERVAL, COUNT or UNTIL, BYDAY, BYMONTHDAY (monthly
    only), BYSETPOS (monthly, one position with weekdays), WKST. Refused: finer frequencies,
    YEARLY, BYHOUR/BYMINUTE/BYSECOND (they would change the session's time), BYMONTH, BYYEARDAY,
    BYWEEKNO and the like, repeated parts, BYDAY on a daily rule with an INTERVAL. These limits
    also keep every accepted rule from scanning centuries of empty periods for a first one.
    """
    if not isinstance(text, str):
        raise RuleError("the rule is not text")
    if len(text) > MAX_RULE_CHARS:
        raise RuleError("the rule is too long")
    value = text.strip().upper()
    if value.startswith("RRULE:"):
        value = value[len("RRULE:") :]
    if not value:
        raise RuleError("the rule is empty")
    parts: dict[str, str] = {}
    for pair in value.split(";"):
        name, sep, part = pair.partition("=")
        if not sep or not name or not part:
            raise RuleError("the rule is not NAME=VALUE pairs")
        if name in parts:
            raise RuleError(f"the rule repeats {name}")
        parts[name] = part
    freq = parts.pop("FREQ", None)
    if freq is None:
        raise RuleError("the rule has no FREQ")
    if freq in ("HOURLY", "MINUTELY", "SECONDLY"):
        raise RuleError("sessions cannot repeat more often than daily")
    if freq not in _MAX_INTERVAL:
        raise RuleError("FREQ must be DAILY, WEEKLY or MONTHLY")
    interval = _int_part(parts.pop("INTERVAL", "1"), "INTERVAL")
    if not 1 <= interval <= _MAX_INTERVAL[freq]:
        raise RuleError(f"INTERVAL must be 1..{_MAX_INTERVAL[freq]} for {freq}")
    count: int | None = None
    if "COUNT" in parts:
        count = _int_part(parts.pop("COUNT"), "COUNT", digits=12)
        if count < 1:
            raise RuleError("COUNT must be positive")
        if count > MAX_OCCURRENCES:
            raise RuleError(f"COUNT is above {MAX_OCCURRENCES}")
    until: datetime | None = None
    until_utc = False
    if "UNTIL" in parts:
        if count is not None:
            raise RuleError("a rule cannot have both COUNT and UNTIL")
        until, until_utc = _until(parts.pop("UNTIL"))
    byday: tuple[tuple[int | None, str], ...] = ()
    if "BYDAY" in parts:
        byday = _byday(parts.pop("BYDAY"), freq)
        if freq == "DAILY" and interval > 1:
            # Every 7th day on Mondays may never happen: refused rather than searched.
            raise RuleError("BYDAY with FREQ=DAILY needs INTERVAL=1")
    bymonthday: tuple[int, ...] = ()
    if "BYMONTHDAY" in parts:
        if freq != "MONTHLY":
            raise RuleError("BYMONTHDAY is only used with FREQ=MONTHLY")
        bymonthday = _int_list(parts.pop("BYMONTHDAY"), "BYMONTHDAY", 31)
    bysetpos: int | None = None
    if "BYSETPOS" in parts:
        if freq != "MONTHLY" or not byday or any(n is not None for n, _ in byday):
            raise RuleError("BYSETPOS is only used with FREQ=MONTHLY and plain BYDAY weekdays")
        bysetpos = _int_part(parts.pop("BYSETPOS"), "BYSETPOS")
        if bysetpos == 0 or not -5 <= bysetpos <= 5:
            raise RuleError("BYSETPOS must be one position, -5..5")
    wkst = parts.pop("WKST", None)
    if wkst is not None and wkst not in _WEEKDAYS:
        raise RuleError("WKST must be a weekday")
    if parts:
        raise RuleError("the rule has parts a club schedule does not use: " + ",".join(parts)[:60])
    return Rule(freq, interval, count, until, until_utc, byday, bymonthday, bysetpos, wkst)


def _int_part(text: str, name: str, *, digits: int = 3) -> int:
    if not re.fullmatch(rf"[+-]?[0-9]{{1,{digits}}}", text):
        raise RuleError(f"{name} must be a small integer")
    return int(text)


def _int_list(text: str, name: str, limit: int) -> tuple[int, ...]:
    items = text.split(",")
    if len(items) > 31:
        raise RuleError(f"{name} has too many values")
    out = []
    for item in items:
        if not _INT.fullmatch(item):
            raise RuleError(f"{name} must be a list of integers")
        n = int(item)
        if n == 0 or not -limit <= n <= limit:
            raise RuleError(f"{name} values must be 1..{limit} or -{limit}..-1")
        out.append(n)
    return tuple(out)


def _byday(text: str, freq: str) -> tuple[tuple[int | None, str], ...]:
    items = text.split(",")
    if len(items) > 7:
        raise RuleError("BYDAY has too many values")
    out: list[tuple[int | None, str]] = []
    for item in items:
        if freq != "MONTHLY":
            if not _PLAIN_DAY.fullmatch(item):
                raise RuleError("BYDAY must be plain weekdays (MO..SU) unless FREQ=MONTHLY")
            out.append((None, item))
            continue
        m = _NTH_DAY.fullmatch(item)
        if m is None or (m.group(1) and not m.group(2)):
            raise RuleError("BYDAY must be weekdays, optionally numbered 1..5 or -5..-1")
        n = int(m.group(1) + m.group(2)) if m.group(2) else None
        out.append((n, m.group(3)))
    if len(set(out)) != len(out):
        raise RuleError("BYDAY repeats a weekday")
    return tuple(out)


def _until(text: str) -> tuple[datetime, bool]:
    m = _UNTIL.fullmatch(text)
    if m is None:
        raise RuleError("UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSS[Z]")
    try:
        if m.group(2) is None:
            # A date-only UNTIL includes that whole day.
            return datetime.strptime(m.group(1), "%Y%m%d").replace(hour=23, minute=59), False
        stamp = datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
    except ValueError as e:
        raise RuleError("UNTIL is not a real date") from e
    return stamp, bool(m.group(3))


def _dateutil_rule(rule: Rule, start: datetime) -> du.rrule:
    """The dateutil rule for the checked parts, on naive wall times (UNTIL is applied by us)."""
    parts = [f"FREQ={rule.freq}", f"INTERVAL={rule.interval}"]
    if rule.count is not None:
        parts.append(f"COUNT={rule.count}")
    if rule.byday:
        parts.append("BYDAY=" + ",".join(f"{'' if n is None else n}{d}" for n, d in rule.byday))
    if rule.bymonthday:
        parts.append("BYMONTHDAY=" + ",".join(str(n) for n in rule.bymonthday))
    if rule.bysetpos is not None:
        parts.append(f"BYSETPOS={rule.bysetpos}")
    parts.append(f"WKST={rule.wkst or 'MO'}")
    result = du.rrulestr(";".join(parts), dtstart=start)
    assert isinstance(result, du.rrule)
    return result


def _naive_start(start: datetime) -> datetime:
    if start.tzinfo is not None:
        raise RuleError("the series start must be a naive wall time")
    return start.replace(second=0, microsecond=0)


def _first_local(rule: Rule, start: datetime) -> datetime | None:
    return next(iter(_dateutil_rule(rule, start)), None)


def check_rule(rrule: str | None, start: datetime) -> None:
    """Refuse a rule the scheduler will not run; ``None`` (a one-off) is always fine.

    Besides what :func:`parse_rule` refuses, a rule must have an occurrence within
    :data:`HORIZON_DAYS` of the (naive, wall-time) ``start`` and before its UNTIL. A UTC UNTIL is
    compared as if it were wall time give or take a day, since the zone is not known here;
    :func:`occurrences` applies it exactly.
    """
    start = _naive_start(start)
    if rrule is None:
        return
    rule = parse_rule(rrule)
    first = _first_local(rule, start)
    if first is None or first > start + timedelta(days=HORIZON_DAYS):
        raise RuleError("the rule has no occurrence")
    if rule.until is not None:
        slack = timedelta(days=1) if rule.until_utc else timedelta(0)
        if first > rule.until + slack:
            raise RuleError("the rule has no occurrence before its UNTIL")


def with_until(rrule: str, until_local: datetime) -> str:
    """The rule cut off at ``until_local`` (a wall time in the series' zone, inclusive): its
    COUNT or UNTIL replaced, the rest kept as written. What a series split in two keeps."""
    parse_rule(rrule)
    kept = [
        p for p in rrule.split(";") if p and p.split("=", 1)[0].upper() not in ("COUNT", "UNTIL")
    ]
    return ";".join([*kept, "UNTIL=" + _naive_start(until_local).strftime("%Y%m%dT%H%M%S")])


def occurrence_key(local: datetime) -> str:
    """The stable text key of an occurrence: its naive wall time to the minute."""
    return local.strftime("%Y-%m-%dT%H:%M")


def parse_key(key: str) -> datetime:
    """The wall time of an :func:`occurrence_key`; :class:`ValueError` for anything else."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("not an occurrence key")
    return datetime.strptime(key, "%Y-%m-%dT%H:%M")


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """Place a naive wall time on the UTC line: a skipped time moves forward by the gap, a
    repeated one takes its first instance (PEP 495, fold=0)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _locals(start: datetime, rule: Rule | None, since: datetime) -> Iterator[datetime]:
    if rule is None:
        yield start
        return
    end = max(start, since) + timedelta(days=HORIZON_DAYS)
    for local in _dateutil_rule(rule, start):
        if local > end:
            return
        yield local


def occurrences(
    start: datetime,
    tzid: str,
    rrule: str | None,
    *,
    after: datetime,
    limit: int = 10,
    skip: Collection[datetime] = (),
) -> list[Occurrence]:
    """The next ``limit`` occurrences starting strictly after ``after`` (aware), in order.

    ``start`` is the series' first wall time in ``tzid``; wall times in ``skip`` (cancelled
    occurrences, by their key) are left out; a one-off (``rrule`` None) gives at most one.
    Raises :class:`RuleError` for a rule :func:`check_rule` refuses or an unknown zone.
    """
    if after.tzinfo is None:
        raise ValueError("after must be an aware datetime")
    tz = zone(tzid)
    start = _naive_start(start)
    rule = None
    if rrule is not None:
        check_rule(rrule, start)
        rule = parse_rule(rrule)
    until: datetime | None = None
    if rule is not None and rule.until is not None:
        until = rule.until.replace(tzinfo=UTC) if rule.until_utc else to_utc(rule.until, tz)
    skipped = {s.replace(second=0, microsecond=0) for s in skip}
    out: list[Occurrence] = []
    if limit <= 0:
        return out
    since = after.astimezone(tz).replace(tzinfo=None)
    for local in _locals(start, rule, since):
        utc = to_utc(local, tz)
        if until is not None and utc > until:
            break
        if local in skipped or utc <= after:
            continue
        out.append(Occurrence(local, utc))
        if len(out) >= limit:
            break
    return out
