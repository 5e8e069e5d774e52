"""Shared helpers for moderation integration tests: a club of plain accounts and its rooms.

The "bot" is an ordinary account given power 50 by the room creator; rooms are created here
with `createRoom` (room version 12, encrypted, invite-only), not by the provisioner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clubs.bots.moderation.moderator import Moderator
from clubs.bots.moderation.store import ModerationStore
from clubs.core.adminview import AdminView
from clubs.core.clock import Clock, SystemClock
from clubs.core.db import Database
from clubs.core.errors import NotFound
from clubs.core.http import EventId, MatrixHttp, RoomId, UserId, path
from clubs.core.txn import txn_id
from tests.harness import Account, SynapseHarness

CS = ("_matrix", "client", "v3")
MEGOLM = "m.megolm.v1.aes-sha2"


@dataclass
class Club:
    owner: Account
    """Creates the rooms (room v12: infinite power)."""
    bot: Account
    """The moderation bot: power 50."""
    moderator: Account
    """A human moderator: power 50."""
    member: Account
    """The target of the actions: power 0."""

    @property
    def bot_id(self) -> UserId:
        return UserId(self.bot.user_id)

    @property
    def moderator_id(self) -> UserId:
        return UserId(self.moderator.user_id)

    @property
    def member_id(self) -> UserId:
        return UserId(self.member.user_id)


async def new_club(synapse: SynapseHarness) -> Club:
    owner, bot, moderator, member = await asyncio.gather(
        synapse.new_user("owner"),
        synapse.new_user("bot", user_type="bot"),
        synapse.new_user("mod"),
        synapse.new_user("member"),
    )
    return Club(owner, bot, moderator, member)


async def make_room(
    club: Club,
    *,
    joined: Iterable[Account] = (),
    levels: Mapping[str, int] | None = None,
    events: Mapping[str, int] | None = None,
    join_rules: Mapping[str, Any] | None = None,
    encrypted: bool = True,
    events_default: int = 0,
) -> RoomId:
    """A room of `club.owner` with the bot and the moderator at 50; `joined` accounts join."""
    users = {club.bot.user_id: 50, club.moderator.user_id: 50, **(levels or {})}
    initial_state: list[dict[str, Any]] = [
        {
            "type": "m.room.join_rules",
            "state_key": "",
            "content": dict(join_rules or {"join_rule": "invite"}),
        },
        {
            "type": "m.room.history_visibility",
            "state_key": "",
            "content": {"history_visibility": "joined"},
        },
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
    ]
    if encrypted:
        initial_state.append(
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
        )
    members = list({a.user_id: a for a in (club.bot, club.moderator, *joined)}.values())
    body = {
        "room_version": "12",
        "preset": "private_chat",
        "initial_state": initial_state,
        "power_level_content_override": {
            "users": users,
            "events_default": events_default,
            "events": {
                "m.room.power_levels": 50,
                "m.room.join_rules": 50,
                "m.room.encryption": 100,
                "m.room.tombstone": 150,
                **(events or {}),
            },
        },
        "invite": [a.user_id for a in members],
    }
    resp = await club.owner.http.post(path(*CS, "createRoom"), body)
    room = RoomId(resp["room_id"])
    await asyncio.gather(*(join(a, room) for a in members))
    return room


async def join(account: Account, room: RoomId) -> None:
    await account.http.post(path(*CS, "join", room), {})


async def membership(http: MatrixHttp, room: RoomId, user_id: str) -> str | None:
    try:
        content = await http.get(path(*CS, "rooms", room, "state", "m.room.member", user_id))
    except NotFound:
        return None
    value = content.get("membership")
    return value if isinstance(value, str) else None


async def power_levels(http: MatrixHttp, room: RoomId) -> dict[str, Any]:
    return await http.get(path(*CS, "rooms", room, "state", "m.room.power_levels", ""))


async def send_fake_encrypted(account: Account, room: RoomId, n: int, job: str) -> list[EventId]:
    """`n` events shaped like Megolm messages (the server never reads the ciphertext)."""
    ids = []
    for i in range(n):
        content = {
            "algorithm": MEGOLM,
            "ciphertext": f"AwgAEn{job}{i}",
            "session_id": "session",
            "sender_key": "key",
            "device_id": account.session.device_id,
        }
        resp = await account.http.put(
            path(*CS, "rooms", room, "send", "m.room.encrypted", txn_id("test", job, str(i))),
            content,
        )
        ids.append(EventId(resp["event_id"]))
    return ids


@asynccontextmanager
async def moderator_for(
    club: Club,
    db_path: Path,
    *,
    admin: AdminView | None = None,
    clock: Clock | None = None,
    bots: Iterable[str] = (),
) -> AsyncIterator[Moderator]:
    """A Moderator for the club's bot with its store in `db_path` (closed on exit)."""
    db = await Database.open(db_path)
    try:
        store = await ModerationStore.open(db)
        yield Moderator(
            club.bot.http,
            club.bot_id,
            store,
            admin=admin,
            clock=clock or SystemClock(),
            bots=bots,
        )
    finally:
        await db.close()
