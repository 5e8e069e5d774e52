"""The chain of durable jobs of each occurrence (announce → remind → start → finish → the next
announce) and the RSVP poll's votes (counts, places, the waitlist)."""

from __future__ import annotations

import logging

from clubs.bots.context import BotContext
from clubs.bots.jobs import JobContext, on_job, on_missed_job
from clubs.bots.polls import PollUpdate, on_poll
from clubs.bots.scheduling import places as pl
from clubs.bots.scheduling.core import (
    ANNOUNCE,
    ANNOUNCE_GRACE_S,
    ANNOUNCEMENTS_ROOM,
    ANSWER_KEYS,
    FINISH,
    FINISH_GRACE_S,
    REMIND,
    SESSIONS_ROOM,
    START,
    WIDGET,
    NotSentYet,
    ScheduleCore,
    club_room,
    edit_content,
    reminder_grace_s,
    series_key,
    start_of,
    when_text,
)
from clubs.bots.scheduling.recurrence import (
    occurrence_key,
)
from clubs.bots.scheduling.store import Occurrence, Series
from clubs.bots.scheduling.widget import (
    LAYOUT,
    LEAD_S,
    WIDGETS,
    accepts_widgets,
    jitsi_widget,
    pinned_layout,
    widget_id,
)
from clubs.core.errors import NotFound
from clubs.core.http import cs
from clubs.core.ids import RoomId

log = logging.getLogger(__name__)


class SessionChain(ScheduleCore):
    """The jobs and the poll handler; every send carries a txn id from its job or vote."""

    @on_job(ANNOUNCE)
    async def announce(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        if series is None or key in await self.store.cancelled(series.id):
            return
        ctx = job.bot
        start = start_of(series, key)
        announce_room = await club_room(ctx, series.club, ANNOUNCEMENTS_ROOM) or series.room_id
        poll_room = await club_room(ctx, series.club, SESSIONS_ROOM) or series.room_id
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
            when=when_text(series, start, voice),
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
        if series.online and series.link and accepts_widgets(voice.settings):
            job.then(
                WIDGET,
                f"{series.id}@{key}",
                start.timestamp() - LEAD_S,
                payload,
                grace_s=series.duration_s + LEAD_S,
            )
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
        start = start_of(series, key)
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
                when=when_text(series, start, voice),
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
        await self._missed(job, series, key, "reminder")

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
        await self._missed(job, series, key, "start")

    async def _missed(self, job: JobContext, series: Series, key: str, what: str) -> None:
        """Tell the facilitator who created the session, by DM; for a session the network
        file declares (nobody created it by hand), the sessions room."""
        voice = await job.bot.rooms.info(series.room_id)
        when = when_text(series, start_of(series, key), voice)
        if series.created_by:
            await job.bot.dm(
                series.created_by,
                "scheduling/missed",
                job=job.txn("missed"),
                lang=voice.language,
                title=series.title,
                when=when,
                what=what,
            )
        else:
            await job.bot.notice(
                series.room_id,
                "scheduling/missed",
                job=job.txn("missed"),
                title=series.title,
                when=when,
                what=what,
            )

    @on_job(WIDGET)
    async def call_opens(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        occ = await self._live_occurrence(series, key)
        if series is None or occ is None:
            return
        await self._widget(job.bot, occ.poll_room, series, key, on=True)

    async def _widget(
        self, ctx: BotContext, room: RoomId, series: Series, key: str, *, on: bool
    ) -> None:
        """Put the call widget into the room (pinned on top) or take it out. State writes are
        idempotent: a job run again writes the same content."""
        info = await ctx.rooms.info(room)
        content = jitsi_widget(series.link or "", series.title) if on else {}
        if content is None or not accepts_widgets(info.settings):
            return
        wid = widget_id(series.id, key)
        await ctx.http.put(cs("rooms", room, "state", WIDGETS, wid), content, label="widget")
        try:
            layout = await ctx.http.get(cs("rooms", room, "state", LAYOUT, ""), label="layout")
        except NotFound:
            layout = {}
        await ctx.http.put(
            cs("rooms", room, "state", LAYOUT, ""),
            pinned_layout(layout, wid, on=on),
            label="widget layout",
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
            if series.online:
                await self._widget(ctx, occ.poll_room, series, key, on=False)
            if occ.announce_event is not None:
                await ctx.unpin(occ.announce_room, occ.announce_event)
            if occ.poll_event is not None:
                await ctx.end_poll(occ.poll_room, occ.poll_event, job=job.txn("end"))
            await self.store.set_occurrence_state(series.id, key, "over")
        if series.state != "active":
            return
        cancelled = await self.store.cancelled(series.id)
        nxt = self._next(series, after=start_of(series, key).timestamp(), cancelled=cancelled)
        if nxt is not None:
            job.then(
                ANNOUNCE,
                series_key(series.id, nxt),
                self.clock.now(),
                {"series": series.id, "occ": occurrence_key(nxt.local)},
                grace_s=ANNOUNCE_GRACE_S,
            )

    @on_poll
    async def rsvp(self, ctx: BotContext, update: PollUpdate) -> None:
        occ = await self.store.occurrence_by_poll(update.poll_id)
        if occ is None or occ.state != "upcoming":
            return
        series = await self.store.series(occ.series_id)
        if series is None:
            return
        cause = update.cause or "recount"
        start = start_of(series, occ.occ_key)
        voice = await ctx.rooms.info(occ.poll_room)
        lang = voice.language
        when = when_text(series, start, voice)
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
                edit_content(text, occ.announce_event),
                job=(ctx.name, "rsvp", update.poll_id, cause),
            )
