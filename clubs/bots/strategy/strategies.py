"""Each cohort member's individual communication strategy, kept with the bot in a DM.

`!strategy` / `!стратегия` (in a DM, for members of a cohort): for each person the member talks
with (a label such as "mother" or "colleague A", never a name) a goal, what works, what to
avoid and the next step, and a log of conversations with their date and the member's own 1–5
sense of how it went. `!strategy chart 1` sends the log as a small PNG chart, end-to-end
encrypted. `!strategy nudge on` asks for a weekly reminder (a durable job chain: exactly once per
week across crashes). `!strategy share 1` lets the cohort's facilitator read that one strategy
for feedback (they read it with `!strategy read <code>`); `!strategy unshare 1` takes it back and
redacts what the bot showed them. Organisers see only how many updates were made per cohort and
month, and nothing where fewer than three members made them (`!strategy stats`).

A handler class registered on the facilitation bot (`Bot.register_handler_class`), and the
`strategies` part of its `!export` / `!forget-me` (`clubs.bots.memberdata.MemberData`). Every
write is once per command event (a replay after a crash changes nothing more).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from clubs.bots.args import FreeText
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.jobs import JobContext, on_job, on_missed_job
from clubs.bots.rooms import RoomInfo
from clubs.bots.strategy.box import StrategyBox
from clubs.bots.strategy.chart import HEIGHT, WIDTH, progress_png
from clubs.bots.strategy.counts import monthly_counts
from clubs.bots.strategy.parse import (
    FIELDS,
    Add,
    Log,
    Nudge,
    Person,
    Read,
    Request,
    SetField,
    Share,
    Simple,
    StrategyUsage,
    parse_strategy,
)
from clubs.bots.strategy.store import (
    MAX_ENTRIES,
    MAX_PEOPLE,
    StrategyStore,
)
from clubs.bots.strategy.store import (
    Person as Strategy,
)
from clubs.bots.strategy.store import Share as Shared
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.errors import ClubsError
from clubs.core.i18n import Catalog
from clubs.core.ids import EventId, RoomId, UserId

log = logging.getLogger(__name__)

PART = "strategies"
NUDGE = "strategy_nudge"
WEEK_S = 7 * 24 * 3600.0
NUDGE_GRACE_S = 24 * 3600.0
FACILITATOR = 50
STATS_MONTHS = 6
SHOWN_ENTRIES = 5
VIEW_ENTRIES = 10


@dataclass(frozen=True)
class CohortRoom:
    club: str
    cohort: str
    room_id: RoomId
    info: RoomInfo


def month_of(at: float) -> str:
    """The UTC month of an instant, as the counts group it (`2026-12`)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m")


