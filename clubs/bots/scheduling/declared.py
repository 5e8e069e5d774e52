"""Sessions a club declares in the network file, as the provisioner publishes them in the club's
sessions room (`CLUB_SESSIONS` state). Pure: the state content → checked series drafts.

The state is written by the provisioner, but anyone with the room's state power could write it
too: every entry is checked like a facilitator's command (zone, rule, bounds, https links), and
an entry that fails is skipped, never half-used. Each entry's identity is its club, its key and
a digest of its content: a changed entry in the file is a new series (the old one ends).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clubs.bots.scheduling.options import KINDS, MAX_CAPACITY, MAX_TITLE
from clubs.bots.scheduling.recurrence import RuleError, check_rule, parse_key
from clubs.bots.scheduling.when import MAX_DURATION_S, MIN_DURATION_S

SOURCE_PREFIX = "state:"
MAX_DECLARED = 100
MAX_AGENDA_ITEMS = 50
MAX_ITEM_TITLE = 200
MAX_ITEM_MINUTES = 240
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_URL = re.compile(r"^https://[^\s<>\"']{3,500}$")


@dataclass(frozen=True)
class Declared:
    source: str
    """`state:<club>:<key>:<digest>`: the series it makes is found again by it."""
    title: str
    kind: str
    start_local: str
    rrule: str | None
    duration_s: int
    online: bool
    capacity: int | None
    materials: str | None
    agenda: tuple[tuple[str, int], ...] = ()
    """(title, minutes) items, passed on to the facilitation bot when an occurrence starts."""

    def __repr__(self) -> str:
        return f"Declared(source={self.source!r})"


def source_of(club: str) -> str:
    return f"{SOURCE_PREFIX}{club}:"


def declared_sessions(club: str, content: Mapping[str, Any] | None) -> tuple[list[Declared], int]:
    """The valid entries of a `CLUB_SESSIONS` content, and how many were skipped."""
    raw = content.get("sessions") if isinstance(content, Mapping) else None
    if not isinstance(raw, list):
        return [], 0
    good: list[Declared] = []
    skipped = 0
    for entry in raw[:MAX_DECLARED]:
        parsed = _entry(club, entry)
        if parsed is None:
            skipped += 1
        else:
            good.append(parsed)
    return good, skipped + max(0, len(raw) - MAX_DECLARED)


def _entry(club: str, entry: Any) -> Declared | None:
    if not isinstance(entry, Mapping):
        return None
    key, title, kind = entry.get("key"), entry.get("title"), entry.get("kind", "meeting")
    start, rrule = entry.get("start"), entry.get("rrule")
    duration, online = entry.get("duration_s"), entry.get("online", False)
    capacity, materials = entry.get("capacity"), entry.get("materials")
    if not (isinstance(key, str) and _SLUG.match(key)):
        return None
    if not (isinstance(title, str) and 0 < len(title) <= MAX_TITLE):
        return None
    if kind not in set(KINDS.values()) or not isinstance(online, bool):
        return None
    if not isinstance(duration, int) or not MIN_DURATION_S <= duration <= MAX_DURATION_S:
        return None
    if capacity is not None and (
        online or not isinstance(capacity, int) or not 1 <= capacity <= MAX_CAPACITY
    ):
        return None
    if materials is not None and not (isinstance(materials, str) and _URL.match(materials)):
        return None
    if not isinstance(start, str) or (rrule is not None and not isinstance(rrule, str)):
        return None
    agenda = _agenda(entry.get("agenda", []))
    if agenda is None:
        return None
    try:
        first = parse_key(start)
        check_rule(rrule, first)
    except (ValueError, RuleError):
        return None
    canonical = json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return Declared(
        source=f"{source_of(club)}{key}:{digest}",
        title=" ".join(title.split()),
        kind=str(kind),
        start_local=start,
        rrule=rrule,
        duration_s=duration,
        online=online,
        capacity=capacity,
        materials=materials,
        agenda=agenda,
    )


def _agenda(raw: Any) -> tuple[tuple[str, int], ...] | None:
    """The entry's agenda items, or None if any is not one the facilitation bot would take."""
    if not isinstance(raw, list) or len(raw) > MAX_AGENDA_ITEMS:
        return None
    items = []
    for item in raw:
        if not isinstance(item, Mapping):
            return None
        title, minutes = item.get("title"), item.get("minutes")
        if not (isinstance(title, str) and 0 < len(" ".join(title.split())) <= MAX_ITEM_TITLE):
            return None
        if not isinstance(minutes, int) or isinstance(minutes, bool):
            return None
        if not 1 <= minutes <= MAX_ITEM_MINUTES:
            return None
        items.append((" ".join(title.split()), minutes))
    return tuple(items)


def declared_agenda(
    club: str, content: Mapping[str, Any] | None, source: str
) -> list[dict[str, Any]]:
    """The agenda of the declared entry that made the series `source` (empty if none, or if
    the entry changed since: then it is another series)."""
    for d in declared_sessions(club, content)[0]:
        if d.source == source:
            return [{"title": t, "minutes": m} for t, m in d.agenda]
    return []
