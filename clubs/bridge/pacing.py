"""Pacing sends to Telegram below its limits, instead of running into 429s.

Telegram answers 429 to a bot that sends more than about 20 messages a minute into one group
(and 1 a second into one chat, bursts tolerated), and a bot that keeps hitting the limit is
made to wait longer. `Pacer.wait_for(chat)` says how long the next send into a chat must wait
so that no 60-second window holds more than `per_minute` sends; `sent(chat)` records one. Pure:
the time is passed in, so it is tested without a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0
PER_MINUTE = 20


@dataclass
class Pacer:
    per_minute: int = PER_MINUTE
    window_s: float = WINDOW_S
    _sends: dict[int, deque[float]] = field(default_factory=dict)

    def wait_for(self, chat: int, now: float) -> float:
        """Seconds until a send into `chat` keeps within the limit (0: send now)."""
        sends = self._sends.get(chat)
        if not sends:
            return 0.0
        while sends and sends[0] <= now - self.window_s:
            sends.popleft()
        if len(sends) < self.per_minute:
            return 0.0
        return sends[0] + self.window_s - now

    def sent(self, chat: int, now: float) -> None:
        self._sends.setdefault(chat, deque()).append(now)

    def moved(self, old: int, new: int) -> None:
        """A group became a supergroup: its count follows it."""
        if old in self._sends:
            self._sends.setdefault(new, deque()).extend(self._sends.pop(old))
