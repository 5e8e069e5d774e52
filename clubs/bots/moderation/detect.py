"""Pure decisions of the moderation bot: is this a flood, a join wave, mention spam, personal data?

No I/O here. Metadata detectors (flood, join wave, churn) work on sender and timestamps, which
stay plaintext in encrypted rooms; content detectors (mentions, links, words, personal data) run
on what the bot could decrypt. Every detector is a small object with bounded memory, fed events
in any order and told the current time by the caller (tests use a manual clock).
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import phonenumbers

PersonalDataKind = Literal["phone", "email", "passport", "address", "card"]


@dataclass
class SlidingWindow:
    """Counts events per key within the last `window_s` seconds (bounded: at most `limit` kept).

    `add()` returns True exactly once per crossing: when the count reaches `limit` and the key
    was not already over it, so a flood triggers one action, not one per message.
    """

    limit: int
    window_s: float
    _times: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _tripped: set[str] = field(default_factory=set)

    def add(self, key: str, ts: float) -> bool:
        times = self._times[key]
        times.append(ts)
        while times and times[0] <= ts - self.window_s:
            times.popleft()
        while len(times) > self.limit:
            times.popleft()
        if len(times) >= self.limit:
            if key in self._tripped:
                return False
            self._tripped.add(key)
            return True
        self._tripped.discard(key)
        return False

    def reset(self, key: str) -> None:
        self._times.pop(key, None)
        self._tripped.discard(key)

    def forget_older_than(self, ts: float) -> None:
        """Drop keys whose newest event is older than `ts - window` (call now and then)."""
        for key in [k for k, t in self._times.items() if not t or t[-1] <= ts - self.window_s]:
            self.reset(key)


def mention_count(user_ids: object, body: str) -> int:
    """Distinct people pinged: `m.mentions.user_ids` plus legacy @-mentions in the body."""
    ids = {u for u in user_ids if isinstance(u, str)} if isinstance(user_ids, list) else set()
    ids |= set(_MXID_IN_TEXT.findall(body))
    return len(ids)


_MXID_IN_TEXT = re.compile(r"@[a-z0-9._=\-/+]{1,255}:[A-Za-z0-9.\-]{1,255}(?::\d{1,5})?")
_LINK = re.compile(
    r"(?i)\b(?:https?://|www\.)[^\s<>\"]{2,2048}|\b[a-z0-9-]{1,63}\.(?:ru|com|org|net|io|me|su|info|xyz|top|ly|gg|link)/[^\s]*"
)
_EMAIL = re.compile(
    r"(?i)\b[a-z0-9._%+\-]{1,64}@[a-z0-9\-]{1,63}(?:\.[a-z0-9\-]{1,63})*\.[a-z]{2,24}\b"
)
# Russian internal passport (4-digit series + 6-digit number), foreign passport (2 + 7), with
# the usual separators; SNILS (123-456-789 01).
_PASSPORT = re.compile(
    r"(?<![\d.,:/])(?:\d{2}[ \u00a0]?\d{2}[ \u00a0№N]{0,3}\d{6}|\d{2}[ \u00a0№N]{1,3}\d{7}|"
    r"\d{3}-\d{3}-\d{3}[ \u00a0]\d{2})(?![\d.,:/])"
)
_CARD = re.compile(r"(?<!\d)(?:\d{4}[ \-]?){3}\d{4}(?!\d)")
# An exact address: a street word with a house number, or apartment/house markers.
_ADDRESS = re.compile(
    r"(?ix)"
    r"(?:\b(?:ул|улица|пр-т|проспект|пер|переулок|бульвар|б-р|шоссе|наб|набережная|пл|площадь|"
    r"мкр|микрорайон)\.?\s+[\w\-.]{2,40}(?:\s[\w\-.]{2,40})?,?\s*(?:д\.?|дом)?\s*\d{1,4}[а-яa-z]?\b)"
    r"|(?:\b(?:д|дом)\.?\s*\d{1,4}[а-я]?,?\s*(?:корп\.?\s*\d{1,3},?\s*)?(?:кв|квартира)\.?\s*\d{1,4}\b)"
    r"|(?:\b[\wäöüß\-]{3,40}(?:straße|strasse|str\.|gasse|weg|allee|platz)\s+\d{1,4}[a-z]?\b)"
    r"|(?:\b\d{1,5}\s+[\w\-]{2,40}\s+(?:street|st\.|avenue|ave\.|road|rd\.|boulevard|blvd\.)\b)"
    r"|(?:\b(?:ulica|ul\.|aleja|al\.|gatvė|g\.)\s+[\w\-ąćęłńóśźżėįšųūž]{2,40}\s+\d{1,4}[a-z]?\b)"
)

# Regions whose national formats members are likely to type (home and club countries).
PHONE_REGIONS = ("RU", "KZ", "KG", "UZ", "GE", "DE", "PL", "LT", "AM", "RS", "TR")


def find_personal_data(text: str, *, max_len: int = 8192) -> list[PersonalDataKind]:
    """Which kinds of personal data the text contains (each kind once, in a stable order).

    Errs on the side of flagging: a club decides whether a hit is redacted or only flagged.
    Only the first `max_len` characters are read (a message can be 64 KiB).
    """
    text = text[:max_len]
    found: list[PersonalDataKind] = []
    if _has_phone(text):
        found.append("phone")
    if _EMAIL.search(text):
        found.append("email")
    if any(_luhn_ok(m.group()) for m in _CARD.finditer(text)):
        found.append("card")
    elif _PASSPORT.search(text):
        found.append("passport")
    if _ADDRESS.search(text):
        found.append("address")
    return found


def _has_phone(text: str) -> bool:
    if sum(c.isdigit() for c in text) < 7:
        return False
    leniency = phonenumbers.Leniency.VALID
    return any(
        phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency).has_next()
        for region in PHONE_REGIONS
    )


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def has_link(text: str) -> bool:
    return _LINK.search(text[:8192]) is not None


def words_matching(text: str, words: Iterable[str]) -> list[str]:
    """Listed words found in the text, case-insensitively, as whole words or word prefixes."""
    lowered = text[:8192].casefold()
    hits = []
    for w in words:
        w_cf = w.casefold().strip()
        if w_cf and re.search(r"(?<!\w)" + re.escape(w_cf), lowered):
            hits.append(w)
    return hits


@dataclass(frozen=True)
class Thresholds:
    """Per-club protection settings with sensible defaults for small, closed clubs."""

    flood_messages: int = 8
    flood_window_s: float = 10.0
    mute_s: float = 600.0
    max_mentions: int = 5
    join_wave_joins: int = 8
    join_wave_window_s: float = 60.0
    new_member_hours: float = 24.0
    personal_data: Literal["redact", "flag", "off"] = "redact"


_NUMBERS: dict[str, tuple[float, float]] = {
    # Club settings key → allowed range. The keys are the `Thresholds` fields.
    "flood_messages": (2, 1000),
    "flood_window_s": (1, 3600),
    "mute_s": (60, 7 * 86400),
    "max_mentions": (1, 100),
    "join_wave_joins": (2, 1000),
    "join_wave_window_s": (1, 3600),
    "new_member_hours": (0, 720),
}
_INTS = frozenset({"flood_messages", "max_mentions", "join_wave_joins"})
MAX_WORDS = 500
MAX_WORD_CHARS = 100


def club_thresholds(base: Thresholds, settings: Mapping[str, Any] | None) -> Thresholds:
    """`base` with a club's own choices (the `moderation` object of its club settings, written
    by provisioning). Room state can be written by anyone with the power to: a value of the
    wrong type or out of range is ignored, never trusted."""
    if not isinstance(settings, Mapping):
        return base
    changes: dict[str, Any] = {}
    for key, (low, high) in _NUMBERS.items():
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key in _INTS and not isinstance(value, int):
            continue
        if low <= value <= high:
            changes[key] = value
    if settings.get("personal_data") in ("redact", "flag", "off"):
        changes["personal_data"] = settings["personal_data"]
    return replace(base, **changes) if changes else base


def club_words(settings: Mapping[str, Any] | None) -> tuple[str, ...]:
    """A club's own word list from its settings (strings only, bounded)."""
    words = settings.get("words") if isinstance(settings, Mapping) else None
    if not isinstance(words, list):
        return ()
    return tuple(
        w for w in words[:MAX_WORDS] if isinstance(w, str) and 0 < len(w.strip()) <= MAX_WORD_CHARS
    )
