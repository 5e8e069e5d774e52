"""What discovery found on the homeserver: a read-only snapshot the planner compares with.

Plain frozen data, no I/O. Rooms are keyed by their *ref*, derived from the locator state event
alone (`locator_ref`), so identity never depends on aliases or on a local file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from clubs.core.http import RoomId

StateKey = tuple[str, str]
"""(event type, state key)."""

TokenStatus = Literal["live", "used", "expired", "revoked"]


def locator_ref(content: Mapping[str, Any]) -> str | None:
    """The ref of a managed room from its locator content (None if the locator is malformed).

    Mirrors the refs of `DesiredRoom.ref`: "network", "country:<c>", "club:<club>",
    "club:<club>/<room>", "cohort:<club>/<cohort>", "cohort:<club>/<cohort>/<room>".
    """
    kind = content.get("kind")
    key = content.get("key")
    club = content.get("club")
    cohort = content.get("cohort")
    country = content.get("country")
    if not isinstance(key, str) or not key:
        return None
    if kind == "network_space":
        return "network"
    if kind == "country_space":
        return f"country:{country if isinstance(country, str) else key}"
    if kind == "club_space":
        return f"club:{club if isinstance(club, str) else key}"
    if kind == "club_room" and isinstance(club, str):
        return f"club:{club}/{key}"
    if kind == "cohort_space" and isinstance(club, str):
        return f"cohort:{club}/{cohort if isinstance(cohort, str) else key}"
    if kind == "cohort_room" and isinstance(club, str) and isinstance(cohort, str):
        return f"cohort:{club}/{cohort}/{key}"
    if kind == "policy_room":
        return f"policy:{key}"
    return None


@dataclass(frozen=True)
class Membership:
    """A user's current m.room.member state: what it is and who set it."""

    membership: str  # join | invite | leave | ban | knock
    sender: str


@dataclass(frozen=True)
class ActualRoom:
    room_id: RoomId
    ref: str
    locator: Mapping[str, Any]
    state: Mapping[StateKey, Mapping[str, Any]]
    """Current state content by (type, state key), m.room.member excluded."""
    members: Mapping[str, Membership] = field(default_factory=dict)
    created_ts: int = 0

    @property
    def room_version(self) -> str | None:
        v = self.state.get(("m.room.create", ""), {}).get("room_version")
        return v if isinstance(v, str) else None

    @property
    def is_space(self) -> bool:
        return self.state.get(("m.room.create", ""), {}).get("type") == "m.space"

    @property
    def archived(self) -> bool:
        return self.locator.get("state") == "archived"


@dataclass(frozen=True)
class Actual:
    """Everything discovery saw for one network."""

    network: str
    provisioner: str
    rooms: Mapping[str, ActualRoom]
    """ref → the room (when a ref is found twice, the oldest room; the others in duplicates)."""
    duplicates: Mapping[str, tuple[RoomId, ...]] = field(default_factory=dict)
    users: frozenset[str] = frozenset()
    """Accounts that exist, among the mxids discovery was asked about (precreate people)."""
    tokens: Mapping[str, TokenStatus] = field(default_factory=dict)
    """person key → the best status of the registration tokens issued to them."""

    def room_ids(self) -> dict[str, RoomId]:
        return {ref: r.room_id for ref, r in self.rooms.items()}

    def replace(self, rooms: Mapping[str, ActualRoom], gone: frozenset[str]) -> Actual:
        """This snapshot with some rooms re-read (and refs in `gone` removed)."""
        merged = {ref: r for ref, r in self.rooms.items() if ref not in gone}
        merged.update(rooms)
        return Actual(
            self.network, self.provisioner, merged, self.duplicates, self.users, self.tokens
        )
