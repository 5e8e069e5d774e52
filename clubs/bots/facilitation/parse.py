"""Small readings of what chairs type, and how the bot shows a person (pure)."""

from __future__ import annotations


def duration(text: str) -> int | None:
    """`10m`, `90s`, `1h`, `10` (minutes), `10м`: seconds, or None."""
    text = text.strip().lower()
    units = {"s": 1, "с": 1, "m": 60, "м": 60, "min": 60, "мин": 60, "h": 3600, "ч": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            number, factor = text[: -len(unit)], units[unit]
            break
    else:
        number, factor = text, 60
    if not number.isdigit() or len(number) > 5:
        return None
    return int(number) * factor


def who(user: str) -> str:
    """How the status shows a person: the localpart, no pill (nobody is pinged by it)."""
    return user.removeprefix("@").split(":", 1)[0]
