"""A check-in's conversation in the member's DM: the answers to the text questions (and their
edits), the mood poll's votes, and `!share` of one answer with the club.

Registered on the check-ins bot as a handler class. Chat in club rooms is never read: the
answer handler ignores managed rooms, and plaintext events in a DM (only a server could send
those into an encrypted room).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from clubs.bots.args import Choice, Int
from clubs.bots.base import on_event
from clubs.bots.checkins.clubconf import MAX_QUESTIONS
from clubs.bots.checkins.store import Checkin, Member
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext, EventContext
from clubs.bots.polls import PollUpdate, on_poll
from clubs.core.ids import RoomId

if TYPE_CHECKING:
    from clubs.bots.checkins.bot import CheckinsBot

log = logging.getLogger(__name__)

TEXT_QUESTIONS = ("checkins/q_talked", "checkins/q_how", "checkins/q_share")
"""The default text questions, asked one by one after the mood poll."""
MOODS = 5
MAX_ANSWER_CHARS = 4000


class Answers:
    """The member's answers and mood, until the next check-in starts."""

    def __init__(self, bot: CheckinsBot) -> None:
        self.bot = bot

    # --- answers ---------------------------------------------------------------------------

    @on_event("m.room.message")
    async def answer(self, ctx: EventContext) -> None:
        """A member's words in their DM while a check-in is open: the answer to the current
        question; an edit of an earlier answer replaces it. Chat in club rooms is never read."""
        if ctx.room.managed or not ctx.event.encrypted:
            return  # club chat is not ours to read; plaintext in a DM only a server could send
        content = ctx.event.content
        if content.get("msgtype") != "m.text":
            return
        member = await self.bot.store.member(ctx.sender)
        if member is None:
            return  # nothing is kept about someone who did not opt in
        checkin = await self.bot.store.latest(member.token)
        if checkin is None or checkin.room_id != ctx.room_id:
            return
        relates = content.get("m.relates_to")
        if isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace":
            await self.edit(ctx, member, checkin, relates, content.get("m.new_content"))
            return
        body = _answer_text(content)
        if body is None or body.startswith("!") or ctx.event.event_id in checkin.content.events:
            return
        n = checkin.step
        if not 1 <= n <= checkin.content.count:
            return
        if len(body) > MAX_ANSWER_CHARS:
            await ctx.bot.notice(
                ctx.room_id,
                "checkins/too_long",
                job=ctx.job("long"),
                lang=member.lang,
                limit=MAX_ANSWER_CHARS,
            )
            return
        # Send first, then store: a crash in between sends the same (deduplicated) question
        # again instead of never asking it.
        if n < checkin.content.count:
            await self.ask(
                ctx.bot, ctx.room_id, checkin, n + 1, job=ctx.job("next"), lang=member.lang
            )
        else:
            await ctx.bot.notice(
                ctx.room_id,
                "checkins/thanks",
                job=ctx.job("thanks"),
                lang=member.lang,
                answered=sorted({*checkin.content.answers, n}),
            )
        checkin.content.answers[n] = body
        checkin.content.events[ctx.event.event_id] = n
        await self.bot.store.save(replace(checkin, step=n + 1, answered=True))

    async def ask(
        self,
        bot: BotContext,
        room: RoomId,
        checkin: Checkin,
        n: int,
        *,
        job: tuple[str, ...],
        lang: str,
    ) -> None:
        """Text question n: the club's own (or a supporter's), else the default one in the
        member's language, numbered."""
        questions = checkin.content.questions
        text = (
            questions[n - 1]
            if questions is not None
            else bot.render(TEXT_QUESTIONS[n - 1], lang).body
        )
        await bot.notice(
            room, "checkins/question", job=job, lang=lang, n=n, of=checkin.content.count, text=text
        )

    async def edit(
        self,
        ctx: EventContext,
        member: Member,
        checkin: Checkin,
        relates: Mapping[str, Any],
        new: Any,
    ) -> None:
        n = checkin.content.events.get(str(relates.get("event_id")))
        if n is None or not isinstance(new, Mapping):
            return
        body = new.get("body")
        if not isinstance(body, str) or not body.strip() or len(body) > MAX_ANSWER_CHARS:
            return
        body = body.strip()
        if checkin.content.answers.get(n) == body:
            return
        # Told first, then stored: a replay after a crash in between tells again (the same
        # transaction) and stores.
        await ctx.bot.notice(
            ctx.room_id, "checkins/edited", job=ctx.job("edited"), lang=member.lang, n=n
        )
        checkin.content.answers[n] = body
        await self.bot.store.save(checkin)

    @on_poll
    async def mood(self, bot: BotContext, update: PollUpdate) -> None:
        """The member's mood vote (the latest counts), until the next check-in."""
        checkin = await self.bot.store.by_poll(update.poll_id)
        if checkin is None:
            return
        member = await self.bot.store.member_by_token(checkin.token)
        latest = await self.bot.store.latest(checkin.token)
        if member is None or latest is None or latest.id != checkin.id:
            return
        mood: int | None = None
        for vote in await bot.poll_ballots(update.room_id, update.poll_id):
            if vote.sender == member.user_id:
                mood = _mood_of(vote.answers)
        checkin.content.mood = mood
        cause = update.cause or "count"
        alerted = checkin.alerted
        if mood == 1:
            if not checkin.content.told_low:
                await self.bot.support.low_mood(bot, member, checkin, cause)
                checkin.content.told_low = True
            previous = await self.bot.store.before(member.token, checkin.id)
            if member.alert and not alerted and previous is not None and previous.content.mood == 1:
                await self.bot.support.alert(bot, member, cause)
                alerted = True
        answered = mood is not None or bool(checkin.content.answers)
        await self.bot.store.save(replace(checkin, answered=answered, alerted=alerted))

    # --- sharing ---------------------------------------------------------------------------

    @command(
        "share",
        aliases=("поделиться",),
        help_key="checkins/share.help",
        params=(
            Int("answer", minimum=1, maximum=MAX_QUESTIONS + 1),
            Choice(
                "how",
                options=("anon", "named"),
                synonyms={
                    "анонимно": "anon",
                    "аноним": "anon",
                    "имя": "named",
                    "name": "named",
                },
                default="anon",
            ),
        ),
        dm=True,
    )
    async def share(self, ctx: CommandContext, answer: int, how: str) -> None:
        """One answer of the member's latest check-in, posted to the club's support room."""
        member = await self.bot.store.member(ctx.sender)
        lang = member.lang if member is not None else ctx.lang
        if not ctx.in_dm:
            await self.bot.answer_to(ctx, "checkins/dm_only", lang)
            return
        checkin = await self.bot.store.latest(member.token) if member is not None else None
        text = checkin.content.answers.get(answer) if checkin is not None else None
        if member is None or checkin is None or text is None:
            await self.bot.answer_to(ctx, "checkins/share_nothing", lang, n=answer)
            return
        room = await self.bot.club_room(ctx.bot, checkin.club)
        if room is None:
            await self.bot.answer_to(ctx, "checkins/no_club", lang)
            return
        await ctx.bot.notice(
            room,
            "checkins/shared",
            job=ctx.job("share"),
            text=text,
            who=ctx.sender if how == "named" else None,
            mention=(),
        )
        if answer not in checkin.content.shared:
            checkin.content.shared.append(answer)
            await self.bot.store.save(checkin)
        await self.bot.answer_to(ctx, "checkins/share_done", lang, n=answer, named=how == "named")


def _mood_of(answers: tuple[str, ...]) -> int | None:
    if len(answers) != 1:
        return None
    answer = answers[0]
    if len(answer) == 2 and answer[0] == "a" and answer[1].isdigit():
        n = int(answer[1])
        return n if 1 <= n <= MOODS else None
    return None


def _answer_text(content: Mapping[str, Any]) -> str | None:
    """The member's words, without a reply fallback (`> …` quote lines) if the client added
    one."""
    body = content.get("body")
    if not isinstance(body, str):
        return None
    relates = content.get("m.relates_to")
    if isinstance(relates, Mapping) and "m.in_reply_to" in relates and body.startswith("> "):
        lines = body.split("\n")
        while lines and lines[0].startswith(">"):
            lines.pop(0)
        body = "\n".join(lines)
    body = body.strip()
    return body or None
