"""`!strategy …` / `!стратегия …` in words: what the member asks for. Pure.

Each request names a person of the member's strategy by their number in the list (`1`, `2`, …),
never by label. A refusal is a `StrategyUsage` whose `problem` is a template variant (worded in
ru and en) with the values it shows; nothing is changed when the words do not parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from clubs.core.ids import UserId, as_user_id

MAX_LABEL = 40
MAX_TEXT = 1000
MAX_NUMBER = 99
LEVELS = range(1, 6)

FIELDS = ("goal", "works", "avoid", "next")
"""The strategy's four parts, in the order they are shown."""

_VERBS: dict[str, str] = {
    "add": "add",
    "new": "add",
    "добавить": "add",
    "новый": "add",
    "show": "show",
    "показать": "show",
    "goal": "goal",
    "цель": "goal",
    "works": "works",
    "работает": "works",
    "avoid": "avoid",
    "избегать": "avoid",
    "next": "next",
    "шаг": "next",
    "rename": "rename",
    "переименовать": "rename",
    "log": "log",
    "запись": "log",
    "delete": "delete",
    "удалить": "delete",
    "chart": "chart",
    "график": "chart",
    "nudge": "nudge",
    "напоминание": "nudge",
    "share": "share",
    "поделиться": "share",
    "unshare": "unshare",
    "revoke": "unshare",
    "отозвать": "unshare",
    "shared": "shared",
    "доступные": "shared",
    "read": "read",
    "читать": "read",
    "stats": "stats",
    "итоги": "stats",
    "help": "help",
    "помощь": "help",
}
_ON = {"on": True, "вкл": True, "off": False, "выкл": False}


class StrategyUsage(Exception):
    """The words do not make a request; `problem` names the template variant."""

    def __init__(self, problem: str, **values: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.values = values


@dataclass(frozen=True)
class Simple:
    """A request without arguments: `list`, `help`, `shared`, `stats`."""

    action: str


@dataclass(frozen=True)
class Add:
    label: str


@dataclass(frozen=True)
class Person:
    """`show`, `delete`, `unshare` of person `n`; `chart` (n None: the only person)."""

    action: str
    n: int | None


@dataclass(frozen=True)
class SetField:
    n: int
    field: str
    """One of FIELDS, or `label` (rename)."""
    text: str


@dataclass(frozen=True)
class Log:
    n: int
    level: int
    day: date | None
    """None: today."""
    note: str


@dataclass(frozen=True)
class Nudge:
    on: bool


@dataclass(frozen=True)
class Share:
    n: int
    to: UserId | None


@dataclass(frozen=True)
class Read:
    code: str


Request = Simple | Add | Person | SetField | Log | Nudge | Share | Read


def parse_strategy(text: str) -> Request:
    words = text.split(None, 1)
    if not words:
        return Simple("list")
    head = words[0].lower()
    rest = words[1].strip() if len(words) == 2 else ""
    if head.isascii() and head.isdigit():
        _no_more(rest)
        return Person("show", _number(head))
    verb = _VERBS.get(head)
    if verb is None:
        raise StrategyUsage("unknown", word=_clip(words[0]))
    if verb in ("help", "shared", "stats"):
        _no_more(rest)
        return Simple(verb)
    if verb == "add":
        return Add(_label(rest))
    if verb in ("show", "delete", "unshare"):
        n, more = _take_number(rest)
        _no_more(more)
        return Person(verb, n)
    if verb == "chart":
        if not rest:
            return Person("chart", None)
        n, more = _take_number(rest)
        _no_more(more)
        return Person("chart", n)
    if verb in FIELDS or verb == "rename":
        n, more = _take_number(rest)
        if verb == "rename":
            return SetField(n, "label", _label(more))
        if not more:
            raise StrategyUsage("missing_text")
        if len(more) > MAX_TEXT:
            raise StrategyUsage("too_long", limit=MAX_TEXT)
        return SetField(n, verb, more)
    if verb == "log":
        return _log(rest)
    if verb == "nudge":
        word = rest.lower()
        if word not in _ON:
            raise StrategyUsage("on_off")
        return Nudge(_ON[word])
    if verb == "share":
        n, more = _take_number(rest)
        if not more:
            return Share(n, None)
        user = as_user_id(more)
        if user is None:
            raise StrategyUsage("not_a_user", word=_clip(more))
        return Share(n, user)
    # read
    code = rest.lower()
    if not (4 <= len(code) <= 16 and code.isascii() and code.isalnum()):
        raise StrategyUsage("code")
    return Read(code)


def _log(rest: str) -> Log:
    n, more = _take_number(rest)
    words = more.split(None, 1)
    if not words or not (words[0].isascii() and words[0].isdigit()):
        raise StrategyUsage("level")
    level = int(words[0]) if len(words[0]) == 1 else 0
    if level not in LEVELS:
        raise StrategyUsage("level")
    more = words[1].strip() if len(words) == 2 else ""
    day = None
    first = more.split(None, 1)
    if first and len(first[0]) == 10 and first[0][4] == "-" and first[0][7] == "-":
        try:
            day = date.fromisoformat(first[0])
        except ValueError:
            raise StrategyUsage("date", word=_clip(first[0])) from None
        more = first[1].strip() if len(first) == 2 else ""
    if len(more) > MAX_TEXT:
        raise StrategyUsage("too_long", limit=MAX_TEXT)
    return Log(n, level, day, more)


def _take_number(rest: str) -> tuple[int, str]:
    words = rest.split(None, 1)
    if not words:
        raise StrategyUsage("number")
    return _number(words[0]), (words[1].strip() if len(words) == 2 else "")


def _number(word: str) -> int:
    if not (word.isascii() and word.isdigit() and len(word) <= 2) or not (
        1 <= int(word) <= MAX_NUMBER
    ):
        raise StrategyUsage("number")
    return int(word)


def _label(text: str) -> str:
    label = " ".join(text.split())
    if not label:
        raise StrategyUsage("missing_label")
    if len(label) > MAX_LABEL:
        raise StrategyUsage("label_long", limit=MAX_LABEL)
    if as_user_id(label) is not None or "@" in label:
        raise StrategyUsage("label_id")
    return label


def _no_more(rest: str) -> None:
    if rest:
        raise StrategyUsage("extra", word=_clip(rest))


def _clip(word: str) -> str:
    """What the reply quotes of the member's words: short, one line."""
    word = " ".join(word.split())
    return word if len(word) <= 20 else word[:19] + "…"
