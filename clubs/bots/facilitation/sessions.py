"""Opening and closing a session: `!start`, `!end`, `!cochair`, and the minutes at the end.

`!start [title]` / `!старт` (power 50 in the room) opens a session, posts and pins the status
message and shows the parking lot; `!end` / `!конец` (chairs) posts the minutes (an HTML notice
and an encrypted `.md` file), edits the status to "ended", unpins it and deletes the session.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clubs.bots.args import FreeText, User
from clubs.bots.base import on_event
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext, EventContext
from clubs.bots.facilitation.agenda import case_of
from clubs.bots.facilitation.parse import who
from clubs.bots.facilitation.session import (
    MAX_ITEM_S,
    MAX_ITEMS,
    MAX_TITLE_CHARS,
    Refused,
    Session,
    minutes_sections,
)
from clubs.bots.facilitation.status import status_text
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.namespace import OCCURRENCE

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot

CHAIR = 50
TICK = "tick"
TICK_S = 30.0


def scheduled_agenda(raw: Any) -> list[tuple[str, int]]:
    """The agenda items an occurrence carries, checked: (title, minutes)."""
    if not isinstance(raw, list):
        return []
    items = []
    for item in raw[:MAX_ITEMS]:
        if not isinstance(item, dict):
            continue
        title, minutes = item.get("title"), item.get("minutes")
        if isinstance(title, str) and isinstance(minutes, int) and not isinstance(minutes, bool):
            title = " ".join(title.split())
            if 0 < len(title) <= MAX_TITLE_CHARS and 1 <= minutes <= MAX_ITEM_S // 60:
                items.append((title, minutes))
    return items


def parking_key(room_id: str, session: Session) -> str:
    """Where a session's `#later` notes wait: its series' (scheduled), else its room's."""
    return f"{room_id}#series:{session.series}" if session.series else room_id


