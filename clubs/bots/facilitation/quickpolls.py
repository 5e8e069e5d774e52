"""Quick polls during a session: `!poll [open] [multi] [5m] Question? | a | b` / `!опрос`, an
encrypted poll (secret unless `open`); a `poll_end` job ends it and posts the results. The
upvote poll over the anonymous questions (`questions.py`) ends the same way, its results
ranked by votes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clubs.bots.args import FreeText
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.facilitation.parse import duration
from clubs.bots.facilitation.session import QuickPoll, Refused, parse_poll
from clubs.bots.jobs import JobContext, on_job
from clubs.core.errors import Unreachable
from clubs.core.ids import EventId, RoomId

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot

POLL_END = "poll_end"


class NotSentYet(Unreachable):
    """A send waits in the outbox (the room is not synced yet): the job is tried again."""


class QuickPolls:
    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot

    @command(
        "poll",
        aliases=("опрос",),
        help_key="facilitation/poll.help",
        params=(FreeText("poll", max_length=2000),),
    )
    async def quick_poll(self, ctx: CommandContext, poll: str) -> None:
        """An encrypted poll in the session; its end (a job) posts the results."""
        session = await self.bot.running(ctx, chair=True)
        if session is None:
            return
        try:
            spec = parse_poll(poll, duration)
        except Refused as e:
            await ctx.reply(e.reason, **e.values)
            return
        await self.open(ctx, spec)

    async def open(self, ctx: CommandContext, spec: QuickPoll, *, ranked: bool = False) -> None:
        """Send the poll (txn from the command) and the job that ends it."""
        parts = (self.bot.name, "poll", ctx.event.event_id)
        await self.send(ctx.bot, ctx.room_id, spec, parts)
        payload = {
            "room": ctx.room_id,
            "job": list(parts),
            "question": spec.question,
            "answers": list(spec.answers),
            "disclosed": spec.disclosed,
            "multiple": spec.multiple,
            "lang": ctx.lang,
        }
        if ranked:
            payload["ranked"] = True
        await ctx.bot.jobs.schedule(
            POLL_END,
            ctx.event.event_id,
            self.bot.clock.now() + spec.seconds,
            payload,
            grace_s=86400,
        )

    @staticmethod
    async def send(
        bot: BotContext, room_id: RoomId, spec: QuickPoll, parts: tuple[str, ...]
    ) -> EventId | None:
        return await bot.poll(
            room_id,
            spec.question,
            spec.answers,
            job=parts,
            disclosed=spec.disclosed,
            max_selections=len(spec.answers) if spec.multiple else 1,
        )

    @on_job(POLL_END, grace_s=86400)
    async def end_quick_poll(self, job: JobContext) -> None:
        p = job.payload
        room_id = RoomId(str(p["room"]))
        spec = QuickPoll(
            str(p["question"]),
            tuple(str(a) for a in p["answers"]),
            bool(p["disclosed"]),
            bool(p["multiple"]),
            0,
        )
        # The same txn as when it was asked: the poll's event id (sent by now, or not yet).
        poll_id = await self.send(job.bot, room_id, spec, tuple(p["job"]))
        if poll_id is None:
            raise NotSentYet("the poll waits in the outbox")
        result = await job.bot.end_poll(room_id, poll_id, job=job.txn("end"))
        if result is None:
            raise NotSentYet("the poll's room is not synced yet")
        votes = [(a, result.counts.get(f"a{i}", 0)) for i, a in enumerate(spec.answers, 1)]
        ranked = bool(p.get("ranked"))
        if ranked:  # the upvote poll: most wanted first, ties in the order they were asked
            votes.sort(key=lambda v: -v[1])
        results = [{"answer": a, "votes": n} for a, n in votes]
        await job.bot.notice(
            room_id,
            "facilitation/vote_results" if ranked else "facilitation/poll_results",
            job=job.txn("results"),
            lang=str(p.get("lang", "ru")),
            question=spec.question,
            results=results,
            voters=result.voters,
            relates_to={"m.in_reply_to": {"event_id": poll_id}},
        )
