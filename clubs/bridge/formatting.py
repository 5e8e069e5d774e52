"""Text across the bridge: Matrix messages as Telegram HTML, Telegram messages as Matrix content.

Telegram's HTML mode accepts a small set of tags and needs `<`, `>` and `&` escaped; a message
holds at most 4,096 characters once its tags are parsed, counted in UTF-16 code units (as
Telegram counts entity offsets). So the visible text is cut first (at a line break or a space
when there is one in the last half of the window, never inside a surrogate pair) and each part is
escaped after cutting: escaping never changes the visible length.

What is sent is the sender's display name in bold and the message's plain body. A reply's
fallback (the quoted older message, with the quoted author's Matrix id) is removed: it would
carry history and server names to Telegram. Matrix ids are never sent.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

LIMIT = 4096
NAME_MAX = 64
TELEGRAM_SUFFIX = " (Telegram)"
RELAYED_TYPES = frozenset({"m.text", "m.notice", "m.emote"})


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def _cut(text: str, limit: int) -> int:
    """How many code points of `text` fit in `limit` UTF-16 units, preferring a word boundary."""
    units = 0
    end = 0
    for ch in text:
        w = 2 if ord(ch) > 0xFFFF else 1
        if units + w > limit:
            break
        units += w
        end += 1
    if end == len(text):
        return end
    for sep in ("\n", " "):
        at = text.rfind(sep, 0, end)
        if at >= end // 2:
            return at + 1
    return end


def split(text: str, limit: int = LIMIT) -> list[str]:
    """`text` in parts of at most `limit` UTF-16 units, in order, nothing lost."""
    parts: list[str] = []
    while text:
        n = _cut(text, limit)
        parts.append(text[:n])
        text = text[n:]
    return parts or [""]


def clean_name(name: str, limit: int = NAME_MAX) -> str:
    """A display name on one line, without control characters, at most `limit` characters."""
    one_line = " ".join(name.split())
    visible = "".join(c for c in one_line if c.isprintable())
    return visible[:limit].strip() or "?"


def strip_reply_fallback(body: str) -> str:
    """The body without its leading `> ` quote lines and the blank line after them."""
    lines = body.split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    if i and i < len(lines) and lines[i] == "":
        return "\n".join(lines[i + 1 :])
    return body if not i else "\n".join(lines[i:])


def message_text(content: Mapping[str, Any]) -> str | None:
    """The plain text a Matrix message content relays, or None if it is not relayed."""
    msgtype = content.get("msgtype")
    body = content.get("body")
    if msgtype not in RELAYED_TYPES or not isinstance(body, str):
        return None
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and isinstance(relates.get("m.in_reply_to"), dict):
        body = strip_reply_fallback(body)
    return body


def to_telegram(name: str, content: Mapping[str, Any], limit: int = LIMIT) -> list[str] | None:
    """A Matrix message as Telegram HTML parts ("**Name**: text"), or None if not relayed."""
    text = message_text(content)
    if text is None or not text.strip():
        return None
    name = clean_name(name)
    emote = content.get("msgtype") == "m.emote"
    prefix = f"* {name} " if emote else f"{name}: "
    parts = split(prefix + text, limit)
    first = parts[0]
    head = f"* <b>{escape(name)}</b> " if emote else f"<b>{escape(name)}</b>: "
    out = [head + escape(first[len(prefix) :])]
    out += [escape(p) for p in parts[1:]]
    return out


def telegram_name(user: Mapping[str, Any]) -> str:
    """A Telegram user's name as their ghost shows it: "Имя Фамилия (Telegram)"."""
    first = user.get("first_name")
    last = user.get("last_name")
    name = " ".join(p for p in (first, last) if isinstance(p, str) and p.strip())
    return clean_name(name or "Telegram", NAME_MAX) + TELEGRAM_SUFFIX


def telegram_text(message: Mapping[str, Any]) -> str | None:
    """The text (or a media caption) of a Telegram message; None when there is none."""
    for key in ("text", "caption"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def to_matrix(text: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": text, "m.mentions": {}}


def matrix_edit(original: str, text: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": "* " + text,
        "m.new_content": to_matrix(text),
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        "m.mentions": {},
    }
