"""Time for bots, injected: the wall clock for due times, sleeps that follow it, and a manual
clock for tests that moves time without waiting.

Reminders, timers and mutes are due at wall-clock instants (UTC epoch seconds, stored with an
IANA zone where people see them). asyncio's timers run on the loop's monotonic clock instead, so
one long `asyncio.sleep(due - now)` drifts when the wall clock is stepped (NTP) or the host is
suspended. `SystemClock.sleep_until` therefore sleeps in slices of at most `SLICE_S` and looks
at the wall clock again after each: an instant is never slept past by more than a slice, and a
clock stepped forward wakes the sleeper at its next slice.

Bot code never calls `time.time()` or `asyncio.sleep()` itself: it asks the `Clock` it was
given (`HostServices.clock`, `BotContext.clock`). Tests pass a `ManualClock` and `advance()` it:
a six-second mute lifts at once, a reminder a week away fires now.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

SLICE_S = 60.0
"""The longest a `SystemClock` sleeps without looking at the wall clock again."""


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, UTC epoch seconds."""

    def monotonic(self) -> float:
        """A clock for durations and rate windows (never steps backwards)."""

    async def sleep(self, seconds: float) -> None:
        """Sleep this long (measured on this clock)."""

    async def sleep_until(self, when: float) -> None:
        """Return once `now() >= when` (at once if that is already so)."""


def call_at(
    clock: Clock, when: float, work: Callable[[], Coroutine[Any, Any, None]], *, name: str = ""
) -> asyncio.Task[None]:
    """Run `work()` at wall-clock instant `when`; cancel the returned task to call it off.
    The caller owns the task (keep a reference, cancel it on stop)."""

    async def at() -> None:
        await clock.sleep_until(when)
        await work()

    return asyncio.create_task(at(), name=name or "call_at")


class SystemClock:
    """The real clock: `time.time()` for instants, the loop's timers in bounded slices."""

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        while True:
            remaining = when - time.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, self.slice_s))


class ManualClock:
    """A clock that stands still until a test moves it (`advance`, `set`).

    Sleepers wake in due order when time passes their instant; nothing waits in real time.
    `monotonic()` moves with `now()`.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)  # still a suspension point, like a real zero sleep
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock now (tests wait for a loop to park)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_wakeup(self) -> float | None:
        """The earliest instant a sleeper waits for, if any."""
        pending = [when for when, _, f in self._sleepers if not f.done()]
        return min(pending) if pending else None

    async def advance(self, seconds: float) -> None:
        """Move time forward and let the woken sleepers run."""
        await self.set(self._now + seconds)

    async def set(self, when: float) -> None:
        """Move time to `when` (never backwards), waking sleepers due by then in order."""
        self._now = max(self._now, float(when))
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        for _ in range(5):  # a few loop turns: woken tasks get to their next await
            await asyncio.sleep(0)
