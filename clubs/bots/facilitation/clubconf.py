"""A club's own exercises for the methods library, as the provisioner writes them into the club
settings state (`methods: [...]` from the network file, the network's and the club's). Pure.

Each exercise: `name` (a lowercase word, not one of the built-in names), `aliases` (other
words for it, e.g. Russian), and `title` and `text` in Russian and optionally English
(`{ru: …, en: …}`; English falls back to Russian). Room state can drift or be written by
someone else with the power to, so it is read defensively: an entry that does not fit is left
out, never fails a command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BUILTIN = ("listening", "asking", "story", "values", "roleplay", "ending")
"""The library's own exercises (texts in config/templates/facilitation/method_*)."""
BUILTIN_ALIASES = {
    "слушание": "listening",
    "вопросы": "asking",
    "история": "story",
    "ценности": "values",
    "роль": "roleplay",
    "завершение": "ending",
}
NAME = re.compile(r"[a-zа-яё][a-zа-яё0-9-]{1,29}")
"""A method's name or alias: one lowercase word of 2–30 letters, digits and hyphens."""
MAX_METHODS = 30
MAX_ALIASES = 5
MAX_TITLE_CHARS = 80
MAX_TEXT_CHARS = 2000


@dataclass(frozen=True)
class ClubMethod:
    name: str
    aliases: tuple[str, ...]
    title: Mapping[str, str]
    """Language → the exercise's name as an agenda item shows it (`ru` always present)."""
    text: Mapping[str, str]
    """Language → what the chair reads out."""

    def title_in(self, lang: str) -> str:
        return self.title.get(lang) or self.title["ru"]

    def text_in(self, lang: str) -> str:
        return self.text.get(lang) or self.text["ru"]


def taken(name: str) -> bool:
    """Whether a word already names a built-in exercise."""
    return name in BUILTIN or name in BUILTIN_ALIASES


def _texts(value: Any, limit: int) -> dict[str, str] | None:
    if not isinstance(value, Mapping) or not set(value) <= {"ru", "en"}:
        return None
    texts = {k: v.strip() for k, v in value.items() if isinstance(v, str) and v.strip()}
    if "ru" not in texts or any(len(v) > limit for v in texts.values()):
        return None
    return texts


def club_methods(settings: Mapping[str, Any]) -> tuple[ClubMethod, ...]:
    """The club's own exercises from its settings (those that fit; at most MAX_METHODS)."""
    raw = settings.get("methods")
    if not isinstance(raw, list):
        return ()
    found: list[ClubMethod] = []
    words: set[str] = set()
    for entry in raw[:MAX_METHODS]:
        if not isinstance(entry, Mapping):
            continue
        name, aliases = entry.get("name"), entry.get("aliases", [])
        title = _texts(entry.get("title"), MAX_TITLE_CHARS)
        text = _texts(entry.get("text"), MAX_TEXT_CHARS)
        if not isinstance(aliases, list) or title is None or text is None:
            continue
        names = [name, *aliases]
        if (
            len(aliases) > MAX_ALIASES
            or not all(isinstance(n, str) and NAME.fullmatch(n) for n in names)
            or any(taken(n) or n in words for n in names)
            or len(set(names)) != len(names)
        ):
            continue
        words.update(names)
        found.append(ClubMethod(str(name), tuple(str(a) for a in aliases), title, text))
    return tuple(found)
