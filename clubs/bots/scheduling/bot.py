"""The scheduling bot: club sessions across time zones, an RSVP poll, places and a waitlist,
reminders exactly once.

A facilitator creates a session (or a weekly series) in the club's sessions room with
`!session` / `!встреча`. Everything after that is a chain of durable jobs, each one exactly
once across crashes (its sends carry txn ids derived from the job, its follow-ups are stored
with its completion):

- `announce` (one occurrence): the announcement in the club's announcements room, pinned, and
  an encrypted RSVP poll in the sessions room (members cannot post in the announcements room,
  so they could not vote there); then the occurrence's reminders, start and finish are
  scheduled;
- `remind` (per offset, default 24 h and 15 min before): a DM to everyone going or maybe; late
  (the bot was down) but within its grace window it says so; past it the facilitator who made
  the session gets one "missed" DM instead — never silence;
- `start`: "starting now" in the sessions room, with the call link of an online session;
- `finish`: the announcement unpinned and marked over, the poll ended, the next occurrence
  announced.

Votes arrive as poll responses (`@on_poll`): the counts are edited into the announcement, and
at an offline session with a capacity the places are given in the order people said "going";
the rest wait and are promoted when a place opens. The venue's address is only ever sent by DM
to people with a place — never in room state or a room message.

Times are computed in the club's IANA zone from the series' wall time and RRULE, so a weekly
19:00 stays 19:00 across daylight-saving changes; announcements show the club's local time.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from clubs.bots.args import FreeText, Word
from clubs.bots.base import Bot
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.jobs import JobContext, on_job, on_missed_job
from clubs.bots.polls import PollUpdate, on_poll
from clubs.bots.rooms import RoomInfo
from clubs.bots.scheduling import places as pl
from clubs.bots.scheduling.calendar import series_ics
from clubs.bots.scheduling.options import SessionUsage, parse_session
from clubs.bots.scheduling.recurrence import (
    Occurrence as Occ,
)
from clubs.bots.scheduling.recurrence import (
    occurrence_key,
    occurrences,
    parse_key,
    zone,
)
from clubs.bots.scheduling.store import NewSeries, Occurrence, ScheduleStore, Series
from clubs.bots.scheduling.timefmt import describe_rule, format_local, format_span
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.errors import MatrixError, Unreachable
from clubs.core.html import notice_content
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.sealed import Sealer

log = logging.getLogger(__name__)

ANNOUNCE, REMIND, START, FINISH = "announce", "remind", "start", "finish"
REMINDER_OFFSETS_S = (24 * 3600, 15 * 60)
"""Default reminder offsets before a session starts."""
ANNOUNCE_GRACE_S = 7 * 24 * 3600
FINISH_GRACE_S = 30 * 24 * 3600
DEFAULT_CALL_SERVICE = "https://meet.jit.si"
ANNOUNCEMENTS_ROOM, SESSIONS_ROOM = "announcements", "sessions"
LIST_LIMIT = 20
FACILITATOR = 50
ANSWER_KEYS = ("scheduling/answer_going", "scheduling/answer_maybe", "scheduling/answer_not")


class NotSentYet(Unreachable):
    """A send is waiting in the outbox (its room not synced yet): the job is tried again."""


def reminder_grace_s(offset_s: int) -> float:
    """How late a reminder may still go out: a quarter of its lead time, at least five minutes,
    never past the start."""
    return float(min(offset_s, max(300, offset_s // 4)))


class SchedulingBot(Bot):
    name = "scheduling"

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        clock: Clock,
        *,
        call_service: str = DEFAULT_CALL_SERVICE,
        reminder_offsets_s: tuple[int, ...] = REMINDER_OFFSETS_S,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.clock = clock
        self.call_service = call_service.rstrip("/")
        self.reminder_offsets_s = reminder_offsets_s
        self.store = ScheduleStore(db, self.name, sealer)
        """Replaced at `start` by the store of the bot's account, migrated."""

    async def start(self, ctx: Any) -> None:
        self.store = await ScheduleStore.open(self.db, ctx.name, self.sealer)

    # --- commands --------------------------------------------------------------------------------

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
        now_local = datetime.fromtimestamp(self.clock.now(), zone(tz)).replace(tzinfo=None)
        try:
            draft = parse_session(details, now_local)
        except SessionUsage as e:
            await ctx.reply("scheduling/usage", problem=e.part, detail=e.detail)
            return
        if draft.venue is not None:
            await _keep_private(ctx)
        link = draft.link
        if draft.online and link is None:
            link = f"{self.call_service}/clubs-{secrets.token_urlsafe(12)}"
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
            ),
            source=ctx.event.event_id,
            now=self.clock.now(),
        )
        first = self._next(series, after=self.clock.now(), cancelled=set())
        if first is None:  # a one-off whose time passed while the command waited
            await ctx.reply("scheduling/usage", problem="when", detail="in the past")
            await self.store.end_series(series.id)
            return
        await ctx.bot.jobs.schedule(
            ANNOUNCE,
            _key(series.id, first),
            self.clock.now(),
            {"series": series.id, "occ": occurrence_key(first.local)},
            grace_s=ANNOUNCE_GRACE_S,
        )
        await ctx.reply(
            "scheduling/created",
            id=series.id,
            title=series.title,
            rule=describe_rule(series.rrule, parse_key(series.start_local), ctx.lang),
            when=_when(series, first.start, ctx.room),
        )

    @command("sessions", aliases=("встречи",), help_key="scheduling/sessions.help")
    async def list_sessions(self, ctx: CommandContext) -> None:
        club = ctx.room.club
        if club is None:
            await ctx.reply("scheduling/not_a_club")
            return
        rows: list[tuple[datetime, dict[str, Any]]] = []
        for series in await self.store.active_series(club):
            cancelled = await self.store.cancelled(series.id)
            nxt = self._next(series, after=self.clock.now(), cancelled=cancelled)
            if nxt is None:
                continue
            row = {
                "id": series.id,
                "title": series.title,
                "when": _when(series, nxt.start, ctx.room),
                "rule": describe_rule(series.rrule, parse_key(series.start_local), ctx.lang),
            }
            rows.append((nxt.start, row))
        rows.sort(key=lambda r: r[0])
        listed = [row for _, row in rows[:LIST_LIMIT]]
        await ctx.reply("scheduling/list", sessions=listed, more=len(rows) > LIST_LIMIT)

    @command(
        "cancel",
        aliases=("отмена", "отменить"),
        help_key="scheduling/cancel.help",
        params=(Word("id", max_length=12), Word("which", default="next", max_length=12)),
        min_power=50,
    )
    async def cancel(self, ctx: CommandContext, id: str, which: str) -> None:
        series = await self._own_series(ctx, id)
        if series is None:
            return
        cancelled = await self.store.cancelled(series.id)
        if which.lower() in ("all", "все", "всё", "серию"):
            await self.store.end_series(series.id)
            for occ in await self.store.upcoming(series.id):
                await self._call_off(ctx.bot, series, occ, job=ctx.job("off", occ.occ_key))
            await ctx.reply("scheduling/ended", id=series.id, title=series.title)
            return
        target = self._pick(series, which, cancelled)
        if target is None:
            await ctx.reply("scheduling/no_such_date", id=series.id)
            return
        key = occurrence_key(target.local)
        await self.store.cancel(series.id, key)
        announced = await self.store.occurrence(series.id, key)
        if announced is not None and announced.state == "upcoming":
            await self._call_off(ctx.bot, series, announced, job=ctx.job("off", key))
            nxt = self._next(series, after=target.start.timestamp(), cancelled=cancelled | {key})
            if nxt is not None:
                await ctx.bot.jobs.schedule(
                    ANNOUNCE,
                    _key(series.id, nxt),
                    self.clock.now(),
                    {"series": series.id, "occ": occurrence_key(nxt.local)},
                    grace_s=ANNOUNCE_GRACE_S,
                )
        await ctx.reply(
            "scheduling/cancelled",
            id=series.id,
            title=series.title,
            when=format_local(target.start, series.tz, ctx.lang, place=ctx.room.club_name),
        )

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
            when = _when(series, _start_of(series, occ.occ_key), voice)
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
        number = id.lstrip("#")
        series = await self.store.series(int(number)) if number.isdigit() else None
        if series is not None and ctx.in_dm:
            mine = await _joined(ctx.bot, series.room_id, ctx.sender)
        else:
            mine = series is not None and series.club == ctx.room.club
        if series is None or not mine or series.state != "active":
            await ctx.reply("scheduling/unknown", id=id[:12])
            return
        home = await ctx.bot.rooms.info(series.room_id)
        data = series_ics(
            series,
            await self.store.cancelled(series.id),
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

    async def _own_series(self, ctx: CommandContext, token: str) -> Series | None:
        """The active series numbered `token` of this room's club; in a DM, one whose room the
        sender facilitates (power 50 there)."""
        number = token.lstrip("#")
        series = await self.store.series(int(number)) if number.isdigit() else None
        if series is not None and ctx.in_dm:
            home = await ctx.bot.rooms.info(series.room_id)
            mine = home.power(ctx.sender) >= FACILITATOR
        else:
            mine = series is not None and series.club == ctx.room.club
        if series is None or not mine or series.state != "active":
            await ctx.reply("scheduling/unknown", id=token[:12])
            return None
        return series

    def _pick(self, series: Series, which: str, cancelled: set[str]) -> Occ | None:
        """`next`, or a date (`2026-12-10`, `10.12`, `10.12.2026`) of an occurrence."""
        upcoming = self._upcoming(series, cancelled, limit=400)
        if which.lower() in ("next", "след", "ближайшую", "ближайшая"):
            return upcoming[0] if upcoming else None
        day = _parse_day(which, self.clock.now(), series.tz)
        return next((o for o in upcoming if o.local.date() == day), None) if day else None

    # --- the chain of jobs -----------------------------------------------------------------------

    @on_job(ANNOUNCE)
    async def announce(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        if series is None or key in await self.store.cancelled(series.id):
            return
        ctx = job.bot
        start = _start_of(series, key)
        announce_room = await _club_room(ctx, series.club, ANNOUNCEMENTS_ROOM) or series.room_id
        poll_room = await _club_room(ctx, series.club, SESSIONS_ROOM) or series.room_id
        text = self._announcement(ctx, series, start, await ctx.rooms.info(announce_room), None)
        announced = await ctx.send(announce_room, "m.room.message", text, job=job.txn("post"))
        if announced is None:
            raise NotSentYet("the announcement waits in the outbox")
        await ctx.pin(announce_room, announced)
        voice = await ctx.rooms.info(poll_room)
        question = ctx.render(
            "scheduling/poll_question",
            voice.language,
            title=series.title,
            when=_when(series, start, voice),
        ).body
        answers = [ctx.render(k, voice.language).body for k in ANSWER_KEYS]
        poll = await ctx.poll(poll_room, question, answers, job=job.txn("poll"), disclosed=True)
        if poll is None:
            raise NotSentYet("the poll waits in the outbox")
        await self.store.record_occurrence(
            Occurrence(
                series.id,
                key,
                start.timestamp(),
                announce_room,
                announced,
                poll_room,
                poll,
                "upcoming",
            )
        )
        now = self.clock.now()
        payload = {"series": series.id, "occ": key}
        for offset in self.reminder_offsets_s:
            due = start.timestamp() - offset
            if due > now:
                job.then(
                    REMIND,
                    f"{series.id}@{key}#{offset}",
                    due,
                    {**payload, "offset": offset},
                    grace_s=reminder_grace_s(offset),
                )
        job.then(START, f"{series.id}@{key}", start.timestamp(), payload, grace_s=series.duration_s)
        job.then(
            FINISH,
            f"{series.id}@{key}",
            start.timestamp() + series.duration_s,
            payload,
            grace_s=FINISH_GRACE_S,
        )

    @on_job(REMIND)
    async def remind(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        occ = await self._live_occurrence(series, key)
        if series is None or occ is None or occ.poll_event is None:
            return
        ctx = job.bot
        start = _start_of(series, key)
        voice = await ctx.rooms.info(occ.poll_room)
        ballots = await ctx.poll_ballots(occ.poll_room, occ.poll_event)
        seats = await self.store.places(series.id, key)
        for b in ballots:
            if b.answers[0] not in (pl.GOING, pl.MAYBE):
                continue
            with_venue = b.answers[0] == pl.GOING and (
                series.capacity is None or seats.get(b.sender, ("",))[0] == pl.CONFIRMED
            )
            await ctx.dm(
                b.sender,
                "scheduling/reminder",
                job=job.txn("dm", b.sender),
                lang=voice.language,
                title=series.title,
                when=_when(series, start, voice),
                late=job.late_s > 60,
                link=series.link,
                venue=series.venue if with_venue and not series.online else None,
                materials=series.materials,
            )

    @on_missed_job(REMIND)
    async def reminder_missed(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        if series is None or await self._live_occurrence(series, key) is None:
            return
        voice = await job.bot.rooms.info(series.room_id)
        await job.bot.dm(
            series.created_by,
            "scheduling/missed",
            job=job.txn("missed"),
            lang=voice.language,
            title=series.title,
            when=_when(series, _start_of(series, key), voice),
            what="reminder",
        )

    @on_job(START)
    async def starting(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        occ = await self._live_occurrence(series, key)
        if series is None or occ is None:
            return
        await job.bot.notice(
            occ.poll_room,
            "scheduling/starting",
            job=job.txn("now"),
            title=series.title,
            link=series.link if series.online else None,
            materials=series.materials,
        )

    @on_missed_job(START)
    async def start_missed(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        if series is None or await self._live_occurrence(series, key) is None:
            return
        voice = await job.bot.rooms.info(series.room_id)
        await job.bot.dm(
            series.created_by,
            "scheduling/missed",
            job=job.txn("missed"),
            lang=voice.language,
            title=series.title,
            when=_when(series, _start_of(series, key), voice),
            what="start",
        )

    @on_missed_job(FINISH)
    async def finish_late(self, job: JobContext) -> None:
        """Long after the end (the bot was down for weeks): the same wrap-up."""
        await self.finish(job)

    @on_job(FINISH)
    async def finish(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        if series is None:
            return
        occ = await self.store.occurrence(series.id, key)
        if occ is not None and occ.state == "upcoming":
            ctx = job.bot
            if occ.announce_event is not None:
                await ctx.unpin(occ.announce_room, occ.announce_event)
            if occ.poll_event is not None:
                await ctx.end_poll(occ.poll_room, occ.poll_event, job=job.txn("end"))
            await self.store.set_occurrence_state(series.id, key, "over")
        if series.state != "active":
            return
        cancelled = await self.store.cancelled(series.id)
        nxt = self._next(series, after=_start_of(series, key).timestamp(), cancelled=cancelled)
        if nxt is not None:
            job.then(
                ANNOUNCE,
                _key(series.id, nxt),
                self.clock.now(),
                {"series": series.id, "occ": occurrence_key(nxt.local)},
                grace_s=ANNOUNCE_GRACE_S,
            )

    async def _job_series(self, job: JobContext) -> tuple[Series | None, str]:
        series = await self.store.series(int(job.payload["series"]))
        return series, str(job.payload["occ"])

    async def _live_occurrence(self, series: Series | None, key: str) -> Occurrence | None:
        """The occurrence if it is announced, not over and not cancelled."""
        if series is None:
            return None
        occ = await self.store.occurrence(series.id, key)
        return occ if occ is not None and occ.state == "upcoming" else None

    async def _call_off(
        self, ctx: BotContext, series: Series, occ: Occurrence, *, job: tuple[str, ...]
    ) -> None:
        """Cancel an announced occurrence: its jobs, the pin, the poll; the announcement says
        so; everyone going or maybe gets a DM."""
        for kind in (START, FINISH):
            await ctx.jobs.cancel(kind, f"{series.id}@{occ.occ_key}")
        for offset in self.reminder_offsets_s:
            await ctx.jobs.cancel(REMIND, f"{series.id}@{occ.occ_key}#{offset}")
        start = _start_of(series, occ.occ_key)
        if occ.announce_event is not None:
            info = await ctx.rooms.info(occ.announce_room)
            text = ctx.render(
                "scheduling/announce_cancelled",
                info.language,
                title=series.title,
                when=_when(series, start, info),
            )
            await ctx.edit(occ.announce_room, occ.announce_event, text, job=(*job, "edit"))
            await ctx.unpin(occ.announce_room, occ.announce_event)
        if occ.poll_event is not None:
            voice = await ctx.rooms.info(occ.poll_room)
            for b in await ctx.poll_ballots(occ.poll_room, occ.poll_event):
                if b.answers[0] in (pl.GOING, pl.MAYBE):
                    await ctx.dm(
                        b.sender,
                        "scheduling/called_off",
                        job=(*job, "dm", b.sender),
                        lang=voice.language,
                        title=series.title,
                        when=_when(series, start, voice),
                    )
            await ctx.end_poll(occ.poll_room, occ.poll_event, job=(*job, "end"))
        await self.store.set_occurrence_state(series.id, occ.occ_key, "cancelled")

    # --- RSVP ------------------------------------------------------------------------------------

    @on_poll
    async def rsvp(self, ctx: BotContext, update: PollUpdate) -> None:
        occ = await self.store.occurrence_by_poll(update.poll_id)
        if occ is None or occ.state != "upcoming":
            return
        series = await self.store.series(occ.series_id)
        if series is None:
            return
        cause = update.cause or "recount"
        start = _start_of(series, occ.occ_key)
        voice = await ctx.rooms.info(occ.poll_room)
        lang = voice.language
        when = _when(series, start, voice)
        waiting = 0
        if not series.online:
            ballots = [
                pl.Ballot(b.sender, b.event_id, b.ts, b.answers[0])
                for b in await ctx.poll_ballots(occ.poll_room, occ.poll_event or update.poll_id)
            ]
            before = await self.store.places(series.id, occ.occ_key)
            after = pl.allocate(ballots, series.capacity, before)
            change = pl.changes(before, after)
            # The DMs first (their txn ids come from the place's rank key), then the record: a
            # crash in between sends the same DMs again, which the homeserver absorbs.
            for user in change.confirmed:
                await ctx.dm(
                    user,
                    "scheduling/promoted" if user in change.promoted else "scheduling/confirmed",
                    job=(ctx.name, "place", str(series.id), occ.occ_key, user, after[user][1]),
                    lang=lang,
                    title=series.title,
                    when=when,
                    venue=series.venue,
                )
            for user in change.waitlisted:
                await ctx.dm(
                    user,
                    "scheduling/waitlisted",
                    job=(ctx.name, "wait", str(series.id), occ.occ_key, user, after[user][1]),
                    lang=lang,
                    title=series.title,
                    when=when,
                    position=pl.waitlist_position(after, user),
                )
            await self.store.set_places(series.id, occ.occ_key, after)
            waiting = sum(1 for status, _ in after.values() if status == pl.WAITLISTED)
        if occ.announce_event is not None:
            counts = {**update.counts, "waiting": waiting}
            info = await ctx.rooms.info(occ.announce_room)
            text = self._announcement(ctx, series, start, info, counts)
            await ctx.send(
                occ.announce_room,
                "m.room.message",
                _edit_content(text, occ.announce_event),
                job=(ctx.name, "rsvp", update.poll_id, cause),
            )

    # --- texts -----------------------------------------------------------------------------------

    def _announcement(
        self,
        ctx: BotContext,
        series: Series,
        start: datetime,
        room: RoomInfo,
        counts: Mapping[str, int] | None,
    ) -> dict[str, Any]:
        lang = room.language
        text = ctx.render(
            "scheduling/announce",
            lang,
            title=series.title,
            kind=series.kind,
            when=_when(series, start, room),
            rule=describe_rule(series.rrule, parse_key(series.start_local), lang),
            online=series.online,
            link=series.link if series.online else None,
            materials=series.materials,
            capacity=series.capacity,
            going=(counts or {}).get(pl.GOING, 0),
            maybe=(counts or {}).get(pl.MAYBE, 0),
            waiting=(counts or {}).get("waiting", 0),
            counted=counts is not None,
        )
        return notice_content(text)

    # --- time ------------------------------------------------------------------------------------

    def _next(self, series: Series, *, after: float, cancelled: set[str]) -> Occ | None:
        found = self._upcoming(series, cancelled, limit=1, after=after)
        return found[0] if found else None

    def _upcoming(
        self, series: Series, cancelled: set[str], *, limit: int, after: float | None = None
    ) -> list[Occ]:
        return occurrences(
            parse_key(series.start_local),
            series.tz,
            series.rrule,
            after=datetime.fromtimestamp(self.clock.now() if after is None else after, UTC),
            limit=limit,
            skip={parse_key(k) for k in cancelled},
        )


async def _joined(ctx: BotContext, room_id: RoomId, user: UserId) -> bool:
    """Whether `user` is joined to the room now (its current state, one request)."""
    for event in await ctx.client.room_state(room_id):
        if event.get("type") == "m.room.member" and event.get("state_key") == user:
            content = event.get("content")
            return isinstance(content, dict) and content.get("membership") == "join"
    return False


async def _keep_private(ctx: CommandContext) -> None:
    """A command that carried a venue address in a club room: the bot has it sealed now, the
    room's members need not read it in the command. Redacted (best effort: without the power
    to redact, the reply says to delete it)."""
    try:
        await ctx.bot.redact(ctx.room_id, ctx.event.event_id, "address kept private")
    except MatrixError as e:
        log.info("%s: could not redact a command with an address (%s)", ctx.bot.name, e.errcode)


def _when(series: Series, start: datetime, room: RoomInfo) -> str:
    """An occurrence's time span as the room's members read it, with their club's name."""
    return format_span(start, series.duration_s, series.tz, room.language, place=room.club_name)


def _key(series_id: int, occ: Occ) -> str:
    return f"{series_id}@{occurrence_key(occ.local)}"


def _start_of(series: Series, key: str) -> datetime:
    """The UTC start of the occurrence keyed by its wall time."""
    (occ,) = occurrences(parse_key(key), series.tz, None, after=datetime.fromtimestamp(0, UTC))
    return occ.start


def _parse_day(text: str, now: float, tz: str) -> Any:
    """`2026-12-10`, `10.12.2026` or `10.12` (the next such date) → a date, else None."""
    today = datetime.fromtimestamp(now, zone(tz)).date()
    for fmt in ("%Y-%m-%d", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    try:
        day = datetime.strptime(f"{text}.{today.year}", "%d.%m.%Y").date()
    except ValueError:
        return None
    return day if day >= today else day.replace(year=today.year + 1)


async def _club_room(ctx: BotContext, club: str, key: str) -> RoomId | None:
    """The club's room with this key among the rooms the bot is in."""
    for room_id in ctx.client.joined_rooms():
        info = await ctx.rooms.info(room_id)
        if (
            info.club == club
            and info.kind == "club_room"
            and (info.locator or {}).get("key") == key
        ):
            return room_id
    return None


def _edit_content(new: Mapping[str, Any], original: EventId) -> dict[str, Any]:
    return {
        **new,
        "body": "* " + str(new["body"]),
        "m.new_content": dict(new),
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    }


__all__ = ["SchedulingBot", "UserId"]
