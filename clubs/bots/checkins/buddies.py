"""Buddy pairs (optional, per member): members of a club who opt in are paired for a few weeks
and each gets a DM naming the other with a prompt to talk; re-paired on request.

Opting in (`!buddy on` / `!напарник вкл`) is the consent to have one's name given to one other
member of the club who opted in too; nothing else about either is passed on. A member waits
until someone else is waiting, then both are paired (the one who waited longest first, never
with the previous partner when someone else waits). At the end of the pairing both are told
and may ask for a new one (`!buddy new`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clubs.bots.args import FreeText
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.jobs import JobContext, on_job, on_missed_job
from clubs.core.db import Database, Migration
from clubs.core.ids import UserId

if TYPE_CHECKING:
    from clubs.bots.checkins.bot import CheckinsBot

log = logging.getLogger(__name__)

BUDDY_END = "buddyend"
PAIR_WEEKS = 3
WEEK_S = 7 * 24 * 3600
COMPONENT = "checkins_buddies"
MIGRATIONS: Sequence[Migration] = (
    Migration(
        1,
        "buddy pairs",
        """
        CREATE TABLE ci_buddies (
            bot TEXT NOT NULL,
            club TEXT NOT NULL,
            user_id TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('waiting', 'paired', 'idle')),
            since REAL NOT NULL,
            partner TEXT,
            previous TEXT,
            pair INTEGER,
            PRIMARY KEY (bot, user_id)
        );
        CREATE INDEX ci_buddies_waiting ON ci_buddies (bot, club, state, since)
        """,
    ),
)


@dataclass(frozen=True)
class Waiting:
    user_id: str
    since: float
    previous: str | None


def pick_partner(me: Waiting, waiting: Sequence[Waiting]) -> Waiting | None:
    """Who `me` is paired with: the one waiting longest, not `me`, preferring anyone but the
    previous partner (who is taken only if nobody else waits). Pure."""
    others = sorted((w for w in waiting if w.user_id != me.user_id), key=lambda w: w.since)
    fresh = [w for w in others if w.user_id != me.previous and w.previous != me.user_id]
    chosen = fresh or others
    return chosen[0] if chosen else None


class BuddyStore:
    def __init__(self, db: Database, bot: str) -> None:
        self.db = db
        self.bot = bot

    @classmethod
    async def open(cls, db: Database, bot: str) -> BuddyStore:
        await db.migrate(COMPONENT, MIGRATIONS)
        return cls(db, bot)

    async def state(self, user_id: str) -> tuple[str, str, str | None] | None:
        """(club, state, partner) of a member who opted in."""
        row = await self.db.fetchone(
            "SELECT club, state, partner FROM ci_buddies WHERE bot = ? AND user_id = ?",
            (self.bot, user_id),
        )
        return (str(row["club"]), str(row["state"]), row["partner"]) if row else None

    async def wait(self, club: str, user_id: str, now: float) -> None:
        await self.db.execute(
            "INSERT INTO ci_buddies (bot, club, user_id, state, since) "
            "VALUES (?, ?, ?, 'waiting', ?) ON CONFLICT (bot, user_id) DO UPDATE SET "
            "club = excluded.club, state = 'waiting', since = excluded.since, "
            "previous = COALESCE(partner, previous), partner = NULL, pair = NULL",
            (self.bot, club, user_id, now),
        )

    async def waiting(self, club: str) -> list[Waiting]:
        rows = await self.db.fetchall(
            "SELECT user_id, since, previous FROM ci_buddies "
            "WHERE bot = ? AND club = ? AND state = 'waiting' ORDER BY since",
            (self.bot, club),
        )
        return [Waiting(str(r["user_id"]), float(r["since"]), r["previous"]) for r in rows]

    async def pair(self, a: str, b: str, pair: int) -> None:
        async with self.db.transaction():
            for me, other in ((a, b), (b, a)):
                await self.db.execute(
                    "UPDATE ci_buddies SET state = 'paired', partner = ?, pair = ? "
                    "WHERE bot = ? AND user_id = ?",
                    (other, pair, self.bot, me),
                )

    async def end(self, pair: int) -> list[str]:
        """The pair's members become idle (their partner kept as `previous`); returns them."""
        async with self.db.transaction():
            rows = await self.db.fetchall(
                "SELECT user_id FROM ci_buddies WHERE bot = ? AND pair = ?", (self.bot, pair)
            )
            await self.db.execute(
                "UPDATE ci_buddies SET state = 'idle', previous = partner, partner = NULL, "
                "pair = NULL WHERE bot = ? AND pair = ?",
                (self.bot, pair),
            )
        return [str(r["user_id"]) for r in rows]

    async def unpair(self, user_id: str) -> str | None:
        """End the member's pairing: both keep the other as `previous`, the other goes idle.
        Returns the other."""
        async with self.db.transaction():
            row = await self.db.fetchone(
                "SELECT partner FROM ci_buddies WHERE bot = ? AND user_id = ?",
                (self.bot, user_id),
            )
            partner = str(row["partner"]) if row is not None and row["partner"] else None
            if partner is None:
                return None
            await self.db.execute(
                "UPDATE ci_buddies SET state = 'idle', previous = partner, partner = NULL, "
                "pair = NULL WHERE bot = ? AND user_id IN (?, ?)",
                (self.bot, user_id, partner),
            )
        return partner

    async def leave(self, user_id: str) -> str | None:
        """Opt out (or forget): the row goes; the partner, if any, becomes idle. Returns the
        partner."""
        async with self.db.transaction():
            row = await self.db.fetchone(
                "SELECT partner FROM ci_buddies WHERE bot = ? AND user_id = ?",
                (self.bot, user_id),
            )
            await self.db.execute(
                "DELETE FROM ci_buddies WHERE bot = ? AND user_id = ?", (self.bot, user_id)
            )
            await self.db.execute(
                "UPDATE ci_buddies SET state = 'idle', partner = NULL, pair = NULL, "
                "previous = NULL WHERE bot = ? AND (partner = ? OR previous = ?)",
                (self.bot, user_id, user_id),
            )
        return str(row["partner"]) if row is not None and row["partner"] else None


