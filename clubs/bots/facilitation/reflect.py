"""The reflection DM after a session, for members who asked for it (`!reflect on|off` /
`!рефлексия вкл|выкл`, in the room or a DM): what went well in a recent conversation with a
relative, however small, with a pointer to the check-ins bot's small-wins journal (`!win` /
`!успех`), where the member may write it down privately. Only who opted in is kept (sealed);
it is the `reflection` part of the account's `!export` / `!forget-me`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clubs.bots.args import Choice
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.core.i18n import Catalog
from clubs.core.ids import RoomId, UserId

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot


class Reflection:
    part = "reflection"

    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot
        self._catalog: Catalog | None = None

    # --- the member's data (MemberData) ------------------------------------------------------

    async def export(self, bot: BotContext, user: UserId) -> Mapping[str, Any]:
        self._catalog = bot.catalog
        return {"reflection_dm": user in await self.bot.store.reflecting()}

    def export_markdown(self, data: Mapping[str, Any], lang: str) -> str:
        catalog = self._catalog or Catalog()
        return catalog.render(
            "facilitation/reflect_export", lang, on=bool(data.get("reflection_dm"))
        ).body

    async def forget(self, bot: BotContext, user: UserId) -> int:
        if user not in await self.bot.store.reflecting():
            return 0
        await self.bot.store.set_reflecting(user, False, self.bot.clock.now())
        return 1

    @command(
        "reflect",
        aliases=("рефлексия",),
        help_key="facilitation/reflect.help",
        params=(Choice("on", options=("on", "off"), synonyms={"вкл": "on", "выкл": "off"}),),
        dm=True,
    )
    async def reflect(self, ctx: CommandContext, on: str) -> None:
        await self.bot.store.set_reflecting(ctx.sender, on == "on", self.bot.clock.now())
        await ctx.reply("facilitation/reflect_set", on=on == "on")

    async def send(
        self, bot: BotContext, room_id: RoomId, title: str, job: tuple[str, ...]
    ) -> None:
        """After a session: the prompt to everyone still in the room who opted in."""
        wanted = await self.bot.store.reflecting()
        if not wanted:
            return
        for user in sorted(wanted & set(await self.bot.participants(bot, room_id))):
            await bot.dm(
                UserId(user), "facilitation/reflect", job=(*job, "reflect", user), title=title
            )
