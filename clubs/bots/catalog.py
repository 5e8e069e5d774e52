"""The bots this build ships, by name: the composition root picks from here (no import-time
registration; a deployment enables bots by listing their accounts)."""

from __future__ import annotations

from clubs.bots.host import BotFactory


def default_factories() -> dict[str, BotFactory]:
    return {}