class Buddies:
    """`!buddy on|off|new` (`!напарник вкл|выкл|новый`) and the end of a pairing."""

    def __init__(self, bot: CheckinsBot) -> None:
        self.bot = bot
        self.store = BuddyStore(bot.db, bot.name)

    async def start(self, bot: BotContext) -> None:
        self.store = await BuddyStore.open(self.bot.db, bot.name)

    @command(
        "buddy",
        aliases=("напарник",),
        help_key="checkins/buddy.help",
        params=(FreeText("what", default="", max_length=20),),
        dm=True,
    )
    async def buddy(self, ctx: CommandContext, what: str) -> None:
        rooms = await self.bot.support_rooms(ctx.bot, ctx.sender)
        lang = await self.bot.lang_of(ctx, rooms)
        word = what.strip().lower()
        action = {
            "on": "on",
            "вкл": "on",
            "off": "off",
            "выкл": "off",
            "new": "new",
            "новый": "new",
            "": "status",
        }.get(word)
        if action is None:
            await self.bot.answer_to(ctx, "checkins/buddy_usage", lang)
            return
        now = self.bot.clock.now()
        held = await self.store.state(ctx.sender)
        if action == "status":
            await self.bot.answer_to(
                ctx,
                "checkins/buddy_status",
                lang,
                state=held[1] if held else "none",
                partner=held[2] if held else None,
            )
            return
        if action == "off":
            partner = await self.store.leave(ctx.sender)
            if partner is not None:
                await ctx.bot.dm(
                    UserId(partner), "checkins/buddy_left", job=ctx.job("left"), lang=lang
                )
            await self.bot.answer_to(ctx, "checkins/buddy_off", lang)
            return
        if action == "new" and held is None:
            await self.bot.answer_to(ctx, "checkins/buddy_usage", lang)
            return
        if ctx.room.managed and ctx.room.club is not None:
            rooms = [r for r in rooms if r.club == ctx.room.club]
        if not rooms:
            await self.bot.answer_to(ctx, "checkins/no_club", lang)
            return
        club = held[0] if held is not None and action == "new" else rooms[0].club
        if held is not None and held[1] in ("paired", "waiting") and action == "on":
            await self.bot.answer_to(
                ctx, "checkins/buddy_status", lang, state=held[1], partner=held[2]
            )
            return
        if held is not None and held[2] is not None:
            # Asking for someone new ends the current pairing for both; the other is told.
            old = await self.store.unpair(ctx.sender)
            if old is not None:
                await ctx.bot.dm(UserId(old), "checkins/buddy_left", job=ctx.job("left"), lang=lang)
        await self.store.wait(club, ctx.sender, now)
        found = await self._partner(ctx.bot, club, ctx.sender)
        if found is None:
            await self.bot.answer_to(ctx, "checkins/buddy_waiting", lang)
            return
        pair = secrets.randbelow(2**40)
        await self.store.pair(ctx.sender, found.user_id, pair)
        for user, other in ((ctx.sender, found.user_id), (found.user_id, ctx.sender)):
            await ctx.bot.dm(
                UserId(user),
                "checkins/buddy_paired",
                job=ctx.job("paired", user),
                lang=lang,
                partner=other,
                weeks=PAIR_WEEKS,
            )
        await ctx.bot.jobs.schedule(
            BUDDY_END, str(pair), now + PAIR_WEEKS * WEEK_S, {"pair": pair, "lang": lang}
        )
        log.info("%s: a buddy pair was made", ctx.bot.name)

    async def _partner(self, bot: BotContext, club: str, user: UserId) -> Waiting | None:
        """Someone waiting in the club who is still in its support room (one who left the
        club is taken off the list, never named to anyone)."""
        room = await self.bot.club_room(bot, club)
        members = await bot.client.members(room) if room is not None else frozenset()
        while True:
            waiting = await self.store.waiting(club)
            me = next((w for w in waiting if w.user_id == user), None)
            found = pick_partner(me, waiting) if me is not None else None
            if found is None or found.user_id in members:
                return found
            await self.store.leave(found.user_id)

    @on_job(BUDDY_END, grace_s=7 * 24 * 3600.0)
    async def pairing_ends(self, job: JobContext) -> None:
        lang = str(job.payload.get("lang", "ru"))
        for user in await self.store.end(int(job.payload["pair"])):
            await job.bot.dm(
                UserId(user), "checkins/buddy_ended", job=job.txn("ended", user), lang=lang
            )

    @on_missed_job(BUDDY_END)
    async def pairing_ended_late(self, job: JobContext) -> None:
        await self.pairing_ends(job)
