"""What a facilitator types after `!session` / `!встреча`, read into a session draft. Pure.

    !session <title>; <when>; [<option>; ...]

`<when>` is a phrase `parse_when` reads («каждый четверг в 19:00», "every other Thursday 19:00",
«10.12 в 19:00»). Options, in any order, Russian or English:

- a duration: `2h`, `90 min`, «1,5 ч` (default two hours);
- the kind: `meeting`/`встреча`, `lecture`/`лекция`, `seminar`/`семинар`, `training`/`тренинг`;
- `online <link>` / `онлайн <ссылка>` (without a link the bot makes a call room on the
  network's call service), or `offline` / `офлайн`;
- `venue <address>` / `место <адрес>`: an offline venue; only people with a place get it, by DM;
- `cap N` / `мест N`: places at an offline session (a waitlist beyond them);
- `materials <link>` / `материалы <ссылка>`;
- where else it is announced (a network-wide lecture): `clubs <key>, <key>` / `клубы …`,
  `country <key>` / `страна …`, or `network` / `сеть` (every club the bot serves); the sender
  must facilitate each of those clubs.

Every problem is a `SessionUsage` naming the part that is wrong, so the reply can say it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from clubs.bots.scheduling.recurrence import RuleError, check_rule
from clubs.bots.scheduling.when import When, WhenError, parse_duration, parse_when

DEFAULT_DURATION_S = 2 * 3600
MAX_TITLE = 120
MAX_CAPACITY = 1000
MAX_TEXT = 300
KINDS = {
    "meeting": "meeting",
    "встреча": "meeting",
    "lecture": "lecture",
    "лекция": "lecture",
    "seminar": "seminar",
    "семинар": "seminar",
    "training": "training",
    "тренинг": "training",
}
_URL = re.compile(r"^https://[^\s<>\"']{3,500}$")
_ONLINE = ("online", "онлайн")
_OFFLINE = ("offline", "офлайн", "оффлайн")
_VENUE = ("venue", "место", "адрес", "address")
_CAP = ("cap", "capacity", "мест", "места", "мест:")
_MATERIALS = ("materials", "материалы")
_CLUBS = ("clubs", "клубы")
_COUNTRY = ("country", "страна")
_NETWORK = ("network", "сеть")
_CLUB_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class SessionUsage(ValueError):
    """What is wrong with the command, in a word the templates know (`part`) and a detail."""

    def __init__(self, part: str, detail: str = "") -> None:
        super().__init__(f"{part}: {detail}" if detail else part)
        self.part = part
        self.detail = detail


@dataclass(frozen=True)
class Draft:
    title: str
    when: When
    duration_s: int
    kind: str
    online: bool
    link: str | None
    venue: str | None
    capacity: int | None
    materials: str | None
    audience: tuple[str, tuple[str, ...]] | None = None
    """Where else: ("clubs", keys), ("country", (key,)) or ("network", ()); None: this club."""

    def __repr__(self) -> str:  # what members wrote never reaches a log through a repr
        return f"Draft(kind={self.kind!r}, online={self.online})"


def parse_session(text: str, now_local: datetime) -> Draft:
    parts = [p.strip() for p in text.split(";")]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise SessionUsage("shape")
    title = " ".join(parts[0].split())
    if len(title) > MAX_TITLE:
        raise SessionUsage("title", f"at most {MAX_TITLE} characters")
    try:
        when = parse_when(parts[1], now_local)
    except WhenError as e:
        raise SessionUsage("when", str(e)) from None
    try:
        check_rule(when.rrule, when.start)
    except RuleError as e:
        raise SessionUsage("when", str(e)) from None
    duration_s = DEFAULT_DURATION_S
    kind = "meeting"
    online: bool | None = None
    link = venue = materials = None
    capacity = None
    audience: tuple[str, tuple[str, ...]] | None = None
    for part in parts[2:]:
        if not part:
            continue
        if len(part) > MAX_TEXT:
            raise SessionUsage("option", f"at most {MAX_TEXT} characters")
        word, _, rest = part.partition(" ")
        word, rest = word.lower(), rest.strip()
        if word in KINDS and not rest:
            kind = KINDS[word]
        elif word in _ONLINE:
            online = True
            if rest:
                if not _URL.match(rest):
                    raise SessionUsage("link", "an https:// link")
                link = rest
        elif word in _OFFLINE and not rest:
            online = False
        elif word in _VENUE and rest:
            venue = rest
        elif word in _CAP:
            if not rest.isdigit() or not 1 <= int(rest) <= MAX_CAPACITY:
                raise SessionUsage("capacity", f"a number from 1 to {MAX_CAPACITY}")
            capacity = int(rest)
        elif word in _CLUBS and rest:
            keys = tuple(k.strip().lower() for k in rest.split(",") if k.strip())
            if not keys or not all(_CLUB_KEY.match(k) for k in keys):
                raise SessionUsage("clubs", "club keys separated by commas")
            audience = ("clubs", keys)
        elif word in _COUNTRY and rest:
            if not _CLUB_KEY.match(rest.lower()):
                raise SessionUsage("clubs", "a country key")
            audience = ("country", (rest.lower(),))
        elif word in _NETWORK and not rest:
            audience = ("network", ())
        elif word in _MATERIALS:
            if not _URL.match(rest):
                raise SessionUsage("materials", "an https:// link")
            materials = rest
        else:
            try:
                duration_s = parse_duration(part)
            except WhenError:
                raise SessionUsage("option", _shown(part)) from None
    if online is None:
        online = link is not None
    if online and (venue is not None or capacity is not None):
        raise SessionUsage("format", "an online session has no venue or capacity")
    return Draft(title, when, duration_s, kind, online, link, venue, capacity, materials, audience)


def _shown(part: str) -> str:
    """The unknown option, cut short (it goes back to the person who typed it, nowhere else)."""
    return part if len(part) <= 40 else part[:39] + "…"
