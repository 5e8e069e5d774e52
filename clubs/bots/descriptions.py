"""Private room descriptions: each managed room's description (from the network file, never the
unencrypted topic) is posted encrypted and pinned, and posted again for members who joined after
its newest copy (history is visible from one's join only), at most once per repost interval."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from clubs.bots.context import BotContext
from clubs.core.e2ee import RoomEvent
from clubs.core.http import EventId, RoomId

RoomKey = tuple[str | None, str | None, str | None, str | None]
"""(kind, club, cohort, key) of a locator: how the composition root names rooms to bots."""


def room_key(locator: Mapping[str, Any]) -> RoomKey:
    def get(name: str) -> str | None:
        value = locator.get(name)
        return value if isinstance(value, str) else None

    return (get("kind"), get("club"), get("cohort"), get("key"))


def newcomer_reposts(
    events: Iterable[RoomEvent],
    newest_copy: Mapping[RoomId, float],
    *,
    service: Collection[str | None],
    repost_s: float,
) -> dict[RoomId, float]:
    """When each room's description is to be posted again, by room: a member (not a service
    account) who joined after the newest copy (`newest_copy`: when it was posted, by room; a
    room without a copy wants none) cannot read it, so a repost is due `repost_s` after that
    copy — at most one per `repost_s` per room. Rooms nobody new joined are absent."""
    due: dict[RoomId, float] = {}
    for event in joins(events, service):
        posted_at = newest_copy.get(event.room_id)
        if posted_at is None or event.origin_server_ts / 1000 <= posted_at:
            continue
        due[event.room_id] = posted_at + repost_s
    return due


def joins(events: Iterable[RoomEvent], service: Collection[str | None]) -> list[RoomEvent]:
    """The joins of people who are not service accounts."""
    return [
        event
        for event in events
        if event.type == "m.room.member"
        and event.content.get("membership") == "join"
        and event.state_key not in service
    ]


class Descriptions:
    """One bot's private room descriptions, by the room's locator key."""

    def __init__(
        self,
        ctx: BotContext,
        texts: Mapping[RoomKey, str],
        *,
        service: Collection[str | None],
        repost_s: float,
    ) -> None:
        self._ctx = ctx
        self.texts = dict(texts)
        """Private room descriptions to post (encrypted) and pin, by the room's locator key."""
        self._service = service
        self._repost_s = repost_s
        self._described: set[RoomId] = set()

    async def _text(self, room_id: RoomId) -> str | None:
        info = await self._ctx.rooms.info(room_id)
        return self.texts.get(room_key(info.locator)) if info.locator else None

    async def post(self) -> None:
        """Post each managed room's private description once (per text) and pin it."""
        ctx, store = self._ctx, self._ctx.store
        for room_id in ctx.client.joined_rooms():
            if room_id in self._described:
                continue
            self._described.add(room_id)
            text = await self._text(room_id)
            if not text:
                continue
            digest = _digest(text)
            if await store.description_posted(room_id, digest):
                if await store.description_copy(room_id) is None:
                    # Posted before copies were kept: its id is unknown, so the next newcomer
                    # gets a repost at once.
                    await store.record_description_copy(room_id, digest, "", 0.0, 1)
                continue
            event_id = await ctx.notice(
                room_id, "bots/description", job=("description", room_id, digest), text=text
            )
            if event_id is not None:
                old = await store.description_copy(room_id)
                await ctx.pin(room_id, event_id, replacing=[EventId(old.event_id)] if old else [])
                await store.record_description_copy(room_id, digest, event_id, ctx.clock.now(), 1)
                await store.mark_description_posted(room_id, digest)
            else:
                self._described.discard(room_id)  # room not synced yet: try after the next sync

    async def newcomers(self, events: Iterable[RoomEvent]) -> None:
        """Ask for the reposts that the batch's joins want (`newcomer_reposts`); an earlier
        wish of the store stands."""
        store = self._ctx.store
        events = list(events)
        newest: dict[RoomId, float] = {}
        for event in joins(events, self._service):
            if event.room_id not in newest:
                copy = await store.description_copy(event.room_id)
                if copy is not None:
                    newest[event.room_id] = copy.posted_at
        due = newcomer_reposts(events, newest, service=self._service, repost_s=self._repost_s)
        for room_id, at in due.items():
            await store.want_description_repost(room_id, at)

    async def repost(self) -> None:
        """Post the due reposts: a new encrypted copy, pinned in place of the old one."""
        ctx, store = self._ctx, self._ctx.store
        for copy in await store.reposts_due(ctx.clock.now()):
            room_id = RoomId(copy.room_id)
            text = await self._text(room_id)
            if not text:
                continue
            digest = _digest(text)
            n = copy.copies + 1
            event_id = await ctx.notice(
                room_id, "bots/description", job=("description", room_id, digest, str(n)), text=text
            )
            if event_id is None:
                continue  # room not synced yet: the repost stays due
            await ctx.pin(room_id, event_id, replacing=[EventId(copy.event_id)])
            await store.record_description_copy(room_id, digest, event_id, ctx.clock.now(), n)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
