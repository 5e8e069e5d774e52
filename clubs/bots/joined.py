"""Questions about the rooms a bot has joined: which one is the staff's, and whether a user
shares a managed room with the bot."""

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
