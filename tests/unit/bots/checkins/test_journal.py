"""The journal's months: in the member's zone, digests on the first at 10:00 local."""

from __future__ import annotations

from datetime import UTC, datetime

from clubs.bots.checkins.journal import digest_due, month_bounds, month_of, per_month


def utc(month: int, day: int, hour: int, year: int = 2026) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


def test_the_month_is_the_members_own() -> None:
    late = utc(10, 31, 20)  # 31 October 20:00 UTC is 1 November 01:00 in Almaty
    assert month_of(late, "Europe/Berlin") == "2026-10"
    assert month_of(late, "Asia/Almaty") == "2026-11"


def test_month_bounds_cross_the_year_and_dst() -> None:
    assert month_bounds("2026-12", "UTC") == (utc(12, 1, 0), utc(1, 1, 0, 2027))
    start, end = month_bounds("2026-10", "Europe/Berlin")
    assert start == utc(9, 30, 22)  # midnight CEST
    assert end == utc(10, 31, 23)  # midnight CET


def test_the_digest_of_a_month_goes_out_on_the_next_first_at_ten() -> None:
    assert digest_due("2026-11", "Europe/Berlin") == utc(12, 1, 9)
    assert digest_due("2026-12", "Asia/Almaty") == utc(1, 1, 5, 2027)
    assert digest_due("2026-03", "Europe/Berlin") == utc(4, 1, 8)  # CEST by then


def test_counts_per_month_oldest_first_and_only_the_last_months() -> None:
    times = [utc(m, 10, 12) for m in (1, 2, 2, 3, 4, 5, 6, 7, 7, 7)]
    assert per_month(times, "UTC") == [
        ("2026-02", 2),
        ("2026-03", 1),
        ("2026-04", 1),
        ("2026-05", 1),
        ("2026-06", 1),
        ("2026-07", 3),
    ]
    assert per_month([], "UTC") == []
