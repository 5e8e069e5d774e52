"""Breakout groups: `!breakout N [rooms]` / `!группы N [комнаты]` (chairs) splits everyone in
the room (but the bots) into N groups, shuffled by the command's event id.

- Threads (the default): the bot posts one message per group in the sessions room, naming and
  mentioning its members; the group talks in that message's thread.
- Rooms: the bot creates one temporary encrypted room per group (invite only, history from the
  invitation, guests forbidden, room version 12, as every room here) and invites its members,
  with the session's call link if it has one. Created by a durable job, each room found again
  after a crash by an opaque marker in its creation state, so never twice.

Each group sends one line back with `!summary …` / `!итог …` in the sessions room (the latest
counts). `!recall` / `!собрать` (and `!end`) posts every group's summary, keeps them as notes for
the minutes, and archives the temporary rooms: the bot says goodbye there, removes every member
and leaves, so nobody keeps the room and the server may purge it.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from clubs.bots.args import FreeText
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext
from clubs.bots.facilitation.parse import who
from clubs.bots.facilitation.session import (
    MAX_SUMMARY_CHARS,
    Breakout,
    Group,
    Note,
    Refused,
    Session,
    split_groups,
)
from clubs.bots.jobs import JobContext, on_job
from clubs.core.errors import Forbidden, NotFound
from clubs.core.http import path
from clubs.core.ids import RoomId, UserId
from clubs.core.namespace import NS

if TYPE_CHECKING:
    from clubs.bots.facilitation.bot import FacilitationBot

log = logging.getLogger(__name__)

CS = ("_matrix", "client", "v3")
ROOMS_JOB = "breakout_rooms"
CLOSE_JOB = "breakout_close"
MARKER = f"{NS}.breakout"
"""State in a temporary room's creation: an opaque token (no name, no club, no session)."""