class Sessions:
    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot

    @command(
        "start",
        aliases=("старт",),
        help_key="facilitation/start.help",
        params=(FreeText("title", default="", max_length=MAX_TITLE_CHARS),),
        min_power=CHAIR,
    )
    async def start_session(self, ctx: CommandContext, title: str) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            existing = await fb.store.session(ctx.room_id)
            if existing is not None:
                if existing.sid != ctx.event.event_id:
                    await ctx.reply("facilitation/already")
                return
            now = fb.clock.now()
            scheduled = await fb.store.scheduled(ctx.room_id)
            if scheduled is not None and not now < float(scheduled.get("ends_at", 0)):
                scheduled = None  # that occurrence is over
            title = " ".join(title.split())
            if not title and scheduled is not None:
                title = str(scheduled.get("title", ""))[:MAX_TITLE_CHARS]
            title = title or ctx.bot.render("facilitation/untitled", ctx.lang).body
            session = Session(ctx.event.event_id, title, now, ctx.sender)
            if scheduled is not None:
                series, link = scheduled.get("series"), scheduled.get("link")
                session.series = series if isinstance(series, str) else None
                session.call = link if isinstance(link, str) else None
            if scheduled is not None:
                await self._scheduled_agenda(ctx, session, scheduled.get("agenda"), now)
            session.status_job = list(ctx.job("status"))
            parked = await fb.store.parking(parking_key(ctx.room_id, session))
            await fb.store.save(ctx.room_id, session, now)
            await ctx.bot.jobs.schedule(
                TICK, f"{session.sid}:1", now + TICK_S, {"room": ctx.room_id}, grace_s=86400
            )
            text = status_text(ctx.bot, session, ctx.lang, now)
            event_id = await ctx.bot.notice(
                ctx.room_id,
                "facilitation/status_wrap",
                job=ctx.job("status"),
                lang=ctx.lang,
                body=text.body,
            )
            if event_id is not None:
                session.status_event = event_id
                session.status_text = text.body
                await ctx.bot.pin(ctx.room_id, event_id)
            await fb.store.save(ctx.room_id, session, now)
            if parked:
                await ctx.reply("facilitation/parked", notes=parked, part="parked")
            await fb.show_item(ctx, session, -1)

    async def _scheduled_agenda(
        self, ctx: CommandContext, session: Session, agenda: Any, now: float
    ) -> None:
        """The scheduled session's agenda items, as `!agenda add` would take them (an exercise
        or a case is recognised; one that cannot be taken is skipped)."""
        fb = self.bot
        for title, minutes in scheduled_agenda(agenda):
            method = await fb.methods.method_of(ctx.bot, ctx.room_id, title)
            case = case_of(title)
            if method is not None:
                title = await fb.methods.title(ctx.bot, ctx.room_id, method, ctx.lang)
            elif case is not None:
                found = await fb.case_title(ctx, case)
                if found is None:
                    continue
                title = found
            try:
                session.add_item(title, minutes * 60, now, method=method, case=case)
            except Refused:
                continue

    @on_event("m.room.message")
    async def occurrence(self, ctx: EventContext) -> None:
        """The scheduling bot's "starting now" notice carries the occurrence (encrypted): kept
        for a `!start` without a title. Only from the network's bots."""
        msg = ctx.message
        if msg is None or not ctx.room.managed or ctx.sender not in self.bot.service_accounts:
            return
        raw = ctx.event.content.get(OCCURRENCE)
        if not isinstance(raw, dict) or not ctx.event.encrypted:
            return
        title, series, link, ends = (raw.get(k) for k in ("title", "series", "link", "ends_at"))
        if not (isinstance(title, str) and isinstance(series, str) and len(series) <= 64):
            return
        if not isinstance(ends, int | float) or isinstance(ends, bool):
            return
        occurrence = {
            "title": " ".join(title.split())[:MAX_TITLE_CHARS],
            "series": series,
            "link": link if isinstance(link, str) and len(link) <= 500 else None,
            "ends_at": float(ends),
            "agenda": [{"title": t, "minutes": m} for t, m in scheduled_agenda(raw.get("agenda"))],
        }
        await self.bot.store.set_scheduled(ctx.room_id, occurrence, self.bot.clock.now())

    @command("end", aliases=("конец",), help_key="facilitation/end.help")
    async def end_session(self, ctx: CommandContext) -> None:
        async with self.bot.lock(ctx.room_id):
            session = await self.bot.running(ctx, chair=True)
            if session is None:
                return
            await self.finish(ctx.bot, ctx.room_id, session, ctx.lang, ctx.job())

    async def finish(
        self,
        bot: BotContext,
        room_id: RoomId,
        session: Session,
        lang: str,
        job: tuple[str, ...],
    ) -> None:
        """Post what still waits, the minutes, the ended status; then delete the session.
        `job` names this end (the `!end` event, or the job that ended it): every send's txn id
        derives from it, so a replay posts nothing twice."""
        fb = self.bot
        await fb.breakouts.close(bot, room_id, session, lang, job)
        for i, question in enumerate(session.outgoing):  # asked since the last tick
            await fb.questions.post_question(
                bot, room_id, session, question, lang, f"{':'.join(job[1:])}:{i}"
            )
        sections = minutes_sections(session.notes)
        date = datetime.fromtimestamp(session.started_at, UTC).date().isoformat()
        values: dict[str, Any] = {"title": session.title, "date": date, "sections": sections}
        await bot.notice(
            room_id, "facilitation/minutes", job=(*job, "minutes"), lang=lang, **values
        )
        markdown = bot.render("facilitation/minutes_md", lang, **values).body
        await bot.send_file(
            room_id,
            f"minutes-{date}.md",
            markdown.encode(),
            "text/markdown",
            job=(*job, "minutes_file"),
        )
        if session.status_event is not None:
            ended = bot.render("facilitation/status_ended", lang, title=session.title)
            await bot.edit(room_id, EventId(session.status_event), ended, job=(*job, "status_end"))
            await bot.unpin(room_id, EventId(session.status_event))
        await fb.reflection.send(bot, room_id, session.title, job)
        await fb.store.end(
            room_id, sections["later"], fb.clock.now(), parked_as=parking_key(room_id, session)
        )

    @command(
        "cochair",
        aliases=("соведущий",),
        help_key="facilitation/cochair.help",
        params=(User("user"),),
    )
    async def cochair(self, ctx: CommandContext, user: UserId) -> None:
        async with self.bot.lock(ctx.room_id):
            session = await self.bot.running(ctx, chair=True)
            if session is None:
                return
            try:
                session.add_cochair(user)
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await self.bot.commit(ctx, session)
            await ctx.reply("facilitation/cochair_added", who=who(user))
