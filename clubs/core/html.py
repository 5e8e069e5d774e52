"""HTML that bots send: sanitised to the spec's allow-list, with a plain twin and no `@room`.

Everything that could carry user-provided text goes through `sanitize` before it becomes a
`formatted_body`: nh3 (ammonia) restricted to the tags and attributes of the spec section
"m.room.message msgtypes", links only to http, https, mailto and matrix URIs, images only from
`mxc://`, `mx-reply` removed with its content, nesting cut at 100 levels. `to_plain` derives the
plain `body` from the same HTML, so a text is written once.

Every message a bot sends sets `m.mentions` (see `mentions`): with it present, homeservers skip
the legacy body-matching push rules, so neither a display name nor `@room` in user text pings
anyone. `@room` in text is also defused with an invisible word joiner, for older clients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from urllib.parse import unquote

import nh3

from clubs.core.ids import UserId

MAX_DEPTH = 100
"""The spec: "Tags must not be nested more than 100 levels deep"."""

# fmt: off
ALLOWED_TAGS = frozenset({
    "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup", "sub",
    "li", "b", "i", "u", "strong", "em", "s", "code", "hr", "br", "div", "table", "thead",
    "tbody", "tr", "th", "td", "caption", "pre", "span", "img", "details", "summary",
    "font", "strike",  # deprecated for span and s, still rendered by clients
})
# fmt: on

ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "font": {"data-mx-bg-color", "data-mx-color", "color"},
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler", "data-mx-maths"},
    "a": {"target", "href"},
    "img": {"width", "height", "alt", "title", "src"},
    "ol": {"start"},
    "code": {"class"},
    "div": {"data-mx-maths"},
}

LINK_SCHEMES = frozenset({"http", "https", "mailto", "matrix"})

_REMOVED_WITH_CONTENT = {"script", "style", "mx-reply"}
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")
_ROOM_MENTION = re.compile(r"@(?=room)", re.IGNORECASE)
_WORD_JOINER = "\u2060"
_VOID = frozenset({"br", "hr", "img"})
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Text:
    """A text for people: plain `body` and its HTML `formatted_body`."""

    body: str
    html: str


def scrub(text: str) -> str:
    """`text` with lone surrogates replaced, so it can always be encoded as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def defuse_room_mention(text: str) -> str:
    """Break every `@room` (any case) with an invisible word joiner, so it notifies no one."""
    return _ROOM_MENTION.sub("@" + _WORD_JOINER, text)


def mentions(user_ids: Iterable[UserId] = ()) -> dict[str, list[str]]:
    """The `m.mentions` of a message: exactly these users, never the whole room."""
    return {"user_ids": sorted(set(user_ids))}


def notice_content(text: Text, mention: Iterable[UserId] = ()) -> dict[str, object]:
    """An `m.notice` content with both bodies and `m.mentions` always set."""
    return {
        "msgtype": "m.notice",
        "body": text.body,
        "format": "org.matrix.custom.html",
        "formatted_body": text.html,
        "m.mentions": mentions(mention),
    }


def _is_user_link(href: str) -> bool:
    target = unquote(href).strip().lower()
    return target.startswith(("https://matrix.to/#/@", "http://matrix.to/#/@", "matrix:u/"))


def _filter_attribute(allow_pills: bool, element: str, name: str, value: str) -> str | None:
    if name == "href":
        scheme, colon, _ = value.partition(":")
        if not colon or scheme.strip().lower() not in LINK_SCHEMES:
            return None  # relative, protocol-relative, javascript:, data: ...
        if not allow_pills and _is_user_link(value):
            return None
        return value
    if name == "src":
        return value if value.startswith("mxc://") else None
    if name in ("data-mx-color", "data-mx-bg-color", "color"):
        return value if _COLOUR.fullmatch(value) else None
    if name in ("start", "width", "height"):
        return value if value.isascii() and value.isdigit() and len(value) <= 6 else None
    if name == "target":
        return value if value == "_blank" else None
    if name == "class":
        kept = [c for c in value.split() if _LANGUAGE_CLASS.fullmatch(c)]
        return " ".join(kept) or None
    return value


# fmt: off
_BLOCKS = frozenset({
    "p", "div", "blockquote", "pre", "hr", "br", "details", "summary", "h1", "h2", "h3", "h4",
    "h5", "h6", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "caption",
})
# fmt: on


