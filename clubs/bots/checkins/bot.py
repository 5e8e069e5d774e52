"""The check-ins bot: weekly peer-support check-ins by DM for members who opted in, "I need
support" to the club's peer supporters with the member's consent, and a private journal of
small wins.

- Nothing is ever sent to a member who did not opt in (`!checkin on` / `!чекин вкл`, in a DM
  or the club's support room). Each check-in is a durable job keyed by the member's random
  token and the slot's wall time in the member's zone: exactly once per week at their local
  time, across restarts and daylight-saving changes.
- A check-in is a short DM conversation: a mood poll 1–5 (encrypted, never reactions), then the
  text questions one by one. Answers are sealed with AES-GCM and editable (by editing the
  message) until the next check-in. One gentle reminder a day later, which `!snooze` moves;
  never a second one.
- Nothing is shared unless the member shares one answer (`!share 2`, with or without name).
  Facilitators see only weekly counts and the average mood, suppressed below three members.
- `!help-me` shows professional help resources at once and, only after the member confirms with
  `!send-help`, sends the chosen words to the club's peer supporters. Members who consented at
  opt-in (`!checkin alert on`) are also brought to the supporters' attention after the lowest
  mood twice in a row. The bot is not a counsellor and says so.
- `!forget-me` deletes every row about the member and says what was deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from clubs.bots.args import FreeText, Int
from clubs.bots.base import Bot
from clubs.bots.checkins.aggregate import weekly_figures
from clubs.bots.checkins.answers import MOODS, TEXT_QUESTIONS, Answers
from clubs.bots.checkins.box import Box
from clubs.bots.checkins.buddies import Buddies
from clubs.bots.checkins.clubconf import ClubCheckins, club_checkins
from clubs.bots.checkins.journal import Journal
from clubs.bots.checkins.parse import (
    Alert,
    CheckinUsage,
    Language,
    OptIn,
    Pause,
    Simple,
    parse_checkin,
)
from clubs.bots.checkins.store import CheckinStore, Member
from clubs.bots.checkins.support import FACILITATOR, Support
from clubs.bots.checkins.week import (
    DAY_CODES,
    WeeklyPlan,
    instant,
    iso_week,
    next_slot,
    parse_slot_key,
)
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.jobs import JobContext, on_job, on_missed_job
from clubs.bots.joined import club_room as joined_club_room
from clubs.bots.rooms import RoomInfo
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.errors import Unreachable
from clubs.core.ids import EventId, RoomId, UserId

log = logging.getLogger(__name__)

CHECKIN, REMIND, PRUNE = "checkin", "remind", "prune"
SUPPORT_ROOM = "support"
WEEK_S = 7 * 24 * 3600
DAY_S = 24 * 3600
REMIND_AFTER_S = DAY_S
CHECKIN_GRACE_S = 6 * 3600.0
STATS_WEEKS = 5


class NotSentYet(Unreachable):
    """A send waits in the outbox (the DM room is not synced yet): the job is tried again."""


@dataclass(frozen=True)
class SupportRoom:
    club: str
    room_id: RoomId
    info: RoomInfo

    @property
    def country(self) -> str | None:
        country = (self.info.locator or {}).get("country")
        return country if isinstance(country, str) else None


class CheckinsBot(Bot):
    name = "checkins"

    def __init__(
        self,
        db: Database,
        box: Box,
        clock: Clock,
        *,
        remind_after_s: float = REMIND_AFTER_S,
    ) -> None:
        self.db = db
        self.box = box
        self.clock = clock
        self.remind_after_s = remind_after_s
        self.store = CheckinStore(db, self.name, box)
        """Replaced at `start` by the store of the bot's account, migrated."""
        self.answers = Answers(self)
        self.register_handler_class(self.answers)
        self.support = Support(self)
        self.register_handler_class(self.support)
        self.register_handler_class(Journal(self))
        self.buddies = Buddies(self)
        self.register_handler_class(self.buddies)

    async def start(self, ctx: Any) -> None:
        self.store = await CheckinStore.open(self.db, ctx.name, self.box)
        await self.buddies.start(ctx)
        # Retention runs daily as a job chain; this starts it (or is the day's job already).
        today = datetime.fromtimestamp(self.clock.now(), UTC).date().isoformat()
        await ctx.jobs.schedule(PRUNE, today, self.clock.now(), grace_s=WEEK_S)

    @on_job(PRUNE)
    async def prune(self, job: JobContext) -> None:
        """Retention: each club's check-ins older than its `keep_days` are deleted; the next
        day's run is stored with this one."""
        for club in await self.store.clubs():
            conf = await self.club_conf(job.bot, club)
            await self.store.prune(club, job.now - conf.keep_days * DAY_S)
        tomorrow = datetime.fromtimestamp(job.now + DAY_S, UTC).date().isoformat()
        job.then(PRUNE, tomorrow, job.now + DAY_S, grace_s=WEEK_S)

    async def club_conf(self, bot: BotContext, club: str) -> ClubCheckins:
        room = await self.club_room(bot, club)
        return club_checkins((await bot.rooms.info(room)).settings if room is not None else {})

    # --- where the member belongs ----------------------------------------------------------

    async def support_rooms(self, bot: BotContext, user: UserId) -> list[SupportRoom]:
        """The clubs' support rooms this bot serves and the user is in."""
        found = []
        for room_id in bot.client.joined_rooms():
            info = await bot.rooms.info(room_id)
            if (
                info.kind == "club_room"
                and info.club is not None
                and (info.locator or {}).get("key") == SUPPORT_ROOM
                and user in await bot.client.members(room_id)
            ):
                found.append(SupportRoom(info.club, room_id, info))
        return found

    async def club_room(self, bot: BotContext, club: str) -> RoomId | None:
        """The club's support room, if this bot is in it."""
        return await joined_club_room(bot.client, bot.rooms, club, SUPPORT_ROOM)

    async def lang_of(self, ctx: CommandContext, rooms: list[SupportRoom]) -> str:
        if ctx.room.managed:
            return ctx.lang
        member = await self.store.member(ctx.sender)
        if member is not None:
            return member.lang
        return rooms[0].info.language if rooms else ctx.lang

    async def answer_to(self, ctx: CommandContext, key: str, lang: str, **values: Any) -> None:
        await ctx.bot.notice(
            ctx.room_id,
            key,
            job=ctx.job("reply"),
            lang=lang,
            relates_to={"m.in_reply_to": {"event_id": ctx.event.event_id}},
            **values,
        )

    # --- !checkin --------------------------------------------------------------------------

    @command(
        "checkin",
        aliases=("чекин", "checkins"),
        help_key="checkins/checkin.help",
        params=(FreeText("what", default="", max_length=300),),
        dm=True,
    )
    async def checkin(self, ctx: CommandContext, what: str) -> None:
        rooms = await self.support_rooms(ctx.bot, ctx.sender)
        lang = await self.lang_of(ctx, rooms)
        try:
            request = parse_checkin(what, [r.club for r in rooms])
        except CheckinUsage as e:
            await self.answer_to(ctx, "checkins/usage", lang, problem=e.problem)
            return
        if isinstance(request, Simple) and request.action == "stats":
            await self._stats(ctx, rooms, lang)
            return
        if isinstance(request, Simple) and request.action == "status":
            await self._status(ctx, lang)
            return
        if isinstance(request, OptIn):
            await self._opt_in(ctx, rooms, lang, request)
            return
        member = await self.store.member(ctx.sender)
        if member is None or (not member.on and not isinstance(request, Simple)):
            await self.answer_to(ctx, "checkins/not_on", lang)
            return
        now = self.clock.now()
        if isinstance(request, Alert):
            await self.store.set_alert(ctx.sender, request.consent, now)
            await self.answer_to(ctx, "checkins/alert", lang, consent=request.consent)
        elif isinstance(request, Language):
            await self.store.set_lang(ctx.sender, request.lang, now)
            await self.answer_to(ctx, "checkins/lang", request.lang)
        elif isinstance(request, Pause):
            until = now + request.weeks * WEEK_S
            member = await self.store.set_state(ctx.sender, on=True, paused_until=until, now=now)
            assert member is not None
            slot = await self._schedule(ctx.bot, member, after=until)
            await self.answer_to(
                ctx,
                "checkins/paused",
                lang,
                weeks=request.weeks,
                next_at=_utc(slot),
                tz=member.plan.tz,
            )
        elif request.action == "back":
            if not member.on:
                await self.answer_to(ctx, "checkins/not_on", lang)
                return
            member = await self.store.set_state(ctx.sender, on=True, paused_until=0, now=now)
            assert member is not None
            slot = await self._schedule(ctx.bot, member, after=now)
            await self.answer_to(ctx, "checkins/back", lang, next_at=_utc(slot), tz=member.plan.tz)
        elif request.action == "off":
            await self.store.set_state(ctx.sender, on=False, paused_until=0, now=now)
            await self._cancel_jobs(ctx.bot, member.token)
            await self.answer_to(ctx, "checkins/off", lang)

    async def _opt_in(
        self, ctx: CommandContext, rooms: list[SupportRoom], lang: str, request: OptIn
    ) -> None:
        if not rooms:
            await self.answer_to(ctx, "checkins/no_club", lang)
            return
        chosen = [r for r in rooms if r.club == request.club] if request.club else rooms
        if ctx.room.managed and request.club is None:
            chosen = [r for r in rooms if r.club == ctx.room.club] or rooms
        if len(chosen) != 1:
            await self.answer_to(ctx, "checkins/which_club", lang, clubs=[r.club for r in rooms])
            return
        (room,) = chosen
        plan = WeeklyPlan(
            request.days, request.hour, request.minute, request.tz or room.info.time_zone
        )
        member = await self.store.opt_in(
            ctx.sender, room.club, room.info.language, plan, self.clock.now()
        )
        slot = await self._schedule(ctx.bot, member, after=self.clock.now())
        await self.answer_to(
            ctx,
            "checkins/on",
            member.lang,
            days=[DAY_CODES[d] for d in sorted(plan.days)],
            clock=plan.clock,
            tz=plan.tz,
            next_at=_utc(slot),
            alert=member.alert,
            keep_days=club_checkins(room.info.settings).keep_days,
        )

    async def _status(self, ctx: CommandContext, lang: str) -> None:
        member = await self.store.member(ctx.sender)
        if member is None or not member.on:
            await self.answer_to(ctx, "checkins/status", lang, on=False)
            return
        now = self.clock.now()
        after = max(now, member.paused_until)
        slot = next_slot(member.plan, after)
        await self.answer_to(
            ctx,
            "checkins/status",
            lang,
            on=True,
            days=[DAY_CODES[d] for d in sorted(member.plan.days)],
            clock=member.plan.clock,
            tz=member.plan.tz,
            next_at=datetime.fromtimestamp(slot.at, UTC),
            paused=member.paused_until > now,
            alert=member.alert,
        )

    async def _stats(self, ctx: CommandContext, rooms: list[SupportRoom], lang: str) -> None:
        """Facilitators: the club's weekly aggregates, never one member's answer."""
        if ctx.room.managed:
            clubs = [ctx.room.club] if ctx.room.club and ctx.power >= FACILITATOR else []
        else:
            clubs = [r.club for r in rooms if r.info.power(ctx.sender) >= FACILITATOR]
        if not clubs:
            await self.answer_to(ctx, "checkins/stats_refused", lang)
            return
        since = self.clock.now() - STATS_WEEKS * WEEK_S
        report = []
        for club in clubs:
            figures = weekly_figures(await self.store.answered_in(club, since))
            report.append({"club": club, "weeks": figures})
        await self.answer_to(ctx, "checkins/stats", lang, clubs=report)

    async def _schedule(self, bot: BotContext, member: Member, *, after: float) -> float:
        """The member's next check-in job (jobs of an older plan version are cancelled and,
        should one run anyway, find their version stale)."""
        slot = next_slot(member.plan, after)
        await self._cancel_jobs(bot, member.token)
        await bot.jobs.schedule(
            CHECKIN,
            job_key(member, slot.key),
            slot.at,
            {"token": member.token, "slot": slot.key, "v": member.version},
            grace_s=CHECKIN_GRACE_S,
        )
        return slot.at

    async def _cancel_jobs(self, bot: BotContext, token: str) -> None:
        for job in await bot.jobs.pending(CHECKIN):
            if job.key.startswith(token + "@"):
                await bot.jobs.cancel(CHECKIN, job.key)

    # --- the check-in ----------------------------------------------------------------------

    async def _current(self, job: JobContext) -> Member | None:
        """The member of a check-in job, if the job is of their current plan."""
        member = await self.store.member_by_token(str(job.payload.get("token")))
        if member is None or not member.on or member.version != job.payload.get("v"):
            return None
        return member

    def _chain(self, job: JobContext, member: Member) -> None:
        """The next check-in, stored with this one's completion."""
        slot = str(job.payload["slot"])
        last = instant(parse_slot_key(slot), member.plan.tz)
        nxt = next_slot(member.plan, max(last, job.now, member.paused_until))
        job.then(
            CHECKIN,
            job_key(member, nxt.key),
            nxt.at,
            {"token": member.token, "slot": nxt.key, "v": member.version},
            grace_s=CHECKIN_GRACE_S,
        )

    @on_job(CHECKIN, grace_s=CHECKIN_GRACE_S)
    async def send_checkin(self, job: JobContext) -> None:
        member = await self._current(job)
        if member is None:
            return  # opted out, forgotten, or the plan changed since
        self._chain(job, member)
        if member.paused_until > job.now:
            return
        bot = job.bot
        conf = await self.club_conf(bot, member.club)
        await self.store.prune(member.club, job.now - conf.keep_days * DAY_S)
        slot = str(job.payload["slot"])
        room = await bot.dm_room(member.user_id)
        checkin = await self.store.add_checkin(
            member.token,
            member.club,
            slot,
            iso_week(parse_slot_key(slot)),
            room,
            job.now,
            questions=await self._questions(bot, member, conf),
        )
        remind_key = f"{member.token}@{slot}"
        # Sends are named by the member's token and the slot, not by the job: whichever job
        # reaches this slot, the homeserver sees the same transaction ids.
        txn = (bot.name, "checkin", member.token, slot)
        lang = member.lang
        if checkin.poll_id is not None:
            # This slot's check-in went out already (this job re-run after a crash, or a plan
            # changed to the same slot): never a second one. Question 1 is asked again with its
            # transaction id, which is a no-op unless a crash came between the poll and it.
            await self.answers.ask(bot, room, checkin, 1, job=(*txn, "q", "1"), lang=lang)
            job.then(REMIND, remind_key, job.now + self.remind_after_s, {"id": checkin.id})
            return
        previous = await self.store.before(member.token, checkin.id)
        if previous is not None and previous.poll_id:
            # Last week's mood is final now (and the runtime's vote rows expire after the end).
            await bot.end_poll(previous.room_id, _event(previous.poll_id), job=(*txn, "end"))
        await bot.notice(room, "checkins/intro", job=(*txn, "intro"), lang=lang)
        question = bot.render("checkins/q_mood", lang).body
        answers = [bot.render("checkins/mood", lang, n=n).body for n in range(1, MOODS + 1)]
        poll_id = await bot.poll(room, question, answers, job=(*txn, "mood"))
        if poll_id is None:
            raise NotSentYet("the check-in's poll waits in the outbox")
        # Recorded before question 1 goes out: a vote is read only for a known poll.
        await self.store.set_sent(checkin.id, poll_id)
        checkin = replace(checkin, poll_id=poll_id, step=1)
        await self.answers.ask(bot, room, checkin, 1, job=(*txn, "q", "1"), lang=lang)
        job.then(REMIND, remind_key, job.now + self.remind_after_s, {"id": checkin.id})
        log.info("%s: check-in sent (%s)", bot.name, slot)

    @on_missed_job(CHECKIN)
    async def missed_checkin(self, job: JobContext) -> None:
        """The bot was away past the grace window: the member is told (not sent a late
        check-in), and the next one is scheduled."""
        member = await self._current(job)
        if member is None:
            return
        self._chain(job, member)
        if member.paused_until > job.now:
            return
        await job.bot.dm(member.user_id, "checkins/missed", job=job.txn("missed"), lang=member.lang)

    @on_job(REMIND, grace_s=6 * 3600.0)
    async def remind(self, job: JobContext) -> None:
        checkin = await self.store.checkin(int(job.payload.get("id", 0)))
        if checkin is None or checkin.answered or checkin.reminded:
            return
        latest = await self.store.latest(checkin.token)
        member = await self.store.member_by_token(checkin.token)
        if latest is None or latest.id != checkin.id or member is None or not member.on:
            return
        await job.bot.notice(
            checkin.room_id, "checkins/reminder", job=job.txn("remind"), lang=member.lang
        )
        await self.store.mark_reminded(checkin.id)

    @on_missed_job(REMIND)
    async def missed_reminder(self, job: JobContext) -> None:
        """A reminder long overdue is not sent: a late nag is worse than none."""
        log.info("%s: a check-in reminder was past its window; not sent", job.bot.name)

    @command(
        "snooze",
        aliases=("позже", "отложить"),
        help_key="checkins/snooze.help",
        params=(Int("hours", default=3, minimum=1, maximum=48),),
        dm=True,
    )
    async def snooze(self, ctx: CommandContext, hours: int) -> None:
        member = await self.store.member(ctx.sender)
        checkin = await self.store.latest(member.token) if member is not None else None
        lang = member.lang if member is not None else ctx.lang
        if member is None or checkin is None or checkin.answered:
            await self.answer_to(ctx, "checkins/snooze_nothing", lang)
            return
        moved = not checkin.reminded and await ctx.bot.jobs.schedule(
            REMIND,
            f"{member.token}@{checkin.slot}",
            self.clock.now() + hours * 3600,
            {"id": checkin.id},
            replace=True,
        )
        await self.answer_to(ctx, "checkins/snoozed", lang, hours=hours, moved=moved)

    async def _questions(
        self, bot: BotContext, member: Member, conf: ClubCheckins
    ) -> tuple[str, ...] | None:
        """The club's questions (None: the defaults); a peer supporter of the club is also
        asked about their own load (supporters burn out too), as the last question."""
        if member.user_id not in await self.store.supporters([member.club]):
            return conf.questions
        asked = conf.questions or tuple(bot.render(k, member.lang).body for k in TEXT_QUESTIONS)
        return (*asked, bot.render("checkins/q_load", member.lang).body)

    # --- forgetting ------------------------------------------------------------------------

    @command(
        "forget-me",
        aliases=("забудь", "forgetme"),
        help_key="checkins/forget.help",
        params=(FreeText("me", default="", max_length=20),),
        dm=True,
    )
    async def forget_me(self, ctx: CommandContext, me: str) -> None:
        rooms = await self.support_rooms(ctx.bot, ctx.sender)
        lang = await self.lang_of(ctx, rooms)
        member = await self.store.member(ctx.sender)
        if member is not None:
            latest = await self.store.latest(member.token)
            if latest is not None and latest.poll_id:
                # Ended, the poll's vote rows are pruned by the runtime a week later.
                await ctx.bot.end_poll(latest.room_id, _event(latest.poll_id), job=ctx.job("end"))
        gone = await self.store.forget(ctx.sender)
        await ctx.bot.forget_person(ctx.sender)  # votes, and the runtime's rows about them
        buddy = await self.buddies.store.state(ctx.sender) is not None
        partner = await self.buddies.store.leave(ctx.sender)
        if partner is not None:
            await ctx.bot.dm(UserId(partner), "checkins/buddy_left", job=ctx.job("left"), lang=lang)
        for token in gone.tokens:
            await self._cancel_jobs(ctx.bot, token)
            for job in await ctx.bot.jobs.pending(REMIND):
                if job.key.startswith(token + "@"):
                    await ctx.bot.jobs.cancel(REMIND, job.key)
        log.info("%s: a member asked to be forgotten", ctx.bot.name)
        await self.answer_to(
            ctx,
            "checkins/forgotten",
            lang,
            schedule=gone.schedule,
            checkins=gone.checkins,
            wins=gone.wins,
            supporter=gone.supporter,
            help=gone.help,
            buddy=buddy,
        )


def job_key(member: Member, slot: str) -> str:
    """A check-in job's key: the member's token, the slot, the plan's version (a plan changed
    back to an earlier slot is a new job, not the cancelled one)."""
    return f"{member.token}@{slot}#v{member.version}"


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _event(event_id: str) -> EventId:
    return EventId(event_id)
