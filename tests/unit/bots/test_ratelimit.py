from __future__ import annotations

import pytest

from clubs.bots.ratelimit import RateLimiter, Verdict


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_five_commands_pass_and_the_sixth_waits_two_seconds(clock: ManualClock) -> None:
    limiter: RateLimiter[str] = RateLimiter(5, 10.0, clock=clock)
    assert [limiter.check("a").allowed for _ in range(5)] == [True] * 5
    assert limiter.check("a") == Verdict(allowed=False, retry_after=2.0, first_refusal=True)


def test_the_member_is_told_once_per_refusal_streak(clock: ManualClock) -> None:
    limiter: RateLimiter[str] = RateLimiter(1, 10.0, clock=clock)
    assert limiter.check("a").allowed
    assert [limiter.check("a").first_refusal for _ in range(3)] == [True, False, False]
    clock.now += 10
    assert limiter.check("a").allowed
    assert limiter.check("a").first_refusal


def test_tokens_refill_with_time(clock: ManualClock) -> None:
    limiter: RateLimiter[str] = RateLimiter(5, 10.0, clock=clock)
    for _ in range(5):
        limiter.check("a")
    clock.now += 1.0
    assert limiter.check("a").retry_after == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.check("a").allowed
    assert not limiter.check("a").allowed


def test_keys_are_independent(clock: ManualClock) -> None:
    limiter: RateLimiter[tuple[str, str]] = RateLimiter(1, 10.0, clock=clock)
    assert limiter.check(("!room", "@a:x")).allowed
    assert limiter.check(("!room", "@b:x")).allowed
    assert limiter.check(("!other", "@a:x")).allowed
    assert not limiter.check(("!room", "@a:x")).allowed


def test_a_clock_going_backwards_refills_nothing(clock: ManualClock) -> None:
    limiter: RateLimiter[str] = RateLimiter(1, 10.0, clock=clock)
    limiter.check("a")
    clock.now -= 100
    assert not limiter.check("a").allowed


def test_memory_is_bounded_by_max_keys(clock: ManualClock) -> None:
    limiter: RateLimiter[int] = RateLimiter(5, 10.0, clock=clock, max_keys=100)
    for key in range(10_000):
        limiter.check(key)
    assert len(limiter) == 100


def test_refilled_buckets_are_forgotten(clock: ManualClock) -> None:
    limiter: RateLimiter[int] = RateLimiter(5, 10.0, clock=clock)
    for key in range(50):
        limiter.check(key)
    clock.now += 10.0
    limiter.check(999)
    assert len(limiter) == 1


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0, 10.0)
