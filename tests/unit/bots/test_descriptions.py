"""The newcomer-repost decision: a room's private description is posted again for members who
joined after its newest copy, due one repost interval after that copy (at most once per interval
per room); service accounts, other events and rooms without a copy want none."""

from __future__ import annotations

from typing import Any

import pytest

from clubs.bots.descriptions import newcomer_reposts
from clubs.core.e2ee import RoomEvent
from clubs.core.http import EventId, RoomId, UserId

DAY = 24 * 3600.0
BOT = "@bot:clubs.example"
PROVISIONER = "@provisioner:clubs.example"
SERVICE = {BOT, PROVISIONER, None}
A = RoomId("!a:clubs.example")
B = RoomId("!b:clubs.example")
C = RoomId("!c:clubs.example")
POSTED = 1_700_000_000.0


def event(
    room: RoomId,
    user: str,
    at: float,
    *,
    membership: str = "join",
    type: str = "m.room.member",
) -> RoomEvent:
    content: dict[str, Any] = {"membership": membership}
    return RoomEvent(
        room_id=room,
        event_id=EventId(f"${room}{user}{at}"),
        sender=UserId(user),
        type=type,
        content=content,
        origin_server_ts=int(at * 1000),
        state_key=user if type == "m.room.member" else None,
    )


CASES: list[tuple[str, list[RoomEvent], dict[RoomId, float], dict[RoomId, float]]] = [
    ("no events", [], {A: POSTED}, {}),
    ("nobody new: a join before the copy", [event(A, "@anna:x", POSTED - 60)], {A: POSTED}, {}),
    ("a join at the very second of the copy", [event(A, "@anna:x", POSTED)], {A: POSTED}, {}),
    (
        "a newcomer within the window: due a window after the copy",
        [event(A, "@anna:x", POSTED + 60)],
        {A: POSTED},
        {A: POSTED + DAY},
    ),
    (
        "a newcomer after the window: due at once (the due time has passed)",
        [event(A, "@anna:x", POSTED + 3 * DAY)],
        {A: POSTED},
        {A: POSTED + DAY},
    ),
    (
        "several newcomers in one room: one repost",
        [event(A, "@anna:x", POSTED + 60), event(A, "@boris:x", POSTED + 7200)],
        {A: POSTED},
        {A: POSTED + DAY},
    ),
    (
        "several rooms, each by its own copy",
        [
            event(A, "@anna:x", POSTED + 60),
            event(B, "@boris:x", POSTED + 60),
            event(C, "@chen:x", POSTED + 600),
        ],
        {A: POSTED, B: POSTED + 3600, C: POSTED + 120},
        {A: POSTED + DAY, C: POSTED + 120 + DAY},
    ),
    ("a room without a copy wants none", [event(B, "@boris:x", POSTED + 60)], {A: POSTED}, {}),
    ("a service account joining", [event(A, BOT, POSTED + 60)], {A: POSTED}, {}),
    ("the provisioner joining", [event(A, PROVISIONER, POSTED + 60)], {A: POSTED}, {}),
    (
        "leaving, invited, banned: not a join",
        [
            event(A, "@anna:x", POSTED + 60, membership="leave"),
            event(A, "@boris:x", POSTED + 60, membership="invite"),
            event(A, "@chen:x", POSTED + 60, membership="ban"),
        ],
        {A: POSTED},
        {},
    ),
    (
        "a message is not a join",
        [event(A, "@anna:x", POSTED + 60, type="m.room.message")],
        {A: POSTED},
        {},
    ),
    (
        "an old join beside a new one in the same room",
        [event(A, "@anna:x", POSTED - 60), event(A, "@boris:x", POSTED + 60)],
        {A: POSTED},
        {A: POSTED + DAY},
    ),
]


@pytest.mark.parametrize(
    ("events", "newest", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_newcomer_reposts(
    events: list[RoomEvent], newest: dict[RoomId, float], expected: dict[RoomId, float]
) -> None:
    assert newcomer_reposts(events, newest, service=SERVICE, repost_s=DAY) == expected


def test_the_window_is_the_setting() -> None:
    joined = [event(A, "@anna:x", POSTED + 60)]
    assert newcomer_reposts(joined, {A: POSTED}, service=SERVICE, repost_s=3600) == {
        A: POSTED + 3600
    }
