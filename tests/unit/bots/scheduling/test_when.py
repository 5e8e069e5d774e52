"""What facilitators type: a table of Russian and English phrases, rejected input, durations."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clubs.bots.scheduling.recurrence import check_rule, occurrences
from clubs.bots.scheduling.when import When, WhenError, nth_weekday, parse_duration, parse_when

NOW = datetime(2026, 12, 6, 12, 0)  # a Sunday, noon
TH = "FREQ=WEEKLY;BYDAY=TH"
TH2 = "FREQ=WEEKLY;INTERVAL=2;BYDAY=TH"
FIRST_TH = "FREQ=MONTHLY;BYDAY=1TH"
LAST_FR = "FREQ=MONTHLY;BYDAY=-1FR"
D = datetime


PHRASES = pytest.mark.parametrize(
    ("text", "start", "rrule"),
    [
        # weekly
        ("every Thursday 19:00", D(2026, 12, 10, 19), TH),
        ("every thursday at 7pm", D(2026, 12, 10, 19), TH),
        ("Every THURSDAY   at   7 PM", D(2026, 12, 10, 19), TH),
        ("every Thu 7:30 pm", D(2026, 12, 10, 19, 30), TH),
        ("every Thurs 19.00", D(2026, 12, 10, 19), TH),
        ("on Thursdays at 19:00", D(2026, 12, 10, 19), TH),
        ("weekly on Thursday 19:00", D(2026, 12, 10, 19), TH),
        ("7:30pm every Thursday", D(2026, 12, 10, 19, 30), TH),
        ("at 19:00 every Thursday", D(2026, 12, 10, 19), TH),
        ("каждый четверг в 19:00", D(2026, 12, 10, 19), TH),
        ("Каждый четверг 19.00", D(2026, 12, 10, 19), TH),
        ("по четвергам в 19:00", D(2026, 12, 10, 19), TH),
        ("по четвергам в 19", D(2026, 12, 10, 19), TH),
        ("по четвергам в 19 часов", D(2026, 12, 10, 19), TH),
        ("по четвергам в 7 вечера", D(2026, 12, 10, 19), TH),
        ("по четвергам в 7:30 вечера", D(2026, 12, 10, 19, 30), TH),
        ("по субботам в 2 дня", D(2026, 12, 12, 14), "FREQ=WEEKLY;BYDAY=SA"),
        ("по субботам в 11 утра", D(2026, 12, 12, 11), "FREQ=WEEKLY;BYDAY=SA"),
        ("каждую среду 18:30", D(2026, 12, 9, 18, 30), "FREQ=WEEKLY;BYDAY=WE"),
        ("по средам в 18:30", D(2026, 12, 9, 18, 30), "FREQ=WEEKLY;BYDAY=WE"),
        ("каждое воскресенье в 12:00", D(2026, 12, 13, 12), "FREQ=WEEKLY;BYDAY=SU"),
        ("каждое воскресенье в 12:01", D(2026, 12, 6, 12, 1), "FREQ=WEEKLY;BYDAY=SU"),
        ("по воскресеньям в 11:00", D(2026, 12, 13, 11), "FREQ=WEEKLY;BYDAY=SU"),
        ("каждую пятницу в 18:00", D(2026, 12, 11, 18), "FREQ=WEEKLY;BYDAY=FR"),
        ("по пятницам в 18:00", D(2026, 12, 11, 18), "FREQ=WEEKLY;BYDAY=FR"),
        ("каждую субботу в 10:00", D(2026, 12, 12, 10), "FREQ=WEEKLY;BYDAY=SA"),
        ("по субботам в 10:00", D(2026, 12, 12, 10), "FREQ=WEEKLY;BYDAY=SA"),
        ("каждый понедельник в 19:00", D(2026, 12, 7, 19), "FREQ=WEEKLY;BYDAY=MO"),
        ("по вторникам в 19:00", D(2026, 12, 8, 19), "FREQ=WEEKLY;BYDAY=TU"),
        ("каждый вторник в 19:00", D(2026, 12, 8, 19), "FREQ=WEEKLY;BYDAY=TU"),
        ("еженедельно по четвергам в 19:00", D(2026, 12, 10, 19), TH),
        ("каждую неделю в четверг в 19:00", D(2026, 12, 10, 19), TH),
        # several days
        ("every Monday and Thursday 19:00", D(2026, 12, 7, 19), "FREQ=WEEKLY;BYDAY=MO,TH"),
        ("every Thursday and Monday 19:00", D(2026, 12, 7, 19), "FREQ=WEEKLY;BYDAY=MO,TH"),
        ("по понедельникам и четвергам в 19:00", D(2026, 12, 7, 19), "FREQ=WEEKLY;BYDAY=MO,TH"),
        ("по вт, чт в 19:00", D(2026, 12, 8, 19), "FREQ=WEEKLY;BYDAY=TU,TH"),
        # every other week
        ("every other Thursday 19:00", D(2026, 12, 10, 19), TH2),
        ("every 2 weeks on Thursday 19:00", D(2026, 12, 10, 19), TH2),
        ("every two weeks on Thursday at 7pm", D(2026, 12, 10, 19), TH2),
        ("biweekly on Thursday 19:00", D(2026, 12, 10, 19), TH2),
        ("every 3 weeks on Thursday 19:00", D(2026, 12, 10, 19), TH2.replace("=2", "=3")),
        ("раз в две недели по четвергам в 19:00", D(2026, 12, 10, 19), TH2),
        ("каждые две недели по четвергам в 19:00", D(2026, 12, 10, 19), TH2),
        ("через неделю по четвергам в 19:00", D(2026, 12, 10, 19), TH2),
        ("каждый второй четверг в 19:00", D(2026, 12, 10, 19), TH2),
        ("every second Thursday 19:00", D(2026, 12, 10, 19), TH2),
        # monthly n-th weekday
        ("каждый второй четверг месяца в 19:00", D(2026, 12, 10, 19), "FREQ=MONTHLY;BYDAY=2TH"),
        ("first Thursday of the month 19:00", D(2027, 1, 7, 19), FIRST_TH),
        ("every first Thursday 19:00", D(2027, 1, 7, 19), FIRST_TH),
        ("first Thursday of every month at 7pm", D(2027, 1, 7, 19), FIRST_TH),
        ("the 1st Thursday of the month 19:00", D(2027, 1, 7, 19), FIRST_TH),
        ("last Friday of the month 18:00", D(2026, 12, 25, 18), LAST_FR),
        ("every last Friday 18:00", D(2026, 12, 25, 18), LAST_FR),
        ("каждый первый четверг месяца в 19:00", D(2027, 1, 7, 19), FIRST_TH),
        ("в первый четверг месяца в 19:00", D(2027, 1, 7, 19), FIRST_TH),
        ("последняя пятница месяца в 18:00", D(2026, 12, 25, 18), LAST_FR),
        ("в последнюю пятницу месяца в 18:00", D(2026, 12, 25, 18), LAST_FR),
        ("каждую третью среду месяца в 18:00", D(2026, 12, 16, 18), "FREQ=MONTHLY;BYDAY=3WE"),
        ("каждое первое воскресенье месяца в 12:00", D(2027, 1, 3, 12), "FREQ=MONTHLY;BYDAY=1SU"),
        ("fifth Thursday of the month 19:00", D(2026, 12, 31, 19), "FREQ=MONTHLY;BYDAY=5TH"),
        # daily
        ("every day 9:00", D(2026, 12, 7, 9), "FREQ=DAILY"),
        ("every day 13:00", D(2026, 12, 6, 13), "FREQ=DAILY"),
        ("daily at 9am", D(2026, 12, 7, 9), "FREQ=DAILY"),
        ("каждый день в 9:00", D(2026, 12, 7, 9), "FREQ=DAILY"),
        ("ежедневно в 9:00", D(2026, 12, 7, 9), "FREQ=DAILY"),
        # one-off
        ("2026-12-10 19:00", D(2026, 12, 10, 19), None),
        ("10.12.2026 19:00", D(2026, 12, 10, 19), None),
        ("10.12.26 19:00", D(2026, 12, 10, 19), None),
        ("10.12 в 19:00", D(2026, 12, 10, 19), None),
        ("01.12 в 19:00", D(2027, 12, 1, 19), None),
        ("Dec 10 19:00", D(2026, 12, 10, 19), None),
        ("December 10th at 7pm", D(2026, 12, 10, 19), None),
        ("10 Dec 2026 19:00", D(2026, 12, 10, 19), None),
        ("Thu 10 Dec 7.30pm", D(2026, 12, 10, 19, 30), None),
        ("Jan 5 12am", D(2027, 1, 5, 0), None),
        ("Jan 5 12pm", D(2027, 1, 5, 12), None),
        ("10 декабря в 19:00", D(2026, 12, 10, 19), None),
        ("10 дек. в 19:00", D(2026, 12, 10, 19), None),
        ("10 декабря 2026 года в 19:00", D(2026, 12, 10, 19), None),
        ("29 февраля в 19:00", D(2028, 2, 29, 19), None),
        ("tomorrow 19:00", D(2026, 12, 7, 19), None),
        ("today at 6pm", D(2026, 12, 6, 18), None),
        ("завтра в 19:00", D(2026, 12, 7, 19), None),
        ("послезавтра в 19:00", D(2026, 12, 8, 19), None),
        ("Thursday 19:00", D(2026, 12, 10, 19), None),
        ("next Thursday at 7pm", D(2026, 12, 10, 19), None),
        ("в четверг в 19:00", D(2026, 12, 10, 19), None),
        ("во вторник в 19:00", D(2026, 12, 8, 19), None),
        ("в воскресенье в 11:00", D(2026, 12, 13, 11), None),
        ("в воскресенье в 13:00", D(2026, 12, 6, 13), None),
        ("в среду, в 18:30", D(2026, 12, 9, 18, 30), None),
    ],
)


@PHRASES
def test_phrases(text: str, start: datetime, rrule: str | None) -> None:
    assert parse_when(text, NOW) == When(start, rrule)


@PHRASES
def test_every_rule_read_is_accepted_and_starts_at_start(
    text: str, start: datetime, rrule: str | None
) -> None:
    check_rule(rrule, start)
    after = start.replace(tzinfo=UTC) - timedelta(days=1)
    occ = occurrences(start, "Asia/Tbilisi", rrule, after=after, limit=2)
    assert occ[0].local == start
    assert len(occ) == (1 if rrule is None else 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("every Thursday", "no time"),
        ("every Thursday 25:00", "hour"),
        ("every Thursday 24:00", "hour"),
        ("every Thursday 19:60", "minutes"),
        ("every Thursday 13pm", "am/pm"),
        ("по четвергам в 19 вечера", "am/pm"),
        ("по четвергам в 25 часов", "hour"),
        ("30.02.2027 19:00", "no such date"),
        ("30 февраля в 19:00", "no such date"),
        ("Feb 30 19:00", "no such date"),
        ("2026-13-01 19:00", "no such date"),
        ("2026-12-01 19:00", "past"),
        ("06.12.2026 12:00", "past"),
        ("today at 9am", "past"),
        ("2040-01-01 19:00", "years ahead"),
        ("every blursday 19:00", "word 2"),
        ("hello world 19:00", "word 1"),
        ("19:00", "no day"),
        ("every month 19:00", "no day"),
        ("Monday and Thursday 19:00", "single weekday"),
        ("every 100 weeks on Thursday 19:00", "word 2"),
        ("every 9 weeks on Thursday 19:00", "1..8"),
        ("every 2 Thursday 19:00", "without 'weeks'"),
        ("first and last Friday of the month 18:00", "more than one ordinal"),
        ("first Monday and Thursday of the month 18:00", "single weekday"),
        ("every Thursday 10.12 19:00", "repeat rule"),
        ("tomorrow Dec 10 19:00", "relative day"),
        ("Fri 10 Dec 2026 19:00", "does not match"),
        ("every day Thursday 19:00", "weekday and 'day'"),
        ("every other day 19:00", "daily rule"),
        ("every 2 days 19:00", "daily rule"),
        ("every Thursday of the month 19:00", "month"),
        ("каждый четверг в 19:00 " + "x" * 10_000, "longer than"),
        ("9" * 300, "longer than"),
        ("1" * 199, "no time"),
    ],
)
def test_rejected(text: str, message: str) -> None:
    began = time.monotonic()
    with pytest.raises(WhenError, match=message) as raised:
        parse_when(text, NOW)
    assert time.monotonic() - began < 0.1
    if len(text) > 5:
        assert text.strip() not in str(raised.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_a_when_or_a_when_error(text: str) -> None:
    try:
        when = parse_when(text, NOW)
    except WhenError:
        return
    assert when.start > NOW


@settings(max_examples=100, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 12, 31)),
    weekday=st.sampled_from(["monday", "tuesday", "wednesday", "thursday", "friday"]),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
)
def test_weekly_start_is_the_first_match_after_now(
    now: datetime, weekday: str, hour: int, minute: int
) -> None:
    when = parse_when(f"every {weekday} {hour}:{minute:02d}", now)
    index = ["monday", "tuesday", "wednesday", "thursday", "friday"].index(weekday)
    assert when.start > now
    # Strictly after now: at exactly the wall time it is the same time a week later.
    assert when.start - now <= timedelta(days=7)
    assert when.start.weekday() == index
    assert (when.start.hour, when.start.minute) == (hour, minute)


def test_nth_weekday() -> None:
    assert nth_weekday(2026, 12, 3, 1) == datetime(2026, 12, 3).date()
    assert nth_weekday(2026, 12, 3, 5) == datetime(2026, 12, 31).date()
    assert nth_weekday(2027, 2, 3, 5) is None
    assert nth_weekday(2026, 12, 4, -1) == datetime(2026, 12, 25).date()
    assert nth_weekday(2027, 1, 6, -1) == datetime(2027, 1, 31).date()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400),
        ("90 min", 5400),
        ("90 minutes", 5400),
        ("5 min", 300),
        ("1h", 3600),
        ("1 hour", 3600),
        ("1h30", 5400),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1.5h", 5400),
        ("2 hours", 7200),
        ("12h", 43200),
        ("1:30", 5400),
        ("2ч", 7200),
        ("2 ч", 7200),
        ("2 часа", 7200),
        ("1 ч 30 мин", 5400),
        ("90 мин", 5400),
        ("1,5 ч", 5400),
        ("полтора часа", 5400),
        ("Полтора  часа", 5400),
        ("полчаса", 1800),
        ("час", 3600),
        ("an hour and a half", 5400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("90", "unit"),
        ("4m", "5 minutes to 12 hours"),
        ("0h", "5 minutes to 12 hours"),
        ("13h", "5 minutes to 12 hours"),
        ("12h1m", "5 minutes to 12 hours"),
        ("1h75", "0..59"),
        ("1:75", "0..59"),
        ("1.5h30", "fractional"),
        ("forever", "not a duration"),
        ("1h" * 100, "longer than"),
        ("-5 min", "not a duration"),
    ],
)
def test_rejected_durations(text: str, message: str) -> None:
    with pytest.raises(WhenError, match=message):
        parse_duration(text)
