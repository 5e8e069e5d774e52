"""The methods library: short exercises for sessions (`!method [name]` / `!метод`), usable as
agenda items with their own timebox (`!agenda add 15m method listening`), whose text is posted
when the item starts. The built-in exercises are ru/en templates; a club adds its own in the
network file (`methods:`), read from the club settings (`clubconf.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clubs.bots.args import Word
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.facilitation.clubconf import BUILTIN, BUILTIN_ALIASES, ClubMethod, club_methods
from clubs.bots.facilitation.session import Session
from clubs.core.ids import RoomId

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot

METHODS = BUILTIN
METHOD_ALIASES = BUILTIN_ALIASES


def builtin_of(word: str) -> str | None:
    name = METHOD_ALIASES.get(word, word)
    return name if name in METHODS else None


def named(word: str, club: tuple[ClubMethod, ...]) -> str | None:
    """The exercise a word names (built-in first, then the club's own), or None."""
    word = word.lower()
    if (name := builtin_of(word)) is not None:
        return name
    return next((m.name for m in club if word == m.name or word in m.aliases), None)


def agenda_method(text: str, club: tuple[ClubMethod, ...] = ()) -> str | None:
    """`method listening` / `метод слушание` as an agenda title: the method's name."""
    words = text.lower().split()
    if len(words) != 2 or words[0] not in ("method", "метод"):
        return None
    return named(words[1], club)


def builtin_title(bot: BotContext, method: str, lang: str) -> str:
    """A built-in exercise's name: its text's first line up to the bracket."""
    first = bot.render(f"facilitation/method_{method}", lang).body.splitlines()[0]
    return first.split(" (", 1)[0].rstrip(".")


class Methods:
    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot

    @staticmethod
    async def club(bot: BotContext, room_id: RoomId) -> tuple[ClubMethod, ...]:
        """The club's own exercises (from the room's club settings)."""
        return club_methods((await bot.rooms.info(room_id)).settings)

    async def find(self, bot: BotContext, room_id: RoomId, word: str) -> str | None:
        """The exercise a word names (built-in, or the club's own), or None."""
        return named(word, await self.club(bot, room_id))

    async def method_of(self, bot: BotContext, room_id: RoomId, text: str) -> str | None:
        """`method listening` / `метод слушание` as an agenda title: the method's name."""
        words = text.lower().split()
        if len(words) != 2 or words[0] not in ("method", "метод"):
            return None
        return agenda_method(text, await self.club(bot, room_id))

    async def title(self, bot: BotContext, room_id: RoomId, method: str, lang: str) -> str:
        if method in METHODS:
            return builtin_title(bot, method, lang)
        for club in await self.club(bot, room_id):
            if club.name == method:
                return club.title_in(lang)
        return method

    async def post(self, ctx: CommandContext, method: str, *, part: str = "reply") -> None:
        """Post an exercise's text in reply to the command."""
        if method in METHODS:
            await ctx.reply(f"facilitation/method_{method}", part=part)
            return
        for club in await self.club(ctx.bot, ctx.room_id):
            if club.name == method:
                await ctx.reply(
                    "facilitation/method_club",
                    part=part,
                    title=club.title_in(ctx.lang),
                    text=club.text_in(ctx.lang),
                )
                return

    async def show(self, ctx: CommandContext, session: Session, before: int) -> None:
        """Post the exercise's text when an agenda item that is a method starts."""
        item = session.item
        if session.current != before and item is not None and item.method is not None:
            await self.post(ctx, item.method, part="method")

    @command(
        "method",
        aliases=("метод",),
        help_key="facilitation/method.help",
        params=(Word("name", default=""),),
    )
    async def method(self, ctx: CommandContext, name: str) -> None:
        found = await self.find(ctx.bot, ctx.room_id, name) if name else None
        if found is None:
            club = [
                {"name": m.name, "title": m.title_in(ctx.lang)}
                for m in await self.club(ctx.bot, ctx.room_id)
            ]
            await ctx.reply("facilitation/methods", club=club, unknown=bool(name))
            return
        await self.post(ctx, found)