def months_back(at: float, months: int) -> str:
    """The month `months - 1` before the month of `at` (the first month a report shows)."""
    day = datetime.fromtimestamp(at, UTC)
    index = day.year * 12 + day.month - 1 - (months - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def nudge_key(token: str, version: int, week: int) -> str:
    """A nudge job's key: the member's random token, the setting's version, the week number
    (the job row says nothing about who it is for)."""
    return f"{token}#v{version}@{week}"


class Strategies:
    """The strategies' commands, nudge jobs and member data (a handler class of a bot)."""

    part = PART

    def __init__(
        self,
        db: Database,
        box: StrategyBox,
        clock: Clock,
        *,
        service_accounts: frozenset[str] = frozenset(),
    ) -> None:
        self.db = db
        self.box = box
        self.clock = clock
        self.service_accounts = service_accounts
        """The network's bots and provisioner: never a cohort's facilitator."""
        self._store: StrategyStore | None = None
        self._opening = asyncio.Lock()
        self._catalog: Catalog | None = None

    async def store(self, bot: BotContext) -> StrategyStore:
        """The store of the bot's account, migrated on first use (handler classes get no
        `start`)."""
        self._catalog = bot.catalog
        if self._store is None or self._store.bot != bot.name:
            async with self._opening:
                if self._store is None or self._store.bot != bot.name:
                    self._store = await StrategyStore.open(self.db, bot.name, self.box)
        return self._store

    # --- where the member belongs ----------------------------------------------------------

    async def cohort_rooms(self, bot: BotContext, user: UserId | None = None) -> list[CohortRoom]:
        """The active cohorts' rooms this bot is in (with `user` among their members), sorted
        by club and cohort. A cohort is the provisioner's: its rooms' locators say so."""
        joined = bot.client.joined_rooms()
        await bot.rooms.prefetch(joined)
        found = []
        for room_id in joined:
            info = await bot.rooms.info(room_id)
            locator = info.locator or {}
            cohort = locator.get("cohort")
            if info.kind != "cohort_room" or info.club is None or not isinstance(cohort, str):
                continue
            if locator.get("state") == "archived":
                continue
            if user is None or user in await bot.client.members(room_id):
                found.append(CohortRoom(info.club, cohort, room_id, info))
        return sorted(found, key=lambda c: (c.club, c.cohort, c.room_id))

    async def facilitators(self, bot: BotContext, member: UserId) -> set[UserId]:
        """Who facilitates a cohort the member is in now: people with a facilitator's power in
        one of its rooms (never a bot, the provisioner or the member)."""
        cohorts = await self.cohort_rooms(bot)
        theirs = {
            (r.club, r.cohort) for r in cohorts if member in await bot.client.members(r.room_id)
        }
        found: set[UserId] = set()
        for room in cohorts:
            if (room.club, room.cohort) not in theirs:
                continue
            for user in await bot.client.members(room.room_id):
                if (
                    room.info.power(user) >= FACILITATOR
                    and user not in self.service_accounts
                    and user != bot.user_id
                    and user != member
                ):
                    found.add(user)
        return found

    # --- !strategy -------------------------------------------------------------------------

    @command(
        "strategy",
        aliases=("стратегия", "strategies", "стратегии"),
        help_key="strategy/strategy.help",
        params=(FreeText("what", default="", max_length=1200),),
        dm=True,
    )
    async def strategy(self, ctx: CommandContext, what: str) -> None:
        lang = ctx.lang
        try:
            request = parse_strategy(what)
        except StrategyUsage as e:
            await ctx.reply("strategy/usage", problem=e.problem, **e.values)
            return
        if isinstance(request, Simple) and request.action == "stats":
            await self._stats(ctx)
            return
        if not ctx.in_dm:
            # Nothing of anyone's strategy is ever said in a room.
            await ctx.reply("strategy/dm_only")
            return
        if isinstance(request, Simple) and request.action == "help":
            await ctx.reply("strategy/help")
            return
        store = await self.store(ctx.bot)
        if isinstance(request, Simple) and request.action == "shared":
            await self._shared(ctx, store)
            return
        if isinstance(request, Read):
            await self._read(ctx, store, request.code)
            return
        cohorts = await self.cohort_rooms(ctx.bot, ctx.sender)
        if not cohorts and (not _reads(request) or await store.member(ctx.sender) is None):
            await ctx.reply("strategy/not_member")
            return
        await store.ensure_member(ctx.sender, lang, self.clock.now())
        await self._handle(ctx, store, request, cohorts)

    async def _handle(
        self,
        ctx: CommandContext,
        store: StrategyStore,
        request: Request,
        cohorts: list[CohortRoom],
    ) -> None:
        if isinstance(request, Simple):  # list
            await self._list(ctx, store)
        elif isinstance(request, Add):
            await self._add(ctx, store, request.label, cohorts[0])
        elif isinstance(request, Nudge):
            await self._nudge(ctx, store, request.on)
        elif not isinstance(request, Read):  # a read is a facilitator's, handled before
            person = await store.person(ctx.sender, request.n) if request.n is not None else None
            if request.n is None:  # a chart of the only person
                people = await store.people(ctx.sender)
                if len(people) != 1:
                    await ctx.reply("strategy/usage", problem="number")
                    return
                person = people[0]
            if person is None:
                await ctx.reply("strategy/no_person", n=request.n)
                return
            await self._on_person(ctx, store, request, person)

    async def _on_person(
        self, ctx: CommandContext, store: StrategyStore, request: Request, person: Strategy
    ) -> None:
        if isinstance(request, SetField):
            await store.set_field(ctx.sender, person, request.field, request.text, self.clock.now())
            await self._updated(ctx, store, person)
            await ctx.reply("strategy/saved", n=person.no, field=request.field)
        elif isinstance(request, Log):
            await self._log(ctx, store, person, request)
        elif isinstance(request, Share):
            await self._share(ctx, store, person, request.to)
        elif isinstance(request, Person) and request.action == "show":
            await self._show(ctx, store, person)
        elif isinstance(request, Person) and request.action == "chart":
            await self._chart(ctx, store, person)
        elif isinstance(request, Person) and request.action == "delete":
            # What the facilitators were shown goes first: a crash in between leaves the
            # share, and the replayed command redacts again (same txn ids) and deletes.
            await self._withdraw(ctx, await store.shares_of(ctx.sender, person.id))
            await store.delete_person(ctx.sender, person)
            await ctx.reply("strategy/deleted", n=person.no, label=person.label)
        elif isinstance(request, Person) and request.action == "unshare":
            shares = await store.shares_of(ctx.sender, person.id)
            await self._withdraw(ctx, shares)
            await store.unshare(ctx.sender, person)
            await ctx.reply("strategy/unshared", n=person.no, count=len(shares))

    async def _updated(self, ctx: CommandContext, store: StrategyStore, person: Strategy) -> None:
        """Count one update for the organisers' figures (once per command event)."""
        await store.record_update(
            ctx.sender,
            person.club,
            person.cohort,
            month_of(self.clock.now()),
            source=ctx.event.event_id,
        )

    async def _list(self, ctx: CommandContext, store: StrategyStore) -> None:
        member = await store.member(ctx.sender)
        people = []
        for p in await store.people(ctx.sender):
            entries = await store.entries(ctx.sender, p)
            people.append(
                {
                    "n": p.no,
                    "label": p.label,
                    "entries": len(entries),
                    "last": _day(entries[-1].at) if entries else None,
                    "shared": bool(await store.shares_of(ctx.sender, p.id)),
                }
            )
        await ctx.reply("strategy/list", people=people, nudge=bool(member and member.nudge))

    async def _add(
        self, ctx: CommandContext, store: StrategyStore, label: str, cohort: CohortRoom
    ) -> None:
        if await store.count_people(ctx.sender) >= MAX_PEOPLE:
            await ctx.reply("strategy/too_many", limit=MAX_PEOPLE)
            return
        person = await store.add_person(
            ctx.sender,
            cohort.club,
            cohort.cohort,
            label,
            self.clock.now(),
            source=ctx.event.event_id,
        )
        await self._updated(ctx, store, person)
        await ctx.reply("strategy/added", n=person.no, label=person.label)

    async def _show(self, ctx: CommandContext, store: StrategyStore, person: Strategy) -> None:
        entries = await store.entries(ctx.sender, person)
        shares = await store.shares_of(ctx.sender, person.id)
        await ctx.reply(
            "strategy/show",
            n=person.no,
            label=person.label,
            fields=person.fields,
            entries=_entries(entries[-SHOWN_ENTRIES:]),
            total=len(entries),
            shared_with=[s.viewer_user for s in shares],
        )

    async def _log(
        self, ctx: CommandContext, store: StrategyStore, person: Strategy, request: Log
    ) -> None:
        now = self.clock.now()
        today = datetime.fromtimestamp(now, UTC).date()
        if request.day is not None and request.day > today + timedelta(days=1):
            await ctx.reply("strategy/usage", problem="future")
            return
        if await store.count_entries(ctx.sender, person) >= MAX_ENTRIES:
            await ctx.reply("strategy/too_many_entries", limit=MAX_ENTRIES)
            return
        at = now if request.day is None else _noon(request.day)
        await store.add_entry(
            ctx.sender, person, at, request.level, request.note, now, source=ctx.event.event_id
        )
        await self._updated(ctx, store, person)
        await ctx.reply(
            "strategy/logged",
            n=person.no,
            label=person.label,
            day=_day(at),
            level=request.level,
            total=await store.count_entries(ctx.sender, person),
        )

    async def _chart(self, ctx: CommandContext, store: StrategyStore, person: Strategy) -> None:
        entries = await store.entries(ctx.sender, person)
        if not entries:
            await ctx.reply("strategy/no_entries", n=person.no)
            return
        png = progress_png([(e.at, e.level) for e in entries])
        await ctx.bot.send_file(
            ctx.room_id,
            "progress.png",
            png,
            "image/png",
            job=ctx.job("chart"),
            image=(WIDTH, HEIGHT),
        )
        # The same in words, for whoever would rather read (or uses a screen reader).
        await ctx.reply(
            "strategy/chart",
            n=person.no,
            label=person.label,
            total=len(entries),
            first=_day(entries[0].at),
            last=_day(entries[-1].at),
            levels=[e.level for e in entries[-10:]],
        )

    async def _nudge(self, ctx: CommandContext, store: StrategyStore, on: bool) -> None:
        member = await store.set_nudge(ctx.sender, on, self.clock.now())
        assert member is not None
        await self._cancel_nudges(ctx.bot, member.token)
        if on:
            week = 1
            await ctx.bot.jobs.schedule(
                NUDGE,
                nudge_key(member.token, member.version, week),
                self.clock.now() + WEEK_S,
                {"token": member.token, "v": member.version, "week": week},
                grace_s=NUDGE_GRACE_S,
            )
        await ctx.reply("strategy/nudge_set", on=on)

    async def _cancel_nudges(self, bot: BotContext, token: str) -> None:
        for job in await bot.jobs.pending(NUDGE):
            if job.key.startswith(token + "#"):
                await bot.jobs.cancel(NUDGE, job.key)

    # --- sharing ---------------------------------------------------------------------------

    async def _share(
        self, ctx: CommandContext, store: StrategyStore, person: Strategy, to: UserId | None
    ) -> None:
        facilitators = await self.facilitators(ctx.bot, ctx.sender)
        if to is not None and to not in facilitators:
            await ctx.reply("strategy/not_facilitator", user=to)
            return
        if to is None and len(facilitators) != 1:
            await ctx.reply("strategy/which_facilitator", facilitators=sorted(facilitators))
            return
        target = to if to is not None else next(iter(facilitators))
        share = await store.share(ctx.sender, person, target, self.clock.now())
        await ctx.reply("strategy/shared_out", n=person.no, label=person.label, user=target)
        await ctx.bot.dm(
            target,
            "strategy/shared_in",
            job=ctx.job("notify", share.code),
            member=ctx.sender,
            label=person.label,
            code=share.code,
        )
        log.info("%s: a strategy was shared with a facilitator", ctx.bot.name)

    async def _readable(
        self, bot: BotContext, store: StrategyStore, share: Shared, viewer: str
    ) -> Strategy | None:
        """The shared strategy, if `viewer` is the one it is shared with and facilitates a
        cohort its owner is in, now; else None (the same answer whether or not the code
        exists)."""
        if share.viewer_user != viewer:
            return None
        if viewer not in await self.facilitators(bot, share.owner_user):
            return None
        return await store.person_by_id(store.owner(share.owner_user), share.person)

    async def _shared(self, ctx: CommandContext, store: StrategyStore) -> None:
        listed = []
        for share in await store.shares_for(ctx.sender):
            person = await self._readable(ctx.bot, store, share, ctx.sender)
            if person is not None:
                listed.append(
                    {"code": share.code, "member": share.owner_user, "label": person.label}
                )
        await ctx.reply("strategy/shared_list", shares=listed)

    async def _read(self, ctx: CommandContext, store: StrategyStore, code: str) -> None:
        if ctx.event.encrypted and not ctx.event.sender_trusted:
            # Someone else's words: only to a session its owner verified (as the runtime does
            # for commands that need power).
            await ctx.reply("bots/untrusted_device", command=ctx.invoked_as)
            return
        share = await store.share_by_code(code)
        person = (
            await self._readable(ctx.bot, store, share, ctx.sender) if share is not None else None
        )
        if share is None or person is None:
            await ctx.reply("strategy/no_share")
            return
        entries = await store.entries(share.owner_user, person)
        sent = await ctx.reply(
            "strategy/view",
            member=share.owner_user,
            label=person.label,
            fields=person.fields,
            entries=_entries(entries[-VIEW_ENTRIES:]),
            total=len(entries),
        )
        if sent is not None:  # redacted when the member takes the share back
            await store.add_view(share, ctx.room_id, sent)

    async def _withdraw(self, ctx: CommandContext, shares: Iterable[Shared]) -> None:
        """Shares that ended: what the bot showed the facilitators is redacted, and they are
        told (without the content)."""
        for share in shares:
            await self._redact_views(ctx.bot, share, ctx.lang)
            await ctx.bot.dm(
                share.viewer_user,
                "strategy/revoked_in",
                job=ctx.job("revoked", share.code),
                member=share.owner_user,
            )

    async def _redact_views(self, bot: BotContext, share: Shared, lang: str | None) -> None:
        """Redact every message that showed the shared strategy (the bot's own, in the
        facilitator's DM; asking twice is one redaction). One that cannot be redacted (the
        facilitator left the DM) is logged, and the rest go on."""
        reason = bot.render("strategy/redact_reason", lang).body
        for room, event in share.views:
            try:
                await bot.redact(RoomId(room), EventId(event), reason)
            except ClubsError as e:
                log.warning(
                    "%s: a shared strategy's view could not be redacted (%s)",
                    bot.name,
                    type(e).__name__,
                )

    # --- figures for organisers ------------------------------------------------------------

    async def _stats(self, ctx: CommandContext) -> None:
        if ctx.room.managed:
            clubs = {ctx.room.club} if ctx.room.club and ctx.power >= FACILITATOR else set()
        else:
            clubs = set()
            joined = ctx.bot.client.joined_rooms()
            await ctx.bot.rooms.prefetch(joined)
            for room_id in joined:
                info = await ctx.bot.rooms.info(room_id)
                if info.club is not None and info.power(ctx.sender) >= FACILITATOR:
                    clubs.add(info.club)
        clubs.discard(None)
        if not clubs:
            await ctx.reply("strategy/stats_refused")
            return
        store = await self.store(ctx.bot)
        now = self.clock.now()
        updates = await store.updates((c for c in clubs if c), months_back(now, STATS_MONTHS))
        figures = [
            {
                "club": f.club,
                "month": f.month,
                "cohorts": [
                    {"cohort": c.cohort, "updates": c.updates, "people": c.people}
                    for c in f.cohorts
                ],
                "total": f.total_updates,
                "people": f.total_people,
            }
            for f in monthly_counts(updates)
        ]
        await ctx.reply("strategy/stats", figures=figures, clubs=sorted(c for c in clubs if c))

    # --- the weekly nudge ------------------------------------------------------------------

    @on_job(NUDGE, grace_s=NUDGE_GRACE_S)
    async def nudge(self, job: JobContext) -> None:
        store = await self.store(job.bot)
        member = await store.member_by_token(str(job.payload.get("token")))
        if member is None or not member.nudge or member.version != job.payload.get("v"):
            return  # turned off, changed or forgotten since
        self._chain(job, member.token, member.version)
        people = [
            {"n": p.no, "label": p.label, "next": p.fields.get("next", "")}
            for p in await store.people(member.user_id)
        ]
        await job.bot.dm(
            member.user_id, "strategy/nudge", job=job.txn("nudge"), lang=member.lang, people=people
        )
        log.info("%s: a strategy nudge was sent", job.bot.name)

    @on_missed_job(NUDGE)
    async def missed_nudge(self, job: JobContext) -> None:
        """Past its window (the bot was away): this week's nudge is skipped, the chain goes on."""
        store = await self.store(job.bot)
        member = await store.member_by_token(str(job.payload.get("token")))
        if member is None or not member.nudge or member.version != job.payload.get("v"):
            return
        self._chain(job, member.token, member.version)
        log.info("%s: a strategy nudge was past its window; not sent", job.bot.name)

    def _chain(self, job: JobContext, token: str, version: int) -> None:
        """The next week's nudge, stored with this one's completion: a week after this one was
        due (or after now, if the bot was away for longer)."""
        week = int(job.payload.get("week", 1)) + 1
        due = job.job.due_at + WEEK_S
        while due <= job.now:
            due += WEEK_S
        job.then(
            NUDGE,
            nudge_key(token, version, week),
            due,
            {"token": token, "v": version, "week": week},
            grace_s=NUDGE_GRACE_S,
        )

    # --- !export and !forget-me (clubs.bots.memberdata.MemberData) -------------------------

    async def export(self, bot: BotContext, user: UserId) -> Mapping[str, Any]:
        store = await self.store(bot)
        member = await store.member(user)
        people = []
        for p in await store.people(user):
            entries = await store.entries(user, p)
            people.append(
                {
                    "n": p.no,
                    "label": p.label,
                    **{f: p.fields.get(f, "") for f in FIELDS},
                    "created": _day(p.created_at),
                    "log": [
                        {"date": _day(e.at), "progress": e.level, "note": e.note} for e in entries
                    ],
                    "shared_with": [s.viewer_user for s in await store.shares_of(user, p.id)],
                }
            )
        return {"nudge": bool(member and member.nudge), "people": people}

    def export_markdown(self, data: Mapping[str, Any], lang: str) -> str:
        catalog = self._catalog or Catalog()
        return catalog.render(
            "strategy/export", lang, people=data.get("people", []), nudge=data.get("nudge")
        ).body

    async def forget(self, bot: BotContext, user: UserId) -> int:
        store = await self.store(bot)
        # Views first (theirs shown to facilitators, and others' shown to them as one):
        # a crash before the rows go leaves them for the member's next `!forget-me`.
        for share in await store.shares_involving(user):
            await self._redact_views(bot, share, None)
        gone = await store.forget(user)
        if gone.token is not None:
            await self._cancel_nudges(bot, gone.token)
        log.info("%s: a member's strategies were forgotten", bot.name)
        return gone.people + gone.entries


def _reads(request: Request) -> bool:
    """Whether a request only reads or removes what the member has (allowed after they left
    their cohort); anything that adds needs a cohort."""
    if isinstance(request, Simple):
        return True
    if isinstance(request, Person):
        return True
    return isinstance(request, Nudge) and not request.on


def _entries(entries: Iterable[Any]) -> list[dict[str, Any]]:
    return [{"date": _day(e.at), "level": e.level, "note": e.note} for e in entries]


def _noon(day: date) -> float:
    """A date the member gave, as an instant (noon UTC: the same date in every zone the clubs
    are in)."""
    return datetime.combine(day, time(12, 0), tzinfo=UTC).timestamp()
