"""Privacy lint: texts that become unencrypted room state must not give people away.

Room names and topics, space names, display names and the titles of sessions declared in the
network file are state: the server and every member can read them, and so can whoever seizes the
server. `lint_network` returns located warnings (never errors: an admin may decide otherwise)
for sensitive words, with a neutral text to use instead, and for words that mix Latin and
Cyrillic letters (a homoglyph hides a word from readers and filters). Sensitive text belongs in
a room's `private_description`, posted encrypted.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from clubs.core.paths import config_dir
from clubs.core.yamlconf import Origin, Problem, read_yaml, shown
from clubs.provisioning.model import Network

_WORD = re.compile(r"\w+")
_EDGE = " \t-–—·,.:;|/"


def _normalize(text: str) -> str:
    return text.casefold().replace("ё", "е")


def _pattern(entry: str) -> tuple[str, ...]:
    """ "Иностранн* агент*" → ("иностранн*", "агент*"); an empty tuple if there is no word."""
    return tuple(re.findall(r"\w+\*?", _normalize(entry)))


def _matches(pattern: str, word: str) -> bool:
    return word.startswith(pattern[:-1]) if pattern.endswith("*") else word == pattern


@dataclass(frozen=True)
class SensitiveWords:
    patterns: tuple[tuple[str, ...], ...]
    neutral_names: Mapping[str, str]
    """Language → a neutral name to suggest when nothing neutral is left."""

    def with_extra(self, entries: Iterable[str]) -> SensitiveWords:
        extra = tuple(p for p in map(_pattern, entries) if p)
        return SensitiveWords(self.patterns + extra, self.neutral_names)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where sensitive words are in `text` (start, end), in order."""
        words = [(m.start(), m.end(), _normalize(m.group())) for m in _WORD.finditer(text)]
        found: list[tuple[int, int]] = []
        i = 0
        while i < len(words):
            for pattern in self.patterns:
                window = words[i : i + len(pattern)]
                if len(window) == len(pattern) and all(
                    _matches(p, w[2]) for p, w in zip(pattern, window, strict=True)
                ):
                    found.append((window[0][0], window[-1][1]))
                    i += len(pattern)
                    break
            else:
                i += 1
        return found

    def suggest(self, text: str, spans: list[tuple[int, int]]) -> str:
        """`text` without its sensitive words, or a neutral name if nothing is left."""
        rest = text
        for start, end in reversed(spans):
            rest = rest[:start] + " " + rest[end:]
        rest = re.sub(r"\s+", " ", rest).strip(_EDGE)
        if re.search(r"[^\W\d_]{3}", rest):  # a word of three letters or more is left
            return rest
        language = "ru" if re.search("[а-яё]", text, re.I) else "en"
        return self.neutral_names.get(language, "General")


def load_sensitive_words(path: str | Path | None = None) -> SensitiveWords:
    """The list in config/privacy/sensitive-words.yaml (or `path`). Raises ConfigError."""
    root = read_yaml(path or config_dir() / "privacy" / "sensitive-words.yaml")
    f = root.mapping(required=("words",), optional=("neutral_names",))
    patterns: list[tuple[str, ...]] = []
    for language in f["words"].entries():
        for item in language.value.sequence():
            pattern = _pattern(item.string())
            if pattern:
                patterns.append(pattern)
            else:
                item.error("expected a word")
    neutral: dict[str, str] = {}
    if n := f.get("neutral_names"):
        neutral = {e.key: e.value.string() for e in n.entries()}
    root.report.raise_for_errors()
    return SensitiveWords(tuple(patterns), neutral)


def _texts(network: Network) -> Iterator[tuple[str, Origin | None]]:
    """Every text that becomes unencrypted state, with where it was written."""

    def of(obj: object, *names: str) -> Iterator[tuple[str, Origin | None]]:
        origins: Mapping[str, Origin] = getattr(obj, "origins", {})
        for name in names:
            value = getattr(obj, name)
            if value:
                yield value, origins.get(name)

    yield from of(network, "name", "topic")
    for person in network.people:
        yield from of(person, "display_name")
    for country in network.countries:
        yield from of(country, "name")
        for club in country.clubs:
            yield from of(club, "name", "topic")
            for session in club.sessions:
                yield from of(session, "title")
                for title, _ in session.agenda:  # published in clear state, like the title
                    yield title, session.origins.get("agenda")
            for room in club.rooms:
                yield from of(room, "name", "topic")
            for cohort in club.cohorts:
                yield from of(cohort, "name", "topic")
                for room in cohort.rooms:
                    yield from of(room, "name", "topic")


def _mixed_script(word: str) -> bool:
    scripts = {unicodedata.name(c, "").split(" ")[0] for c in word if c.isalpha()}
    return {"LATIN", "CYRILLIC"} <= scripts


def lint_text(text: str, words: SensitiveWords) -> list[str]:
    """What is wrong with one text, as warning messages."""
    messages = []
    spans = words.spans(text)
    if spans:
        found = ", ".join(dict.fromkeys(shown(text[s:e]) for s, e in spans))
        messages.append(
            f"{found} may be sensitive: names and topics are not encrypted; use a neutral "
            f"text such as {shown(words.suggest(text, spans))} and put the rest in "
            "private_description (posted encrypted)"
        )
    for word in dict.fromkeys(_WORD.findall(text)):
        if _mixed_script(word):
            messages.append(
                f"{shown(word)} mixes Latin and Cyrillic letters, which can disguise a word"
            )
    return messages


def lint_network(network: Network, words: SensitiveWords | None = None) -> list[Problem]:
    """Warnings for the network's unencrypted texts, located, each reported once."""
    words = (words or load_sensitive_words()).with_extra(network.extra_sensitive_words)
    problems: dict[Problem, None] = {}
    for text, origin in _texts(network):
        where = origin or Origin("<network>", 0, 0, "")
        for message in lint_text(text, words):
            problems[Problem.at(where, message, "warning")] = None
    return sorted(problems, key=lambda p: (p.file, p.line, p.col))
