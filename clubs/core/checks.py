"""Checks of single string values in config files: keys, Matrix ids, visible text, time zones.

Each check returns what is wrong with a value as a whole message, or None when it is fine, so it
plugs into `Node.string(check=...)` of clubs.core.yamlconf.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo

from clubs.core.ids import is_server_name
from clubs.core.yamlconf import Check, shown

SLUG_MAX = 40
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
LOCALPART = re.compile(r"[a-z0-9._=/+-]+")
"""The user id localpart grammar of the spec (appendices, "User Identifiers")."""
USER_ID_MAX_BYTES = 255
NAME_MAX_BYTES = 255
_TIME_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9._-]+")

HIDDEN_CHARACTERS = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)]  # embeddings and overrides
    + [chr(c) for c in range(0x2066, 0x206A)]  # isolates
    + ["\u200e", "\u200f", "\u061c"]  # direction marks
    + ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]  # zero-width
)
"""Characters that hide or reorder text: a name that shows one thing and says another."""


def slug(value: str) -> str | None:
    if len(value) <= SLUG_MAX and SLUG.fullmatch(value):
        return None
    return (
        f"expected a key of lowercase letters, digits and dashes (at most {SLUG_MAX}); "
        f"got {shown(value)}"
    )


def localpart(value: str) -> str | None:
    if LOCALPART.fullmatch(value) and len(value) <= USER_ID_MAX_BYTES - 3:
        return None
    return f"expected a user name of lowercase letters, digits and ._=-/+; got {shown(value)}"


def user_id(value: str) -> str | None:
    """`@local:server`, or `@local` meaning an account on the deployment's own server."""
    local, colon, server = value[1:].partition(":")
    if (
        value.startswith("@")
        and LOCALPART.fullmatch(local)
        and (not colon or is_server_name(server))
    ):
        size = len(value.encode())
        if size <= USER_ID_MAX_BYTES:
            return None
        return f"expected a user id of at most {USER_ID_MAX_BYTES} bytes; got {size} bytes"
    return (
        'expected a Matrix user id like "@anna" or "@anna:example.org" (lowercase letters, '
        f"digits and ._=-/+ before the colon); got {shown(value)}"
    )


def _hidden_or_control(value: str, *, multiline: bool) -> str | None:
    for i, c in enumerate(value):
        category = unicodedata.category(c)
        if c in HIDDEN_CHARACTERS or category in ("Cf", "Cs", "Co", "Zl", "Zp"):
            name = unicodedata.name(c, "unnamed")
            return (
                f"contains U+{ord(c):04X} {name}, an invisible or direction-changing character, "
                f"at position {i + 1}"
            )
        if category == "Cc" and not (multiline and c == "\n"):
            return f"contains the control character U+{ord(c):04X} at position {i + 1}"
    return None


def text(max_bytes: int = NAME_MAX_BYTES, *, multiline: bool = False) -> Check:
    """Visible text: not empty, no control or invisible characters, at most max_bytes UTF-8."""

    def check(value: str) -> str | None:
        if not value.strip():
            return "expected some text; got an empty string"
        if message := _hidden_or_control(value, multiline=multiline):
            return message
        size = len(value.encode())
        if size > max_bytes:
            return f"expected at most {max_bytes} bytes (UTF-8); got {size} bytes"
        return None

    return check


def time_zone(value: str) -> str | None:
    if _TIME_ZONE.fullmatch(value) and value != "localtime":
        try:
            zoneinfo.ZoneInfo(value)
            return None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    return f'expected an IANA time zone like "Asia/Almaty"; got {shown(value)}'


def event_type(value: str) -> str | None:
    if _EVENT_TYPE.fullmatch(value) and len(value.encode()) <= NAME_MAX_BYTES:
        return None
    return f'expected an event type like "m.room.name"; got {shown(value)}'


def order(value: str) -> str | None:
    """`m.space.child` order: printable ASCII, at most 50 characters (spec)."""
    if len(value) <= 50 and all(" " <= c <= "~" for c in value):
        return None
    return f"expected at most 50 printable ASCII characters; got {shown(value)}"
