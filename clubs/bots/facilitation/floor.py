"""Who speaks: the speaking queue as W3C's Zakim keeps it, rounds, and the plain messages.

- `+`, `!q+`, `!рука`, `!hand` (the whole message) raise a hand; `!q+ dr`, `!ответ`, `!dr` is a
  direct response, after earlier direct responses and before everyone else; `!q-` lowers
  (a chair may lower someone else's); `!ack` / `!слово` gives the floor to the next.
- `!round [shuffle] [2m]` / `!круг`: everyone in the room but the network's bots, in order of
  their ids or shuffled (seeded by the command's event id); `!pass` / `!пас` skips one's turn.
- Notes: only lines whose first word is a tag are kept, without who wrote them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clubs.bots.args import FreeText, User
from clubs.bots.base import on_event
from clubs.bots.commands import command
from clubs.bots.context import CommandContext, EventContext
from clubs.bots.facilitation.parse import duration
from clubs.bots.facilitation.session import Refused
from clubs.core.ids import UserId

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot

DEFAULT_TURN_S = 120
RAISE = {"+", "!q+", "!рука", "!hand"}
DIRECT = {"!q+ dr", "!ответ", "!dr"}


class Floor:
    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot

    @command("ack", aliases=("слово",), help_key="facilitation/ack.help")
    async def ack(self, ctx: CommandContext) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            session.next_speaker(fb.clock.now())
            await fb.commit(ctx, session)

    @command(
        "q-",
        aliases=("опустить",),
        help_key="facilitation/lower.help",
        params=(User("user", default=None),),
    )
    async def lower(self, ctx: CommandContext, user: UserId | None) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=user is not None and user != ctx.sender)
            if session is None:
                return
            if session.lower_hand(user or ctx.sender):
                await fb.commit(ctx, session)

    # --- rounds ----------------------------------------------------------------------------

    @command(
        "round",
        aliases=("круг",),
        help_key="facilitation/round.help",
        params=(FreeText("how", default="", max_length=40),),
    )
    async def round(self, ctx: CommandContext, how: str) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            shuffle, per_person = False, DEFAULT_TURN_S
            for word in how.lower().split():
                if word in ("shuffle", "вразброс"):
                    shuffle = True
                elif (seconds := duration(word)) is not None and 10 <= seconds <= 1800:
                    per_person = seconds
                else:
                    await ctx.reply("facilitation/round_usage")
                    return
            people = await fb.participants(ctx.bot, ctx.room_id)
            try:
                session.start_round(
                    people,
                    shuffle=shuffle,
                    seed=ctx.event.event_id,
                    per_person_s=per_person,
                    now=fb.clock.now(),
                )
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await fb.commit(ctx, session)

    @command("pass", aliases=("пас",), help_key="facilitation/pass.help")
    async def pass_turn(self, ctx: CommandContext) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=False)
            if session is None or ctx.event.event_id in session.applied:
                return
            if session.pass_turn(ctx.sender, fb.clock.now()):
                await fb.commit(ctx, session)

    # --- plain messages: hands and notes ---------------------------------------------------

    @on_event("m.room.message")
    async def message(self, ctx: EventContext) -> None:
        msg = ctx.message
        if msg is None or msg.relation == "m.replace" or not ctx.room.managed:
            return
        if msg.msgtype != "m.text" or len(msg.body) > 20_000:
            return
        if not ctx.event.encrypted and await ctx.bot.client.is_encrypted(ctx.room_id):
            return  # only the server could have put plaintext here: never obey it
        text = " ".join(msg.body.split()).lower()
        raise_hand = text in RAISE or text in DIRECT
        if not raise_hand and "#" not in msg.body:
            return
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.store.session(ctx.room_id)
            if session is None or ctx.event.event_id in session.applied:
                return
            try:
                if raise_hand:
                    session.raise_hand(ctx.sender, direct=text in DIRECT)
                elif not session.take_notes(msg.body):
                    return
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await fb.commit(ctx, session)