class Breakouts:
    def __init__(self, bot: FacilitationBot) -> None:
        self.bot = bot

    @command(
        "breakout",
        aliases=("группы",),
        help_key="facilitation/breakout.help",
        params=(FreeText("how", default="", max_length=40),),
    )
    async def breakout(self, ctx: CommandContext, how: str) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            words = how.lower().split()
            rooms = any(w in ("rooms", "комнаты") for w in words)
            counts = [w for w in words if w not in ("rooms", "комнаты")]
            try:
                if session.breakout is not None:
                    raise Refused("facilitation/breakout_running")
                if len(counts) != 1 or not counts[0].isdigit() or len(counts[0]) > 2:
                    raise Refused("facilitation/breakout_usage")
                people = await fb.participants(ctx.bot, ctx.room_id)
                groups = split_groups(people, int(counts[0]), ctx.event.event_id)
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            key = ctx.event.event_id
            session.breakout = Breakout(
                key, rooms, [Group(g, secrets.token_hex(12)) for g in groups]
            )
            if rooms:
                # The job creates the rooms (and finds them again after a crash).
                await ctx.bot.jobs.schedule(
                    ROOMS_JOB, key, fb.clock.now(), {"room": ctx.room_id}, grace_s=3600
                )
            for number, group in enumerate(session.breakout.groups, 1):
                group.root = await ctx.bot.notice(
                    ctx.room_id,
                    "facilitation/breakout_group",
                    job=(fb.name, "breakout", key, group.marker),
                    lang=ctx.lang,
                    mention=[UserId(u) for u in group.members],
                    number=number,
                    members=[who(u) for u in group.members],
                    rooms=rooms,
                )
            await fb.commit(ctx, session)

    @on_job(ROOMS_JOB, grace_s=3600)
    async def create_rooms(self, job: JobContext) -> None:
        fb = self.bot
        room_id = RoomId(str(job.payload["room"]))
        lang = (await job.bot.rooms.info(room_id)).language
        async with fb.lock(room_id):
            session = await fb.store.session(room_id)
            out = session.breakout if session is not None else None
            if session is None or out is None or out.key != job.job.key or not out.rooms:
                return  # recalled or ended meanwhile
            for number, group in enumerate(out.groups, 1):
                if group.room is None:
                    # Only a retry after a `createRoom` that may have gone through looks for
                    # the room by its marker (a scan of the bot's rooms); a first try creates.
                    found = await self._find(job.bot, group.marker) if group.tried else None
                    if found is None:
                        group.tried = True
                        await fb.store.save(room_id, session, job.now)
                        found = await self._create(job.bot, group, number, lang)
                    group.room = found
                    await fb.store.save(room_id, session, job.now)
                await job.bot.notice(
                    RoomId(group.room),
                    "facilitation/breakout_intro",
                    job=(fb.name, "breakout", out.key, group.marker, "intro"),
                    lang=lang,
                    number=number,
                    members=[who(u) for u in group.members],
                    call=session.call,
                )

    async def _create(self, bot: BotContext, group: Group, number: int, lang: str) -> str:
        name = bot.render("facilitation/breakout_name", lang, number=number).body.strip()
        created = await bot.http.post(
            path(*CS, "createRoom"),
            {
                "preset": "private_chat",
                "name": name,
                "invite": list(group.members),
                "room_version": "12",
                "initial_state": [
                    {
                        "type": "m.room.encryption",
                        "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                    },
                    {
                        # The bot's welcome goes out while the members are only invited.
                        "type": "m.room.history_visibility",
                        "state_key": "",
                        "content": {"history_visibility": "invited"},
                    },
                    {
                        "type": "m.room.guest_access",
                        "state_key": "",
                        "content": {"guest_access": "forbidden"},
                    },
                    {
                        "type": "m.room.join_rules",
                        "state_key": "",
                        "content": {"join_rule": "invite"},
                    },
                    {"type": MARKER, "state_key": "", "content": {"marker": group.marker}},
                ],
            },
            label="createRoom (breakout)",
        )
        return str(created["room_id"])

    @staticmethod
    async def _find(bot: BotContext, marker: str) -> str | None:
        """A breakout room created before a crash: joined, and carrying our marker."""
        joined = await bot.http.get(path(*CS, "joined_rooms"), label="joined_rooms")
        for room in joined.get("joined_rooms", []):
            if not isinstance(room, str):
                continue
            try:
                content = await bot.http.get(
                    path(*CS, "rooms", room, "state", MARKER, ""), label="state breakout marker"
                )
            except (NotFound, Forbidden):
                continue
            if content.get("marker") == marker:
                return room
        return None

    # --- summaries and recall -------------------------------------------------------------

    @command(
        "summary",
        aliases=("итог",),
        help_key="facilitation/summary.help",
        params=(FreeText("text", max_length=MAX_SUMMARY_CHARS * 2),),
    )
    async def summary(self, ctx: CommandContext, text: str) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=False)
            if session is None or ctx.event.event_id in session.applied:
                return
            try:
                session.summarise(ctx.sender, text)
            except Refused as e:
                await ctx.reply(e.reason, **e.values)
                return
            await fb.commit(ctx, session)
        await ctx.react("✅")

    @command("recall", aliases=("собрать",), help_key="facilitation/recall.help")
    async def recall(self, ctx: CommandContext) -> None:
        fb = self.bot
        async with fb.lock(ctx.room_id):
            session = await fb.running(ctx, chair=True)
            if session is None or ctx.event.event_id in session.applied:
                return
            if session.breakout is None:
                await ctx.reply("facilitation/breakout_none")
                return
            await self.close(ctx.bot, ctx.room_id, session, ctx.lang, ctx.job())
            await fb.commit(ctx, session)

    async def close(
        self, bot: BotContext, room_id: RoomId, session: Session, lang: str, job: tuple[str, ...]
    ) -> None:
        """Post the groups' summaries, keep them as notes, archive the rooms (by a job)."""
        out = session.breakout
        if out is None:
            return
        groups: list[dict[str, Any]] = [
            {"number": n, "summary": g.summary} for n, g in enumerate(out.groups, 1)
        ]
        await bot.notice(
            room_id, "facilitation/breakout_recall", job=(*job, "recall"), lang=lang, groups=groups
        )
        for g in groups:
            if g["summary"]:
                note = bot.render("facilitation/breakout_note", lang, **g).body.strip()
                if len(session.notes) < 300:
                    session.notes.append(Note("info", note))
        rooms = [g.room for g in out.groups if g.room is not None]
        if out.rooms:
            await bot.jobs.schedule(
                CLOSE_JOB,
                out.key,
                self.bot.clock.now(),
                {"rooms": rooms, "lang": lang, "session": room_id},
                grace_s=7 * 86400,
            )
        session.breakout = None

    @on_job(CLOSE_JOB, grace_s=7 * 86400)
    async def archive(self, job: JobContext) -> None:
        """Goodbye in each temporary room, every member removed (an invitation not taken is
        withdrawn), then the bot leaves and forgets it. Kicks and leaves are idempotent, so a
        retry after a failure only repeats what is left."""
        lang = str(job.payload.get("lang", "ru"))
        for room in job.payload.get("rooms", []):
            if not isinstance(room, str):
                continue
            await job.bot.notice(
                RoomId(room), "facilitation/breakout_closed", job=job.txn(room), lang=lang
            )
            try:
                members = await job.bot.http.get(
                    path(*CS, "rooms", room, "members"), label="breakout members"
                )
            except (NotFound, Forbidden):
                continue  # already left
            for event in members.get("chunk", []):
                user = event.get("state_key")
                membership = (event.get("content") or {}).get("membership")
                if user == job.bot.user_id or membership not in ("join", "invite"):
                    continue
                try:
                    await job.bot.http.post(
                        path(*CS, "rooms", room, "kick"),
                        {"user_id": user, "reason": ""},
                        label="kick (breakout ended)",
                    )
                except (NotFound, Forbidden):
                    log.info("breakout room %s: a member had left already", room)
            try:
                await job.bot.http.post(path(*CS, "rooms", room, "leave"), {}, label="leave")
                await job.bot.http.post(path(*CS, "rooms", room, "forget"), {}, label="forget")
            except (NotFound, Forbidden):
                pass
