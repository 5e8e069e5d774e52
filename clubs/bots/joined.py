"""Questions about the rooms a bot has joined: which one is the staff's, whether a user shares a
managed room with the bot, and which language to speak to a person in (their club's)."""

from __future__ import annotations

from clubs.bots.rooms import RoomDirectory
from clubs.core.e2ee import E2eeClient
from clubs.core.http import RoomId, UserId


async def staff_room(client: E2eeClient, rooms: RoomDirectory) -> RoomId | None:
    """The network's management room if this bot is in it, else a staff-only room."""
    joined = client.joined_rooms()
    await rooms.prefetch(joined)
    staff: list[RoomId] = []
    for room_id in joined:
        info = await rooms.info(room_id)
        if info.kind == "policy_room":
            return room_id
        if info.staff_only:
            staff.append(room_id)
    return staff[0] if staff else None


async def shares_managed_room(client: E2eeClient, rooms: RoomDirectory, user: UserId) -> bool:
    joined = client.joined_rooms()
    await rooms.prefetch(joined)  # the same request loads each room's members
    for room_id in joined:
        if (await rooms.info(room_id)).managed and user in await client.members(room_id):
            return True
    return False


async def person_language(client: E2eeClient, rooms: RoomDirectory, user: UserId) -> str | None:
    """The language of the first club the person is in with the bot (a DM has no club of its
    own: the bot answers there in the person's club's language); None if they share none."""
    for room_id in client.joined_rooms():
        info = await rooms.info(room_id)
        if info.club is None or info.settings.get("language") not in ("ru", "en"):
            continue
        if user in await client.members(room_id):
            return info.language
    return None


async def club_room(client: E2eeClient, rooms: RoomDirectory, club: str, key: str) -> RoomId | None:
    """The club's room with this key (its locator's) among the rooms the bot is in."""
    for room_id in client.joined_rooms():
        info = await rooms.info(room_id)
        if (
            info.club == club
            and info.kind == "club_room"
            and (info.locator or {}).get("key") == key
        ):
            return room_id
    return None
