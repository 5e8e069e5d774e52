"""The small-wins journal: a member notes any sign of progress with a relative or friend,
privately (`!win …` / `!успех …`, in a DM only), and reads it back over time (`!wins`).

Once a month, if they asked for it (`!wins monthly on`), the bot sends them last month's
entries and their count per month. Entries they mark for the club (`!wins share <n>`) go, without
name or date, into an anonymous digest posted in the club's support room on the first of the next
month. Entries are sealed (AES-GCM) and kept until the member deletes them: one entry with
`!wins delete <n>`, all with `!forget-me`. `!wins export` sends the whole journal back as a
Markdown file, an encrypted attachment in the member's DM (the server keeps only ciphertext).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from clubs.bots.args import FreeText
from clubs.bots.checkins.week import instant
from clubs.bots.commands import command
from clubs.bots.context import CommandContext
from clubs.bots.jobs import JobContext, on_job, on_missed_job

if TYPE_CHECKING:
    from clubs.bots.checkins.bot import CheckinsBot

log = logging.getLogger(__name__)

DIGEST, CLUB_DIGEST = "digest", "clubdigest"
DIGEST_HOUR = 10
"""Local hour of the first of the month at which the digests go out."""
DIGEST_GRACE_S = 7 * 24 * 3600.0
SHOWN = 30
MONTHS_SHOWN = 6


def month_of(at: float, tz: str) -> str:
    """`2026-11`: the month of an instant in a zone."""
    return datetime.fromtimestamp(at, UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m")


def month_bounds(month: str, tz: str) -> tuple[float, float]:
    """The UTC instants of the month's first midnight and the next month's, in the zone."""
    year, mon = (int(p) for p in month.split("-"))
    start = datetime.combine(date(year, mon, 1), time(0, 0))
    nxt = datetime.combine(date(year + mon // 12, mon % 12 + 1, 1), time(0, 0))
    return instant(start, tz), instant(nxt, tz)


def digest_due(month: str, tz: str) -> float:
    """When the digest of `month` goes out: the next month's first day at DIGEST_HOUR local."""
    _, end = month_bounds(month, tz)
    first = datetime.fromtimestamp(end, UTC).astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    return instant(first.replace(hour=DIGEST_HOUR), tz)


def per_month(times: list[float], tz: str, last: int = MONTHS_SHOWN) -> list[tuple[str, int]]:
    """Entries per month, the newest `last` months that have any, oldest first."""
    counts = Counter(month_of(t, tz) for t in times)
    return sorted(counts.items())[-last:]


