"""The agenda with timeboxes: `!agenda` (list, `add 10m Title`, `move 3 2`, `remove 3`),
`!next` (a round's next turn, else the queue's next speaker, else the next item), `!next
item`, `!extend 5m`. An item may be an exercise of the methods library (`add 15m method
listening`) or a case of the club's case library (`add 20m case 42`): titled by it, its text
posted when the item starts."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from clubs.bots.args import Choice, Duration, FreeText
from clubs.bots.commands import command
from clubs.bots.context import CommandContext
from clubs.bots.facilitation.parse import duration
from clubs.bots.facilitation.session import MAX_TITLE_CHARS, Refused

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot


def case_of(text: str) -> int | None:
    """`case 42` / `случай 42` as an agenda title: the case's number."""
    words = text.lower().split()
    if len(words) == 2 and words[0] in ("case", "случай") and words[1].lstrip("#").isdigit():
        return int(words[1].lstrip("#")[:9])
    return None


class Agenda:
    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot

    @command(
        "agenda",
        aliases=("повестка",),
        help_key="facilitation/agenda.help",
        params=(FreeText("change", default="", max_length=MAX_TITLE_CHARS + 40),),
    )
    async def agenda(self, ctx: CommandContext, change: str) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=bool(change))
            if session is None:
                return
            if not change:
                items = [{"title": i.title, "minutes": i.duration_s // 60} for i in session.agenda]
                await ctx.reply("facilitation/agenda", items=items, current=session.current + 1)
                return
            if ctx.event.event_id in session.applied:
                return
            words = change.split(None, 2)
            verb = words[0].lower()
            before = session.current
            try:
                if verb in ("add", "добавить") and len(words) == 3:
                    seconds = duration(words[1])
                    if seconds is None:
                        raise Refused("facilitation/agenda_usage")
                    title, method = (
                        words[2],
                        await fb.methods.method_of(ctx.bot, ctx.room_id, words[2]),
                    )
                    case = case_of(words[2])
                    if method is not None:
                        title = await fb.methods.title(ctx.bot, ctx.room_id, method, ctx.lang)
                    elif case is not None:
                        found = await fb.case_title(ctx, case)
                        if found is None:
                            raise Refused("facilitation/agenda_no_case", n=case)
                        title = found
                    session.add_item(title, seconds, fb.clock.now(), method=method, case=case)
                elif verb in ("move", "переместить") and len(words) == 3:
                    frm, to = words[1], words[2]
                    if not (frm.isdigit() and to.isdigit() and len(frm + to) < 8):
                        raise Refused("facilitation/agenda_usage")
                    session.move_item(int(frm), int(to))
                elif verb in ("remove", "убрать") and len(words) == 2 and words[1].isdigit():
                    session.remove_item(int(words[1][:6]))
                else:
                    raise Refused("facilitation/agenda_usage")
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await fb.commit(ctx, session)
            await ctx.react("✅")
            await fb.show_item(ctx, session, before)

    @command(
        "next",
        aliases=("далее",),
        help_key="facilitation/next.help",
        params=(Choice("what", default="", options=("item",), synonyms={"пункт": "item"}),),
    )
    async def next(self, ctx: CommandContext, what: str) -> None:
        """A round's next turn if one runs, else the queue's next speaker, else the next
        agenda item; `!next item` always moves the agenda."""
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            now = fb.clock.now()
            before = session.current
            if what == "item" or (session.round is None and not session.queue):
                session.next_item(now)
                session.speaker = None
            elif session.round is not None:
                session.next_turn(now)
            else:
                session.next_speaker(now)
            await fb.commit(ctx, session)
            await fb.show_item(ctx, session, before)

    @command(
        "extend",
        aliases=("продлить",),
        help_key="facilitation/extend.help",
        params=(Duration("by", minimum=timedelta(minutes=1), maximum=timedelta(hours=4)),),
    )
    async def extend(self, ctx: CommandContext, by: timedelta) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            try:
                session.extend(int(by.total_seconds()))
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await fb.commit(ctx, session)
