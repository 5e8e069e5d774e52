"""Following the sessions the network file declares (`CLUB_SESSIONS` state in a club's sessions
room): a series per valid entry, ended when the entry changes or goes."""

from __future__ import annotations

import logging
import secrets

from clubs.bots.base import on_event
from clubs.bots.context import BotContext, EventContext
from clubs.bots.scheduling.core import (
    SESSIONS_ROOM,
    ScheduleCore,
)
from clubs.bots.scheduling.declared import declared_sessions, source_of
from clubs.bots.scheduling.store import Changes, NewSeries
from clubs.bots.scheduling.widget import call_link
from clubs.core.errors import NotFound
from clubs.core.http import cs
from clubs.core.ids import RoomId, UserId
from clubs.core.namespace import CLUB_SESSIONS

log = logging.getLogger(__name__)


class DeclaredFollower(ScheduleCore):
    """Reconciles at start and whenever the state event arrives."""

    @on_event(CLUB_SESSIONS)
    async def declared_changed(self, ctx: EventContext) -> None:
        ctx.bot.rooms.invalidate(ctx.room_id)
        await self._follow_declared(ctx.bot, ctx.room_id)

    async def _declared_everywhere(self, ctx: BotContext) -> None:
        """At start: the declared sessions of every club sessions room the bot is in (what
        changed while it was away included)."""
        for room_id in ctx.client.joined_rooms():
            await self._follow_declared(ctx, room_id)

    async def _follow_declared(self, ctx: BotContext, room_id: RoomId) -> None:
        """Make the club's series match what its sessions room declares: a new or changed
        entry starts a series (idempotent by its source), one gone from the file ends it."""
        info = await ctx.rooms.info(room_id)
        if info.club is None or info.kind != "club_room":
            return
        if (info.locator or {}).get("key") != SESSIONS_ROOM:
            return
        try:
            content = await ctx.http.get(
                cs("rooms", room_id, "state", CLUB_SESSIONS, ""), label="state sessions"
            )
        except NotFound:
            content = None
        declared, skipped = declared_sessions(info.club, content)
        if skipped:
            log.warning("%s: %d declared session(s) in %s skipped", ctx.name, skipped, room_id)
        wanted = {d.source for d in declared}
        for series in await self.store.active_series(info.club):
            if series.source.startswith(source_of(info.club)) and series.source not in wanted:
                await self._end_series(ctx, series, job=(ctx.name, "declared", series.source))
        for d in declared:
            if await self.store.series_by_source(d.source) is not None:
                continue
            token = secrets.token_urlsafe(12)
            link = call_link(info.settings, self.call_service, room_id, token) if d.online else None
            series = await self.store.add_series(
                NewSeries(
                    club=info.club,
                    room_id=room_id,
                    kind=d.kind,
                    tz=info.time_zone,
                    start_local=d.start_local,
                    rrule=d.rrule,
                    duration_s=d.duration_s,
                    online=d.online,
                    capacity=d.capacity,
                    title=d.title,
                    link=link,
                    venue=None,
                    materials=d.materials,
                    created_by=UserId(""),
                ),
                source=d.source,
                now=self.clock.now(),
            )
            first = self._next(series, after=self.clock.now(), changes=Changes())
            if first is not None:
                await self._schedule_announce(ctx, series, first)
