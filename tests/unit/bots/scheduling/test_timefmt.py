"""Session times as members read them: Russian and English tables, spans, rules in words."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clubs.bots.scheduling.recurrence import RuleError
from clubs.bots.scheduling.timefmt import describe_rule, format_local, format_span

ALMATY_19 = datetime(2026, 12, 12, 14, 0, tzinfo=UTC)  # Sat 12 Dec, 19:00 in Almaty (+05)


@pytest.mark.parametrize(
    ("instant", "tzid", "lang", "place", "text"),
    [
        (ALMATY_19, "Asia/Almaty", "ru", "Алматы", "сб, 12 дек., 19:00 (Алматы)"),
        (ALMATY_19, "Asia/Almaty", "en", "Almaty", "Sat 12 Dec, 19:00 (Almaty)"),
        (ALMATY_19, "Asia/Almaty", "ru", None, "сб, 12 дек., 19:00"),
        (ALMATY_19, "Asia/Tbilisi", "ru", "Тбилиси", "сб, 12 дек., 18:00 (Тбилиси)"),
        (ALMATY_19, "Europe/Berlin", "en", None, "Sat 12 Dec, 15:00"),
        (datetime(2027, 7, 1, 17, tzinfo=UTC), "Europe/Berlin", "ru", None, "чт, 1 июл., 19:00"),
        (datetime(2027, 7, 1, 17, tzinfo=UTC), "Europe/Berlin", "en", None, "Thu 1 Jul, 19:00"),
        (datetime(2027, 1, 4, 8, 5, tzinfo=UTC), "Asia/Almaty", "ru", None, "пн, 4 янв., 13:05"),
        (datetime(2027, 2, 2, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "вт, 2 февр., 13:00"),
        (datetime(2027, 3, 3, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "ср, 3 мар., 13:00"),
        (datetime(2027, 4, 2, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "пт, 2 апр., 13:00"),
        (datetime(2027, 5, 9, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "вс, 9 мая, 13:00"),
        (datetime(2027, 6, 9, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "ср, 9 июн., 13:00"),
        (datetime(2027, 8, 9, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "пн, 9 авг., 13:00"),
        (datetime(2027, 9, 9, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "чт, 9 сент., 13:00"),
        (datetime(2027, 10, 9, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "сб, 9 окт., 13:00"),
        (datetime(2027, 11, 9, 8, tzinfo=UTC), "Asia/Almaty", "ru", None, "вт, 9 нояб., 13:00"),
        (datetime(2027, 11, 9, 8, tzinfo=UTC), "Asia/Almaty", "en", None, "Tue 9 Nov, 13:00"),
        (datetime(2027, 11, 9, 8, tzinfo=UTC), "Asia/Almaty", "de", None, "Tue 9 Nov, 13:00"),
    ],
)
def test_format_local(
    instant: datetime, tzid: str, lang: str, place: str | None, text: str
) -> None:
    assert format_local(instant, tzid, lang, place=place) == text


def test_format_local_refuses_naive_instants_and_unknown_zones() -> None:
    with pytest.raises(ValueError, match="aware"):
        format_local(datetime(2026, 12, 12, 19), "Asia/Almaty", "ru")
    with pytest.raises(RuleError):
        format_local(ALMATY_19, "Mars/Olympus", "ru")


@pytest.mark.parametrize(
    ("start", "duration_s", "tzid", "lang", "place", "text"),
    [
        (ALMATY_19, 7200, "Asia/Almaty", "ru", "Алматы", "сб, 12 дек., 19:00–21:00 (Алматы)"),
        (ALMATY_19, 5400, "Asia/Almaty", "en", "Almaty", "Sat 12 Dec, 19:00–20:30 (Almaty)"),
        (
            datetime(2026, 12, 10, 18, tzinfo=UTC),
            7200,
            "Asia/Almaty",
            "ru",
            None,
            "чт, 10 дек., 23:00 – пт, 11 дек., 01:00",
        ),
        (
            datetime(2026, 12, 10, 18, tzinfo=UTC),
            7200,
            "Asia/Almaty",
            "en",
            "Almaty",
            "Thu 10 Dec, 23:00 – Fri 11 Dec, 01:00 (Almaty)",
        ),
        # Across the autumn clock change in Berlin: 3 real hours from 01:00 CEST end at 03:00 CET.
        (
            datetime(2027, 10, 30, 23, tzinfo=UTC),
            3 * 3600,
            "Europe/Berlin",
            "en",
            None,
            "Sun 31 Oct, 01:00–03:00",
        ),
        # Across the spring change: 2 real hours from 01:00 CET end at 04:00 CEST.
        (
            datetime(2027, 3, 28, 0, tzinfo=UTC),
            2 * 3600,
            "Europe/Berlin",
            "ru",
            None,
            "вс, 28 мар., 01:00–04:00",
        ),
    ],
)
def test_format_span(
    start: datetime, duration_s: int, tzid: str, lang: str, place: str | None, text: str
) -> None:
    assert format_span(start, duration_s, tzid, lang, place=place) == text


TH_19 = datetime(2026, 12, 10, 19, 0)  # a Thursday


@pytest.mark.parametrize(
    ("rrule", "ru", "en"),
    [
        ("FREQ=WEEKLY;BYDAY=TH", "каждый четверг в 19:00", "every Thursday at 19:00"),
        ("FREQ=WEEKLY", "каждый четверг в 19:00", "every Thursday at 19:00"),
        ("FREQ=WEEKLY;BYDAY=WE", "каждую среду в 19:00", "every Wednesday at 19:00"),
        ("FREQ=WEEKLY;BYDAY=SU", "каждое воскресенье в 19:00", "every Sunday at 19:00"),
        (
            "FREQ=WEEKLY;BYDAY=TH,MO",
            "по понедельникам и четвергам в 19:00",
            "every Monday and Thursday at 19:00",
        ),
        (
            "FREQ=WEEKLY;BYDAY=MO,WE,FR",
            "по понедельникам, средам и пятницам в 19:00",
            "every Monday, Wednesday and Friday at 19:00",
        ),
        (
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=TH",
            "раз в две недели, по четвергам в 19:00",
            "every other Thursday at 19:00",
        ),
        (
            "FREQ=WEEKLY;INTERVAL=3;BYDAY=TH",
            "раз в 3 недели, по четвергам в 19:00",
            "every 3 weeks on Thursday at 19:00",
        ),
        (
            "FREQ=WEEKLY;INTERVAL=5;BYDAY=TH",
            "раз в 5 недель, по четвергам в 19:00",
            "every 5 weeks on Thursday at 19:00",
        ),
        (
            "FREQ=MONTHLY;BYDAY=1TH",
            "каждый первый четверг месяца в 19:00",
            "the first Thursday of every month at 19:00",
        ),
        (
            "FREQ=MONTHLY;BYDAY=TH;BYSETPOS=2",
            "каждый второй четверг месяца в 19:00",
            "the second Thursday of every month at 19:00",
        ),
        (
            "FREQ=MONTHLY;BYDAY=-1FR",
            "каждую последнюю пятницу месяца в 19:00",
            "the last Friday of every month at 19:00",
        ),
        (
            "FREQ=MONTHLY;BYDAY=3SU",
            "каждое третье воскресенье месяца в 19:00",
            "the third Sunday of every month at 19:00",
        ),
        ("FREQ=DAILY", "каждый день в 19:00", "every day at 19:00"),
        (
            "FREQ=WEEKLY;BYDAY=TH;COUNT=10",
            "каждый четверг в 19:00, всего 10",
            "every Thursday at 19:00, 10 times",
        ),
        (
            "FREQ=WEEKLY;BYDAY=TH;UNTIL=20270601",
            "каждый четверг в 19:00, до 1 июн. 2027",
            "every Thursday at 19:00, until 1 Jun 2027",
        ),
        (None, "один раз: чт, 10 дек., 19:00", "once: Thu 10 Dec, 19:00"),
        # What the describer does not know reads neutrally.
        (
            "FREQ=MONTHLY;BYMONTHDAY=10",
            "по расписанию, с чт, 10 дек., 19:00",
            "on a schedule, from Thu 10 Dec, 19:00",
        ),
        (
            "FREQ=MONTHLY;INTERVAL=2;BYDAY=1TH",
            "по расписанию, с чт, 10 дек., 19:00",
            "on a schedule, from Thu 10 Dec, 19:00",
        ),
        (
            "FREQ=DAILY;BYDAY=MO,TU",
            "по расписанию, с чт, 10 дек., 19:00",
            "on a schedule, from Thu 10 Dec, 19:00",
        ),
        ("garbage", "по расписанию, с чт, 10 дек., 19:00", "on a schedule, from Thu 10 Dec, 19:00"),
        (
            "FREQ=SECONDLY",
            "по расписанию, с чт, 10 дек., 19:00",
            "on a schedule, from Thu 10 Dec, 19:00",
        ),
    ],
)
def test_describe_rule(rrule: str | None, ru: str, en: str) -> None:
    assert describe_rule(rrule, TH_19, "ru") == ru
    assert describe_rule(rrule, TH_19, "en") == en


@settings(max_examples=200, deadline=None)
@given(rrule=st.one_of(st.none(), st.text(max_size=300)), lang=st.sampled_from(["ru", "en", ""]))
def test_describe_rule_never_raises(rrule: str | None, lang: str) -> None:
    text = describe_rule(rrule, TH_19, lang)
    assert text
    assert "19:00" in text


def test_describe_rule_with_a_bad_start_is_still_text() -> None:
    assert describe_rule("FREQ=WEEKLY", None, "ru") == "по расписанию"  # type: ignore[arg-type]
    assert describe_rule(None, None, "en") == "on a schedule"  # type: ignore[arg-type]
