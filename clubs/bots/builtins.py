"""The commands every bot host answers: `!ping` and `!help` (one bot per room answers them, any
bot in its DMs), `!confirm` (each bot for the commands it held back itself) and `!trust @user`
(each bot for its own device: a member's new identity, under the `hold` policy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clubs.bots.args import User, Word
from clubs.bots.commands import collect_commands, command, help_entries
from clubs.bots.context import CommandContext

if TYPE_CHECKING:
    from clubs.bots.runtime import BotRuntime


class Builtins:
    def __init__(self, runtime: BotRuntime) -> None:
        self._rt = runtime

    @command("ping", help_key="bots/ping.help", aliases=("пинг",), dm=True)
    async def ping(self, ctx: CommandContext) -> None:
        await ctx.reply("bots/ping")

    @command("help", help_key="bots/help.help", aliases=("помощь", "справка"), dm=True)
    async def help(self, ctx: CommandContext) -> None:
        specs = [*collect_commands(self), *self._rt._all_commands()]
        await ctx.reply("bots/help", entries=help_entries(specs, ctx.power, in_dm=ctx.in_dm))

    @command(
        "confirm",
        help_key="bots/confirm.help",
        aliases=("подтвердить",),
        dm=True,
        params=(Word("code", max_length=16, default=None),),
    )
    async def confirm(self, ctx: CommandContext, code: str | None) -> None:
        await self._rt.confirm(ctx, code)

    @command(
        "trust",
        help_key="bots/trust.help",
        aliases=("доверять",),
        min_power=50,
        params=(User("user"),),
    )
    async def trust(self, ctx: CommandContext, user: str) -> None:
        await self._rt.trust(ctx, user)
