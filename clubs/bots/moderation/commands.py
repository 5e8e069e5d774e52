"""The moderation bot's commands: what moderators type (`!ban`, `!purge`, `!mute`, `!since`...).

Each command acts through the bot's `Moderator`, answers the moderator and records an audit
entry that also goes to the moderators' room. Registered by the bot as a handler class.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from clubs.bots.args import Choice, Duration, FreeText, Int, User, format_duration
from clubs.bots.commands import command
from clubs.bots.context import CommandContext
from clubs.bots.moderation.fanout import BanReport
from clubs.bots.moderation.network import Network
from clubs.bots.moderation.power import MODERATOR_LEVEL
from clubs.core.http import RoomId, UserId

PURGE_REDACT_LIMIT = 200
"""`!purge` also redacts this many of the person's newest messages per room, one by one."""
SINCE_MAX_USERS = 500
"""`!since` acts on at most this many of the newest joins."""
SINCE_CONCURRENCY = 10
"""`!since` acts on this many people at a time."""


class ModerationCommands:
    """The commands, on the network they serve (its `Moderator`, policy room and audit)."""

    def __init__(self, net: Network) -> None:
        self.net = net

    @command(
        "ban",
        help_key="moderation/ban.help",
        aliases=("бан",),
        min_power=MODERATOR_LEVEL,
        dm=True,
        params=(User("user"), FreeText("reason", max_length=300, default="")),
    )
    async def ban(self, ctx: CommandContext, user: UserId, reason: str) -> None:
        """Network-wide: every managed room at once, then a policy rule (so other moderators'
        clients, new rooms and restarts see it).

        The bans go first: writing the rule first made every ban wait for one more persisted
        event, and writing it alongside them takes one of the fan-out's connections (the last
        ban then waits for it). A crash in between replays the command (the runtime records it
        only once handled): rooms already banned are skipped and the rule is written then. If
        the fan-out itself fails, the rule is still written, and its echo retries the bans."""
        await self._ban_network(ctx, "ban", user, reason, await self.net.managed_rooms())

    async def _ban_network(
        self, ctx: CommandContext, action: str, user: UserId, reason: str, rooms: list[RoomId]
    ) -> None:
        """Ban in every room at once, then the rule, then tell the moderator (see `ban`);
        `action` "purge" also asks Synapse to serve everything they sent redacted."""
        try:
            report = await self.net.mod.ban_everywhere(
                user,
                reason or action,
                rooms,
                actor=ctx.sender,
                redact_events=action == "purge",
            )
        finally:
            if self.net.policy_room is not None:
                await self.net.mod.add_rule(
                    self.net.policy_room, "user", user, reason or action, actor=ctx.sender
                )
        await self._fanout_done(ctx, action, user, report, None, reason)

    @command(
        "purge",
        help_key="moderation/purge.help",
        aliases=("вычистить",),
        min_power=MODERATOR_LEVEL,
        dm=True,
        params=(User("user"), FreeText("reason", max_length=300, default="")),
    )
    async def purge(self, ctx: CommandContext, user: UserId, reason: str) -> None:
        """`ban`, and everything the person sent disappears: each ban carries MSC4293's
        `redact_events` (Synapse serves all their events in that room redacted at once, also to
        clients that never heard of the MSC once they reload), then their newest messages are
        redacted one by one as well, for clients that still hold them in a cache."""
        rooms = await self.net.managed_rooms()
        await self._ban_network(ctx, "purge", user, reason, rooms)
        # The bot's own redactions (not Synapse's admin task): the events are found one by
        # one, so the reply can say how many.
        redacted = await self.net.mod.redact_recent(
            user,
            rooms,
            PURGE_REDACT_LIMIT,
            reason=reason or None,
            use_admin=False,
            actor=ctx.sender,
        )
        await ctx.reply("moderation/redacted", part="redacted", target=user, count=redacted.count)

    async def _fanout_done(
        self,
        ctx: CommandContext,
        action: str,
        user: UserId,
        report: BanReport,
        room: RoomId | None,
        reason: str | None,
    ) -> None:
        """Tell the moderator what a ban/unban/kick reached, and record it in the audit."""
        await ctx.reply(
            "moderation/done",
            action=action,
            target=user,
            rooms=len(report.done),
            refused=len(report.refused),
            failed=len(report.failed),
        )
        await self.net.audit(
            ctx.sender,
            action,
            user,
            room,
            reason,
            "command",
            rooms=len(report.done) if room is None else 1,
            job=ctx.job(action),
        )

    @command(
        "unban",
        help_key="moderation/unban.help",
        aliases=("разбан",),
        min_power=MODERATOR_LEVEL,
        dm=True,
        params=(User("user"),),
    )
    async def unban(self, ctx: CommandContext, user: UserId) -> None:
        if self.net.policy_room is not None:
            await self.net.mod.remove_rule(self.net.policy_room, "user", user, actor=ctx.sender)
        report = await self.net.mod.unban_everywhere(
            user, await self.net.managed_rooms(), actor=ctx.sender
        )
        await self._fanout_done(ctx, "unban", user, report, None, None)

    @command(
        "kick",
        help_key="moderation/kick.help",
        aliases=("кик",),
        min_power=MODERATOR_LEVEL,
        params=(User("user"), FreeText("reason", max_length=300, default="")),
    )
    async def kick(self, ctx: CommandContext, user: UserId, reason: str) -> None:
        report = await self.net.mod.kick(
            user, [ctx.room_id], reason=reason or None, actor=ctx.sender
        )
        await self._fanout_done(ctx, "kick", user, report, ctx.room_id, reason)

    @command(
        "mute",
        help_key="moderation/mute.help",
        aliases=("мут",),
        min_power=MODERATOR_LEVEL,
        params=(
            User("user"),
            Duration("duration", default=timedelta(minutes=10)),
            FreeText("reason", max_length=300, default=""),
        ),
    )
    async def mute(
        self, ctx: CommandContext, user: UserId, duration: timedelta, reason: str
    ) -> None:
        seconds = duration.total_seconds()
        result = await self.net.mod.mute(
            ctx.room_id,
            user,
            self.net.clock.now() + seconds,
            reason=reason or None,
            actor=ctx.sender,
        )
        if result.refused is not None:
            await ctx.reply("moderation/refused_target", target=user)
            return
        await ctx.reply("moderation/muted", target=user, minutes=max(1, round(seconds / 60)))
        await self.net.audit(
            ctx.sender, "mute", user, ctx.room_id, reason, "command", job=ctx.job("mute")
        )

    @command(
        "unmute",
        help_key="moderation/unmute.help",
        aliases=("размут",),
        min_power=MODERATOR_LEVEL,
        params=(User("user"),),
    )
    async def unmute(self, ctx: CommandContext, user: UserId) -> None:
        await self.net.mod.unmute(ctx.room_id, user, actor=ctx.sender)
        await ctx.reply(
            "moderation/done", action="unmute", target=user, rooms=1, refused=0, failed=0
        )
        await self.net.audit(
            ctx.sender, "unmute", user, ctx.room_id, None, "command", job=ctx.job("unmute")
        )

    @command(
        "redact",
        help_key="moderation/redact.help",
        aliases=("удалить",),
        min_power=MODERATOR_LEVEL,
        params=(User("user"), Int("count", minimum=1, maximum=500, default=10)),
    )
    async def redact(self, ctx: CommandContext, user: UserId, count: int) -> None:
        report = await self.net.mod.redact_recent(user, [ctx.room_id], count, actor=ctx.sender)
        done = report.count if report.redact_id is None else None  # admin task: not counted
        await ctx.reply("moderation/redacted", target=user, count=done)
        await self.net.audit(
            ctx.sender, "redact", user, ctx.room_id, None, "command", job=ctx.job("redact")
        )

    @command(
        "warn",
        help_key="moderation/warn.help",
        aliases=("предупредить",),
        min_power=MODERATOR_LEVEL,
        params=(User("user"), FreeText("reason", max_length=500)),
    )
    async def warn(self, ctx: CommandContext, user: UserId, reason: str) -> None:
        await ctx.bot.dm(
            user, "moderation/warning", job=ctx.job("warn"), lang=ctx.lang, reason=reason
        )
        await ctx.reply("moderation/done", action="warn", target=user, rooms=1, refused=0, failed=0)
        await self.net.audit(
            ctx.sender, "warn", user, ctx.room_id, reason, "command", job=ctx.job("warn-audit")
        )

    @command(
        "raid",
        help_key="moderation/raid.help",
        aliases=("рейд",),
        min_power=MODERATOR_LEVEL,
        params=(Choice("mode", options=("on", "off"), synonyms={"вкл": "on", "выкл": "off"}),),
    )
    async def raid(self, ctx: CommandContext, mode: str) -> None:
        if mode == "on":
            await self.net.mod.lock(ctx.room_id, actor=ctx.sender)
        else:
            await self.net.mod.unlock(ctx.room_id, actor=ctx.sender)
        await ctx.reply("moderation/raid", mode=mode)
        await self.net.audit(
            ctx.sender,
            f"raid {mode}",
            ctx.room_id,
            ctx.room_id,
            None,
            "command",
            job=ctx.job("raid"),
        )

    @command(
        "since",
        help_key="moderation/since.help",
        aliases=("недавние",),
        min_power=MODERATOR_LEVEL,
        params=(
            Duration("window", minimum=timedelta(seconds=1), maximum=timedelta(days=7)),
            Choice(
                "action",
                options=("kick", "ban", "mute"),
                synonyms={"кик": "kick", "бан": "ban", "мут": "mute"},
            ),
            FreeText("reason", max_length=300, default=""),
        ),
    )
    async def since(self, ctx: CommandContext, window: timedelta, action: str, reason: str) -> None:
        """After a raid: kick, ban or mute (for as long as a flood mute) everyone who joined
        this room in the last `window`, in this room only. Moderators, bots and creators are
        never touched (the usual refusals)."""
        joined = await self.net.mod.joined_since(
            ctx.room_id, self.net.clock.now() - window.total_seconds()
        )
        targets = [u for u in joined if u != ctx.sender][-SINCE_MAX_USERS:]
        gate = asyncio.Semaphore(SINCE_CONCURRENCY)
        why = reason or "raid"

        async def one(user: UserId) -> bool:
            async with gate:
                if action == "mute":
                    until = self.net.clock.now() + self.net.thresholds(ctx.room).mute_s
                    muted = await self.net.mod.mute(
                        ctx.room_id, user, until, reason=why, actor=ctx.sender
                    )
                    return muted.changed
                if action == "ban":
                    report = await self.net.mod.ban_everywhere(
                        user, why, [ctx.room_id], actor=ctx.sender
                    )
                else:
                    report = await self.net.mod.kick(
                        user, [ctx.room_id], reason=why, actor=ctx.sender
                    )
                return bool(report.done)

        done = sum(await asyncio.gather(*(one(u) for u in targets)))
        await ctx.reply(
            "moderation/since",
            action=action,
            done=done,
            found=len(targets),
            window=format_duration(window),
        )
        await self.net.audit(
            ctx.sender,
            f"{action} since {format_duration(window)}",
            f"{done} of {len(targets)}",
            ctx.room_id,
            reason or None,
            "command",
            job=ctx.job("since"),
        )

    @command(
        "lookup",
        help_key="moderation/lookup.help",
        aliases=("история",),
        min_power=MODERATOR_LEVEL,
        dm=True,
        params=(User("user"),),
    )
    async def lookup(self, ctx: CommandContext, user: UserId) -> None:
        """A user's moderation history, sent privately to the asking moderator."""
        entries = await self.net.store.history(user, limit=20)
        await ctx.bot.dm(
            ctx.sender,
            "moderation/history",
            job=ctx.job("lookup"),
            lang=ctx.lang,
            target=user,
            entries=entries,
        )
