"""A per-key token bucket: how many commands a member may send, and when the next one is due.

Pure: the clock is a callable passed in (`time.monotonic` by default, a manual clock in tests).
Memory is bounded: buckets that have refilled are forgotten, and beyond `max_keys` the least
recently used bucket is dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float
    """Seconds until the next command is allowed; 0.0 when this one is."""
    first_refusal: bool
    """True for the first refusal after an allowed command: tell the member once, not per try."""


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    warned: bool = False


class RateLimiter(Generic[K]):
    """`capacity` commands at once, refilling to `capacity` over `per_seconds`.

    E.g. `RateLimiter[tuple[RoomId, UserId]](5, 10.0)`: five commands in a burst, then one
    every two seconds.
    """

    def __init__(
        self,
        capacity: int = 5,
        per_seconds: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if capacity < 1 or per_seconds <= 0 or max_keys < 1:
            raise ValueError("capacity, per_seconds and max_keys must be positive")
        self.capacity = capacity
        self.rate = capacity / per_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: K) -> Verdict:
        """Take one token for `key` if there is one."""
        now = self.clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.capacity), now)
        else:
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(float(self.capacity), bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        self._buckets[key] = bucket
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            verdict = Verdict(True, 0.0, False)
        else:
            verdict = Verdict(False, (1.0 - bucket.tokens) / self.rate, not bucket.warned)
            bucket.warned = True
        self._evict(now)
        return verdict

    def _evict(self, now: float) -> None:
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        # The front is the least recently used; a bucket that has refilled is as good as absent.
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if oldest.tokens + (now - oldest.stamp) * self.rate < self.capacity:
                break
            del self._buckets[key]
