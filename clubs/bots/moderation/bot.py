"""The moderation bot: network-wide bans, protections, reports and an audit trail.

Wiring only: decisions live in `detect.py`, `policy.py` and `power.py` (pure), actions in
`actions.py`, state in `store.py`. The network's policy room doubles as the moderators'
management room (encrypted, invite-only, staff only): rules written there by anyone with the
power to do so apply everywhere, and every action, alert and report is posted there.

Metadata protections (flood, join waves, banned users joining) work on every event, encrypted or
not; content protections (mentions, links and media from new members, words, personal data) on
what the bot could decrypt. Nobody at or above the moderator threshold, and no bot, is ever acted
against automatically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from clubs.bots.args import Choice, Duration, FreeText, Int, User, format_duration
from clubs.bots.base import ANY_EVENT, Bot, on_event
from clubs.bots.commands import command
from clubs.bots.context import BotContext, CommandContext, EventContext
from clubs.bots.moderation.actions import BanReport, Moderator
from clubs.bots.moderation.detect import (
    SlidingWindow,
    Thresholds,
    club_thresholds,
    club_words,
    find_personal_data,
    has_link,
    mention_count,
    words_matching,
)
from clubs.bots.moderation.policy import (
    PolicyAction,
    PolicyWatcher,
    rule_kind,
    server_acl_content,
    server_acl_denies,
)
from clubs.bots.moderation.power import MODERATOR_LEVEL
from clubs.bots.moderation.reports import Report, ReportPoller
from clubs.bots.moderation.store import AuditEntry, ModerationStore, Source
from clubs.bots.rooms import RoomInfo
from clubs.core.adminview import AdminView
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.http import RoomId, UserId, cs
from clubs.core.txn import txn_id

log = logging.getLogger(__name__)

MESSAGE_TYPES = frozenset({"m.room.message", "m.room.encrypted", "m.sticker"})
MEDIA_TYPES = frozenset({"m.image", "m.video", "m.file", "m.audio"})
MUTE_CHECK_S = 5.0
REPORT_POLL_S = 10.0
STAFF_FIRST_S = 1.0
STAFF_EVERY_S = 30.0
PURGE_REDACT_LIMIT = 200
SINCE_MAX_USERS = 500
"""`!since` acts on at most this many of the newest joins."""
SINCE_CONCURRENCY = 10
"""`!purge` also redacts this many of the person's newest messages per room, one by one."""


@dataclass
class _Seen:
    """What the bot noticed about members since it started (memory only, bounded by rooms)."""

    joined_at: dict[tuple[str, str], float] = field(default_factory=dict)
    spoke: set[tuple[str, str]] = field(default_factory=set)


