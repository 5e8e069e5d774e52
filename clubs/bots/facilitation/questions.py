"""Anonymous questions: a member DMs the bot `!ask …` / `!вопрос …`; the question is posted in
the session's thread without any trace of who asked (not in the event, the bot's database or
its logs). With `!questions on` a chair approves each first (`!approve N`, `!reject N`).

Upvotes go through an undisclosed poll, never reactions (reactions are clear-text metadata: the
server would see who wanted which question): `!vote [5m]` / `!голосование [5м]` posts one
encrypted multiple-choice poll whose answers are the questions posted so far; nobody sees the
counts until it ends, and then the bot posts the questions ranked by votes.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from clubs.bots.args import Choice, FreeText, Int
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.facilitation.parse import duration
from clubs.bots.facilitation.session import (
    MAX_POLL_ANSWERS,
    MAX_POLL_TEXT,
    QuickPoll,
    Refused,
    Session,
)
from clubs.core.ids import RoomId, UserId

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot

MAX_QUESTION_CHARS = 1000
VOTE_S = 300


def poll_answer(text: str) -> str:
    """A question as an answer of the upvote poll (answers are at most 300 characters)."""
    return text if len(text) <= MAX_POLL_TEXT else text[: MAX_POLL_TEXT - 1] + "…"


class Questions:
    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot

    @command(
        "ask",
        aliases=("вопрос",),
        help_key="facilitation/ask.help",
        params=(FreeText("question", max_length=MAX_QUESTION_CHARS),),
        dm=True,
    )
    async def ask(self, ctx: CommandContext, question: str) -> None:
        """Post a member's question in the running session's thread without any trace of who
        asked: the bot sends it at the next tick (its txn id from the tick, not from the DM's
        event), and neither the session nor a log records the sender or the DM's event id."""
        if not ctx.in_dm:
            await ctx.reply("facilitation/ask_in_dm")
            return
        fb = self.bot
        question = " ".join(question.split())
        rooms = [
            RoomId(r)
            for r in await fb.store.rooms()
            if ctx.sender in await ctx.bot.client.members(RoomId(r))
        ]
        if len(rooms) != 1:
            await ctx.reply("facilitation/ask_where", sessions=len(rooms))
            return
        (room_id,) = rooms
        lang = (await ctx.bot.rooms.info(room_id)).language
        qid = secrets.token_hex(16)
        async with fb.lock(room_id):
            session = await fb.store.session(room_id)
            if session is None:
                await ctx.reply("facilitation/ask_where", sessions=0)
                return
            if not session.approve:
                # Posted by the next tick (within 30 s, with any others asked meanwhile), so the
                # post's time is not the DM's.
                try:
                    session.queue_question(question)
                except Refused as e:
                    await ctx.reply(e.reason, **e.values)
                    return
                await fb.store.save(room_id, session, fb.clock.now())
                await ctx.reply("facilitation/asked")
                return
            try:
                number = session.hold_question(question)
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await fb.store.save(room_id, session, fb.clock.now())
            for chair in dict.fromkeys((session.starter, *session.cochairs)):
                await ctx.bot.dm(
                    UserId(chair),
                    "facilitation/question_waiting",
                    job=(fb.name, "waiting", session.sid, qid, chair),
                    lang=lang,
                    number=number,
                    text=question,
                )
        await ctx.reply("facilitation/asked_waiting")

    async def post_question(
        self,
        bot: BotContext,
        room_id: RoomId,
        session: Session,
        text: str,
        lang: str,
        qid: str,
    ) -> None:
        """Post a question in the status message's thread (the caller stores the session:
        the question is remembered, words only, for the upvote poll)."""
        thread = (
            {
                "rel_type": "m.thread",
                "event_id": session.status_event,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": session.status_event},
            }
            if session.status_event is not None
            else None
        )
        await bot.notice(
            room_id,
            "facilitation/question",
            job=(self.bot.name, "question", session.sid, qid),
            lang=lang,
            relates_to=thread,
            text=text,
        )
        session.record_asked(text)

    @command(
        "questions",
        aliases=("вопросы",),
        help_key="facilitation/questions.help",
        params=(Choice("approval", options=("on", "off"), synonyms={"вкл": "on", "выкл": "off"}),),
    )
    async def questions(self, ctx: CommandContext, approval: str) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=True)
            if session is None:
                return
            session.approve = approval == "on"
            await fb.commit(ctx, session)
        await ctx.reply("facilitation/approval", on=approval == "on")

    @command(
        "approve",
        aliases=("одобрить",),
        help_key="facilitation/approve.help",
        params=(Int("number", minimum=1, maximum=1_000_000),),
    )
    async def approve(self, ctx: CommandContext, number: int) -> None:
        await self._decide(ctx, number, post=True)

    @command(
        "reject",
        aliases=("отклонить",),
        help_key="facilitation/reject.help",
        params=(Int("number", minimum=1, maximum=1_000_000),),
    )
    async def reject(self, ctx: CommandContext, number: int) -> None:
        await self._decide(ctx, number, post=False)

    async def _decide(self, ctx: CommandContext, number: int, *, post: bool) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            text = session.take_question(number)
            if text is None:
                await ctx.reply("facilitation/no_such_question", number=number)
                return
            if post:
                # The txn comes from the chair's command: a replay posts it once.
                await self.post_question(
                    ctx.bot, ctx.room_id, session, text, ctx.lang, ctx.event.event_id
                )
            await fb.commit(ctx, session)
        if not post:
            await ctx.react("✅")

    # --- upvotes: an undisclosed poll ------------------------------------------------------

    @command(
        "vote",
        aliases=("голосование",),
        help_key="facilitation/vote.help",
        params=(FreeText("how_long", default="", max_length=10),),
    )
    async def vote(self, ctx: CommandContext, how_long: str) -> None:
        """An undisclosed, multiple-choice poll over the questions posted so far (the latest
        20); at its end the bot posts them ranked by votes."""
        fb = self.bot
        session = await fb.running(ctx, chair=True)
        if session is None:
            return
        seconds = duration(how_long) if how_long else VOTE_S
        if seconds is None or not 60 <= seconds <= 3600:
            await ctx.reply("facilitation/vote_usage")
            return
        answers = tuple(dict.fromkeys(poll_answer(q) for q in session.asked))
        answers = answers[-MAX_POLL_ANSWERS:]
        if len(answers) < 2:
            await ctx.reply("facilitation/vote_few", asked=len(answers))
            return
        title = ctx.bot.render("facilitation/vote_question", ctx.lang).body.strip()
        spec = QuickPoll(title, answers, disclosed=False, multiple=True, seconds=seconds)
        await fb.quickpolls.open(ctx, spec, ranked=True)
