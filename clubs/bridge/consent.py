"""Consent to bridge an encrypted room: the state event its admins write, and how it is checked.

An encrypted room is relayed to Telegram only when its admins recorded consent: a state event
`org.commclubs.bridge_consent` (state key "") written by a member with power 100 (or a creator
of a v12 room), naming the Telegram chat it is for. The bridge checks the writer's power against
the room's current power levels every time it reads the event, so a moderator (power 50) who
writes one (if the room's power levels let them) is ignored, and so is a consent whose writer
has since lost power 100. Only events sent after the consent event itself (its server
timestamp) are relayed: nothing from before it crosses.

`record_consent` is what `clubs bridge consent` runs, with the provisioner's token (the
provisioner created every managed room and holds power 100 in it). It checks everything first
and writes nothing when something is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clubs.core.errors import ClubsError, NotFound
from clubs.core.http import MatrixHttp, cs
from clubs.core.ids import RoomId, UserId
from clubs.core.namespace import BRIDGE_CONSENT, LOCATOR

ADMIN_POWER = 100
CREATORS_PRIVILEGED = frozenset({"12"})
"""Room versions in which the creators have unlimited power and are not in `users`."""


@dataclass(frozen=True)
class Consent:
    by: str
    since_ms: int
    """The consent event's server timestamp: only later events are relayed."""
    chat: int


def _state_map(state: Iterable[Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for ev in state:
        if not isinstance(ev, Mapping):
            continue
        kind, key = ev.get("type"), ev.get("state_key")
        if isinstance(kind, str) and isinstance(key, str):
            out[(kind, key)] = ev
    return out


def power_of(state: Iterable[Any], user: str) -> float:
    """`user`'s power level in a room with this current state (creators of v12 rooms: inf)."""
    events = _state_map(state)
    create = events.get(("m.room.create", ""), {})
    create_content = create.get("content")
    create_content = create_content if isinstance(create_content, Mapping) else {}
    if str(create_content.get("room_version", "1")) in CREATORS_PRIVILEGED:
        extra = create_content.get("additional_creators")
        creators = {create.get("sender")} | (set(extra) if isinstance(extra, list) else set())
        if user in creators:
            return float("inf")
    pl = events.get(("m.room.power_levels", ""), {}).get("content")
    if not isinstance(pl, Mapping):  # no power levels: the creator has 100, others 0
        return float(ADMIN_POWER) if user == create.get("sender") else 0.0
    users = pl.get("users")
    level = users.get(user) if isinstance(users, Mapping) else None
    if level is None:
        level = pl.get("users_default", 0)
    return float(level) if isinstance(level, int) and not isinstance(level, bool) else 0.0


def valid_consent(state: Iterable[Any], chat: int) -> Consent | None:
    """The room's consent for `chat`, if an admin wrote it and it is not withdrawn."""
    events = list(state)
    ev = _state_map(events).get((BRIDGE_CONSENT, ""))
    if ev is None:
        return None
    content = ev.get("content")
    sender = ev.get("sender")
    ts = ev.get("origin_server_ts")
    if not isinstance(content, Mapping) or not isinstance(sender, str):
        return None
    if not isinstance(ts, int) or isinstance(ts, bool) or ts <= 0:
        return None
    consented = content.get("telegram_chat")
    if not isinstance(consented, int) or isinstance(consented, bool) or consented != chat:
        return None
    if power_of(events, sender) < ADMIN_POWER:
        return None
    return Consent(sender, ts, chat)


def consent_content(by: UserId, chat: int, now_ms: int) -> dict[str, Any]:
    return {"telegram_chat": chat, "by": by, "at": now_ms}


async def find_room(http: MatrixHttp, network: str, club: str, room_key: str) -> RoomId:
    """The managed room `club/room_key` of `network`, among the rooms the token's user is in."""
    joined = await http.get(cs("joined_rooms"), label="joined_rooms")
    rooms = joined.get("joined_rooms")
    for room in rooms if isinstance(rooms, list) else []:
        if not isinstance(room, str):
            continue
        try:
            locator = await http.get(cs("rooms", room, "state", LOCATOR, ""), label="locator")
        except NotFound:
            continue
        if (
            locator.get("network") == network
            and locator.get("kind") == "club_room"
            and locator.get("club") == club
            and locator.get("key") == room_key
        ):
            return RoomId(room)
    raise ClubsError(
        f"no room {club}/{room_key} of network {network} among the provisioner's rooms "
        "(run `clubs apply` first?); nothing was written"
    )


async def record_consent(
    http: MatrixHttp,
    room: RoomId,
    writer: UserId,
    chat: int,
    *,
    withdraw: bool = False,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Write (or withdraw) the consent in `room` as `writer`, after checking that the room is
    encrypted and that `writer` has power 100 there. Returns the content written."""
    state = await http.get_list(cs("rooms", room, "state"), label="room state")
    if power_of(state, writer) < ADMIN_POWER:
        raise ClubsError(
            f"{writer} is not an admin (power 100) of {room}: only a room admin may record "
            "consent to bridging; nothing was written"
        )
    if not withdraw and not any(
        isinstance(e, Mapping) and e.get("type") == "m.room.encryption" for e in state
    ):
        raise ClubsError(
            f"{room} is not encrypted: the bridge relays it without consent; nothing was written"
        )
    content: dict[str, Any] = (
        {} if withdraw else consent_content(writer, chat, now_ms or int(time.time() * 1000))
    )
    await http.put(cs("rooms", room, "state", BRIDGE_CONSENT, ""), content, label="consent")
    return content
