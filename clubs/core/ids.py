"""Matrix identifiers: the typed ids and checks of their grammar.

The grammar is the spec's appendix "Identifier grammar": a user id is `@localpart:server_name`
(at most 255 bytes), a room alias `#localpart:server_name`, a room id `!opaque` (room version 12
ids carry no server name; older ones end in `:server_name`), an event id `$opaque`. The checks
take any object and never raise, so they can be pointed at hostile input.
"""

from __future__ import annotations

from typing import NewType

__all__ = [
    "DeviceId",
    "EventId",
    "RoomAlias",
    "RoomId",
    "UserId",
    "as_event_id",
    "as_room_alias",
    "as_room_id",
    "as_user_id",
    "is_server_name",
]

RoomId = NewType("RoomId", str)
UserId = NewType("UserId", str)
EventId = NewType("EventId", str)
DeviceId = NewType("DeviceId", str)
RoomAlias = NewType("RoomAlias", str)

MAX_ID_BYTES = 255

# Historical user id localparts: printable ASCII except ":" (new ones use a subset of these).
_LOCALPART = frozenset(chr(c) for c in range(0x21, 0x7F)) - {":"}
_OPAQUE = frozenset(chr(c) for c in range(0x21, 0x7F))
_DNS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_IPV6 = frozenset("0123456789abcdefABCDEF:.")


def is_server_name(value: str) -> bool:
    """`hostname [":" port]`, where hostname is a DNS name, an IPv4 address or `[IPv6]`."""
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return False
        host, tail = value[1:end], value[end + 1 :]
        if not (2 <= len(host) <= 45 and set(host) <= _IPV6):
            return False
    else:
        host, colon, port = value.partition(":")
        tail = colon + port
        if not (1 <= len(host) <= 255 and set(host) <= _DNS):
            return False
    if not tail:
        return True
    port = tail[1:]
    return tail[0] == ":" and 1 <= len(port) <= 5 and port.isascii() and port.isdigit()


def as_user_id(value: object) -> UserId | None:
    """`value` as a user id, or None if it is not one."""
    if not isinstance(value, str) or not value.isascii() or len(value) > MAX_ID_BYTES:
        return None
    if not value.startswith("@"):
        return None
    localpart, colon, server = value[1:].partition(":")
    if not (localpart and colon and set(localpart) <= _LOCALPART and is_server_name(server)):
        return None
    return UserId(value)


def as_room_alias(value: object) -> RoomAlias | None:
    """`value` as a room alias, or None. The localpart is any text without ":", NUL or controls."""
    if not isinstance(value, str) or not value.startswith("#"):
        return None
    try:
        if len(value.encode("utf-8")) > MAX_ID_BYTES:
            return None
    except UnicodeEncodeError:  # lone surrogates
        return None
    localpart, colon, server = value[1:].partition(":")
    if not (localpart and colon and is_server_name(server)):
        return None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in localpart):
        return None
    return RoomAlias(value)


def _opaque(value: object, sigil: str) -> str | None:
    if not isinstance(value, str) or not value.isascii() or not 2 <= len(value) <= MAX_ID_BYTES:
        return None
    if value[0] != sigil or not set(value) <= _OPAQUE:
        return None
    return value


def as_room_id(value: object) -> RoomId | None:
    """`!opaque` or `!opaque:server`, printable ASCII, at most 255 bytes."""
    found = _opaque(value, "!")
    return None if found is None else RoomId(found)


def as_event_id(value: object) -> EventId | None:
    """`$opaque`, printable ASCII, at most 255 bytes."""
    found = _opaque(value, "$")
    return None if found is None else EventId(found)
