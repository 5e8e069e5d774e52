"""`!export` and `!forget-me` on a bot account that carries several parts (the facilitation
bot: the case library, the cohort strategies): one command gathers or deletes every part's data
about the member (`clubs.bots.memberdata.MemberData`).

`!export` / `!экспорт` (in a DM) sends two end-to-end encrypted files: the data as JSON and the
same as Markdown in the member's language. `!forget-me` / `!забудь меня` deletes it (each part
undoes what it posted for the member, e.g. redacts their anonymous cases), then the runtime's own
rows about them (`BotContext.forget_person`), and says what went, part by part.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from clubs.bots.args import FreeText
from clubs.bots.commands import command
from clubs.bots.context import CommandContext
from clubs.bots.memberdata import MemberData

log = logging.getLogger(__name__)


class OwnData:
    """The export and forget commands over the parts given (in this order)."""

    def __init__(self, parts: Sequence[MemberData]) -> None:
        names = [p.part for p in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"parts named twice: {names}")
        self.parts = tuple(parts)

    @command("export", aliases=("экспорт",), help_key="cases/export.help", dm=True)
    async def export(self, ctx: CommandContext) -> None:
        if not ctx.in_dm:
            await ctx.reply("cases/dm_only")  # a member's data goes only to their DM
            return
        data = {"user": ctx.sender, "parts": {}}
        sections = []
        for part in self.parts:
            got = await part.export(ctx.bot, ctx.sender)
            data["parts"][part.part] = dict(got)  # type: ignore[index]
            sections.append(part.export_markdown(got, ctx.lang))
        day = datetime.fromtimestamp(ctx.bot.clock.now(), UTC).strftime("%Y-%m-%d")
        head = ctx.bot.render("cases/export_head", ctx.lang, user=ctx.sender, day=day).body
        markdown = "\n\n".join([head, *sections]) + "\n"
        await ctx.bot.send_file(
            ctx.room_id,
            f"my-data-{day}.json",
            json.dumps(data, ensure_ascii=False, indent=2).encode(),
            "application/json",
            job=ctx.job("json"),
        )
        await ctx.bot.send_file(
            ctx.room_id,
            f"my-data-{day}.md",
            markdown.encode(),
            "text/markdown",
            job=ctx.job("md"),
        )
        await ctx.reply("cases/exported", parts=[p.part for p in self.parts])

    @command(
        "forget-me",
        aliases=("забудь", "forgetme"),
        help_key="cases/forget.help",
        params=(FreeText("me", default="", max_length=20),),
        dm=True,
    )
    async def forget_me(self, ctx: CommandContext, me: str) -> None:
        if not ctx.in_dm:
            await ctx.reply("cases/dm_only")
            return
        gone = []
        for part in self.parts:
            gone.append({"part": part.part, "n": await part.forget(ctx.bot, ctx.sender)})
        runtime = await ctx.bot.forget_person(ctx.sender)
        log.info("%s: a member asked to be forgotten", ctx.bot.name)
        await ctx.reply("cases/forgotten", parts=gone, runtime=runtime)
