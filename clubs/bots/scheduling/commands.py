"""What facilitators and members type to the scheduling bot: `!session`, `!sessions`, `!venue`,
`!ics` (ru/en). Changes to a series (`!cancel`, `!move`, `!change`) are in `edits`."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any

from clubs.bots.args import FreeText, Word
from clubs.bots.commands import command
from clubs.bots.context import CommandContext
from clubs.bots.rooms import RoomInfo
from clubs.bots.scheduling import places as pl
from clubs.bots.scheduling.calendar import series_ics
from clubs.bots.scheduling.core import (
    FACILITATOR,
    LIST_LIMIT,
    SESSIONS_ROOM,
    ScheduleCore,
    start_of,
    when_text,
)
from clubs.bots.scheduling.options import SessionUsage, parse_session
from clubs.bots.scheduling.recurrence import (
    RuleError,
    occurrence_key,
    parse_key,
    zone,
)
from clubs.bots.scheduling.store import Changes, NewSeries
from clubs.bots.scheduling.timefmt import describe_rule
from clubs.bots.scheduling.widget import call_link
from clubs.core.errors import MatrixError

log = logging.getLogger(__name__)


class SessionCommands(ScheduleCore):
    """The commands; each answers in the room (or the DM) it was typed in."""

    @command(
        "session",
        aliases=("встреча", "sessija"),
        help_key="scheduling/session.help",
        params=(FreeText("details", max_length=1000),),
        min_power=50,
    )
    async def new_session(self, ctx: CommandContext, details: str) -> None:
        club = ctx.room.club
        if club is None:
            await ctx.reply("scheduling/not_a_club")
            return
        tz = ctx.room.time_zone
        try:
            now_local = datetime.fromtimestamp(self.clock.now(), zone(tz)).replace(tzinfo=None)
        except RuleError:  # the club's settings name no real zone: nothing can be scheduled
            await ctx.reply("scheduling/usage", problem="when", detail="the club's time zone")
            return
        try:
            draft = parse_session(details, now_local)
        except SessionUsage as e:
            await ctx.reply("scheduling/usage", problem=e.part, detail=e.detail)
            return
        try:
            also = await self._audience(ctx, club, draft.audience)
        except SessionUsage as e:
            await ctx.reply("scheduling/usage", problem=e.part, detail=e.detail)
            return
        if draft.venue is not None:
            await _keep_private(ctx)
        link = draft.link
        if draft.online and link is None:
            token = secrets.token_urlsafe(12)
            link = call_link(ctx.room.settings, self.call_service, ctx.room_id, token)
        series = await self.store.add_series(
            NewSeries(
                club=club,
                room_id=ctx.room_id,
                kind=draft.kind,
                tz=tz,
                start_local=occurrence_key(draft.when.start),
                rrule=draft.when.rrule,
                duration_s=draft.duration_s,
                online=draft.online,
                capacity=draft.capacity,
                title=draft.title,
                link=link,
                venue=draft.venue,
                materials=draft.materials,
                created_by=ctx.sender,
                also=also,
            ),
            source=ctx.event.event_id,
            now=self.clock.now(),
        )
        first = self._next(series, after=self.clock.now(), changes=Changes())
        if first is None:  # a one-off whose time passed while the command waited
            await ctx.reply("scheduling/usage", problem="when", detail="in the past")
            await self.store.end_series(series.id)
            return
        await self._schedule_announce(ctx.bot, series, first)
        await ctx.reply(
            "scheduling/created",
            id=series.id,
            title=series.title,
            rule=describe_rule(series.rrule, parse_key(series.start_local), ctx.lang),
            when=when_text(series, first.start, ctx.room),
        )

    @command("sessions", aliases=("встречи",), help_key="scheduling/sessions.help")
    async def list_sessions(self, ctx: CommandContext) -> None:
        club = ctx.room.club
        if club is None:
            await ctx.reply("scheduling/not_a_club")
            return
        rows: list[tuple[datetime, dict[str, Any]]] = []
        for series in await self.store.active_series(club):
            changes = await self.store.changes(series.id)
            nxt = self._next(series, after=self.clock.now(), changes=changes)
            if nxt is None:
                continue
            row = {
                "id": series.id,
                "title": series.title,
                "when": when_text(series, nxt.start, ctx.room),
                "rule": describe_rule(series.rrule, parse_key(series.start_local), ctx.lang),
            }
            rows.append((nxt.start, row))
        rows.sort(key=lambda r: r[0])
        listed = [row for _, row in rows[:LIST_LIMIT]]
        await ctx.reply("scheduling/list", sessions=listed, more=len(rows) > LIST_LIMIT)

    @command(
        "venue",
        aliases=("место", "адрес"),
        help_key="scheduling/venue.help",
        params=(Word("id", max_length=12), FreeText("address", max_length=300)),
        min_power=50,
        dm=True,
    )
    async def venue(self, ctx: CommandContext, id: str, address: str) -> None:
        """Set the address of an offline series (e.g. one declared in the network file, which
        never carries it). People who already hold a place get it by DM now."""
        series = await self._own_series(ctx, id)
        if series is None:
            return
        if not ctx.in_dm:
            await _keep_private(ctx)
        if series.online:
            await ctx.reply("scheduling/usage", problem="format", detail="")
            return
        await self.store.set_venue(series.id, address.strip())
        told = 0
        for occ in await self.store.upcoming(series.id):
            seats = await self.store.places(series.id, occ.occ_key)
            voice = await ctx.bot.rooms.info(occ.poll_room)
            when = when_text(series, start_of(series, occ.occ_key), voice)
            for user, (status, _) in sorted(seats.items()):
                if status != pl.CONFIRMED:
                    continue
                await ctx.dm(
                    user,
                    "scheduling/venue_changed",
                    part=f"venue:{occ.occ_key}:{user}",
                    title=series.title,
                    when=when,
                    venue=address.strip(),
                )
                told += 1
        await ctx.reply("scheduling/venue_set", id=series.id, title=series.title, told=told)

    @command(
        "ics",
        aliases=("календарь", "calendar"),
        help_key="scheduling/ics.help",
        params=(Word("id", max_length=12),),
        dm=True,
    )
    async def ics(self, ctx: CommandContext, id: str) -> None:
        """The series as an .ics file, sent as an encrypted attachment in a DM."""
        series = await self._own_series(ctx, id, members_too=True)
        if series is None:
            return
        home = await ctx.bot.rooms.info(series.room_id)
        data = series_ics(
            series,
            await self.store.changes(series.id),
            lang=home.language,
            uid_domain=ctx.bot.user_id.partition(":")[2] or "clubs",
            now=self.clock.now(),
            place=home.club_name,
        )
        dm = await ctx.bot.dm_room(ctx.sender)
        await ctx.bot.send_file(
            dm, f"session-{series.id}.ics", data, "text/calendar", job=ctx.job("ics")
        )
        if not ctx.in_dm:
            await ctx.reply("scheduling/ics_sent", id=series.id)

    async def _audience(
        self, ctx: CommandContext, club: str, audience: tuple[str, tuple[str, ...]] | None
    ) -> tuple[str, ...]:
        """The other clubs of a network-wide session, each one the sender facilitates (power
        50 in its sessions room), in a stable order."""
        if audience is None:
            return ()
        served: dict[str, RoomInfo] = {}
        for room_id in ctx.bot.client.joined_rooms():
            info = await ctx.bot.rooms.info(room_id)
            key = (info.locator or {}).get("key")
            if info.club and info.kind == "club_room" and key == SESSIONS_ROOM:
                served[info.club] = info
        how, keys = audience
        if how == "clubs":
            unknown = [k for k in keys if k not in served]
            if unknown:
                raise SessionUsage("clubs", ", ".join(unknown[:5]))
            chosen = list(keys)
        elif how == "country":
            chosen = [c for c, i in served.items() if (i.locator or {}).get("country") in keys]
        else:
            chosen = list(served)
        others = sorted({c for c in chosen if c != club})
        refused = [c for c in others if served[c].power(ctx.sender) < FACILITATOR]
        if refused:
            raise SessionUsage("not_yours", ", ".join(refused[:5]))
        return tuple(others)


async def _keep_private(ctx: CommandContext) -> None:
    """A command that carried a venue address in a club room: the bot has it sealed now, the
    room's members need not read it in the command. Redacted (best effort: without the power
    to redact, the reply says to delete it)."""
    try:
        await ctx.bot.redact(ctx.room_id, ctx.event.event_id, "address kept private")
    except MatrixError as e:
        log.info("%s: could not redact a command with an address (%s)", ctx.bot.name, e.errcode)
