""" "I need support": `!help-me` shows professional help resources at once and, only after the
member confirms with `!send-help`, sends the chosen words to the club's peer supporters by DM;
`!supporter on|off` for facilitators who volunteer; the low-mood notice and, with the consent
given at opt-in, the alert to the supporters after the lowest mood twice in a row.

Registered on the check-ins bot as a handler class. The bot is not a counsellor and says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from clubs.bots.args import Choice, FreeText
from clubs.bots.checkins.store import Checkin, Member
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.core.ids import UserId

if TYPE_CHECKING:
    from clubs.bots.checkins.bot import CheckinsBot, SupportRoom

log = logging.getLogger(__name__)

FACILITATOR = 50
HELP_PENDING_S = 3600.0
"""How long the words given with `!help-me` wait for `!send-help` before they are dropped."""


class Support:
    """Help for a member who asks for it, and the club's volunteer supporters."""

    def __init__(self, bot: CheckinsBot) -> None:
        self.bot = bot

    async def supporters(
        self, bot: BotContext, rooms: list[SupportRoom], member: UserId
    ) -> list[UserId]:
        """The volunteer supporters of these clubs who are still in the club's support room
        (never the member themself)."""
        found: list[UserId] = []
        for room in rooms:
            present = await bot.client.members(room.room_id)
            for s in await self.bot.store.supporters([room.club]):
                if s != member and s in present and s not in found:
                    found.append(s)
        return found

    async def low_mood(self, bot: BotContext, member: Member, checkin: Checkin, cause: str) -> None:
        rooms = await self.bot.support_rooms(bot, member.user_id)
        await bot.notice(
            checkin.room_id,
            "checkins/low_mood",
            job=(bot.name, "low", cause),
            lang=member.lang,
            countries=_countries(rooms),
            alert=member.alert,
        )

    async def alert(self, bot: BotContext, member: Member, cause: str) -> None:
        """Mood 1 twice in a row, with the member's consent given at opt-in: the supporters
        get the member's name only (no answer, no mood)."""
        rooms = [
            r for r in await self.bot.support_rooms(bot, member.user_id) if r.club == member.club
        ]
        supporters = await self.supporters(bot, rooms, member.user_id)
        for supporter in supporters:
            await bot.dm(
                supporter,
                "checkins/alert_supporter",
                job=(bot.name, "alert", cause, supporter),
                lang=member.lang,
                member=member.user_id,
            )
        room = await bot.dm_room(member.user_id)
        await bot.notice(
            room,
            "checkins/alerted",
            job=(bot.name, "alerted", cause),
            lang=member.lang,
            n=len(supporters),
        )
        log.info("%s: low-mood alert sent to %d supporter(s)", bot.name, len(supporters))

    # --- "I need support" ------------------------------------------------------------------

    @command(
        "help-me",
        aliases=("нужна", "помогите", "helpme"),
        help_key="checkins/helpme.help",
        params=(FreeText("text", default="", max_length=2000),),
        dm=True,
    )
    async def help_me(self, ctx: CommandContext, text: str) -> None:
        if ctx.invoked_as == "нужна":
            first, _, rest = text.partition(" ")
            if first.lower().strip() in ("поддержка", "помощь"):
                text = rest
        text = text.strip()
        rooms = await self.bot.support_rooms(ctx.bot, ctx.sender)
        lang = await self.bot.lang_of(ctx, rooms)
        countries = _countries(rooms)
        supporters = await self.supporters(ctx.bot, rooms, ctx.sender)
        if not ctx.in_dm:
            # Words typed in a club room are not carried anywhere; the rest happens privately.
            await ctx.bot.dm(
                ctx.sender,
                "checkins/help",
                job=ctx.job("dm"),
                lang=lang,
                countries=countries,
                supporters=len(supporters),
                text="",
            )
            await self.bot.answer_to(ctx, "checkins/help_in_dm", lang)
            return
        if supporters and text:
            await self.bot.store.set_help(ctx.sender, text, self.bot.clock.now() + HELP_PENDING_S)
        await self.bot.answer_to(
            ctx,
            "checkins/help",
            lang,
            countries=countries,
            supporters=len(supporters),
            text=text,
        )

    @command(
        "send-help",
        aliases=("отправить",),
        help_key="checkins/sendhelp.help",
        dm=True,
    )
    async def send_help(self, ctx: CommandContext) -> None:
        """The member's consent: the words given with `!help-me` (or none: "please contact
        me") go to the club's peer supporters by DM, and nothing else."""
        rooms = await self.bot.support_rooms(ctx.bot, ctx.sender)
        lang = await self.bot.lang_of(ctx, rooms)
        if not ctx.in_dm:
            await self.bot.answer_to(ctx, "checkins/dm_only", lang)
            return
        text = await self.bot.store.take_help(ctx.sender, self.bot.clock.now())
        supporters = await self.supporters(ctx.bot, rooms, ctx.sender)
        if not supporters:
            await self.bot.answer_to(
                ctx, "checkins/help", lang, countries=_countries(rooms), supporters=0, text=""
            )
            return
        for supporter in supporters:
            await ctx.bot.dm(
                supporter,
                "checkins/help_request",
                job=ctx.job("supporter", supporter),
                lang=lang,
                member=ctx.sender,
                text=text or "",
            )
        log.info("%s: a request for support went to %d supporter(s)", ctx.bot.name, len(supporters))
        await self.bot.answer_to(ctx, "checkins/help_sent", lang, n=len(supporters))

    @command(
        "supporter",
        aliases=("поддерживаю",),
        help_key="checkins/supporter.help",
        params=(Choice("on", options=("on", "off"), synonyms={"вкл": "on", "выкл": "off"}),),
        dm=True,
    )
    async def supporter(self, ctx: CommandContext, on: str) -> None:
        """A facilitator or moderator of the club (power 50 in its support room) volunteers as
        a peer supporter, or stops."""
        rooms = await self.bot.support_rooms(ctx.bot, ctx.sender)
        lang = await self.bot.lang_of(ctx, rooms)
        if ctx.room.managed:
            rooms = [r for r in rooms if r.club == ctx.room.club]
        clubs = [r.club for r in rooms if r.info.power(ctx.sender) >= FACILITATOR]
        if not clubs:
            await self.bot.answer_to(ctx, "checkins/supporter_refused", lang)
            return
        for club in clubs:
            await self.bot.store.set_supporter(club, ctx.sender, on == "on", self.bot.clock.now())
        await self.bot.answer_to(ctx, "checkins/supporter", lang, on=on == "on", clubs=clubs)


def _countries(rooms: list[SupportRoom]) -> list[str]:
    return sorted({r.country for r in rooms if r.country})
