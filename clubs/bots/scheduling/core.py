"""What the scheduling bot's parts share: the store and clock, the constants of the chain
of jobs, finding an occurrence's times and rooms, calling an occurrence off, ending a series."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from clubs.bots.base import Bot
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.jobs import JobContext
from clubs.bots.joined import club_room as joined_club_room
from clubs.bots.polls import Vote
from clubs.bots.rooms import RoomInfo
from clubs.bots.scheduling import places as pl
from clubs.bots.scheduling.recurrence import (
    Occurrence as Occ,
)
from clubs.bots.scheduling.recurrence import (
    occurrence_key,
    occurrences,
    parse_key,
    to_utc,
    zone,
)
from clubs.bots.scheduling.reminders import club_reminders
from clubs.bots.scheduling.store import Changes, Occurrence, Post, ScheduleStore, Series
from clubs.bots.scheduling.timefmt import describe_rule, format_local, format_span
from clubs.bots.scheduling.widget import LEAD_S
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.errors import Unreachable
from clubs.core.html import notice_content
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.sealed import Sealer

log = logging.getLogger(__name__)


ANNOUNCE, REMIND, START, FINISH = "announce", "remind", "start", "finish"
WIDGET = "widget"
"""The call widget of an online session appears (clubs that accept widgets only)."""
REMINDER_OFFSETS_S = (24 * 3600, 15 * 60)
"""Default reminder offsets before a session starts (a club's `reminders:` option overrides)."""
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


class ScheduleCore(Bot):
    """The state and helpers the commands, the chain of jobs and the follower of declared
    sessions share (they are mixed into `SchedulingBot`)."""

    name = "scheduling"

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        clock: Clock,
        *,
        call_service: str = DEFAULT_CALL_SERVICE,
        reminder_offsets_s: tuple[int, ...] = REMINDER_OFFSETS_S,
        feed_key: bytes | None = None,
        public_url: str | None = None,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.clock = clock
        self.call_service = call_service.rstrip("/")
        self.reminder_offsets_s = reminder_offsets_s
        self.feed_key = feed_key or secrets.token_bytes(32)
        """Makes members' calendar links (from the vault; a random one lasts one run)."""
        self.public_url = public_url.rstrip("/") if public_url else None
        """The bots' HTTP endpoint as members reach it; None: no calendar links."""
        self.store = ScheduleStore(db, self.name, sealer)
        """Replaced at `start` by the store of the bot's account, migrated."""

    async def _job_series(self, job: JobContext) -> tuple[Series | None, str]:
        series = await self.store.series(int(job.payload["series"]))
        return series, str(job.payload["occ"])

    async def _live_occurrence(self, series: Series | None, key: str) -> Occurrence | None:
        """The occurrence if it is announced, not over and not cancelled."""
        if series is None:
            return None
        occ = await self.store.occurrence(series.id, key)
        return occ if occ is not None and occ.state == "upcoming" else None

    async def _schedule_announce(
        self, ctx: BotContext, series: Series, occ: Occ, *, due: float | None = None
    ) -> None:
        """The `announce` job of an occurrence, due now unless said (idempotent by series and
        occurrence)."""
        await ctx.jobs.schedule(
            ANNOUNCE,
            series_key(series.id, occ),
            self.clock.now() if due is None else due,
            {"series": series.id, "occ": occurrence_key(occ.local)},
            grace_s=ANNOUNCE_GRACE_S,
        )

    async def _ensure_announced(
        self, ctx: BotContext, series: Series, *, due: float | None = None
    ) -> None:
        """After a move or a split: the series' next occurrence is announced unless an
        announced one comes before it (the chain then reaches it when that one finishes)."""
        changes = await self.store.changes(series.id)
        nxt = self._next(series, after=self.clock.now(), changes=changes)
        if nxt is None:
            return
        key = occurrence_key(nxt.local)
        if await self.store.occurrence(series.id, key) is not None:
            return
        if any(o.start_utc <= nxt.start.timestamp() for o in await self.store.upcoming(series.id)):
            return
        await self._schedule_announce(ctx, series, nxt, due=due)

    def _offsets(self, settings: Mapping[str, Any]) -> tuple[int, ...]:
        """The club's reminder lead times, or the bot's."""
        return club_reminders(settings)[0] or self.reminder_offsets_s

    def _occurrence_jobs(
        self, series: Series, key: str, gen: int, offsets: tuple[int, ...]
    ) -> list[tuple[str, str, float, dict[str, Any], float]]:
        """An announced occurrence's jobs still ahead: (kind, key, due, payload, grace)."""
        start = start_of(series, key).timestamp()
        now = self.clock.now()
        base = job_key(series.id, key, gen)
        payload: dict[str, Any] = {"series": series.id, "occ": key}
        jobs = [
            (
                REMIND,
                f"{base}#{offset}",
                start - offset,
                {**payload, "offset": offset},
                reminder_grace_s(offset),
            )
            for offset in offsets
            if start - offset > now
        ]
        jobs.append((START, base, start, payload, float(series.duration_s)))
        if series.online and series.link:
            jobs.append((WIDGET, base, start - LEAD_S, payload, float(series.duration_s + LEAD_S)))
        jobs.append((FINISH, base, start + series.duration_s, payload, float(FINISH_GRACE_S)))
        return jobs

    async def _cancel_jobs(self, ctx: BotContext, occ: Occurrence) -> None:
        base = job_key(occ.series_id, occ.occ_key, occ.gen)
        for kind in (START, FINISH, WIDGET):
            await ctx.jobs.cancel(kind, base)
        for job in await ctx.jobs.pending(REMIND):  # whatever lead times the club had then
            if job.key.startswith(base + "#"):
                await ctx.jobs.cancel(REMIND, job.key)

    async def _end_series(self, ctx: BotContext, series: Series, *, job: tuple[str, ...]) -> None:
        """No further occurrences; the one announced is called off like a cancellation."""
        await self.store.end_series(series.id)
        for nxt in self._upcoming(series, await self.store.changes(series.id), limit=2):
            await ctx.jobs.cancel(ANNOUNCE, series_key(series.id, nxt))
        for occ in await self.store.upcoming(series.id):
            await self._call_off(ctx, series, occ, job=(*job, occ.occ_key))

    async def _call_off(
        self, ctx: BotContext, series: Series, occ: Occurrence, *, job: tuple[str, ...]
    ) -> None:
        """Cancel an announced occurrence: its jobs, the pin, the poll; the announcement says
        so; everyone going or maybe gets a DM."""
        await self._cancel_jobs(ctx, occ)
        start = start_of(series, occ.occ_key)
        for post in await self._posts(occ):
            if post.announce_event is not None:
                info = await ctx.rooms.info(post.announce_room)
                text = ctx.render(
                    "scheduling/announce_cancelled",
                    info.language,
                    title=series.title,
                    when=when_text(series, start, info),
                )
                await ctx.edit(
                    post.announce_room, post.announce_event, text, job=(*job, "edit", post.club)
                )
                await ctx.unpin(post.announce_room, post.announce_event)
            if post.poll_event is not None:
                voice = await ctx.rooms.info(post.poll_room)
                for b in await ctx.poll_ballots(post.poll_room, post.poll_event):
                    if b.answers[0] in (pl.GOING, pl.MAYBE):
                        await ctx.dm(
                            b.sender,
                            "scheduling/called_off",
                            job=(*job, "dm", b.sender),
                            lang=voice.language,
                            title=series.title,
                            when=when_text(series, start, voice),
                        )
                await ctx.end_poll(post.poll_room, post.poll_event, job=(*job, "end", post.club))
        await self.store.set_occurrence_state(series.id, occ.occ_key, "cancelled")

    async def _posts(self, occ: Occurrence) -> list[Post]:
        """The occurrence's announcement and poll in its own club, then in the others."""
        own = await self.store.series(occ.series_id)
        first = Post(
            own.club if own is not None else "",
            occ.announce_room,
            occ.announce_event,
            occ.poll_room,
            occ.poll_event,
        )
        return [first, *await self.store.other_posts(occ.series_id, occ.occ_key)]

    async def _ballots(self, ctx: BotContext, posts: list[Post]) -> list[tuple[Vote, Post]]:
        """Everyone's vote that counts now across the occurrence's polls, with the club's post
        they voted in (a person who voted in two clubs counts once, with their latest vote)."""
        latest: dict[str, tuple[Vote, Post]] = {}
        for post in posts:
            if post.poll_event is None:
                continue
            for b in await ctx.poll_ballots(post.poll_room, post.poll_event):
                held = latest.get(b.sender)
                if held is None or (b.ts, b.event_id) > (held[0].ts, held[0].event_id):
                    latest[b.sender] = (b, post)
        return sorted(latest.values(), key=lambda vp: (vp[0].ts, vp[0].event_id))

    async def _show_counts(
        self,
        ctx: BotContext,
        series: Series,
        start: datetime,
        posts: list[Post],
        ballots: list[tuple[Vote, Post]],
        waiting: int,
        *,
        job: tuple[str, ...],
    ) -> None:
        """Every club's announcement edited in place with the shared counts (and the time)."""
        counts = {pl.GOING: 0, pl.MAYBE: 0, pl.NOT_GOING: 0, "waiting": waiting}
        for b, _ in ballots:
            counts[b.answers[0]] = counts.get(b.answers[0], 0) + 1
        infos = [await ctx.rooms.info(p.announce_room) for p in posts]
        for post, info in zip(posts, infos, strict=True):
            if post.announce_event is None:
                continue
            text = self._announcement(ctx, series, start, info, counts, infos)
            await ctx.send(
                post.announce_room,
                "m.room.message",
                edit_content(text, post.announce_event),
                job=(*job, post.club),
            )

    def _announcement(
        self,
        ctx: BotContext,
        series: Series,
        start: datetime,
        room: RoomInfo,
        counts: Mapping[str, int] | None,
        elsewhere: list[RoomInfo] | None = None,
    ) -> dict[str, Any]:
        """The announcement as one club reads it: its own time first, then the other clubs'
        (a network-wide lecture)."""
        lang = room.language
        text = ctx.render(
            "scheduling/announce",
            lang,
            title=series.title,
            kind=series.kind,
            when=when_text(series, start, room),
            rule=describe_rule(series.rrule, parse_key(series.start_local), lang)
            if series.rrule
            else "",
            online=series.online,
            link=series.link if series.online else None,
            materials=series.materials,
            capacity=series.capacity,
            going=(counts or {}).get(pl.GOING, 0),
            maybe=(counts or {}).get(pl.MAYBE, 0),
            waiting=(counts or {}).get("waiting", 0),
            counted=counts is not None,
            elsewhere=[
                clock_text(start, other, lang)
                for other in elsewhere or ()
                if other.club != room.club
            ],
        )
        return notice_content(text)

    def _next(self, series: Series, *, after: float, changes: Changes) -> Occ | None:
        found = self._upcoming(series, changes, limit=1, after=after)
        return found[0] if found else None

    def _upcoming(
        self, series: Series, changes: Changes, *, limit: int, after: float | None = None
    ) -> list[Occ]:
        """The next `limit` occurrences after `after` (default: now): the rule's, less the
        skipped slots, with the moved ones at their new times."""
        since = datetime.fromtimestamp(self.clock.now() if after is None else after, UTC)
        found = occurrences(
            parse_key(series.start_local),
            series.tz,
            series.rrule,
            after=since,
            limit=limit,
            skip={parse_key(k) for k in changes.skipped},
        )
        tz = zone(series.tz)
        for key in changes.added:
            local = parse_key(key)
            start = to_utc(local, tz)
            if start > since:
                found.append(Occ(local, start))
        found.sort(key=lambda o: o.start)
        return found[:limit]

    async def _own_series(
        self, ctx: CommandContext, token: str, *, members_too: bool = False
    ) -> Series | None:
        """The active series numbered `token` of this room's club; in a DM, one whose room the
        sender facilitates (power 50 there) or, with `members_too`, is joined to."""
        number = token.lstrip("#")
        series = await self.store.series(int(number)) if number.isdigit() else None
        if series is not None and ctx.in_dm:
            home = await ctx.bot.rooms.info(series.room_id)
            mine = home.power(ctx.sender) >= FACILITATOR or (
                members_too and await _joined(ctx.bot, series.room_id, ctx.sender)
            )
        else:
            mine = series is not None and (
                series.club == ctx.room.club or (members_too and ctx.room.club in series.clubs)
            )
        if series is None or not mine or series.state != "active":
            await ctx.reply("scheduling/unknown", id=token[:12])
            return None
        return series

    def _pick(self, series: Series, which: str, changes: Changes) -> Occ | None:
        """`next`, or a date (`2026-12-10`, `10.12`, `10.12.2026`) of an occurrence."""
        upcoming = self._upcoming(series, changes, limit=400)
        if which.lower() in ("next", "след", "ближайшую", "ближайшая"):
            return upcoming[0] if upcoming else None
        day = _parse_day(which, self.clock.now(), series.tz)
        return next((o for o in upcoming if o.local.date() == day), None) if day else None


def when_text(series: Series, start: datetime, room: RoomInfo) -> str:
    """An occurrence's time span as the room's members read it: in their club's zone, with
    their club's name."""
    return format_span(
        start, series.duration_s, room.time_zone, room.language, place=room.club_name
    )


def clock_text(start: datetime, room: RoomInfo, lang: str) -> str:
    """The start as another club reads it («19:00 (Тбилиси)»), for an announcement."""
    return format_local(start, room.time_zone, lang, place=room.club_name or room.club)


def series_key(series_id: int, occ: Occ) -> str:
    return f"{series_id}@{occurrence_key(occ.local)}"


def job_key(series_id: int, key: str, gen: int = 0) -> str:
    """The key of an announced occurrence's jobs (a moved one's carry its generation)."""
    return f"{series_id}@{key}" + (f"~{gen}" if gen else "")


def start_of(series: Series, key: str) -> datetime:
    """The UTC start of the occurrence keyed by its wall time."""
    (occ,) = occurrences(parse_key(key), series.tz, None, after=datetime.fromtimestamp(0, UTC))
    return occ.start


async def club_room(ctx: BotContext, club: str, key: str) -> RoomId | None:
    """The club's room with this key among the rooms the bot is in."""
    return await joined_club_room(ctx.client, ctx.rooms, club, key)


def edit_content(new: Mapping[str, Any], original: EventId) -> dict[str, Any]:
    return {
        **new,
        "body": "* " + str(new["body"]),
        "m.new_content": dict(new),
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    }


async def _joined(ctx: BotContext, room_id: RoomId, user: UserId) -> bool:
    """Whether `user` is joined to the room now (its current state, one request)."""
    for event in await ctx.client.room_state(room_id):
        if event.get("type") == "m.room.member" and event.get("state_key") == user:
            content = event.get("content")
            return isinstance(content, dict) and content.get("membership") == "join"
    return False


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