class Journal:
    """The journal's commands and monthly jobs (registered on the bot as a handler class)."""

    def __init__(self, bot: CheckinsBot) -> None:
        self.bot = bot

    @command(
        "win",
        aliases=("успех",),
        help_key="checkins/win.help",
        params=(FreeText("text", max_length=1000),),
        dm=True,
    )
    async def win(self, ctx: CommandContext, text: str) -> None:
        rooms = await self.bot.support_rooms(ctx.bot, ctx.sender)
        lang = await self.bot.lang_of(ctx, rooms)
        if not ctx.in_dm:
            await self.bot.answer_to(ctx, "checkins/win_private", lang)
            return
        store = self.bot.store
        await store.add_win(ctx.sender, text, self.bot.clock.now(), source=ctx.event.event_id)
        await self.bot.answer_to(
            ctx, "checkins/win_saved", lang, n=await store.count_wins(ctx.sender)
        )

    @command(
        "wins",
        aliases=("успехи",),
        help_key="checkins/wins.help",
        params=(FreeText("what", default="", max_length=40),),
        dm=True,
    )
    async def wins(self, ctx: CommandContext, what: str) -> None:
        """`!wins` the journal; `!wins monthly on|off` the monthly digest; `!wins share <n>`
        entry n (as numbered in the list) into the club's anonymous digest."""
        rooms = await self.bot.support_rooms(ctx.bot, ctx.sender)
        lang = await self.bot.lang_of(ctx, rooms)
        if not ctx.in_dm:
            await self.bot.answer_to(ctx, "checkins/dm_only", lang)
            return
        words = what.lower().split()
        member = await self.bot.store.member(ctx.sender)
        tz = member.plan.tz if member else (rooms[0].info.time_zone if rooms else "UTC")
        if not words:
            await self._show(ctx, lang, tz)
        elif len(words) == 2 and words[0] in ("monthly", "ежемесячно"):
            if words[1] not in ("on", "off", "вкл", "выкл"):
                await self.bot.answer_to(ctx, "checkins/wins_usage", lang)
                return
            await self._monthly(ctx, lang, tz, words[1] in ("on", "вкл"))
        elif len(words) == 2 and words[0] in ("share", "поделиться", "delete", "удалить"):
            n = int(words[1]) if words[1].isascii() and words[1].isdigit() else 0
            if not 1 <= n <= SHOWN:
                await self.bot.answer_to(ctx, "checkins/wins_usage", lang)
            elif words[0] in ("share", "поделиться"):
                await self._share(ctx, lang, rooms, n)
            else:
                await self._delete(ctx, lang, n)
        elif words in (["export"], ["экспорт"]):
            await self._export(ctx, lang, tz)
        else:
            await self.bot.answer_to(ctx, "checkins/wins_usage", lang)

    async def _show(self, ctx: CommandContext, lang: str, tz: str) -> None:
        store = self.bot.store
        entries = await store.wins(ctx.sender, SHOWN)
        listed = []
        for n, entry in enumerate(entries, 1):
            local = datetime.fromtimestamp(entry.created_at, UTC).astimezone(ZoneInfo(tz))
            listed.append({"n": n, "date": local.strftime("%Y-%m-%d"), "text": entry.text})
        await self.bot.answer_to(
            ctx,
            "checkins/wins",
            lang,
            entries=listed,
            total=await store.count_wins(ctx.sender),
            months=per_month(await store.win_times(ctx.sender), tz),
        )

    async def _monthly(self, ctx: CommandContext, lang: str, tz: str, on: bool) -> None:
        store = self.bot.store
        if not on:
            dropped = await store.drop_digest(ctx.sender)
            if dropped is not None:
                await self._cancel(ctx, dropped.token)
            await self.bot.answer_to(ctx, "checkins/wins_monthly", lang, on=False)
            return
        digest = await store.set_digest(ctx.sender, tz, lang)
        month = month_of(self.bot.clock.now(), tz)
        await ctx.bot.jobs.schedule(
            DIGEST,
            f"{digest.token}@{month}",
            digest_due(month, tz),
            {"token": digest.token, "month": month},
            grace_s=DIGEST_GRACE_S,
        )
        await self.bot.answer_to(ctx, "checkins/wins_monthly", lang, on=True)

    async def _cancel(self, ctx: CommandContext, token: str) -> None:
        for job in await ctx.bot.jobs.pending(DIGEST):
            if job.key.startswith(token + "@"):
                await ctx.bot.jobs.cancel(DIGEST, job.key)

    async def _share(self, ctx: CommandContext, lang: str, rooms: list[Any], n: int) -> None:
        store = self.bot.store
        entries = await store.wins(ctx.sender, SHOWN)
        if n > len(entries) or not rooms:
            await self.bot.answer_to(ctx, "checkins/wins_usage", lang)
            return
        club = rooms[0].club
        tz = rooms[0].info.time_zone
        month = month_of(self.bot.clock.now(), tz)
        shared = await store.share_win(ctx.sender, entries[n - 1].id, club, month)
        if shared:
            await ctx.bot.jobs.schedule(
                CLUB_DIGEST,
                f"{club}@{month}",
                digest_due(month, tz),
                {"club": club, "month": month},
                grace_s=DIGEST_GRACE_S,
            )
        await self.bot.answer_to(ctx, "checkins/wins_shared", lang, n=n, again=not shared)

    async def _delete(self, ctx: CommandContext, lang: str, n: int) -> None:
        """Entry n as `!wins` numbers it (1 = newest). A command replayed after a crash finds
        the list shifted; the store remembers the command's event, so it deletes nothing more."""
        store = self.bot.store
        entries = await store.wins(ctx.sender, SHOWN)
        if n > len(entries):
            await self.bot.answer_to(ctx, "checkins/wins_usage", lang)
            return
        await store.delete_win(
            ctx.sender, entries[n - 1].id, source=ctx.event.event_id, now=self.bot.clock.now()
        )
        await self.bot.answer_to(
            ctx, "checkins/wins_deleted", lang, n=n, left=await store.count_wins(ctx.sender)
        )

    async def _export(self, ctx: CommandContext, lang: str, tz: str) -> None:
        """The whole journal as Markdown, an encrypted file in the member's DM."""
        entries = await self.bot.store.all_wins(ctx.sender)
        listed = [
            {
                "date": datetime.fromtimestamp(e.created_at, UTC)
                .astimezone(ZoneInfo(tz))
                .strftime("%Y-%m-%d"),
                "text": e.text,
            }
            for e in entries
        ]
        body = ctx.bot.render("checkins/wins_export", lang, entries=listed).body
        today = datetime.fromtimestamp(self.bot.clock.now(), UTC).astimezone(ZoneInfo(tz))
        await ctx.bot.send_file(
            ctx.room_id,
            f"wins-{today.strftime('%Y-%m-%d')}.md",
            body.encode(),
            "text/markdown",
            job=ctx.job("export"),
        )
        await self.bot.answer_to(ctx, "checkins/wins_exported", lang, n=len(entries))

    @on_job(DIGEST, grace_s=DIGEST_GRACE_S)
    async def monthly(self, job: JobContext) -> None:
        """The member's own digest of last month; the next month's is stored with it."""
        store = self.bot.store
        digest = await store.digest_by_token(str(job.payload.get("token")))
        if digest is None:
            return  # turned off or forgotten
        month = str(job.payload["month"])
        nxt = month_of(digest_due(month, digest.tz) + 1, digest.tz)
        job.then(
            DIGEST,
            f"{digest.token}@{nxt}",
            digest_due(nxt, digest.tz),
            {"token": digest.token, "month": nxt},
            grace_s=DIGEST_GRACE_S,
        )
        start, end = month_bounds(month, digest.tz)
        entries = await store.wins_between(digest.user_id, start, end)
        await job.bot.dm(
            digest.user_id,
            "checkins/wins_digest",
            job=job.txn("digest"),
            lang=digest.lang,
            month=month,
            entries=[e.text for e in entries],
            months=per_month(await store.win_times(digest.user_id), digest.tz),
        )

    @on_missed_job(DIGEST)
    async def missed_monthly(self, job: JobContext) -> None:
        """More than a week late: this month's digest is skipped, the chain goes on."""
        digest = await self.bot.store.digest_by_token(str(job.payload.get("token")))
        if digest is None:
            return
        month = month_of(job.now, digest.tz)
        job.then(
            DIGEST,
            f"{digest.token}@{month}",
            digest_due(month, digest.tz),
            {"token": digest.token, "month": month},
            grace_s=DIGEST_GRACE_S,
        )

    @on_job(CLUB_DIGEST, grace_s=DIGEST_GRACE_S)
    async def club_digest(self, job: JobContext) -> None:
        """The wins members shared with the club last month: no names, no dates."""
        club, month = str(job.payload["club"]), str(job.payload["month"])
        texts = await self.bot.store.shared_wins(club, month)
        room = await self.bot.club_room(job.bot, club)
        if not texts or room is None:
            return
        await job.bot.notice(room, "checkins/club_wins", job=job.txn("post"), wins=texts)
        log.info("%s: the club's digest of shared wins is posted (%d)", job.bot.name, len(texts))