class _Rebuild(HTMLParser):
    """Re-serialises nh3's (well-formed) output: cuts nesting at MAX_DEPTH, defuses `@room` in
    text, and drops the whitespace next to block tags that templates leave and no one sees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.pre = 0
        self.pending = ""  # whitespace kept back until we know whether a block tag follows
        self.after_block = True

    def _tag(self, tag: str, markup: str | None) -> None:
        if tag not in _BLOCKS:
            self.out.append(self.pending)
        self.pending = ""
        if markup is not None:
            self.out.append(markup)
        self.after_block = tag in _BLOCKS

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.open.append(tag)
        if tag == "pre":
            self.pre += 1
        if len(self.open) > MAX_DEPTH or (tag in _VOID and len(self.open) >= MAX_DEPTH):
            self._tag(tag, None)
            return
        rendered = "".join(
            f" {k}" if v is None else f' {k}="{escape(v, quote=True)}"' for k, v in attrs
        )
        self._tag(tag, f"<{tag}{rendered}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not self.open or self.open[-1] != tag:
            return
        self._tag(tag, f"</{tag}>" if len(self.open) <= MAX_DEPTH else None)
        self.open.pop()
        if tag == "pre":
            self.pre -= 1

    def handle_data(self, data: str) -> None:
        data = escape(defuse_room_mention(data), quote=False)
        if self.pre:
            self.out.append(self.pending + data)
            self.pending = ""
            return
        if self.after_block:
            data = data.lstrip()
        core = data.rstrip()
        if core:
            self.out.append(self.pending + core)
            self.after_block = False
            self.pending = data[len(core) :]
        else:
            self.pending += data

    def result(self) -> str:
        self.close()
        self.out.extend(f"</{tag}>" for tag in reversed(self.open[:MAX_DEPTH]))
        return "".join(self.out)


def sanitize(html: str, *, allow_pills: bool = False) -> str:
    """`html` reduced to what the spec allows; safe to send as `formatted_body`.

    Links to users (`matrix.to/#/@…`, `matrix:u/…`) lose their `href` unless `allow_pills`: a
    pill built from user input could impersonate a mention. Our own templates allow them.
    """
    cleaned = nh3.clean(
        scrub(html),
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(_REMOVED_WITH_CONTENT),
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=lambda e, n, v: _filter_attribute(allow_pills, e, n, v),
        url_schemes=set(LINK_SCHEMES) | {"mxc"},
        link_rel=None,
        strip_comments=True,
    )
    rebuild = _Rebuild()
    rebuild.feed(cleaned)
    return rebuild.result()


_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "details", "hr"}
)
_LINES = frozenset({"div", "li", "tr", "summary", "caption", "ul", "ol"})


class _Plain(HTMLParser):
    """HTML to the plain text a client without HTML shows: blocks on lines, list bullets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.pre = 0
        self.lists: list[int | None] = []  # None for ul, the next number for ol
        self.links: list[tuple[int, str | None]] = []

    def _newlines(self) -> int:
        count = 0
        for part in reversed(self.parts):
            stripped = part.rstrip("\n")
            count += len(part) - len(stripped)
            if stripped:
                break
        return count

    def _break(self, lines: int) -> None:
        if self.parts and self._newlines() < lines:
            self.parts.append("\n" * (lines - self._newlines()))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "br":
            self.parts.append("\n")
        elif tag == "hr":
            self._break(2)
            self.parts.append("———")
            self._break(2)
        elif tag == "img":
            self.handle_data(attr.get("alt") or "")
        elif tag in _PARAGRAPHS:
            self._break(1 if self.lists else 2)
            if tag == "pre":
                self.pre += 1
        elif tag in _LINES:
            self._break(1)
            if tag == "ul":
                self.lists.append(None)
            elif tag == "ol":
                start = attr.get("start") or "1"
                self.lists.append(int(start) if start.isdigit() else 1)
            elif tag == "li":
                self._bullet()
        elif tag in ("td", "th") and self.parts and not self.parts[-1].endswith("\n"):
            self.parts.append("\t")
        elif tag == "a":
            self.links.append((len(self.parts), attr.get("href")))

    def _bullet(self) -> None:
        indent = "  " * max(len(self.lists) - 1, 0)
        number = self.lists[-1] if self.lists else None
        if number is None:
            self.parts.append(f"{indent}• ")
        else:
            self.parts.append(f"{indent}{number}. ")
            self.lists[-1] = number + 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()
            self._break(1 if self.lists else 2)
        elif tag in _PARAGRAPHS:
            if tag == "pre" and self.pre:
                self.pre -= 1
            self._break(1 if self.lists else 2)
        elif tag in _LINES:
            self._break(1)
        elif tag == "a" and self.links:
            start, href = self.links.pop()
            label = "".join(self.parts[start:]).strip()
            if href and href.removeprefix("mailto:") != label and not _is_user_link(href):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.pre:
            data = _WHITESPACE.sub(" ", data)
            if not self.parts or self.parts[-1].endswith(("\n", "\t", " ")):
                data = data.lstrip(" ")
        if data:
            self.parts.append(data)

    def result(self) -> str:
        self.close()
        lines = [line.rstrip() for line in "".join(self.parts).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def to_plain(html: str) -> str:
    """The plain-text twin of (sanitised) `html`, for `body`."""
    plain = _Plain()
    plain.feed(html)
    return defuse_room_mention(plain.result())
