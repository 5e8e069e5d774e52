"""The facilitation bot: helps a chair run a club session in its room.

- `!start [title]` / `!старт` opens a session (people with power 50 in the room); `!end` /
  `!конец` closes it and posts the minutes. Chairs are the room's moderators plus the co-chairs
  named with `!cochair @user`.
- One status message per session (an `m.notice`, pinned while the session runs) shows the
  current agenda item, its time left, who speaks and the queue. It is edited in place
  (`m.replace`) after each change and by a tick job every 30 s when what it shows changed
  (time left is shown in whole minutes, so a quiet session edits it at most once a minute).
- Agenda with timeboxes (`!agenda add 10m Title`, `move`, `remove`, `!next item`,
  `!extend 5m`): one overrun warning per item, addressed to the chairs.
- Speaking queue as W3C's Zakim keeps it: `+`, `!q+`, `!рука` raise a hand; `!q+ dr` /
  `!ответ` is a direct response that goes before the others; `!q-` lowers; `!ack` / `!next`
  give the floor; one gentle notice when a speaker's time is up.
- Rounds: `!round [shuffle] [2m]` / `!круг` gives everyone in the room a turn in order;
  `!pass` / `!пас` skips one's own turn.
- Notes: only lines starting with a tag (`#info`, `#idea`, `#action`, `#agreed`, `#later` and
  the Russian `#инфо`, `#идея`, `#действие`, `#решено`, `#потом`) are kept, without who wrote
  them; the minutes list them by kind. `#later` items are kept for the room's next session.

Every change to a session is applied under the room's lock and stored (sealed) before anything
is sent, and the command's event id is remembered, so a replay after a crash does not apply it
twice; every send's txn id derives from the event or the tick, so nothing is posted twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from clubs.bots.args import Choice, Duration, FreeText, Int, User
from clubs.bots.base import Bot, on_event
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext, EventContext
from clubs.bots.facilitation.session import (
    MAX_TITLE_CHARS,
    QuickPoll,
    Refused,
    Session,
    minutes_sections,
    parse_poll,
)
from clubs.bots.facilitation.store import FacilitationStore
from clubs.bots.jobs import JobContext, on_job, on_missed_job
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.errors import Unreachable
from clubs.core.ids import EventId, RoomId, UserId
from clubs.core.sealed import Sealer

log = logging.getLogger(__name__)

CHAIR = 50
TICK = "tick"
POLL_END = "poll_end"
TICK_S = 30.0
DEFAULT_TURN_S = 120
MAX_QUESTION_CHARS = 1000
METHODS = ("listening", "asking", "story", "values", "roleplay", "ending")
METHOD_ALIASES = {
    "слушание": "listening",
    "вопросы": "asking",
    "история": "story",
    "ценности": "values",
    "роль": "roleplay",
    "завершение": "ending",
}
RAISE = {"+", "!q+", "!рука", "!hand"}
DIRECT = {"!q+ dr", "!ответ", "!dr"}


class NotSentYet(Unreachable):
    """A send waits in the outbox (the room is not synced yet): the job is tried again."""


def _duration(text: str) -> int | None:
    """`10m`, `90s`, `1h`, `10` (minutes), `10м`: seconds, or None."""
    text = text.strip().lower()
    units = {"s": 1, "с": 1, "m": 60, "м": 60, "min": 60, "мин": 60, "h": 3600, "ч": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            number, factor = text[: -len(unit)], units[unit]
            break
    else:
        number, factor = text, 60
    if not number.isdigit() or len(number) > 5:
        return None
    return int(number) * factor


def _who(user: str) -> str:
    """How the status shows a person: the localpart, no pill (nobody is pinged by it)."""
    return user.removeprefix("@").split(":", 1)[0]


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

    async def start(self, ctx: Any) -> None:
        self.store = await FacilitationStore.open(self.db, ctx.name, self.sealer)

    def lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

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

    # --- the status message ----------------------------------------------------------------

    def status_text(self, bot: BotContext, session: Session, lang: str) -> Any:
        now = self.clock.now()
        left = session.time_left(now)
        rnd = session.round
        return bot.render(
            "facilitation/status",
            lang,
            title=session.title,
            item=session.item.title if session.item else None,
            number=session.current + 1,
            items=len(session.agenda),
            left=None if left is None else (left + 59) // 60 if left > 0 else -((-left) // 60),
            speaker=_who(session.speaker) if session.speaker else None,
            queue=[{"who": _who(e.user), "direct": e.direct} for e in session.queue[:10]],
            more=max(0, len(session.queue) - 10),
            turn=_who(rnd.current) if rnd and rnd.current else None,
            turns_left=len(rnd.order) - rnd.pos - 1 if rnd else 0,
            upcoming=[i.title for i in session.agenda[session.current + 1 :][:5]],
        )

    async def refresh(
        self, bot: BotContext, room_id: RoomId, session: Session, lang: str, job: tuple[str, ...]
    ) -> None:
        """Edit the status message if what it shows changed. `job` names this edit: a replay
        of the same change makes the same txn id, so the server keeps one edit."""
        if session.status_event is None and session.status_job:
            # The first send waited in the outbox: the same txn gives its event id once sent.
            first = self.status_text(bot, session, lang)
            sent = await bot.notice(
                room_id,
                "facilitation/status_wrap",
                job=tuple(session.status_job),
                lang=lang,
                body=first.body,
            )
            if sent is not None:
                session.status_event = sent
                await bot.pin(room_id, sent)
        text = self.status_text(bot, session, lang)
        if session.status_event is None or text.body == session.status_text:
            return
        digest = hashlib.sha256(text.body.encode()).hexdigest()[:16]
        await bot.edit(room_id, EventId(session.status_event), text, job=(*job, digest))
        session.status_text = text.body
        session.status_seq += 1

    async def commit(self, ctx: CommandContext | EventContext, session: Session) -> None:
        """Store a change, then bring the status message up to date, then store that."""
        session.mark_applied(ctx.event.event_id)
        now = self.clock.now()
        await self.store.save(ctx.room_id, session, now)
        await self.refresh(ctx.bot, ctx.room_id, session, ctx.lang, ctx.job("status"))
        await self.store.save(ctx.room_id, session, now)

    # --- start and end ---------------------------------------------------------------------

    @command(
        "start",
        aliases=("старт",),
        help_key="facilitation/start.help",
        params=(FreeText("title", default="", max_length=MAX_TITLE_CHARS),),
        min_power=CHAIR,
    )
    async def start_session(self, ctx: CommandContext, title: str) -> None:
        async with self.lock(ctx.room_id):
            existing = await self.store.session(ctx.room_id)
            if existing is not None:
                if existing.sid != ctx.event.event_id:
                    await ctx.reply("facilitation/already")
                return
            now = self.clock.now()
            title = (
                " ".join(title.split()) or ctx.bot.render("facilitation/untitled", ctx.lang).body
            )
            session = Session(ctx.event.event_id, title, now, ctx.sender)
            session.status_job = list(ctx.job("status"))
            parked = await self.store.parking(ctx.room_id)
            await self.store.save(ctx.room_id, session, now)
            await ctx.bot.jobs.schedule(
                TICK, f"{session.sid}:1", now + TICK_S, {"room": ctx.room_id}, grace_s=86400
            )
            text = self.status_text(ctx.bot, session, ctx.lang)
            event_id = await ctx.bot.notice(
                ctx.room_id,
                "facilitation/status_wrap",
                job=ctx.job("status"),
                lang=ctx.lang,
                body=text.body,
            )
            if event_id is not None:
                session.status_event = event_id
                session.status_text = text.body
                await ctx.bot.pin(ctx.room_id, event_id)
            await self.store.save(ctx.room_id, session, now)
            if parked:
                await ctx.reply("facilitation/parked", notes=parked, part="parked")

    @command("end", aliases=("конец",), help_key="facilitation/end.help")
    async def end_session(self, ctx: CommandContext) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=True)
            if session is None:
                return
            await self.finish(ctx, session)

    async def finish(self, ctx: CommandContext, session: Session) -> None:
        for i, question in enumerate(session.outgoing):  # asked since the last tick
            await self.post_question(
                ctx.bot, ctx.room_id, session, question, ctx.lang, f"{ctx.event.event_id}:{i}"
            )
        sections = minutes_sections(session.notes)
        date = datetime.fromtimestamp(session.started_at, UTC).date().isoformat()
        values: dict[str, Any] = {"title": session.title, "date": date, "sections": sections}
        await ctx.bot.notice(
            ctx.room_id, "facilitation/minutes", job=ctx.job("minutes"), lang=ctx.lang, **values
        )
        markdown = ctx.bot.render("facilitation/minutes_md", ctx.lang, **values).body
        await ctx.bot.send_file(
            ctx.room_id,
            f"minutes-{date}.md",
            markdown.encode(),
            "text/markdown",
            job=ctx.job("minutes_file"),
        )
        if session.status_event is not None:
            ended = ctx.bot.render("facilitation/status_ended", ctx.lang, title=session.title)
            await ctx.bot.edit(
                ctx.room_id, EventId(session.status_event), ended, job=ctx.job("status_end")
            )
            await ctx.bot.unpin(ctx.room_id, EventId(session.status_event))
        await self.store.end(ctx.room_id, sections["later"], self.clock.now())

    @command(
        "cochair",
        aliases=("соведущий",),
        help_key="facilitation/cochair.help",
        params=(User("user"),),
    )
    async def cochair(self, ctx: CommandContext, user: UserId) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=True)
            if session is None:
                return
            try:
                session.add_cochair(user)
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await self.commit(ctx, session)
            await ctx.reply("facilitation/cochair_added", who=_who(user))

    # --- agenda ----------------------------------------------------------------------------

    @command(
        "agenda",
        aliases=("повестка",),
        help_key="facilitation/agenda.help",
        params=(FreeText("change", default="", max_length=MAX_TITLE_CHARS + 40),),
    )
    async def agenda(self, ctx: CommandContext, change: str) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=bool(change))
            if session is None:
                return
            if not change:
                items = [{"title": i.title, "minutes": i.duration_s // 60} for i in session.agenda]
                await ctx.reply("facilitation/agenda", items=items, current=session.current + 1)
                return
            if ctx.event.event_id in session.applied:
                return
            words = change.split(None, 2)
            verb = words[0].lower()
            before = session.current
            try:
                if verb in ("add", "добавить") and len(words) == 3:
                    seconds = _duration(words[1])
                    if seconds is None:
                        raise Refused("facilitation/agenda_usage")
                    title, method = words[2], self.method_of(words[2])
                    if method is not None:
                        title = self.method_title(ctx.bot, method, ctx.lang)
                    session.add_item(title, seconds, self.clock.now(), method=method)
                elif verb in ("move", "переместить") and len(words) == 3:
                    frm, to = words[1], words[2]
                    if not (frm.isdigit() and to.isdigit() and len(frm + to) < 8):
                        raise Refused("facilitation/agenda_usage")
                    session.move_item(int(frm), int(to))
                elif verb in ("remove", "убрать") and len(words) == 2 and words[1].isdigit():
                    session.remove_item(int(words[1][:6]))
                else:
                    raise Refused("facilitation/agenda_usage")
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await self.commit(ctx, session)
            await ctx.react("✅")
            await self.show_method(ctx, session, before)

    @command(
        "next",
        aliases=("далее",),
        help_key="facilitation/next.help",
        params=(Choice("what", default="", options=("item",), synonyms={"пункт": "item"}),),
    )
    async def next(self, ctx: CommandContext, what: str) -> None:
        """A round's next turn if one runs, else the queue's next speaker, else the next
        agenda item; `!next item` always moves the agenda."""
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            now = self.clock.now()
            before = session.current
            if what == "item" or (session.round is None and not session.queue):
                session.next_item(now)
                session.speaker = None
            elif session.round is not None:
                session.next_turn(now)
            else:
                session.next_speaker(now)
            await self.commit(ctx, session)
            await self.show_method(ctx, session, before)

    @command("ack", aliases=("слово",), help_key="facilitation/ack.help")
    async def ack(self, ctx: CommandContext) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            session.next_speaker(self.clock.now())
            await self.commit(ctx, session)

    @command(
        "extend",
        aliases=("продлить",),
        help_key="facilitation/extend.help",
        params=(Duration("by", minimum=timedelta(minutes=1), maximum=timedelta(hours=4)),),
    )
    async def extend(self, ctx: CommandContext, by: timedelta) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            try:
                session.extend(int(by.total_seconds()))
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await self.commit(ctx, session)

    # --- queue -----------------------------------------------------------------------------

    @command(
        "q-",
        aliases=("опустить",),
        help_key="facilitation/lower.help",
        params=(User("user", default=None),),
    )
    async def lower(self, ctx: CommandContext, user: UserId | None) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=user is not None and user != ctx.sender)
            if session is None:
                return
            if session.lower_hand(user or ctx.sender):
                await self.commit(ctx, session)

    # --- rounds ----------------------------------------------------------------------------

    @command(
        "round",
        aliases=("круг",),
        help_key="facilitation/round.help",
        params=(FreeText("how", default="", max_length=40),),
    )
    async def round(self, ctx: CommandContext, how: str) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            shuffle, per_person = False, DEFAULT_TURN_S
            for word in how.lower().split():
                if word in ("shuffle", "вразброс"):
                    shuffle = True
                elif (seconds := _duration(word)) is not None and 10 <= seconds <= 1800:
                    per_person = seconds
                else:
                    await ctx.reply("facilitation/round_usage")
                    return
            members = await ctx.bot.client.members(ctx.room_id)
            people = [m for m in members if m != ctx.bot.user_id and m not in self.service_accounts]
            try:
                session.start_round(
                    people,
                    shuffle=shuffle,
                    seed=ctx.event.event_id,
                    per_person_s=per_person,
                    now=self.clock.now(),
                )
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await self.commit(ctx, session)

    @command("pass", aliases=("пас",), help_key="facilitation/pass.help")
    async def pass_turn(self, ctx: CommandContext) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=False)
            if session is None or ctx.event.event_id in session.applied:
                return
            if session.pass_turn(ctx.sender, self.clock.now()):
                await self.commit(ctx, session)

    # --- anonymous questions --------------------------------------------------------------

    @command(
        "ask",
        aliases=("вопрос",),
        help_key="facilitation/ask.help",
        params=(FreeText("question", max_length=MAX_QUESTION_CHARS),),
        dm=True,
    )
    async def ask(self, ctx: CommandContext, question: str) -> None:
        """Post a member's question in the running session's thread without any trace of who
        asked: the bot sends it at the next tick (its txn id from the tick, not from the DM's
        event), and neither the session nor a log records the sender or the DM's event id."""
        if not ctx.in_dm:
            await ctx.reply("facilitation/ask_in_dm")
            return
        question = " ".join(question.split())
        rooms = [
            RoomId(r)
            for r in await self.store.rooms()
            if ctx.sender in await ctx.bot.client.members(RoomId(r))
        ]
        if len(rooms) != 1:
            await ctx.reply("facilitation/ask_where", sessions=len(rooms))
            return
        (room_id,) = rooms
        lang = (await ctx.bot.rooms.info(room_id)).language
        qid = secrets.token_hex(16)
        async with self.lock(room_id):
            session = await self.store.session(room_id)
            if session is None:
                await ctx.reply("facilitation/ask_where", sessions=0)
                return
            if not session.approve:
                # Posted by the next tick (within 30 s, with any others asked meanwhile), so the
                # post's time is not the DM's.
                try:
                    session.queue_question(question)
                except Refused as e:
                    await ctx.reply(e.reason, **e.values)
                    return
                await self.store.save(room_id, session, self.clock.now())
                await ctx.reply("facilitation/asked")
                return
            try:
                number = session.hold_question(question)
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await self.store.save(room_id, session, self.clock.now())
            for chair in dict.fromkeys((session.starter, *session.cochairs)):
                await ctx.bot.dm(
                    UserId(chair),
                    "facilitation/question_waiting",
                    job=(self.name, "waiting", session.sid, qid, chair),
                    lang=lang,
                    number=number,
                    text=question,
                )
        await ctx.reply("facilitation/asked_waiting")

    async def post_question(
        self,
        bot: BotContext,
        room_id: RoomId,
        session: Session,
        text: str,
        lang: str,
        qid: str,
    ) -> None:
        thread = (
            {
                "rel_type": "m.thread",
                "event_id": session.status_event,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": session.status_event},
            }
            if session.status_event is not None
            else None
        )
        await bot.notice(
            room_id,
            "facilitation/question",
            job=(self.name, "question", session.sid, qid),
            lang=lang,
            relates_to=thread,
            text=text,
        )

    @command(
        "questions",
        aliases=("вопросы",),
        help_key="facilitation/questions.help",
        params=(Choice("approval", options=("on", "off"), synonyms={"вкл": "on", "выкл": "off"}),),
    )
    async def questions(self, ctx: CommandContext, approval: str) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=True)
            if session is None:
                return
            session.approve = approval == "on"
            await self.commit(ctx, session)
        await ctx.reply("facilitation/approval", on=approval == "on")

    @command(
        "approve",
        aliases=("одобрить",),
        help_key="facilitation/approve.help",
        params=(Int("number", minimum=1, maximum=1_000_000),),
    )
    async def approve(self, ctx: CommandContext, number: int) -> None:
        await self._decide(ctx, number, post=True)

    @command(
        "reject",
        aliases=("отклонить",),
        help_key="facilitation/reject.help",
        params=(Int("number", minimum=1, maximum=1_000_000),),
    )
    async def reject(self, ctx: CommandContext, number: int) -> None:
        await self._decide(ctx, number, post=False)

    async def _decide(self, ctx: CommandContext, number: int, *, post: bool) -> None:
        async with self.lock(ctx.room_id):
            session = await self.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            text = session.take_question(number)
            if text is None:
                await ctx.reply("facilitation/no_such_question", number=number)
                return
            if post:
                # The txn comes from the chair's command: a replay posts it once.
                await self.post_question(
                    ctx.bot, ctx.room_id, session, text, ctx.lang, ctx.event.event_id
                )
            await self.commit(ctx, session)
        if not post:
            await ctx.react("✅")

    # --- quick polls ----------------------------------------------------------------------

    @command(
        "poll",
        aliases=("опрос",),
        help_key="facilitation/poll.help",
        params=(FreeText("poll", max_length=2000),),
    )
    async def quick_poll(self, ctx: CommandContext, poll: str) -> None:
        """An encrypted poll in the session; its end (a job) posts the results."""
        session = await self.running(ctx, chair=True)
        if session is None:
            return
        try:
            spec = parse_poll(poll, _duration)
        except Refused as e:
            await ctx.reply(e.reason, **e.values)
            return
        parts = (self.name, "poll", ctx.event.event_id)
        await self._send_poll(ctx.bot, ctx.room_id, spec, parts)
        payload = {
            "room": ctx.room_id,
            "job": list(parts),
            "question": spec.question,
            "answers": list(spec.answers),
            "disclosed": spec.disclosed,
            "multiple": spec.multiple,
            "lang": ctx.lang,
        }
        await ctx.bot.jobs.schedule(
            POLL_END, ctx.event.event_id, self.clock.now() + spec.seconds, payload, grace_s=86400
        )

    @staticmethod
    async def _send_poll(
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
        poll_id = await self._send_poll(job.bot, room_id, spec, tuple(p["job"]))
        if poll_id is None:
            raise NotSentYet("the poll waits in the outbox")
        result = await job.bot.end_poll(room_id, poll_id, job=job.txn("end"))
        if result is None:
            raise NotSentYet("the poll's room is not synced yet")
        await job.bot.notice(
            room_id,
            "facilitation/poll_results",
            job=job.txn("results"),
            lang=str(p.get("lang", "ru")),
            question=spec.question,
            results=[
                {"answer": a, "votes": result.counts.get(f"a{i}", 0)}
                for i, a in enumerate(spec.answers, 1)
            ],
            voters=result.voters,
            relates_to={"m.in_reply_to": {"event_id": poll_id}},
        )

    # --- methods ---------------------------------------------------------------------------

    @staticmethod
    def method_of(text: str) -> str | None:
        """`method listening` / `метод слушание` as an agenda title: the method's name."""
        words = text.lower().split()
        if len(words) != 2 or words[0] not in ("method", "метод"):
            return None
        name = METHOD_ALIASES.get(words[1], words[1])
        return name if name in METHODS else None

    @staticmethod
    def method_title(bot: BotContext, method: str, lang: str) -> str:
        """The exercise's name: its text's first line up to the bracket."""
        first = bot.render(f"facilitation/method_{method}", lang).body.splitlines()[0]
        return first.split(" (", 1)[0].rstrip(".")

    async def show_method(self, ctx: CommandContext, session: Session, before: int) -> None:
        """Post the exercise's text when an agenda item that is a method starts."""
        item = session.item
        if session.current != before and item is not None and item.method is not None:
            await ctx.reply(f"facilitation/method_{item.method}", part="method")

    @command(
        "method",
        aliases=("метод",),
        help_key="facilitation/method.help",
        params=(Choice("name", default="", options=METHODS, synonyms=METHOD_ALIASES),),
    )
    async def method(self, ctx: CommandContext, name: str) -> None:
        if not name:
            await ctx.reply("facilitation/methods")
            return
        await ctx.reply(f"facilitation/method_{name}")

    # --- plain messages: hands and notes ---------------------------------------------------

    @on_event("m.room.message")
    async def message(self, ctx: EventContext) -> None:
        msg = ctx.message
        if msg is None or msg.relation == "m.replace" or not ctx.room.managed:
            return
        if msg.msgtype != "m.text" or len(msg.body) > 20_000:
            return
        if not ctx.event.encrypted and await ctx.bot.client.is_encrypted(ctx.room_id):
            return  # only the server could have put plaintext here: never obey it
        text = " ".join(msg.body.split()).lower()
        raise_hand = text in RAISE or text in DIRECT
        if not raise_hand and "#" not in msg.body:
            return
        async with self.lock(ctx.room_id):
            session = await self.store.session(ctx.room_id)
            if session is None or ctx.event.event_id in session.applied:
                return
            try:
                if raise_hand:
                    session.raise_hand(ctx.sender, direct=text in DIRECT)
                elif not session.take_notes(msg.body):
                    return
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await self.commit(ctx, session)

    # --- the tick: timers and the coarse status update -------------------------------------

    @on_job(TICK, grace_s=86400)
    async def tick(self, job: JobContext) -> None:
        await self._tick(job)

    @on_missed_job(TICK)
    async def tick_missed(self, job: JobContext) -> None:
        await self._tick(job)

    async def _tick(self, job: JobContext) -> None:
        room = job.payload.get("room")
        sid, _, number = job.job.key.rpartition(":")
        if not isinstance(room, str) or not number.isdigit():
            return
        room_id = RoomId(room)
        lang = (await job.bot.rooms.info(room_id)).language
        async with self.lock(room_id):
            session = await self.store.session(room_id)
            if session is None or session.sid != sid:
                return  # ended: the chain stops here
            now = job.now
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
                await self.post_question(
                    job.bot, room_id, session, question, lang, f"{job.job.key}:{i}"
                )
            session.outgoing = []
            await self.store.save(room_id, session, now)
            await self.refresh(job.bot, room_id, session, lang, job.txn("status"))
            await self.store.save(room_id, session, now)
        job.then(TICK, f"{sid}:{int(number) + 1}", now + TICK_S, {"room": room}, grace_s=86400)
