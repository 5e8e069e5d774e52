"""The facilitation bot: helps a chair run a club session in its room.

The bot itself holds what every part shares: the store, one lock per room, who is a chair, and
the status message (`status.py`). Each part is a class of its own, registered with
`register_handler_class`:

| part | file | what |
|---|---|---|
| `Sessions` | `sessions.py` | `!start`, `!end`, `!cochair`; the minutes at the end |
| `Agenda` | `agenda.py` | the agenda with timeboxes, `!next`, `!extend` |
| `Floor` | `floor.py` | the speaking queue, rounds, and the plain messages (hands, notes) |
| `Questions` | `questions.py` | anonymous questions by DM, approval, the upvote poll |
| `QuickPolls` | `quickpolls.py` | polls during the session and their results |
| `Methods` | `methods.py` | the methods library, with the club's own exercises |
| `Breakouts` | `breakout.py` | breakout groups in threads or temporary rooms, recall |
| `Reflection` | `reflect.py` | the opt-in reflection DM after a session |
| `Ticker` | `tick.py` | the 30 s tick: timers, notices, the coarse status edit, auto-end |

Every change to a session is applied under the room's lock and stored (sealed) before anything
is sent, and the command's event id is remembered, so a replay after a crash does not apply it
twice; every send's txn id derives from the event or the tick, so nothing is posted twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from clubs.bots.base import Bot
from clubs.bots.context import BotContext, CommandContext, EventContext
from clubs.bots.facilitation.agenda import Agenda
from clubs.bots.facilitation.breakout import Breakouts
from clubs.bots.facilitation.floor import Floor
from clubs.bots.facilitation.methods import Methods
from clubs.bots.facilitation.questions import Questions
from clubs.bots.facilitation.quickpolls import QuickPolls
from clubs.bots.facilitation.reflect import Reflection
from clubs.bots.facilitation.session import Session
from clubs.bots.facilitation.sessions import Sessions
from clubs.bots.facilitation.status import refresh
from clubs.bots.facilitation.store import FacilitationStore
from clubs.bots.facilitation.tick import Ticker
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.ids import RoomId
from clubs.core.sealed import Sealer

log = logging.getLogger(__name__)

CHAIR = 50


class AgendaCases(Protocol):
    """The case library, as the agenda sees it (`!agenda add 20m case 42`)."""

    async def agenda_title(self, bot: BotContext, room_id: RoomId, n: int, lang: str) -> str | None:
        """The item's title, or None if the case is not one this room's club may discuss."""

    async def present(self, ctx: CommandContext, n: int, *, part: str) -> None:
        """Post the case in the room (or say it is no longer there)."""


class FacilitationBot(Bot):
    name = "facilitation"

    def __init__(
        self,
        db: Database,
        sealer: Sealer,
        clock: Clock,
        *,
        service_accounts: frozenset[str] = frozenset(),
    ) -> None:
        self.db = db
        self.service_accounts = service_accounts
        """The network's bots and provisioner: never given a turn in a round."""
        self.sealer = sealer
        self.clock = clock
        self.store = FacilitationStore(db, self.name, sealer)
        """Replaced at `start` by the store of the bot's account, migrated."""
        self._locks: dict[str, asyncio.Lock] = {}
        self.cases: AgendaCases | None = None
        """Set by the catalog when the case library runs on this account."""
        self.methods = Methods(self)
        self.questions = Questions(self)
        self.sessions = Sessions(self)
        self.quickpolls = QuickPolls(self)
        self.breakouts = Breakouts(self)
        self.reflection = Reflection(self)
        for part in (
            self.sessions,
            Agenda(self),
            Floor(self),
            self.questions,
            self.quickpolls,
            self.methods,
            self.breakouts,
            self.reflection,
            Ticker(self),
        ):
            self.register_handler_class(part)

    async def start(self, ctx: Any) -> None:
        self.store = await FacilitationStore.open(self.db, ctx.name, self.sealer)

    def lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    async def participants(self, bot: BotContext, room_id: RoomId) -> list[str]:
        """Everyone in the room but this bot and the network's other bots and provisioner."""
        members = await bot.client.members(room_id)
        return [m for m in members if m != bot.user_id and m not in self.service_accounts]

    # --- who may ---------------------------------------------------------------------------

    @staticmethod
    def is_chair(ctx: CommandContext, session: Session | None) -> bool:
        if ctx.power >= CHAIR:
            return True
        return session is not None and ctx.sender in (session.starter, *session.cochairs)

    async def running(self, ctx: CommandContext, *, chair: bool) -> Session | None:
        """The room's session, or None after telling the sender why not."""
        session = await self.store.session(ctx.room_id)
        if session is None:
            await ctx.reply("facilitation/no_session")
            return None
        if chair and not self.is_chair(ctx, session):
            await ctx.reply("facilitation/chairs_only")
            return None
        if chair and ctx.event.encrypted and not ctx.event.sender_trusted:
            # As the runtime does for commands that need power: a chair's command only from a
            # session its owner verified (co-chairs may have no power in the room).
            await ctx.reply("bots/untrusted_device", command=ctx.invoked_as)
            return None
        return session

    # --- what an agenda item shows -----------------------------------------------------------

    async def case_title(self, ctx: CommandContext, n: int) -> str | None:
        if self.cases is None:
            return None
        return await self.cases.agenda_title(ctx.bot, ctx.room_id, n, ctx.lang)

    async def show_item(self, ctx: CommandContext, session: Session, before: int) -> None:
        """When an item starts: its exercise's text, or its case."""
        await self.methods.show(ctx, session, before)
        item = session.item
        case = item.case if item is not None and session.current != before else None
        if case is not None and self.cases is not None:
            await self.cases.present(ctx, case, part="case")

    async def commit(self, ctx: CommandContext | EventContext, session: Session) -> None:
        """Store a change, then bring the status message up to date, then store that."""
        session.mark_applied(ctx.event.event_id)
        now = self.clock.now()
        await self.store.save(ctx.room_id, session, now)
        await refresh(ctx.bot, ctx.room_id, session, ctx.lang, ctx.job("status"), now)
        await self.store.save(ctx.room_id, session, now)
