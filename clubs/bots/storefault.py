"""Storage-fault alerts: a database that refuses writes (full disk) is told to the staff once
per episode, and its recovery too, without the database (straight to the homeserver)."""

from __future__ import annotations

import logging

from clubs.bots.context import BotContext
from clubs.bots.joined import staff_room
from clubs.core.db import StoreUnavailable
from clubs.core.html import notice_content
from clubs.core.txn import txn_id

log = logging.getLogger("clubs.bots.runtime")
"""The runtime's log: these lines read as they always did."""


class StoreFaults:
    """One bot's storage-fault episodes: `fault` at each refused write, `recovered` once the
    batch commits again."""

    def __init__(self, ctx: BotContext) -> None:
        self._ctx = ctx
        self.since: float | None = None
        """When the database started refusing writes (None: it writes)."""

    async def fault(self, error: BaseException) -> None:
        if not isinstance(error, StoreUnavailable) or self.since is not None:
            return
        self.since = self._ctx.clock.now()
        log.error(
            "%s: the database refuses writes (%s); the sync position stays until it works "
            "again, and nothing is marked done meanwhile",
            self._ctx.name,
            type(error).__name__,
        )
        await self._alert_staff("bots/store_fault", "store-fault")

    async def recovered(self) -> None:
        log.info("%s: the database writes again; carrying on", self._ctx.name)
        await self._alert_staff("bots/store_recovered", "store-recovered")
        self.since = None

    async def _alert_staff(self, key: str, kind: str) -> None:
        """Tell the staff without the database: straight to the homeserver, with a txn id of
        this episode (a retry is absorbed), best effort."""
        ctx = self._ctx
        since = str(int((self.since or 0) * 1000))
        try:
            # Inside the guard: finding the staff room may need the homeserver, which may be the
            # one that is away; the alert is best effort and must never stop the loop.
            room = await staff_room(ctx.client, ctx.rooms)
            if room is None:
                return
            info = await ctx.rooms.info(room)
            text = ctx.render(key, info.language, bot=ctx.name)
            await ctx.client.send(
                room,
                "m.room.message",
                notice_content(text),
                txn_id=txn_id("m.room.message", ctx.name, kind, since),
            )
        except Exception as e:
            log.warning("%s: the staff could not be told: %s", ctx.name, type(e).__name__)
