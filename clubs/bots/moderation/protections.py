"""Protections: what the bot does on its own when it sees an event.

Metadata protections (flood, join waves, banned users joining) work on every event, encrypted or
not; content protections (mentions, links and media from new members, words, personal data) on
what the bot could decrypt. The decisions are the pure functions of `detect.py`; this module
only feeds them events and acts on their answers. Nobody at or above the moderator threshold,
and no bot, is ever acted against automatically. Registered by the bot as a handler class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clubs.bots.base import ANY_EVENT, on_event
from clubs.bots.context import EventContext
from clubs.bots.moderation.detect import (
    SlidingWindow,
    Thresholds,
    club_words,
    find_personal_data,
    has_link,
    mention_count,
    words_matching,
)
from clubs.bots.moderation.network import Network
from clubs.bots.moderation.policy import rule_kind
from clubs.bots.moderation.power import MODERATOR_LEVEL
from clubs.bots.moderation.upkeep import Upkeep

MESSAGE_TYPES = frozenset({"m.room.message", "m.room.encrypted", "m.sticker"})
MEDIA_TYPES = frozenset({"m.image", "m.video", "m.file", "m.audio"})
COUNTED_MAX = 10_000
"""Event ids remembered as counted for floods (the decrypted copy of one is not counted again)."""


@dataclass
class _Seen:
    """What the bot noticed about members since it started (memory only, bounded by rooms)."""

    joined_at: dict[tuple[str, str], float] = field(default_factory=dict)
    spoke: set[tuple[str, str]] = field(default_factory=set)


class Protections:
    """The protections of one bot, with what they remember (memory only, bounded)."""

    def __init__(self, net: Network, upkeep: Upkeep) -> None:
        self.net = net
        self.upkeep = upkeep
        self.seen = _Seen()
        self._windows: dict[tuple[str, int, float], SlidingWindow] = {}
        """Flood and join-wave counters, one per (kind, limit, window): clubs may differ."""
        self._counted: dict[str, None] = {}
        """Event ids already counted for floods (bounded, insertion-ordered)."""

    @on_event(ANY_EVENT)
    async def watch(self, ctx: EventContext) -> None:
        ev = ctx.event
        if self.net.watcher.watches(ev.room_id):
            if ev.state_key is not None and rule_kind(ev.type) is not None:
                await self.net.enforce(self.net.watcher.feed(ev.room_id, [ev.as_json()]))
                if rule_kind(ev.type) == "server":
                    await self.upkeep.sync_server_acls()
            return
        if not ctx.room.managed or ctx.sender in self.net.mod.bots:
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
            if len(self._counted) > COUNTED_MAX:
                self._counted.pop(next(iter(self._counted)))
        t = self.net.thresholds(ctx.room)
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
        await self.net.enforce(self.net.watcher.note_users([target]))
        # Joins from before the window (seen when the bot itself joins, or after a restart)
        # are history, not a wave.
        t = self.net.thresholds(ctx.room)
        recent = self._recent(ev.origin_server_ts, t.join_wave_window_s)
        joins = self._window("joins", t.join_wave_joins, t.join_wave_window_s)
        wave = first_join and recent and joins.add(ev.room_id, ev.origin_server_ts / 1000)
        if wave and await self.net.mod.lock(ev.room_id, reason="join wave", source="protection"):
            await self.net.alert(
                "moderation/join_wave",
                job=(ev.event_id, "wave"),
                room=ev.room_id,
                joins=t.join_wave_joins,
                seconds=round(t.join_wave_window_s),
            )
            await self.net.audit(
                self.net.mod.user_id,
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
        t = self.net.thresholds(ctx.room)
        new = self._is_new(ctx.room_id, ctx.sender, t)
        words = self.net.words + club_words(ctx.room.settings.get("moderation"))
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
                await self.net.alert(
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
        return self.net.clock.now() - origin_server_ts / 1000 <= window_s

    def _is_new(self, room_id: str, user: str, t: Thresholds) -> bool:
        joined = self.seen.joined_at.get((room_id, user))
        return joined is not None and self.net.clock.now() - joined < t.new_member_hours * 3600

    def _window(self, kind: str, limit: int, window_s: float) -> SlidingWindow:
        key = (kind, limit, window_s)
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = SlidingWindow(limit, window_s)
        return found

    async def _remove(self, ctx: EventContext, reason: str, *, dm_key: str, **values: Any) -> None:
        """Redact one event, tell its sender privately why, record it."""
        await self.net.mod.redact_event(ctx.room_id, ctx.event.event_id, reason)
        await ctx.bot.dm(
            ctx.sender, dm_key, job=ctx.job("why"), lang=ctx.lang, reason=reason, **values
        )
        await self.net.audit(
            self.net.mod.user_id,
            "redact",
            ctx.sender,
            ctx.room_id,
            reason,
            "protection",
            job=ctx.job("audit"),
        )

    async def _auto_mute(self, ctx: EventContext, reason: str) -> None:
        until = self.net.clock.now() + self.net.thresholds(ctx.room).mute_s
        result = await self.net.mod.mute(
            ctx.room_id, ctx.sender, until, reason=reason, source="protection"
        )
        if result.changed:
            await self.net.audit(
                self.net.mod.user_id,
                "mute",
                ctx.sender,
                ctx.room_id,
                reason,
                "protection",
                job=ctx.job("mute"),
            )
