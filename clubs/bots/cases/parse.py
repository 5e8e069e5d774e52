"""The case library's words: the questions, the answers' checks, search terms and the `!case`
sub-commands (Russian and English). Pure.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

QUESTIONS = ("relation", "view", "topic", "tried", "happened", "next", "tags", "felt")
"""The questions of a case, in the order the bot asks them (templates `cases/q_<name>`)."""
MAX_ANSWER_CHARS = 1500
MAX_RELATION_CHARS = 40
MAX_TAGS = 8
MAX_TAG_CHARS = 32
MAX_QUERY_WORDS = 6
SKIP = frozenset({"-", "—", "нет", "no", "skip", "пропустить"})
"""An answer that means "nothing to say" (every question but the relation may be skipped)."""

_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)
_MXID = re.compile(r"@[^\s:]+:\S+")


class CaseUsage(Exception):
    """A `!case` request that does not fit; `problem` names the template's case."""

    def __init__(self, problem: str, word: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.word = word


def normalise(word: str) -> str:
    """How a word is compared: case-folded, `ё` as `е`, no accents, no `#`."""
    word = unicodedata.normalize("NFKC", word).casefold().strip().lstrip("#")
    word = word.replace("ё", "е")
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The normalised words of a text, in order, each once."""
    seen: list[str] = []
    for match in _WORD.finditer(text):
        w = normalise(match.group())
        if w and w not in seen:
            seen.append(w)
    return seen


def parse_tags(text: str) -> tuple[str, ...]:
    """Tags from an answer like `mobilisation, TV #sanctions`: split on commas, `#` and
    blanks, normalised, at most MAX_TAGS; a skipped answer has none."""
    if text.strip().casefold() in SKIP:
        return ()
    found: list[str] = []
    for part in re.split(r"[,;#\s]+", text):
        tag = normalise(part).strip(".!?:()[]\"'«»")
        if not tag or tag in found:
            continue
        if len(tag) > MAX_TAG_CHARS:
            raise CaseUsage("tag_long", tag[:MAX_TAG_CHARS])
        found.append(tag)
    if len(found) > MAX_TAGS:
        raise CaseUsage("too_many_tags")
    return tuple(found)


def check_relation(text: str) -> str:
    """The relation (`mother`, `a colleague`), or CaseUsage if it looks like a name or an
    address: a Matrix id, an e-mail, or a capitalised word after the first."""
    text = " ".join(text.split())
    if not text or text.casefold() in SKIP:
        raise CaseUsage("relation_missing")
    if len(text) > MAX_RELATION_CHARS:
        raise CaseUsage("relation_long")
    if _MXID.search(text) or "@" in text:
        raise CaseUsage("relation_name")
    tokens = text.split()
    if any(t[:1].isupper() for t in tokens[1:]) or (len(tokens) == 1 and _is_name(tokens[0])):
        raise CaseUsage("relation_name")
    return text


def _is_name(token: str) -> bool:
    """A single capitalised word that is not a common relation is probably a name."""
    return token[:1].isupper() and normalise(token) not in RELATIONS


RELATIONS = frozenset(
    {
        "мама", "мать", "папа", "отец", "брат", "сестра", "бабушка", "дедушка", "сын", "дочь",
        "муж", "жена", "тетя", "дядя", "коллега", "друг", "подруга", "сосед", "соседка",
        "одноклассник", "одноклассница", "свекровь", "теща", "тесть", "свекор", "кузен",
        "кузина", "родители", "родственник", "родственница", "знакомый", "знакомая",
        "mother", "mom", "mum", "father", "dad", "brother", "sister", "grandmother", "grandma",
        "grandfather", "grandpa", "son", "daughter", "husband", "wife", "aunt", "uncle",
        "colleague", "friend", "neighbour", "neighbor", "cousin", "parents", "relative",
        "classmate", "acquaintance",
    }
)  # fmt: skip


def answer_text(text: str) -> str:
    """An answer as kept: blanks tidied; empty for a skipped question."""
    text = text.strip()
    if text.casefold() in SKIP:
        return ""
    if len(text) > MAX_ANSWER_CHARS:
        raise CaseUsage("too_long")
    return text


def terms_of(relation: str, tags: tuple[str, ...]) -> list[str]:
    """What a case is found by: its tags and the words of its relation."""
    return list(dict.fromkeys([*tags, *words(relation)]))


# --- !case and !cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    action: str
    """new, show, edit, withdraw, send, approve, reject, mine, stats, help"""
    n: int | None = None
    field: str | None = None
    named: bool = False
    network: bool = False


_ACTIONS = {
    "edit": "edit", "правка": "edit", "изменить": "edit", "исправить": "edit",
    "withdraw": "withdraw", "отозвать": "withdraw", "удалить": "withdraw", "delete": "withdraw",
    "send": "send", "отправить": "send", "post": "send",
    "approve": "approve", "одобрить": "approve",
    "reject": "reject", "отклонить": "reject",
    "mine": "mine", "мои": "mine", "list": "mine", "список": "mine",
    "stats": "stats", "статистика": "stats",
    "help": "help", "помощь": "help",
}  # fmt: skip
_FIELDS = {
    **{q: q for q in QUESTIONS},
    "кто": "relation", "взгляды": "view", "тема": "topic", "пробовал": "tried",
    "пробовала": "tried", "итог": "happened", "дальше": "next", "теги": "tags",
    "чувства": "felt",
}  # fmt: skip
_NAMED = frozenset({"named", "с именем", "именем", "name"})
_NETWORK = frozenset({"network", "сеть", "всем", "shared"})
_NEEDS_N = frozenset({"edit", "withdraw", "approve", "reject"})


def parse_case(text: str) -> Request:
    """`!case` arguments: nothing (tell a new case), a number (show it), or an action."""
    tokens = text.split()
    if not tokens:
        return Request("new")
    head = tokens[0].casefold().lstrip("#")
    if head.isdigit():
        if len(tokens) > 1:
            raise CaseUsage("extra", tokens[1])
        return Request("show", int(head))
    action = _ACTIONS.get(head)
    if action is None:
        raise CaseUsage("unknown", tokens[0])
    rest = tokens[1:]
    if action == "send":
        flags = {t.casefold() for t in rest}
        unknown = flags - _NAMED - _NETWORK
        if unknown:
            raise CaseUsage("unknown", sorted(unknown)[0])
        return Request("send", named=bool(flags & _NAMED), network=bool(flags & _NETWORK))
    if action in _NEEDS_N:
        if not rest or not rest[0].lstrip("#").isdigit():
            raise CaseUsage("number")
        n = int(rest[0].lstrip("#"))
        field = None
        if action == "edit" and len(rest) > 1:
            field = _FIELDS.get(rest[1].casefold())
            if field is None:
                raise CaseUsage("field", rest[1])
            rest = rest[1:]
        if len(rest) > 1:
            raise CaseUsage("extra", rest[1])
        return Request(action, n, field)
    if rest:
        raise CaseUsage("extra", rest[0])
    return Request(action)


def parse_query(text: str) -> list[str]:
    """`!cases mother TV`: the normalised words to match (all of them), at most
    MAX_QUERY_WORDS."""
    found = [normalise(t).strip(".,;!?:()[]\"'«»") for t in text.split()]
    found = list(dict.fromkeys(w for w in found if w))
    if len(found) > MAX_QUERY_WORDS:
        raise CaseUsage("query_long")
    return found
