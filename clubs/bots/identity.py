"""Identity-change announcements: a member set up a new identity (new cross-signing master
key); the staff and the member are told once per new key, and `!trust @user` accepts it for
this bot's device under the `hold` policy."""

from __future__ import annotations

import logging
from collections.abc import Collection

from clubs.bots.context import BotContext, CommandContext
from clubs.bots.joined import shares_managed_room, staff_room
from clubs.core.errors import ClubsError
from clubs.core.http import UserId

log = logging.getLogger("clubs.bots.runtime")
"""The runtime's log: these lines read as they always did."""


class IdentityChanges:
    def __init__(self, ctx: BotContext, *, policy: str, service: Collection[str | None]) -> None:
        self._ctx = ctx
        self._held = policy == "hold"
        self._service = service
        """The host's bots, the provisioner and this bot: their identities are not announced."""

    async def announce(self) -> None:
        """A member set up a new identity (lost devices or recovery key, reset in Element): the
        staff hear it in their room, the member in a DM — once per new key in the process's
        database, whichever bot saw it first."""
        ctx = self._ctx
        client = ctx.client
        while client.identity_changes:
            user, master_key = client.identity_changes.pop(0)
            if user in self._service or not await ctx.store.claim_identity_change(
                user, master_key, ctx.clock.now()
            ):
                continue
            held = self._held
            log.warning(
                "%s: %s set up a new identity (%s)",
                ctx.name,
                user,
                "room keys held until !trust" if held else "accepted",
            )
            staff = await staff_room(client, ctx.rooms)
            if staff is not None:
                await ctx.notice(
                    staff,
                    "bots/identity_staff",
                    job=("identity", user, master_key, "staff"),
                    user=user,
                    held=held,
                )
            if not await shares_managed_room(client, ctx.rooms, user):
                continue
            dm = await ctx.dm_room(user)
            await ctx.notice(
                dm, "bots/identity_member", job=("identity", user, master_key, "dm"), held=held
            )

    async def trust(self, ctx: CommandContext, user: str, *, answers: bool) -> None:
        """`!trust @user`: accept a member's new identity for this bot's device (every bot of
        the host does it for its own; `answers`: this bot is the one that replies)."""
        try:
            await self._ctx.client.accept_identity_change(UserId(user))
        except ClubsError:
            if answers:
                await ctx.reply("bots/trust_none", part="trust", user=user)
            return
        log.info("%s: %s's new identity accepted by a moderator", self._ctx.name, user)
        if answers:
            await ctx.reply("bots/trusted", part="trust", user=user)