class ModerationBot(Bot):
    name = "moderation"

    def __init__(
        self,
        db: Database,
        *,
        network: str | None,
        admin: AdminView | None = None,
        other_bots: Iterable[str] = (),
        thresholds: Thresholds = Thresholds(),  # noqa: B008 - frozen
        words: Iterable[str] = (),
        clock: Clock,
    ) -> None:
        self.db = db
        self.network = network
        self.admin = admin
        self.other_bots = frozenset(other_bots)
        self.t = thresholds
        self.words = tuple(words)
        self.clock = clock
        self.reports: ReportPoller | None = None
        self._windows: dict[tuple[str, int, float], SlidingWindow] = {}
        """Flood and join-wave counters, one per (kind, limit, window): clubs may differ."""
        self.watcher = PolicyWatcher(())
        self.policy_room: RoomId | None = None
        self.seen = _Seen()
        self._counted: dict[str, None] = {}
        """Event ids already counted for floods (bounded, insertion-ordered)."""
        self.ctx: BotContext | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, ctx: Any) -> None:
        self.ctx = ctx
        self.store = await ModerationStore.open(self.db)
        self.mod = Moderator(
            ctx.http,
            ctx.user_id,
            self.store,
            admin=self.admin,
            clock=self.clock,
            bots=self.other_bots,
            power_source=self._power_source,
        )
        if self.admin is not None:
            self.reports = ReportPoller(self.admin, self.store, clock=self.clock)
        if self.network is not None:
            room, created = await self.mod.ensure_policy_room(
                self.network, moderators=await self._staff()
            )
            self.policy_room = room
            self.watcher = PolicyWatcher([room], protected_servers=[self.mod.server_name])
            self.watcher.note_users(await self._members())
            actions = self.watcher.feed(room, await self.mod.policy_state(room))
            await self._enforce(actions)
            log.info("moderation: policy room %s (%s)", room, "created" if created else "found")
        ctx.spawn(self._lift_mutes_forever(), "mutes")
        ctx.spawn(self._follow_members_forever(), "members")
        if self.reports is not None:
            ctx.spawn(self._poll_reports_forever(), "reports")

    async def _power_source(self, room_id: RoomId) -> tuple[Any, frozenset[str]]:
        assert self.ctx is not None
        info = await self.ctx.rooms.info(room_id)
        return info.power_levels, info.creators

    async def _managed_rooms(self) -> list[RoomId]:
        assert self.ctx is not None
        rooms = []
        await self.ctx.rooms.prefetch(self.ctx.client.joined_rooms())
        for room_id in self.ctx.client.joined_rooms():
            info = await self.ctx.rooms.info(room_id)
            if info.managed and room_id != self.policy_room and info.kind != "policy_room":
                rooms.append(room_id)
        return rooms

    async def _members(self) -> set[str]:
        assert self.ctx is not None
        members: set[str] = set()
        for room_id in await self._managed_rooms():
            members |= await self.ctx.client.members(room_id)
        return members

    async def _staff(self) -> dict[str, int]:
        """People with moderator power anywhere in the network (they manage the policy room)."""
        assert self.ctx is not None
        staff: dict[str, int] = {}
        for room_id in await self._managed_rooms():
            info = await self.ctx.rooms.info(room_id)
            for user in await self.ctx.client.members(room_id):
                level = info.power(user)
                if MODERATOR_LEVEL <= level < 1 << 30 and user not in self.mod.bots:
                    staff[user] = max(staff.get(user, 0), min(level, 100))
        return staff

    # --- the management room -------------------------------------------------------------------

    async def alert(self, key: str, *, job: tuple[str, ...], **values: Any) -> None:
        """Post to the moderators who should know (encrypted): about one club's room, to that
        club's moderators room (`audience: staff`) when the bot is in one — a report carries a
        member's decrypted words, which the staff of other clubs have no need to read; about
        the network (a network-wide ban) or a club without one, to the management room."""
        if self.ctx is None:
            return
        target = await self.moderators_room(values.get("room"))
        if target is None:
            return
        await self.ctx.notice(target, key, job=("moderation", *job), **values)

    async def moderators_room(self, room: str | None) -> RoomId | None:
        """Where alerts about `room` go (None: about the network)."""
        if room is None or self.ctx is None:
            return self.policy_room
        club = (await self.ctx.rooms.info(RoomId(room))).club
        if club is None:
            return self.policy_room
        for room_id in await self._managed_rooms():
            info = await self.ctx.rooms.info(room_id)
            if info.staff_only and info.club == club and info.kind == "club_room":
                return room_id
        return self.policy_room

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        room: RoomId | None,
        reason: str | None,
        source: Source,
        *,
        rooms: int = 1,
        job: tuple[str, ...],
    ) -> None:
        await self.store.record(
            AuditEntry(UserId(actor), action, target, room, reason, source, self.clock.now(), rooms)
        )
        await self.alert(
            "moderation/audit",
            job=("audit", *job),
            actor=actor,
            action=action,
            target=target,
            room=room,
            reason=reason,
            rooms=rooms,
            source=source,
        )

    # --- commands -------------------------------------------------------------------------------

    @command(
        "ban",
        help_key="moderation/ban.help",
        aliases=("бан",),
        min_power=MODERATOR_LEVEL,
        dm=True,
        params=(User("user"), FreeText("reason", max_length=300, default="")),
    )
    async def ban(self, ctx: CommandContext, user: UserId, reason: str) -> None:
        """Network-wide: every managed room at once, then a policy rule (so other moderators'
        clients, new rooms and restarts see it).

        The bans go first: writing the rule first made every ban wait for one more persisted
        event, and writing it alongside them takes one of the fan-out's connections (the last
        ban then waits for it). A crash in between replays the command (the runtime records it
        only once handled): rooms already banned are skipped and the rule is written then. If
        the fan-out itself fails, the rule is still written, and its echo retries the bans."""
        await self._ban_network(ctx, "ban", user, reason, await self._managed_rooms())

    async def _ban_network(
        self, ctx: CommandContext, action: str, user: UserId, reason: str, rooms: list[RoomId]
    ) -> None:
        """Ban in every room at once, then the rule, then tell the moderator (see `ban`);
        `action` "purge" also asks Synapse to serve everything they sent redacted."""
        try:
            report = await self.mod.ban_everywhere(
                user,
                reason or action,
                rooms,
                actor=ctx.sender,
                redact_events=action == "purge",
            )
        finally:
            if self.policy_room is not None:
                await self.mod.add_rule(
                    self.policy_room, "user", user, reason or action, actor=ctx.sender
                )
        await self._fanout_done(ctx, action, user, report, None, reason)

    @command(
        "purge",
        help_key="moderation/purge.help",
        aliases=("вычистить",),
        min_power=MODERATOR_LEVEL,
        dm=True,
        params=(User("user"), FreeText("reason", max_length=300, default="")),
    )
    async def purge(self, ctx: CommandContext, user: UserId, reason: str) -> None:
        """`ban`, and everything the person sent disappears: each ban carries MSC4293's
        `redact_events` (Synapse serves all their events in that room redacted at once, also to
        clients that never heard of the MSC once they reload), then their newest messages are
        redacted one by one as well, for clients that still hold them in a cache."""
        rooms = await self._managed_rooms()
        await self._ban_network(ctx, "purge", user, reason, rooms)
        # The bot's own redactions (not Synapse's admin task): the events are found one by
        # one, so the reply can say how many.
        redacted = await self.mod.redact_recent(
            user,
            rooms,
            PURGE_REDACT_LIMIT,
            reason=reason or None,
            use_admin=False,
            actor=ctx.sender,
        )
        await ctx.reply("moderation/redacted", part="redacted", target=user, count=redacted.count)

    async def _fanout_done(
        self,
        ctx: CommandContext,
        action: str,
        user: UserId,
        report: BanReport,
        room: RoomId | None,
        reason: str | None,
    ) -> None:
        """Tell the moderator what a ban/unban/kick reached, and record it in the audit."""
        await ctx.reply(
            "moderation/done",
            action=action,
            target=user,
            rooms=len(report.done),
            refused=len(report.refused),
            failed=len(report.failed),
        )
        await self.audit(
            ctx.sender,
            action,
            user,
            room,
            reason,
            "command",
            rooms=len(report.done) if room is None else 1,
            job=ctx.job(action),
        )

    @command(
        "unban",
        help_key="moderation/unban.help",
        aliases=("разбан",),
        min_power=MODERATOR_LEVEL,
        dm=True,
        params=(User("user"),),
    )
    async def unban(self, ctx: CommandContext, user: UserId) -> None:
        if self.policy_room is not None:
            await self.mod.remove_rule(self.policy_room, "user", user, actor=ctx.sender)
        report = await self.mod.unban_everywhere(
            user, await self._managed_rooms(), actor=ctx.sender
        )
        await self._fanout_done(ctx, "unban", user, report, None, None)

    @command(
        "kick",
        help_key="moderation/kick.help",
        aliases=("кик",),
        min_power=MODERATOR_LEVEL,
        params=(User("user"), FreeText("reason", max_length=300, default="")),
    )
    async def kick(self, ctx: CommandContext, user: UserId, reason: str) -> None:
        report = await self.mod.kick(user, [ctx.room_id], reason=reason or None, actor=ctx.sender)
        await self._fanout_done(ctx, "kick", user, report, ctx.room_id, reason)

    @command(
        "mute",
        help_key="moderation/mute.help",
        aliases=("мут",),
        min_power=MODERATOR_LEVEL,
        params=(
            User("user"),
            Duration("duration", default=timedelta(minutes=10)),
            FreeText("reason", max_length=300, default=""),
        ),
    )
    async def mute(
        self, ctx: CommandContext, user: UserId, duration: timedelta, reason: str
    ) -> None:
        seconds = duration.total_seconds()
        result = await self.mod.mute(
            ctx.room_id, user, self.clock.now() + seconds, reason=reason or None, actor=ctx.sender
        )
        if result.refused is not None:
            await ctx.reply("moderation/refused_target", target=user)
            return
        await ctx.reply("moderation/muted", target=user, minutes=max(1, round(seconds / 60)))
        await self.audit(
            ctx.sender, "mute", user, ctx.room_id, reason, "command", job=ctx.job("mute")
        )

    @command(
        "unmute",
        help_key="moderation/unmute.help",
        aliases=("размут",),
        min_power=MODERATOR_LEVEL,
        params=(User("user"),),
    )
    async def unmute(self, ctx: CommandContext, user: UserId) -> None:
        await self.mod.unmute(ctx.room_id, user, actor=ctx.sender)
        await ctx.reply(
            "moderation/done", action="unmute", target=user, rooms=1, refused=0, failed=0
        )
        await self.audit(
            ctx.sender, "unmute", user, ctx.room_id, None, "command", job=ctx.job("unmute")
        )

    @command(
        "redact",
        help_key="moderation/redact.help",
        aliases=("удалить",),
        min_power=MODERATOR_LEVEL,
        params=(User("user"), Int("count", minimum=1, maximum=500, default=10)),
    )
    async def redact(self, ctx: CommandContext, user: UserId, count: int) -> None:
        report = await self.mod.redact_recent(user, [ctx.room_id], count, actor=ctx.sender)
        done = report.count if report.redact_id is None else None  # admin task: not counted
        await ctx.reply("moderation/redacted", target=user, count=done)
        await self.audit(
            ctx.sender, "redact", user, ctx.room_id, None, "command", job=ctx.job("redact")
        )

    @command(
        "warn",
        help_key="moderation/warn.help",
        aliases=("предупредить",),
        min_power=MODERATOR_LEVEL,
        params=(User("user"), FreeText("reason", max_length=500)),
    )
    async def warn(self, ctx: CommandContext, user: UserId, reason: str) -> None:
        await ctx.bot.dm(
            user, "moderation/warning", job=ctx.job("warn"), lang=ctx.lang, reason=reason
        )
        await ctx.reply("moderation/done", action="warn", target=user, rooms=1, refused=0, failed=0)
        await self.audit(
            ctx.sender, "warn", user, ctx.room_id, reason, "command", job=ctx.job("warn-audit")
        )

    @command(
        "raid",
        help_key="moderation/raid.help",
        aliases=("рейд",),
        min_power=MODERATOR_LEVEL,
        params=(Choice("mode", options=("on", "off"), synonyms={"вкл": "on", "выкл": "off"}),),
    )
    async def raid(self, ctx: CommandContext, mode: str) -> None:
        if mode == "on":
            await self.mod.lock(ctx.room_id, actor=ctx.sender)
        else:
            await self.mod.unlock(ctx.room_id, actor=ctx.sender)
        await ctx.reply("moderation/raid", mode=mode)
        await self.audit(
            ctx.sender,
            f"raid {mode}",
            ctx.room_id,
            ctx.room_id,
            None,
            "command",
            job=ctx.job("raid"),
        )

    @command(
        "since",
        help_key="moderation/since.help",
        aliases=("недавние",),
        min_power=MODERATOR_LEVEL,
        params=(
            Duration("window", minimum=timedelta(seconds=1), maximum=timedelta(days=7)),
            Choice(
                "action",
                options=("kick", "ban", "mute"),
                synonyms={"кик": "kick", "бан": "ban", "мут": "mute"},
            ),
            FreeText("reason", max_length=300, default=""),
        ),
    )
    async def since(self, ctx: CommandContext, window: timedelta, action: str, reason: str) -> None:
        """After a raid: kick, ban or mute (for as long as a flood mute) everyone who joined
        this room in the last `window`, in this room only. Moderators, bots and creators are
        never touched (the usual refusals)."""
        joined = await self.mod.joined_since(ctx.room_id, self.clock.now() - window.total_seconds())
        targets = [u for u in joined if u != ctx.sender][-SINCE_MAX_USERS:]
        gate = asyncio.Semaphore(SINCE_CONCURRENCY)
        why = reason or "raid"

        async def one(user: UserId) -> bool:
            async with gate:
                if action == "mute":
                    until = self.clock.now() + self.thresholds(ctx.room).mute_s
                    muted = await self.mod.mute(
                        ctx.room_id, user, until, reason=why, actor=ctx.sender
                    )
                    return muted.changed
                if action == "ban":
                    report = await self.mod.ban_everywhere(
                        user, why, [ctx.room_id], actor=ctx.sender
                    )
                else:
                    report = await self.mod.kick(user, [ctx.room_id], reason=why, actor=ctx.sender)
                return bool(report.done)

        done = sum(await asyncio.gather(*(one(u) for u in targets)))
        await ctx.reply(
            "moderation/since",
            action=action,
            done=done,
            found=len(targets),
            window=format_duration(window),
        )
        await self.audit(
            ctx.sender,
            f"{action} since {format_duration(window)}",
            f"{done} of {len(targets)}",
            ctx.room_id,
            reason or None,
            "command",
            job=ctx.job("since"),
        )

    @command(
        "lookup",
        help_key="moderation/lookup.help",
        aliases=("история",),
        min_power=MODERATOR_LEVEL,
        dm=True,
        params=(User("user"),),
    )
    async def lookup(self, ctx: CommandContext, user: UserId) -> None:
        """A user's moderation history, sent privately to the asking moderator."""
        entries = await self.store.history(user, limit=20)
        await ctx.bot.dm(
            ctx.sender,
            "moderation/history",
            job=ctx.job("lookup"),
            lang=ctx.lang,
            target=user,
            entries=entries,
        )

    # --- protections ----------------------------------------------------------------------------

    @on_event(ANY_EVENT)
    async def watch(self, ctx: EventContext) -> None:
        ev = ctx.event
        if self.watcher.watches(ev.room_id):
            if ev.state_key is not None and rule_kind(ev.type) is not None:
                await self._enforce(self.watcher.feed(ev.room_id, [ev.as_json()]))
                if rule_kind(ev.type) == "server":
                    await self.sync_server_acls()
            return
        if not ctx.room.managed or ctx.sender in self.mod.bots:
            return
        if ev.type == "m.room.member" and ev.state_key is not None:
            await self._membership(ctx)
            return
        if ev.type not in MESSAGE_TYPES or ctx.room.power(ctx.sender) >= MODERATOR_LEVEL:
            return
        if ev.event_id in self._counted:
            first_sight = False  # the decrypted copy of an event already counted
        else:
            first_sight = True
            self._counted[ev.event_id] = None
            if len(self._counted) > 10_000:
                self._counted.pop(next(iter(self._counted)))
        t = self.thresholds(ctx.room)
        recent = self._recent(ev.origin_server_ts, t.flood_window_s)
        flood = self._window("flood", t.flood_messages, t.flood_window_s)
        if (
            first_sight
            and recent
            and flood.add(f"{ev.room_id}|{ev.sender}", ev.origin_server_ts / 1000)
        ):
            await self._auto_mute(ctx, "flood")
            return
        if (ev.type == "m.room.message" and ev.decrypted) or not ev.encrypted:
            await self._content(ctx)
        self.seen.spoke.add((ev.room_id, ev.sender))

    async def _membership(self, ctx: EventContext) -> None:
        ev = ctx.event
        membership = ev.content.get("membership")
        target = ev.state_key or ""
        if membership != "join":
            return
        key = (ev.room_id, target)
        first_join = key not in self.seen.joined_at
        self.seen.joined_at[key] = ev.origin_server_ts / 1000
        await self._enforce(self.watcher.note_users([target]))
        # Joins from before the window (seen when the bot itself joins, or after a restart)
        # are history, not a wave.
        t = self.thresholds(ctx.room)
        recent = self._recent(ev.origin_server_ts, t.join_wave_window_s)
        joins = self._window("joins", t.join_wave_joins, t.join_wave_window_s)
        wave = first_join and recent and joins.add(ev.room_id, ev.origin_server_ts / 1000)
        if wave and await self.mod.lock(ev.room_id, reason="join wave", source="protection"):
            await self.alert(
                "moderation/join_wave",
                job=(ev.event_id, "wave"),
                room=ev.room_id,
                joins=t.join_wave_joins,
                seconds=round(t.join_wave_window_s),
            )
            await self.audit(
                self.mod.user_id,
                "raid on",
                ev.room_id,
                ev.room_id,
                "join wave",
                "protection",
                job=(ev.event_id, "wave"),
            )

    async def _content(self, ctx: EventContext) -> None:
        msg = ctx.message
        if msg is None:
            return
        body = msg.body or ""
        t = self.thresholds(ctx.room)
        new = self._is_new(ctx.room_id, ctx.sender, t)
        words = self.words + club_words(ctx.room.settings.get("moderation"))
        reason: str | None = None
        if (
            mention_count(
                ctx.event.content.get("m.mentions", {}).get("user_ids")
                if isinstance(ctx.event.content.get("m.mentions"), dict)
                else None,
                body,
            )
            > t.max_mentions
        ):
            reason = "mentions"
        elif new and has_link(body):
            reason = "link"
        elif (
            new and msg.msgtype in MEDIA_TYPES and (ctx.room_id, ctx.sender) not in self.seen.spoke
        ):
            reason = "media"
        elif words and words_matching(body, words):
            reason = "words"
        if reason is not None:
            await self._remove(ctx, reason, dm_key="moderation/removed")
            return
        kinds = find_personal_data(body) if t.personal_data != "off" else []
        if kinds:
            if t.personal_data == "redact":
                await self._remove(
                    ctx, "personal_data", dm_key="moderation/personal_data", kinds=kinds
                )
            else:
                await self.alert(
                    "moderation/flagged",
                    job=(ctx.event.event_id, "flag"),
                    room=ctx.room_id,
                    sender=ctx.sender,
                    event_id=ctx.event.event_id,
                    kinds=kinds,
                )

    def _recent(self, origin_server_ts: int, window_s: float) -> bool:
        """Whether an event falls inside a rate window ending now (old events replayed after
        the bot joined or restarted never trip a rate protection)."""
        return self.clock.now() - origin_server_ts / 1000 <= window_s

    def _is_new(self, room_id: str, user: str, t: Thresholds) -> bool:
        joined = self.seen.joined_at.get((room_id, user))
        return joined is not None and self.clock.now() - joined < t.new_member_hours * 3600

    def thresholds(self, room: RoomInfo) -> Thresholds:
        """The protections' settings in `room`: the bot's defaults, with its club's choices."""
        return club_thresholds(self.t, room.settings.get("moderation"))

    def _window(self, kind: str, limit: int, window_s: float) -> SlidingWindow:
        key = (kind, limit, window_s)
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = SlidingWindow(limit, window_s)
        return found

    async def _remove(self, ctx: EventContext, reason: str, *, dm_key: str, **values: Any) -> None:
        """Redact one event, tell its sender privately why, record it."""
        await self.mod.http.put(
            cs(
                "rooms",
                ctx.room_id,
                "redact",
                ctx.event.event_id,
                txn_id("redact", ctx.event.event_id),
            ),
            {"reason": reason},
            label="redact",
        )
        await ctx.bot.dm(
            ctx.sender, dm_key, job=ctx.job("why"), lang=ctx.lang, reason=reason, **values
        )
        await self.audit(
            self.mod.user_id,
            "redact",
            ctx.sender,
            ctx.room_id,
            reason,
            "protection",
            job=ctx.job("audit"),
        )

    async def _auto_mute(self, ctx: EventContext, reason: str) -> None:
        until = self.clock.now() + self.thresholds(ctx.room).mute_s
        result = await self.mod.mute(
            ctx.room_id, ctx.sender, until, reason=reason, source="protection"
        )
        if result.changed:
            await self.audit(
                self.mod.user_id,
                "mute",
                ctx.sender,
                ctx.room_id,
                reason,
                "protection",
                job=ctx.job("mute"),
            )

    async def _enforce(self, actions: list[PolicyAction]) -> None:
        if not actions:
            return
        reports = await self.mod.enforce(actions, await self._managed_rooms())
        for action, report in zip(actions, reports, strict=False):
            await self.audit(
                self.mod.user_id,
                action.kind,
                action.user_id,
                None,
                action.rule.reason,
                "policy",
                rooms=len(report.done),
                job=("policy", action.kind, action.user_id, action.rule.state_key),
            )

    # --- background -----------------------------------------------------------------------------

    async def _follow_members_forever(self) -> None:
        """Keep the management room's staff and the policy list's users current: at start (once
        the first syncs have brought the rooms' members in) and then every half minute."""
        await self.clock.sleep(STAFF_FIRST_S)
        while True:
            try:
                await self.sync_staff()
                await self._enforce(self.watcher.note_users(await self._members()))
                await self.sync_server_acls()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("moderation: following members failed: %s", type(e).__name__)
            await self.clock.sleep(STAFF_EVERY_S)

    async def sync_server_acls(self) -> int:
        """Keep every managed room's `m.room.server_acl` denying the servers the ban list bans
        (`m.policy.rule.server`): a banned server's users then cannot even reach the room over
        federation, not only those the bot already knows. The rooms' current ACLs come from the
        room directory (already loaded), so a round with nothing to change sends nothing.
        Returns how many rooms changed."""
        if self.policy_room is None or self.ctx is None:
            return 0
        deny = server_acl_denies(self.watcher.rules, self.watcher.protected_servers)
        wanted: dict[RoomId, dict[str, Any]] = {}
        for room_id in await self._managed_rooms():
            content = server_acl_content((await self.ctx.rooms.info(room_id)).server_acl, deny)
            if content is not None:
                wanted[room_id] = content
        if not wanted:
            return 0
        changed, _ = await self.mod.put_server_acls(wanted)
        for room_id in wanted:
            self.ctx.rooms.invalidate(room_id)  # read anew, whether the write went through or not
        if changed:
            await self.audit(
                self.mod.user_id,
                "server ACL",
                ", ".join(deny) or "-",
                changed[0] if len(changed) == 1 else None,
                None,
                "policy",
                rooms=len(changed),
                # Not replayed from an event (a restart re-checks the rooms instead): the time
                # keeps a later return to the same list from being taken for this one.
                job=("acl", ",".join(deny), str(int(self.clock.now() * 1000))),
            )
        return len(changed)

    async def sync_staff(self) -> int:
        """Invite everyone with moderator power in a managed room to the management room, at
        their level. Returns how many were added. Someone who was there once and left (or
        declined, or was removed) is not invited again: that was somebody's decision."""
        assert self.ctx is not None
        if self.policy_room is None:
            return 0
        staff = await self._staff()
        state = await self.ctx.client.room_state(self.policy_room)
        known = {
            ev.get("state_key")
            for ev in state
            if ev.get("type") == "m.room.member" and isinstance(ev.get("state_key"), str)
        }
        missing = {u: lvl for u, lvl in staff.items() if u not in known}
        if not missing:
            return 0
        url = cs("rooms", self.policy_room, "state", "m.room.power_levels", "")
        pl = await self.mod.http.get(url, label="state m.room.power_levels")
        users = dict(pl.get("users", {}))
        if any(users.get(u) != lvl for u, lvl in missing.items()):
            users.update(missing)
            await self.mod.http.put(url, {**pl, "users": users}, label="policy room staff")
        for user in missing:
            with contextlib.suppress(Exception):
                await self.mod.http.post(
                    cs("rooms", self.policy_room, "invite"),
                    {"user_id": user},
                    label="invite staff",
                )
        log.info("moderation: invited %d staff member(s) to the management room", len(missing))
        return len(missing)

    async def _lift_mutes_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.mod.lift_due_mutes()
            await self.clock.sleep(MUTE_CHECK_S)

    async def _poll_reports_forever(self) -> None:
        assert self.reports is not None
        while True:
            try:
                for report in await self.reports.poll():
                    await self._report(report)
                    await self.reports.acknowledge(report)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("moderation: report polling failed: %s", type(e).__name__)
            await self.clock.sleep(REPORT_POLL_S)

    async def _report(self, report: Report) -> None:
        assert self.ctx is not None
        assert self.reports is not None
        context: str | None = None
        raw = await self.reports.event_json(report)
        if raw is not None:
            # The admin API returns the PDU, which carries no event id (it is the PDU's hash).
            raw = {"event_id": report.event_id, **raw}
            decrypted = await self.ctx.client.decrypt_json(report.room_id, raw)
            if decrypted is not None:
                body = decrypted.content.get("body")
                context = body[:1000] if isinstance(body, str) else None
        await self.alert(
            "moderation/report",
            job=("report", str(report.report_id)),
            report_id=report.report_id,
            room=report.room_id,
            event_id=report.event_id,
            reporter=report.reporter,
            sender=report.sender,
            reason=report.reason,
            context=context,
        )
