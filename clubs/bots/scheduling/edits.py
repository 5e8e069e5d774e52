"""What facilitators change in a series: cancel one occurrence (or end the series), move one, or
change this and the following ones (`!cancel`, `!move`, `!change`; ru/en).

Each command is first *resolved* — which occurrence, which new time — and that intent is stored
under the command's event id before anything changes. A command handled again after a crash
(the runtime replays a batch that was not committed) then does the same thing again, and every
step after it is idempotent: the store's updates, the jobs (keyed by occurrence and generation),
the sends (txn ids from the command). Without that, "the next one" handled twice would move two
sessions.

An announced occurrence that moves keeps its announcement, poll, votes and places: its rows are
re-keyed to the new time, its jobs are cancelled and scheduled again under a new generation, the
announcement is edited in place with the new time, and everyone going or maybe gets a DM.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clubs.bots.args import FreeText, Word
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.scheduling import places as pl
from clubs.bots.scheduling.core import ScheduleCore, start_of, when_text
from clubs.bots.scheduling.recurrence import (
    Occurrence as Occ,
)
from clubs.bots.scheduling.recurrence import (
    RuleError,
    occurrence_key,
    occurrences,
    parse_key,
    parse_rule,
    to_utc,
    with_until,
    zone,
)
from clubs.bots.scheduling.store import Changes, NewSeries, Occurrence, Series
from clubs.bots.scheduling.timefmt import describe_rule, format_local
from clubs.bots.scheduling.when import WhenError, parse_clock, parse_when

ALL_WORDS = ("all", "все", "всё", "серию")
DECLARED = "state:"
"""Sources of the series the network file declares: their rule is changed there."""
COMMAND_KEEP_S = 30 * 24 * 3600
"""How long what an editing command resolved to is kept (a replay comes within minutes)."""


class Refused(ValueError):
    """An edit the bot will not make; `problem` picks the usage text."""

    def __init__(self, problem: str, detail: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.detail = detail


class SeriesEdits(ScheduleCore):
    """The editing commands; each answers in the room it was typed in."""

    @command(
        "cancel",
        aliases=("отмена", "отменить"),
        help_key="scheduling/cancel.help",
        params=(Word("id", max_length=12), Word("which", default="next", max_length=12)),
        min_power=50,
    )
    async def cancel(self, ctx: CommandContext, id: str, which: str) -> None:
        series = await self._own_series(ctx, id)
        if series is None:
            return
        if which.lower() in ALL_WORDS:
            await self._end_series(ctx.bot, series, job=ctx.job("off"))
            await ctx.reply("scheduling/ended", id=series.id, title=series.title)
            return
        intent = await self.store.resolved(ctx.event.event_id)
        if intent is None:
            target = self._pick(series, which, await self.store.changes(series.id))
            if target is None:
                await ctx.reply("scheduling/no_such_date", id=series.id)
                return
            intent = await self._resolve(ctx, {"key": occurrence_key(target.local)})
        key = str(intent["key"])
        await self.store.cancel(series.id, key)
        announced = await self.store.occurrence(series.id, key)
        if announced is not None and announced.state == "upcoming":
            await self._call_off(ctx.bot, series, announced, job=ctx.job("off", key))
        await self._ensure_announced(ctx.bot, series)
        await ctx.reply(
            "scheduling/cancelled",
            id=series.id,
            title=series.title,
            when=format_local(start_of(series, key), series.tz, ctx.lang, place=ctx.room.club_name),
        )

    @command(
        "move",
        aliases=("перенести", "перенос"),
        help_key="scheduling/move.help",
        params=(
            Word("id", max_length=12),
            Word("which", max_length=12),
            FreeText("when", max_length=200),
        ),
        min_power=50,
    )
    async def move(self, ctx: CommandContext, id: str, which: str, when: str) -> None:
        """One occurrence at another time: `!move 3 10.12 11.12 19:30`, `!move 3 next 20:00`."""
        series = await self._own_series(ctx, id)
        if series is None:
            return
        intent = await self.store.resolved(ctx.event.event_id)
        if intent is None:
            changes = await self.store.changes(series.id)
            target = self._pick(series, which, changes)
            if target is None:
                await ctx.reply("scheduling/no_such_date", id=series.id)
                return
            try:
                new_local = self._move_target(series, changes, target, when)
            except Refused as e:
                await ctx.reply("scheduling/edit_usage", problem=e.problem, detail=e.detail)
                return
            intent = await self._resolve(
                ctx, {"from": occurrence_key(target.local), "to": occurrence_key(new_local)}
            )
        old_key, new_key = str(intent["from"]), str(intent["to"])
        await self.store.move(series.id, old_key, new_key)
        announced = await self.store.occurrence(series.id, old_key)
        if announced is not None and announced.state == "upcoming":
            await self.store.rekey_occurrence(
                announced, series.id, new_key, start_of(series, new_key).timestamp()
            )
        moved = await self.store.occurrence(series.id, new_key)
        if moved is not None and moved.state == "upcoming":
            await self._moved(ctx.bot, series, series, old_key, moved, job=ctx.job("move"))
        await self._ensure_announced(ctx.bot, series)
        await ctx.reply(
            "scheduling/moved",
            id=series.id,
            title=series.title,
            before=when_text(series, start_of(series, old_key), ctx.room),
            when=when_text(series, start_of(series, new_key), ctx.room),
        )

    @command(
        "change",
        aliases=("изменить", "дальше"),
        help_key="scheduling/change.help",
        params=(
            Word("id", max_length=12),
            Word("which", max_length=12),
            FreeText("when", max_length=200),
        ),
        min_power=50,
    )
    async def change(self, ctx: CommandContext, id: str, which: str, when: str) -> None:
        """This occurrence and the following ones at a new time or on a new rule: the series
        ends before it, a new series (a new number) goes on from it with everything else kept.
        `!change 3 17.12 19:30`, `!change 3 next every Wednesday 18:30`."""
        series = await self._own_series(ctx, id)
        if series is None:
            return
        intent = await self.store.resolved(ctx.event.event_id)
        if intent is None:
            try:
                plan = self._split_plan(series, which, when)
            except Refused as e:
                await ctx.reply("scheduling/edit_usage", problem=e.problem, detail=e.detail)
                return
            at_s = start_of(series, plan["at"]).timestamp()
            later = [o for o in await self.store.upcoming(series.id) if o.start_utc >= at_s]
            plan["carry"] = later[0].occ_key if later else None
            intent = await self._resolve(ctx, plan)
        at = start_of(series, str(intent["at"])).timestamp()
        before = [o for o in await self.store.upcoming(series.id) if o.start_utc < at]
        await self.store.set_rule(series.id, str(intent["until"]))
        newer = await self.store.add_series(
            _continued(series, str(intent["start"]), intent["rrule"], ctx),
            source=ctx.event.event_id,
            now=self.clock.now(),
        )
        first = self._next(newer, after=self.clock.now(), changes=Changes())
        carry = intent.get("carry")
        if carry and first is not None:
            # The announced occurrence goes on in the new series, votes and places with it.
            key = occurrence_key(first.local)
            old = await self.store.occurrence(series.id, str(carry))
            if old is not None and old.state == "upcoming":
                await self.store.rekey_occurrence(old, newer.id, key, first.start.timestamp())
            moved = await self.store.occurrence(newer.id, key)
            if moved is not None and moved.state == "upcoming":
                await self._moved(ctx.bot, series, newer, str(carry), moved, job=ctx.job("move"))
        for occ in await self.store.upcoming(series.id):
            if occ.start_utc >= at:
                await self._call_off(ctx.bot, series, occ, job=ctx.job("off", occ.occ_key))
        after_old = max((o.start_utc + series.duration_s for o in before), default=None)
        await self._ensure_announced(ctx.bot, newer, due=after_old)
        cut = await self.store.series(series.id)
        changes = await self.store.changes(series.id)
        if (
            cut is not None
            and not before
            and self._next(cut, after=self.clock.now(), changes=changes) is None
        ):
            await self.store.end_series(series.id)
        await ctx.reply(
            "scheduling/changed",
            old=series.id,
            id=newer.id,
            title=series.title,
            since=format_local(
                start_of(series, str(intent["at"])), series.tz, ctx.lang, place=ctx.room.club_name
            ),
            rule=describe_rule(newer.rrule, parse_key(newer.start_local), ctx.lang),
            when=when_text(newer, first.start, ctx.room) if first is not None else "",
        )

    # --- resolving -------------------------------------------------------------------------------

    async def _resolve(self, ctx: CommandContext, intent: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        await self.store.prune_commands(now - COMMAND_KEEP_S)
        return await self.store.resolve(ctx.event.event_id, intent, now)

    def _move_target(self, series: Series, changes: Changes, target: Occ, text: str) -> datetime:
        """The new wall time of one occurrence: a time alone keeps its day; otherwise a date
        and time read like `!session`'s (a rule is refused: that is `!change`)."""
        tz = zone(series.tz)
        now_local = datetime.fromtimestamp(self.clock.now(), tz).replace(tzinfo=None)
        clock = parse_clock(text)
        if clock is not None:
            new_local = datetime.combine(target.local.date(), clock)
        else:
            try:
                parsed = parse_when(text, now_local)
            except WhenError as e:
                raise Refused("when", str(e)) from None
            if parsed.rrule is not None:
                raise Refused("one_date")
            new_local = parsed.start
        if new_local == target.local:
            raise Refused("same")
        if to_utc(new_local, tz).timestamp() <= self.clock.now():
            raise Refused("past")
        if self._taken(series, changes, new_local):
            raise Refused("taken")
        return new_local

    def _taken(self, series: Series, changes: Changes, local: datetime) -> bool:
        """Whether the series already has (or had, or skips) an occurrence at this wall time:
        its key would be another occurrence's."""
        key = occurrence_key(local)
        if key in changes.added or key in changes.skipped:
            return True
        slot = occurrences(
            parse_key(series.start_local),
            series.tz,
            series.rrule,
            after=to_utc(local, zone(series.tz)) - timedelta(minutes=1),
            limit=1,
        )
        return bool(slot) and slot[0].local == local

    def _split_plan(self, series: Series, which: str, text: str) -> dict[str, Any]:
        """Where a series splits and how it goes on: a time alone keeps the rule (a COUNT
        becomes what is left of it); a phrase with a rule replaces it from that date on."""
        if series.source.startswith(DECLARED):
            raise Refused("declared")
        if series.rrule is None:
            raise Refused("one_off")
        target = self._pick_plain(series, which)
        clock = parse_clock(text)
        if clock is not None:
            start = datetime.combine(target.local.date(), clock)
            rule = parse_rule(series.rrule)
            rrule: str | None = series.rrule
            if rule.count is not None:
                left = occurrences(
                    parse_key(series.start_local),
                    series.tz,
                    series.rrule,
                    after=target.start - timedelta(seconds=1),
                    limit=rule.count,
                )
                kept = [p for p in series.rrule.split(";") if not p.upper().startswith("COUNT=")]
                rrule = ";".join([*kept, f"COUNT={max(1, len(left))}"])
        else:
            day_before = datetime.combine(target.local.date(), datetime.min.time())
            try:
                parsed = parse_when(text, day_before - timedelta(minutes=1))
            except WhenError as e:
                raise Refused("when", str(e)) from None
            if parsed.rrule is None:
                raise Refused("rule")
            start, rrule = parsed.start, parsed.rrule
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        try:
            if not occurrences(start, series.tz, rrule, after=now, limit=1):
                raise Refused("past")
        except RuleError as e:
            raise Refused("when", str(e)) from None
        return {
            "at": occurrence_key(target.local),
            "until": with_until(series.rrule, target.local - timedelta(minutes=1)),
            "start": occurrence_key(start),
            "rrule": rrule,
        }

    def _pick_plain(self, series: Series, which: str) -> Occ:
        """The occurrence of the rule a split starts at (moved and cancelled ones included:
        a split is about the rule's slots)."""
        target = self._pick(series, which, Changes())
        if target is None:
            raise Refused("no_date")
        return target

    # --- after a move ----------------------------------------------------------------------------

    async def _moved(
        self,
        ctx: BotContext,
        was: Series,
        series: Series,
        old_key: str,
        occ: Occurrence,
        *,
        job: tuple[str, ...],
    ) -> None:
        """An announced occurrence now at its new time: the old time's jobs off, the new time's
        on, the announcement edited, a DM to everyone going or maybe. Idempotent."""
        old_jobs = Occurrence(
            was.id, old_key, 0.0, occ.announce_room, None, occ.poll_room, None, "", occ.gen - 1
        )
        await self._cancel_jobs(ctx, old_jobs)
        home = await ctx.rooms.info(series.room_id)
        jobs = self._occurrence_jobs(series, occ.occ_key, occ.gen, self._offsets(home.settings))
        for kind, key, due, payload, grace in jobs:
            await ctx.jobs.schedule(kind, key, due, payload, grace_s=grace)
        posts = await self._posts(occ)
        ballots = await self._ballots(ctx, posts)
        seats = await self.store.places(series.id, occ.occ_key)
        waiting = sum(1 for status, _ in seats.values() if status == pl.WAITLISTED)
        start = start_of(series, occ.occ_key)
        await self._show_counts(ctx, series, start, posts, ballots, waiting, job=(*job, "edit"))
        before = start_of(was, old_key)
        for b, post in ballots:
            if b.answers[0] not in (pl.GOING, pl.MAYBE):
                continue
            voice = await ctx.rooms.info(post.poll_room)
            await ctx.dm(
                b.sender,
                "scheduling/moved_dm",
                job=(*job, "dm", b.sender),
                lang=voice.language,
                title=series.title,
                when=when_text(series, start, voice),
                before=when_text(was, before, voice),
            )


def _continued(series: Series, start_local: str, rrule: Any, ctx: CommandContext) -> NewSeries:
    """The series that goes on after a split: everything kept but the time and the rule."""
    return NewSeries(
        club=series.club,
        room_id=series.room_id,
        kind=series.kind,
        tz=series.tz,
        start_local=start_local,
        rrule=str(rrule) if rrule else None,
        duration_s=series.duration_s,
        online=series.online,
        capacity=series.capacity,
        title=series.title,
        link=series.link,
        venue=series.venue,
        materials=series.materials,
        created_by=ctx.sender,
        also=series.also,
    )
