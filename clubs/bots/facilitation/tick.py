"""The tick: a job every 30 s per running session. It gives the one-time notices (the item's
overrun to the chairs, the speaker's time, the round's turn time), posts the anonymous
questions asked since the last tick, and edits the status message when what it shows changed.
Each tick stores the next one with its completion (`job.then`, keys `<session id>:<n>`); a
tick finding no session (or another one) ends the chain."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clubs.bots.facilitation.status import refresh
from clubs.bots.jobs import JobContext, on_job, on_missed_job
from clubs.core.ids import RoomId, UserId

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot

TICK = "tick"
TICK_S = 30.0


class Ticker:
    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot

    @on_job(TICK, grace_s=86400)
    async def tick(self, job: JobContext) -> None:
        await self._tick(job)

    @on_missed_job(TICK)
    async def tick_missed(self, job: JobContext) -> None:
        await self._tick(job)

    async def _tick(self, job: JobContext) -> None:
        fb = self.bot
        room = job.payload.get("room")
        sid, _, number = job.job.key.rpartition(":")
        if not isinstance(room, str) or not number.isdigit():
            return
        room_id = RoomId(room)
        lang = (await job.bot.rooms.info(room_id)).language
        async with fb.lock(room_id):
            session = await fb.store.session(room_id)
            if session is None or session.sid != sid:
                return  # ended: the chain stops here
            now = job.now
            if now >= session.auto_end_at():
                # Left running: ended with its minutes, as `!end` would.
                await job.bot.notice(
                    room_id, "facilitation/auto_ended", job=job.txn("auto_end"), lang=lang
                )
                await fb.sessions.finish(job.bot, room_id, session, lang, job.txn())
                return
            chairs = [UserId(u) for u in (session.starter, *session.cochairs)]
            if session.overrun_due(now) and session.item is not None:
                await job.bot.notice(
                    room_id,
                    "facilitation/overrun",
                    job=job.txn("overrun"),
                    lang=lang,
                    mention=chairs,
                    item=session.item.title,
                )
            if session.speaker_over(now):
                await job.bot.notice(
                    room_id, "facilitation/speaker_time", job=job.txn("speaker"), lang=lang
                )
            if session.turn_over(now):
                await job.bot.notice(
                    room_id, "facilitation/turn_time", job=job.txn("turn"), lang=lang
                )
            for i, question in enumerate(session.outgoing):
                await fb.questions.post_question(
                    job.bot, room_id, session, question, lang, f"{job.job.key}:{i}"
                )
            session.outgoing = []
            await fb.store.save(room_id, session, now)
            await refresh(job.bot, room_id, session, lang, job.txn("status"), fb.clock.now())
            await fb.store.save(room_id, session, now)
        job.then(TICK, f"{sid}:{int(number) + 1}", now + TICK_S, {"room": room}, grace_s=86400)
