"""The chain of durable jobs of each occurrence (announce → remind → start → finish → the next
announce) and the RSVP poll's votes (counts, places, the waitlist)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from clubs.bots.context import BotContext
from clubs.bots.jobs import JobContext, on_job, on_missed_job
from clubs.bots.polls import PollUpdate, on_poll
from clubs.bots.rooms import RoomInfo
from clubs.bots.scheduling import places as pl
from clubs.bots.scheduling.core import (
    ANNOUNCE,
    ANNOUNCE_GRACE_S,
    ANNOUNCEMENTS_ROOM,
    ANSWER_KEYS,
    FINISH,
    REMIND,
    SESSIONS_ROOM,
    START,
    WIDGET,
    NotSentYet,
    ScheduleCore,
    club_room,
    series_key,
    start_of,
    when_text,
)
from clubs.bots.scheduling.declared import SOURCE_PREFIX, declared_agenda
from clubs.bots.scheduling.recurrence import (
    occurrence_key,
)
from clubs.bots.scheduling.reminders import club_reminders
from clubs.bots.scheduling.store import Occurrence, Post, Series
from clubs.bots.scheduling.widget import (
    LAYOUT,
    WIDGETS,
    accepts_widgets,
    jitsi_widget,
    pinned_layout,
    widget_id,
)
from clubs.core.errors import NotFound
from clubs.core.html import notice_content
from clubs.core.http import cs
from clubs.core.ids import RoomId
from clubs.core.namespace import CLUB_SESSIONS, OCCURRENCE

log = logging.getLogger(__name__)


class SessionChain(ScheduleCore):
    """The jobs and the poll handler; every send carries a txn id from its job or vote."""

    @on_job(ANNOUNCE)
    async def announce(self, job: JobContext) -> None:
        """The occurrence's announcement and poll in its club (and in every other club of a
        network-wide lecture), then its reminders, start and finish."""
        series, key = await self._job_series(job)
        if series is None or key in (await self.store.changes(series.id)).skipped:
            return
        ctx = job.bot
        announced = await self.store.occurrence(series.id, key)
        if announced is not None:
            # Announced already: a moved occurrence the chain reached again, or this job run
            # again after a crash that came after the record. Its follow-ups again (their keys
            # carry its generation: the ones that exist are kept as they are).
            if announced.state == "upcoming":
                home = await ctx.rooms.info(series.room_id)
                offsets = self._offsets(home.settings)
                for kind, job_key, due, payload, grace in self._occurrence_jobs(
                    series, key, announced.gen, offsets
                ):
                    job.then(kind, job_key, due, payload, grace_s=grace)
            return
        start = start_of(series, key)
        where: dict[str, tuple[RoomId, RoomId]] = {}
        for club in series.clubs:
            announce_room = await club_room(ctx, club, ANNOUNCEMENTS_ROOM)
            poll_room = await club_room(ctx, club, SESSIONS_ROOM)
            if club == series.club:
                where[club] = (announce_room or series.room_id, poll_room or series.room_id)
            elif announce_room is not None and poll_room is not None:
                where[club] = (announce_room, poll_room)
            else:
                log.warning("%s: club %s has no rooms of this bot to announce in", ctx.name, club)
        infos = [await ctx.rooms.info(a) for a, _ in where.values()]
        posts = []
        for club, (announce_room, poll_room) in where.items():
            parts = () if club == series.club else (club,)
            posts.append(
                await self._post(job, series, start, club, announce_room, poll_room, infos, parts)
            )
        own = posts[0]
        await self.store.record_occurrence(
            Occurrence(
                series.id,
                key,
                start.timestamp(),
                own.announce_room,
                own.announce_event,
                own.poll_room,
                own.poll_event,
                "upcoming",
            )
        )
        for post in posts[1:]:
            await self.store.record_post(series.id, key, post)
        home = await ctx.rooms.info(series.room_id)
        jobs = self._occurrence_jobs(series, key, 0, self._offsets(home.settings))
        for kind, job_key, due, payload, grace in jobs:
            job.then(kind, job_key, due, payload, grace_s=grace)

    async def _post(
        self,
        job: JobContext,
        series: Series,
        start: datetime,
        club: str,
        announce_room: RoomId,
        poll_room: RoomId,
        infos: list[RoomInfo],
        parts: tuple[str, ...],
    ) -> Post:
        """One club's pinned announcement and RSVP poll. A send still in the outbox raises
        `NotSentYet`: the job runs again and gets the event ids from the outbox then."""
        ctx = job.bot
        info = await ctx.rooms.info(announce_room)
        text = self._announcement(ctx, series, start, info, None, infos)
        announced = await ctx.send(
            announce_room, "m.room.message", text, job=job.txn("post", *parts)
        )
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
        poll = await ctx.poll(
            poll_room, question, answers, job=job.txn("poll", *parts), disclosed=True
        )
        if poll is None:
            raise NotSentYet("the poll waits in the outbox")
        # The discussion: a thread under the poll (members cannot post in the announcements
        # room; the sessions room is theirs).
        await ctx.notice(
            poll_room,
            "scheduling/thread",
            job=job.txn("thread", *parts),
            relates_to={
                "rel_type": "m.thread",
                "event_id": poll,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": poll},
            },
            title=series.title,
        )
        return Post(club, announce_room, announced, poll_room, poll)

    @on_job(REMIND)
    async def remind(self, job: JobContext) -> None:
        series, key = await self._job_series(job)
        occ = await self._live_occurrence(series, key)
        if series is None or occ is None:
            return
        ctx = job.bot
        start = start_of(series, key)
        seats = await self.store.places(series.id, key)
        posts = await self._posts(occ)
        in_room: set[str] = set()
        for post in posts:
            voice = await ctx.rooms.info(post.poll_room)
            if club_reminders(voice.settings)[1] != "room":
                continue
            in_room.add(post.club)
            # One notice in the sessions room (never the address: it goes by DM only).
            await ctx.notice(
                post.poll_room,
                "scheduling/reminder",
                job=job.txn("room", *(() if post.club == series.club else (post.club,))),
                title=series.title,
                when=when_text(series, start, voice),
                late=job.late_s > 60,
                link=series.link,
                venue=None,
                materials=series.materials,
            )
        for b, post in await self._ballots(ctx, posts):
            if b.answers[0] not in (pl.GOING, pl.MAYBE) or post.club in in_room:
                continue
            voice = await ctx.rooms.info(post.poll_room)
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
        agenda = await self._declared_agenda(job.bot, series)
        for post in await self._posts(occ):
            link = series.link if series.online else None
            lang = (await job.bot.rooms.info(post.poll_room)).language
            text = job.bot.render(
                "scheduling/starting",
                lang,
                title=series.title,
                link=link,
                materials=series.materials,
            )
            content = notice_content(text)
            # For the facilitation bot's `!start` (encrypted with the message, never state).
            ends_at = start_of(series, key).timestamp() + series.duration_s
            content[OCCURRENCE] = {
                "series": str(series.id),
                "title": series.title,
                "link": link,
                "ends_at": ends_at,
                "agenda": agenda,
            }
            await job.bot.send(
                post.poll_room,
                "m.room.message",
                content,
                job=job.txn("now", *(() if post.club == series.club else (post.club,))),
            )

    async def _declared_agenda(self, bot: BotContext, series: Series) -> list[dict[str, Any]]:
        """A series the network file declares may carry an agenda: read from the sessions
        room's state as it is now (a changed entry is another series, so none comes)."""
        if not series.source.startswith(SOURCE_PREFIX):
            return []
        try:
            content = await bot.http.get(
                cs("rooms", series.room_id, "state", CLUB_SESSIONS, ""), label="state sessions"
            )
        except NotFound:
            return []
        return declared_agenda(series.club, content, series.source)

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
        for post in await self._posts(occ):
            await self._widget(job.bot, post.poll_room, series, key, on=True)

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
            for post in await self._posts(occ):
                parts = () if post.club == series.club else (post.club,)
                if series.online:
                    await self._widget(ctx, post.poll_room, series, key, on=False)
                if post.announce_event is not None:
                    await ctx.unpin(post.announce_room, post.announce_event)
                if post.poll_event is not None:
                    await ctx.end_poll(post.poll_room, post.poll_event, job=job.txn("end", *parts))
            await self.store.set_occurrence_state(series.id, key, "over")
        if series.state != "active":
            return
        changes = await self.store.changes(series.id)
        nxt = self._next(series, after=start_of(series, key).timestamp(), changes=changes)
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
        """A vote in any of the occurrence's polls: places (offline), then the shared counts
        edited into every club's announcement."""
        occ = await self.store.occurrence_by_poll(update.poll_id)
        if occ is None or occ.state != "upcoming":
            return
        series = await self.store.series(occ.series_id)
        if series is None:
            return
        cause = update.cause or "recount"
        start = start_of(series, occ.occ_key)
        posts = await self._posts(occ)
        ballots = await self._ballots(ctx, posts)
        waiting = 0
        if not series.online:
            voter_post = {b.sender: post for b, post in ballots}
            before = await self.store.places(series.id, occ.occ_key)
            after = pl.allocate(
                [pl.Ballot(b.sender, b.event_id, b.ts, b.answers[0]) for b, _ in ballots],
                series.capacity,
                before,
            )
            change = pl.changes(before, after)
            # The DMs first (their txn ids come from the place's rank key), then the record: a
            # crash in between sends the same DMs again, which the homeserver absorbs.
            for user in change.confirmed + change.waitlisted:
                voice = await ctx.rooms.info(voter_post[user].poll_room)
                confirmed = user in change.confirmed
                key = (
                    ("scheduling/promoted" if user in change.promoted else "scheduling/confirmed")
                    if confirmed
                    else "scheduling/waitlisted"
                )
                await ctx.dm(
                    user,
                    key,
                    job=(
                        ctx.name,
                        "place" if confirmed else "wait",
                        str(series.id),
                        occ.occ_key,
                        user,
                        after[user][1],
                    ),
                    lang=voice.language,
                    title=series.title,
                    when=when_text(series, start, voice),
                    venue=series.venue,
                    position=pl.waitlist_position(after, user),
                )
            await self.store.set_places(series.id, occ.occ_key, after)
            waiting = sum(1 for status, _ in after.values() if status == pl.WAITLISTED)
        await self._show_counts(
            ctx,
            series,
            start,
            posts,
            ballots,
            waiting,
            job=(ctx.name, "rsvp", update.poll_id, cause),
        )
