"""The club's case library: conversation cases members tell the bot in a DM, posted without
their name to the club's cases room, found again with `!cases`.

`!case` / `!случай` (in a DM) starts a case: the bot asks the questions one by one (who, as a
relation and never a name; their starting view; the topic; what I tried; what happened; what I
would try next; tags; how it felt), then shows it back; `!case send` posts it (`named` to sign
it, `network` to let every club of the network find it), `!cancel` drops it. `!case edit 42`
asks again (`!case edit 42 tags` one answer) and edits the posted message; `!case withdraw 42`
redacts it and deletes the bot's copy. A club with `cases: {approval: true}` has a facilitator
approve each case first (`!case approve 42` / `!case reject 42`).

`!cases mother TV` (in the cases room or a DM) lists the posted cases having all these words
among their tags and relation, of the clubs the asker is in plus those shared network-wide; never
another club's unshared case. `!case 42` shows one. `!case stats`: per month, how many cases
were posted with each tag, for the club's facilitators, nothing below three.

The bot's copy is sealed with AES-GCM and its rows name the author only by a keyed pseudonym
(`store.py`); the search is an indexed query on keyed hashes of the terms. A handler class
registered on the facilitation bot, and the `cases` part of its `!export` / `!forget-me`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clubs.bots.args import FreeText
from clubs.bots.base import on_event
from clubs.bots.cases.aggregate import Posted, monthly_tags
from clubs.bots.cases.box import CaseBox
from clubs.bots.cases.parse import (
    QUESTIONS,
    CaseUsage,
    Request,
    answer_text,
    check_relation,
    parse_case,
    parse_query,
    parse_tags,
    terms_of,
)
from clubs.bots.cases.store import Case, CaseStore, Draft
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext, EventContext
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.errors import ClubsError, Unreachable
from clubs.core.i18n import Catalog
from clubs.core.ids import EventId, RoomId, UserId

log = logging.getLogger(__name__)

PART = "cases"
CASES_ROOM = "cases"
FACILITATOR = 50
STATS_MONTHS = 6


@dataclass(frozen=True)
class CasesRoom:
    club: str
    room_id: RoomId
    lang: str
    approval: bool


def month_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m")


def months_back(at: float, months: int) -> str:
    day = datetime.fromtimestamp(at, UTC)
    index = day.year * 12 + day.month - 1 - (months - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def approval_of(settings: Mapping[str, Any]) -> bool:
    """The club's `cases: {approval: true}` as the provisioner publishes it; anything else
    (drifted or hand-written state) is no approval."""
    conf = settings.get("cases")
    return isinstance(conf, Mapping) and conf.get("approval") is True


class Cases:
    """The case library's commands, DM conversation and member data (a handler class)."""

    part = PART

    def __init__(
        self,
        db: Database,
        box: CaseBox,
        clock: Clock,
        *,
        service_accounts: frozenset[str] = frozenset(),
    ) -> None:
        self.db = db
        self.box = box
        self.clock = clock
        self.service_accounts = service_accounts
        self._store: CaseStore | None = None
        self._opening = asyncio.Lock()
        self._catalog: Catalog | None = None

    async def store(self, bot: BotContext) -> CaseStore:
        """The store of the bot's account, migrated on first use (handler classes get no
        `start`)."""
        self._catalog = bot.catalog
        if self._store is None or self._store.bot != bot.name:
            async with self._opening:
                if self._store is None or self._store.bot != bot.name:
                    self._store = await CaseStore.open(self.db, bot.name, self.box)
        return self._store

    # --- where people belong ---------------------------------------------------------------

    async def cases_rooms(self, bot: BotContext, user: UserId | None = None) -> list[CasesRoom]:
        """The clubs' cases rooms this bot is in (with `user` among their members)."""
        joined = bot.client.joined_rooms()
        await bot.rooms.prefetch(joined)
        found = []
        for room_id in joined:
            info = await bot.rooms.info(room_id)
            if (
                info.kind != "club_room"
                or info.club is None
                or (info.locator or {}).get("key") != CASES_ROOM
            ):
                continue
            if user is None or user in await bot.client.members(room_id):
                found.append(
                    CasesRoom(info.club, room_id, info.language, approval_of(info.settings))
                )
        return sorted(found, key=lambda r: (r.club, r.room_id))

    async def clubs_of(self, bot: BotContext, user: UserId) -> set[str]:
        """The clubs whose managed rooms the user shares with the bot."""
        joined = bot.client.joined_rooms()
        await bot.rooms.prefetch(joined)
        clubs = set()
        for room_id in joined:
            info = await bot.rooms.info(room_id)
            if info.club is not None and user in await bot.client.members(room_id):
                clubs.add(info.club)
        return clubs

    async def chaired(self, bot: BotContext, user: UserId) -> set[str]:
        """The clubs in whose rooms (shared with the bot) the user has a facilitator's power."""
        joined = bot.client.joined_rooms()
        await bot.rooms.prefetch(joined)
        clubs = set()
        for room_id in joined:
            info = await bot.rooms.info(room_id)
            if (
                info.club is not None
                and user not in self.service_accounts
                and info.power(user) >= FACILITATOR
                and user in await bot.client.members(room_id)
            ):
                clubs.add(info.club)
        return clubs

    async def chairs(self, bot: BotContext, room: CasesRoom) -> list[UserId]:
        info = await bot.rooms.info(room.room_id)
        return sorted(
            u
            for u in await bot.client.members(room.room_id)
            if info.power(u) >= FACILITATOR and u not in self.service_accounts and u != bot.user_id
        )

    # --- a case on a session's agenda (the facilitation bot's `!agenda add 20m case 42`) ---

    async def _discussable(self, bot: BotContext, room_id: RoomId, n: int) -> Case | None:
        """A posted case of the room's club, or one its author shared with the network."""
        case = await (await self.store(bot)).get(n)
        if case is None or case.state != "posted":
            return None
        club = (await bot.rooms.info(room_id)).club
        return case if case.shared or (club is not None and case.club == club) else None

    async def agenda_title(self, bot: BotContext, room_id: RoomId, n: int, lang: str) -> str | None:
        case = await self._discussable(bot, room_id, n)
        if case is None:
            return None
        return bot.render("cases/agenda_title", lang, **_brief(case)).body.strip()

    async def present(self, ctx: CommandContext, n: int, *, part: str) -> None:
        case = await self._discussable(ctx.bot, ctx.room_id, n)
        if case is None:  # withdrawn since it was put on the agenda
            await ctx.reply("cases/no_case", n=n, part=part)
            return
        await ctx.reply("cases/agenda_case", part=part, **_post_values(case))

    # --- !case -----------------------------------------------------------------------------

    @command(
        "case",
        aliases=("случай",),
        help_key="cases/case.help",
        params=(FreeText("what", default="", max_length=200),),
        dm=True,
    )
    async def case(self, ctx: CommandContext, what: str) -> None:
        try:
            request = parse_case(what)
        except CaseUsage as e:
            await ctx.reply("cases/usage", problem=e.problem, word=e.word)
            return
        store = await self.store(ctx.bot)
        if request.action == "help":
            await ctx.reply("cases/help")
        elif request.action == "show" and request.n is not None:
            await self._show(ctx, store, request.n)
        elif request.action == "stats":
            await self._stats(ctx, store)
        elif request.action in ("approve", "reject") and request.n is not None:
            await self._decide(ctx, store, request.n, request.action == "approve")
        elif not ctx.in_dm:
            # A case is told, edited and withdrawn only in a DM: nobody sees who does it.
            await ctx.reply("cases/dm_only")
        elif request.action == "new":
            await self._start(ctx, store)
        elif request.action == "send":
            await self._send(ctx, store, request)
        elif request.action == "mine":
            await ctx.reply("cases/mine", cases=[_brief(c) for c in await store.mine(ctx.sender)])
        elif request.action == "edit" and request.n is not None:
            await self._edit(ctx, store, request)
        elif request.action == "withdraw" and request.n is not None:
            await self._withdraw(ctx, store, request.n)

    @command("cancel", aliases=("отмена", "отменить"), help_key="cases/cancel.help", dm=True)
    async def cancel(self, ctx: CommandContext) -> None:
        if not ctx.in_dm:
            await ctx.reply("cases/dm_only")
            return
        store = await self.store(ctx.bot)
        dropped = await store.drop_draft(ctx.sender)
        await ctx.reply("cases/cancelled", had=bool(dropped))

    async def _start(self, ctx: CommandContext, store: CaseStore) -> None:
        draft = await store.draft(ctx.sender)
        if draft is not None and draft.room == ctx.room_id and draft.step < len(QUESTIONS):
            await ctx.reply("cases/already")
            await self._ask(ctx.bot, draft, ctx.job("ask"))
            return
        rooms = await self.cases_rooms(ctx.bot, ctx.sender)
        if not rooms:
            await ctx.reply("cases/no_club")
            return
        room = rooms[0]
        draft = Draft(
            store.owner(ctx.sender), ctx.room_id, 0, ctx.sender, room.club, lang=room.lang
        )
        await store.save_draft(draft, self.clock.now())
        await self._ask(ctx.bot, draft, ctx.job("ask"), intro=True)

    async def _ask(
        self, bot: BotContext, draft: Draft, job: tuple[str, ...], *, intro: bool = False
    ) -> None:
        question = QUESTIONS[draft.step]
        await bot.notice(
            RoomId(draft.room),
            "cases/ask",
            job=job,
            lang=draft.lang,
            question=question,
            n=draft.step + 1,
            of=len(QUESTIONS),
            intro=intro,
            editing=draft.editing,
            current=draft.answers.get(question) if draft.editing is not None else None,
        )

    @on_event("m.room.message")
    async def answer(self, ctx: EventContext) -> None:
        """A member's words in their DM while they tell a case: the answer to the question
        asked. Chat in club rooms is never read."""
        if ctx.room.managed or not ctx.event.encrypted or ctx.sender == ctx.bot.user_id:
            return
        content = ctx.event.content
        body = content.get("body")
        if content.get("msgtype") != "m.text" or not isinstance(body, str):
            return
        if body.startswith("!") or "m.new_content" in content:
            return
        store = await self.store(ctx.bot)
        draft = await store.draft(ctx.sender)
        if draft is None or draft.room != ctx.room_id or draft.step >= len(QUESTIONS):
            return
        if ctx.event.event_id in draft.events:
            return  # delivered again after a crash: already taken
        question = QUESTIONS[draft.step]
        try:
            if question == "relation":
                text = check_relation(body)
            elif question == "tags":
                text = ", ".join(parse_tags(body))
            else:
                text = answer_text(body)
        except CaseUsage as e:
            await ctx.bot.notice(
                ctx.room_id, "cases/usage", job=ctx.job("bad"), lang=draft.lang, problem=e.problem
            )
            return
        draft.answers[question] = text
        draft.events.append(ctx.event.event_id)
        draft.step = len(QUESTIONS) if draft.only is not None else draft.step + 1
        # Send first, then store: a crash in between asks the same (deduplicated) question
        # again instead of never asking it.
        if draft.step < len(QUESTIONS):
            await self._ask(ctx.bot, draft, ctx.job("next"))
        else:
            await ctx.bot.notice(
                ctx.room_id,
                "cases/review",
                job=ctx.job("review"),
                lang=draft.lang,
                case=_view(draft.answers),
                editing=draft.editing,
            )
        await store.save_draft(draft, self.clock.now())

    async def _send(self, ctx: CommandContext, store: CaseStore, request: Request) -> None:
        draft = await store.draft(ctx.sender)
        if draft is None or draft.step < len(QUESTIONS):
            await ctx.reply("cases/nothing_to_send")
            return
        answers = dict(draft.answers)
        tags = parse_tags(answers.get("tags", ""))
        terms = terms_of(answers.get("relation", ""), tags)
        now = self.clock.now()
        if draft.editing is not None:
            case = await store.get(draft.editing)
            if case is None or case.owner != store.owner(ctx.sender):
                await store.drop_draft(ctx.sender)
                await ctx.reply("cases/no_case", n=draft.editing)
                return
            case = await store.update(case, answers, tags, terms, now)
            if case.state == "posted" and case.room and case.event:
                text = ctx.bot.render(
                    "cases/post", await self._room_lang(ctx.bot, case), **_post_values(case)
                )
                await ctx.bot.edit(
                    RoomId(case.room), EventId(case.event), text, job=ctx.job("edit")
                )
            await store.drop_draft(ctx.sender)
            await ctx.reply("cases/edited", n=case.id)
            return
        rooms = {r.club: r for r in await self.cases_rooms(ctx.bot)}
        room = rooms.get(draft.club)
        if room is None:
            await ctx.reply("cases/no_club")
            return
        case = await store.add(
            user=ctx.sender,
            club=draft.club,
            answers=answers,
            tags=tags,
            terms=terms,
            named=request.named,
            shared=request.network,
            pending=room.approval,
            month=month_of(now),
            source=ctx.event.event_id,
            now=now,
        )
        if case.state == "pending":
            for chair in await self.chairs(ctx.bot, room):
                await ctx.bot.dm(
                    chair,
                    "cases/approve_request",
                    job=ctx.job("chair", chair),
                    lang=room.lang,
                    **_post_values(case),
                )
            await store.drop_draft(ctx.sender)
            await ctx.reply("cases/pending", n=case.id)
            return
        await self._post(ctx.bot, store, case, room, ctx.job("post"))
        await store.drop_draft(ctx.sender)
        await ctx.reply("cases/posted", n=case.id, named=case.named, network=case.shared)

    async def _post(
        self, bot: BotContext, store: CaseStore, case: Case, room: CasesRoom, job: tuple[str, ...]
    ) -> None:
        event = await bot.notice(
            room.room_id, "cases/post", job=job, lang=room.lang, **_post_values(case)
        )
        await store.posted(case.id, room.room_id, event, month_of(self.clock.now()))
        log.info("%s: a case was posted", bot.name)

    async def _room_lang(self, bot: BotContext, case: Case) -> str:
        return (await bot.rooms.info(RoomId(case.room))).language if case.room else "ru"

    async def _visible(self, bot: BotContext, store: CaseStore, case: Case, user: UserId) -> bool:
        if case.owner == store.owner(user):
            return True
        if case.state == "pending":
            return case.club in await self.chaired(bot, user)
        return case.shared or case.club in await self.clubs_of(bot, user)

    async def _show(self, ctx: CommandContext, store: CaseStore, n: int) -> None:
        case = await store.get(n)
        if case is None or not await self._visible(ctx.bot, store, case, ctx.sender):
            await ctx.reply("cases/no_case", n=n)  # the same whether or not it exists
            return
        await ctx.reply("cases/show", **_post_values(case), state=case.state)

    async def _edit(self, ctx: CommandContext, store: CaseStore, request: Request) -> None:
        assert request.n is not None
        case = await store.get(request.n)
        if case is None or case.owner != store.owner(ctx.sender):
            await ctx.reply("cases/no_case", n=request.n)
            return
        step = QUESTIONS.index(request.field) if request.field else 0
        draft = Draft(
            case.owner,
            ctx.room_id,
            step,
            ctx.sender,
            case.club,
            dict(case.answers),
            editing=case.id,
            only=request.field,
            lang=ctx.lang,
        )
        await store.save_draft(draft, self.clock.now())
        await self._ask(ctx.bot, draft, ctx.job("ask"))

    async def _withdraw(self, ctx: CommandContext, store: CaseStore, n: int) -> None:
        case = await store.get(n)
        if case is None or case.owner != store.owner(ctx.sender):
            await ctx.reply("cases/no_case", n=n)
            return
        # Redacted first: a crash in between leaves the copy, and the replayed command redacts
        # again (one redaction: the txn id comes from the event) and deletes.
        await self._redact(ctx.bot, case, ctx.lang)
        await store.delete(case.id)
        await ctx.reply("cases/withdrawn", n=n)

    async def _redact(self, bot: BotContext, case: Case, lang: str | None) -> None:
        if not (case.room and case.event):
            return
        reason = bot.render("cases/redact_reason", lang).body
        try:
            await bot.redact(RoomId(case.room), EventId(case.event), reason)
        except Unreachable:
            raise  # the homeserver is away: the command or forgetting is tried again
        except ClubsError as e:
            # Refused for good (the bot left the room, the event is gone): the copy still goes.
            log.warning("%s: a case could not be redacted (%s)", bot.name, type(e).__name__)

    async def _decide(self, ctx: CommandContext, store: CaseStore, n: int, ok: bool) -> None:
        case = await store.get(n)
        if (
            case is None
            or case.state != "pending"
            or case.club not in await self.chaired(ctx.bot, ctx.sender)
        ):
            await ctx.reply("cases/no_pending", n=n)
            return
        if ok:
            rooms = {r.club: r for r in await self.cases_rooms(ctx.bot)}
            room = rooms.get(case.club)
            if room is None:
                await ctx.reply("cases/no_club")
                return
            await self._post(ctx.bot, store, case, room, ctx.job("post"))
        else:
            await store.delete(case.id)
        await ctx.bot.dm(case.user, "cases/decided", job=ctx.job("author"), n=n, approved=ok)
        await ctx.reply("cases/decision", n=n, approved=ok)

    # --- !cases ----------------------------------------------------------------------------

    @command(
        "cases",
        aliases=("случаи",),
        help_key="cases/cases.help",
        params=(FreeText("words", default="", max_length=200),),
        dm=True,
    )
    async def search(self, ctx: CommandContext, words: str) -> None:
        try:
            query = parse_query(words)
        except CaseUsage as e:
            await ctx.reply("cases/usage", problem=e.problem, word=e.word)
            return
        store = await self.store(ctx.bot)
        if ctx.in_dm or not ctx.room.managed:
            clubs = await self.clubs_of(ctx.bot, ctx.sender)
        else:
            clubs = {ctx.room.club} if ctx.room.club else set()
        found, total = await store.search(clubs, query)
        await ctx.reply(
            "cases/results",
            words=query,
            total=total,
            cases=[{**_brief(c), "other": c.club not in clubs} for c in found],
        )

    # --- figures for organisers ------------------------------------------------------------

    async def _stats(self, ctx: CommandContext, store: CaseStore) -> None:
        if ctx.room.managed and not ctx.in_dm:
            chaired = await self.chaired(ctx.bot, ctx.sender)
            clubs = {ctx.room.club} & chaired if ctx.room.club else set()
        else:
            clubs = await self.chaired(ctx.bot, ctx.sender)
        if not clubs:
            await ctx.reply("cases/stats_refused")
            return
        since = months_back(self.clock.now(), STATS_MONTHS)
        figures = []
        for club in sorted(c for c in clubs if c):
            rows = [Posted(c.month, c.tags) for c in await store.posted_since(club, since)]
            for f in monthly_tags(rows):
                figures.append(
                    {
                        "club": club,
                        "month": f.month,
                        "suppressed": f.suppressed,
                        "cases": f.cases,
                        "tags": [{"tag": t, "n": n} for t, n in f.tags],
                        "rare": f.rare,
                    }
                )
        await ctx.reply("cases/stats", figures=figures, clubs=sorted(clubs))

    # --- !export and !forget-me (clubs.bots.memberdata.MemberData) -------------------------

    async def export(self, bot: BotContext, user: UserId) -> Mapping[str, Any]:
        store = await self.store(bot)
        draft = await store.draft(user)
        return {
            "cases": [
                {
                    "n": c.id,
                    "club": c.club,
                    "state": c.state,
                    "named": c.named,
                    "network": c.shared,
                    "month": c.month,
                    **{q: c.answers.get(q, "") for q in QUESTIONS},
                }
                for c in await store.mine(user)
            ],
            "draft": dict(draft.answers) if draft is not None else None,
        }

    def export_markdown(self, data: Mapping[str, Any], lang: str) -> str:
        catalog = self._catalog or Catalog()
        return catalog.render(
            "cases/export", lang, cases=data.get("cases", []), draft=data.get("draft")
        ).body

    async def forget(self, bot: BotContext, user: UserId) -> int:
        store = await self.store(bot)
        # Redactions first: a crash before the rows go leaves them for the next `!forget-me`.
        for case in await store.mine(user):
            await self._redact(bot, case, None)
        _, gone = await store.forget(user)
        log.info("%s: a member's cases were forgotten", bot.name)
        return gone


def _view(answers: Mapping[str, str]) -> dict[str, str]:
    return {q: answers.get(q, "") for q in QUESTIONS}


def _brief(case: Case) -> dict[str, Any]:
    return {
        "n": case.id,
        "relation": case.answers.get("relation", ""),
        "topic": _short(case.answers.get("topic", "")),
        "tags": list(case.tags),
        "club": case.club,
        "state": case.state,
    }


def _post_values(case: Case) -> dict[str, Any]:
    return {
        "n": case.id,
        "case": _view(case.answers),
        "tags": list(case.tags),
        "author": case.user if case.named else None,
        "network": case.shared,
        "club": case.club,
    }


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
