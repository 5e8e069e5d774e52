"""What a bot knows about rooms: which are managed (locator), who has which power, club settings.

Read from room state (the bot's client loads it: one request that also tells the client the
room's members and encryption) and cached; the runtime invalidates an entry when a state event
of that type arrives in the room's timeline. Bots never import the
provisioning model: they read the locator and club settings as the provisioner wrote them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clubs.core.errors import Forbidden, NotFound
from clubs.core.http import RoomId
from clubs.core.namespace import CLUB_SETTINGS, LOCATOR
from clubs.core.power import creators_of, level_of

log = logging.getLogger(__name__)

PREFETCH_CONCURRENCY = 16
UNSHARDED_KINDS = frozenset({"policy_room"})
"""Rooms a bot makes for itself (the moderation bot's policy and management room): not the
provisioner's, so of no shard; the process whose bot is in one serves it."""


@dataclass(frozen=True)
class RoomInfo:
    room_id: RoomId
    locator: Mapping[str, Any] | None
    power_levels: Mapping[str, Any]
    creators: frozenset[str]
    settings: Mapping[str, Any] = field(default_factory=dict)
    server_acl: Mapping[str, Any] | None = None
    """The room's `m.room.server_acl` content, if it has one."""
    elsewhere: bool = False
    """A room of our network that another shard serves (`clubs bots run --shard/--clubs`):
    not managed here, but not to be left either."""

    @property
    def managed(self) -> bool:
        return self.locator is not None

    @property
    def kind(self) -> str | None:
        kind = self.locator.get("kind") if self.locator else None
        return kind if isinstance(kind, str) else None

    @property
    def club(self) -> str | None:
        club = self.locator.get("club") if self.locator else None
        return club if isinstance(club, str) else None

    @property
    def staff_only(self) -> bool:
        """A club's moderators room: only its staff and the bots are in it (`audience: staff`)."""
        return bool(self.locator and self.locator.get("audience") == "staff")

    @property
    def language(self) -> str:
        lang = self.settings.get("language")
        return lang if lang in ("ru", "en") else "ru"

    @property
    def club_name(self) -> str | None:
        """The club's name (public already: it is the club space's name), for times like
        «19:00 (Алматы)»."""
        name = self.settings.get("name")
        return name if isinstance(name, str) and name else None

    @property
    def time_zone(self) -> str:
        tz = self.settings.get("time_zone")
        return tz if isinstance(tz, str) else "UTC"

    def power(self, user_id: str) -> int:
        return level_of(self.power_levels, user_id, self.creators)

    def required(self, action: str, default: int = 50) -> int:
        value = self.power_levels.get(action, default)
        return value if isinstance(value, int) else default


class RoomDirectory:
    """Cached room facts for one bot account."""

    def __init__(
        self,
        load_state: Callable[[RoomId], Awaitable[Sequence[Mapping[str, Any]]]],
        network: str | None = None,
        shard: frozenset[str] | None = None,
        other_shards: frozenset[str] = frozenset(),
    ) -> None:
        self._load_state = load_state
        self._network = network
        self._shard = shard
        self._others = other_shards
        self._cache: dict[RoomId, RoomInfo] = {}
        self._locks: dict[RoomId, asyncio.Lock] = {}

    def invalidate(self, room_id: RoomId) -> None:
        self._cache.pop(room_id, None)

    def known(self) -> dict[RoomId, RoomInfo]:
        return dict(self._cache)

    async def info(self, room_id: RoomId) -> RoomInfo:
        cached = self._cache.get(room_id)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(room_id)
            if cached is None:
                cached = await self._load(room_id)
                self._cache[room_id] = cached
            return cached

    async def prefetch(self, room_ids: Iterable[RoomId]) -> None:
        """Load the rooms not cached yet, `PREFETCH_CONCURRENCY` at a time (after a restart the
        first batch and the first member pass touch every room: one by one, that was a second
        of start-up for 100 rooms). Only a warm-up: a room that fails to load is left for
        `info()` to try again, and raise, where it is needed."""
        missing = [r for r in dict.fromkeys(room_ids) if r not in self._cache]
        if not missing:
            return
        gate = asyncio.Semaphore(PREFETCH_CONCURRENCY)

        async def one(room_id: RoomId) -> None:
            async with gate:
                await self.info(room_id)

        await asyncio.gather(*(one(r) for r in missing), return_exceptions=True)

    async def _load(self, room_id: RoomId) -> RoomInfo:
        """One request: the room's full current state."""
        try:
            events = list(await self._load_state(room_id))
        except (NotFound, Forbidden):
            events = []
        return room_info(room_id, events, self._network, self._shard, self._others)


def room_info(
    room_id: RoomId,
    state: Iterable[Any],
    network: str | None,
    shard: frozenset[str] | None = None,
    other_shards: frozenset[str] = frozenset(),
) -> RoomInfo:
    """Pure: the facts bots need, from a room's state events. With a `shard` (country and club
    keys), a room whose locator names none of them is another process's: not managed here.
    A room whose locator names one of `other_shards` (the keys of the network's declared shards,
    for the process of the network's own accounts) is another process's too. A room a bot made
    for itself (`UNSHARDED_KINDS`) is the process's whose bot is in it."""
    by_type: dict[str, Mapping[str, Any]] = {}
    creators: set[str] = set()
    for ev in state:
        if not isinstance(ev, Mapping) or ev.get("state_key") != "":
            continue
        ev_type, content = ev.get("type"), ev.get("content")
        if not isinstance(ev_type, str) or not isinstance(content, Mapping):
            continue
        by_type[ev_type] = content
        if ev_type == "m.room.create":
            creators |= creators_of(ev)
    locator = by_type.get(LOCATOR)
    if locator is not None and network is not None and locator.get("network") != network:
        locator = None  # another network's room is not ours to act in
    elsewhere = False
    if (
        locator is not None
        and locator.get("kind") not in UNSHARDED_KINDS
        and (
            (shard is not None and not in_shard(locator, shard)) or in_shard(locator, other_shards)
        )
    ):
        locator, elsewhere = None, True
    return RoomInfo(
        room_id,
        locator,
        by_type.get("m.room.power_levels", {}),
        frozenset(creators),
        by_type.get(CLUB_SETTINGS, {}),
        by_type.get("m.room.server_acl"),
        elsewhere,
    )


def in_shard(locator: Mapping[str, Any], shard: frozenset[str]) -> bool:
    """Whether a room belongs to a shard: its locator names one of the shard's countries or
    clubs. The network space and rooms of no country or club belong to no shard (the process
    of the network's own accounts serves them)."""
    return any(locator.get(field) in shard for field in ("country", "club"))
