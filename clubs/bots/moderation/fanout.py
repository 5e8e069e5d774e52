"""Bans, unbans and kicks across many rooms at once.

A network-wide action fans out over the rooms concurrently (up to `concurrency` requests), each
room on its own: a room that fails or refuses is reported and never stops the others. Rooms
where there is nothing to do (already banned, not banned, not a member) are skipped without a
write. Nobody at or above the moderator threshold, no bot and no room creator is ever acted
against (`power.refusal`), whichever path asks: command, protection, policy rule or report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from clubs.bots.moderation.access import RoomAccess
from clubs.bots.moderation.policy import PolicyAction
from clubs.bots.moderation.power import Refusal
from clubs.bots.moderation.store import Source
from clubs.core.errors import MatrixError, Unreachable
from clubs.core.http import RoomId, UserId, cs

log = logging.getLogger(__name__)

FanoutAction = Literal["ban", "unban", "kick"]
REDACT_EVENTS = "org.matrix.msc4293.redact_events"
"""In a ban's content: the banned person's events in the room are served redacted (MSC4293)."""


@dataclass
class BanReport:
    """The outcome of one ban, unban or kick across a set of rooms."""

    action: FanoutAction
    user_id: UserId
    done: list[RoomId] = field(default_factory=list)
    skipped: list[RoomId] = field(default_factory=list)
    """Nothing to do there: already banned (ban), not banned or banned by someone else (unban),
    not in the room (kick)."""
    refused: dict[RoomId, Refusal] = field(default_factory=dict)
    failed: dict[RoomId, str] = field(default_factory=dict)
    """Room → errcode (or the network error's name); the other rooms went ahead."""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused


class Fanout(RoomAccess):
    """Bans, unbans and kicks in many rooms at once, and who joined a room lately."""

    async def ban_everywhere(
        self,
        user_id: UserId,
        reason: str,
        rooms: Iterable[RoomId],
        *,
        actor: UserId | None = None,
        source: Source = "command",
        redact_events: bool = False,
    ) -> BanReport:
        """Ban `user_id` in every room at once, skipping rooms where they are already banned.
        With `redact_events` each ban also asks (MSC4293) for everything they sent in the room
        to be served redacted from then on.

        Per room: the power levels (from `power_source` if given, else one GET), the target's
        membership (one admin request for all rooms when an admin client is configured, else one
        GET per room), then the ban. All rooms go at once (up to `concurrency`): Synapse stamps
        each ban event when it creates it, before its persistence queue, so letting every
        request in early is what makes the last ban land soon after the command.
        """
        memberships = await self._memberships_of(user_id)

        async def one(room: RoomId, report: BanReport) -> None:
            facts = await self._facts(room, user_id, memberships)
            if facts.membership == "ban":
                report.skipped.append(room)
                return
            if why := self._refusal(facts, user_id, "ban"):
                report.refused[room] = why
                return
            body: dict[str, Any] = {"user_id": user_id}
            if reason:
                body["reason"] = reason
            if redact_events:
                body[REDACT_EVENTS] = True
            await self.http.post(cs("rooms", room, "ban"), body, label="ban")
            report.done.append(room)

        return await self._fanout("ban", user_id, rooms, one, reason, actor, source)

    async def unban_everywhere(
        self,
        user_id: UserId,
        rooms: Iterable[RoomId],
        *,
        reason: str | None = None,
        only_own_bans: bool = False,
        actor: UserId | None = None,
        source: Source = "command",
    ) -> BanReport:
        """Lift the ban wherever `user_id` is banned. With `only_own_bans`, only bans this bot
        sent are lifted (a policy rule going away must not undo a moderator's own room ban)."""

        async def one(room: RoomId, report: BanReport) -> None:
            membership, sender = await self._member(room, user_id)
            if membership != "ban" or (only_own_bans and sender != self.user_id):
                report.skipped.append(room)
                return
            body = {"user_id": user_id, "reason": reason} if reason else {"user_id": user_id}
            await self.http.post(cs("rooms", room, "unban"), body, label="unban")
            report.done.append(room)

        return await self._fanout("unban", user_id, rooms, one, reason, actor, source)

    async def kick(
        self,
        user_id: UserId,
        rooms: Iterable[RoomId],
        *,
        reason: str | None = None,
        actor: UserId | None = None,
        source: Source = "command",
    ) -> BanReport:
        """Kick `user_id` from every room where they are joined, invited or knocking."""
        memberships = await self._memberships_of(user_id)

        async def one(room: RoomId, report: BanReport) -> None:
            facts = await self._facts(room, user_id, memberships)
            if facts.membership not in ("join", "invite", "knock"):
                report.skipped.append(room)
                return
            if why := self._refusal(facts, user_id, "kick"):
                report.refused[room] = why
                return
            body = {"user_id": user_id, "reason": reason} if reason else {"user_id": user_id}
            await self.http.post(cs("rooms", room, "kick"), body, label="kick")
            report.done.append(room)

        return await self._fanout("kick", user_id, rooms, one, reason, actor, source)

    async def joined_since(self, room: RoomId, since: float) -> list[UserId]:
        """Who joined `room` at or after `since` (epoch s) and is still joined, oldest first,
        from the room's current member events (so it survives a restart of the bot). A member
        event that only changed a profile (join after join) is not a join."""
        state = await self.http.get_list(cs("rooms", room, "state"), label="room state")
        joins: list[tuple[int, UserId]] = []
        for ev in state:
            if not isinstance(ev, dict) or ev.get("type") != "m.room.member":
                continue
            content, user, ts = ev.get("content"), ev.get("state_key"), ev.get("origin_server_ts")
            if not isinstance(content, dict) or content.get("membership") != "join":
                continue
            if not isinstance(user, str) or not isinstance(ts, int) or ts < since * 1000:
                continue
            unsigned = ev.get("unsigned")
            before = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
            if isinstance(before, dict) and before.get("membership") == "join":
                continue  # a display name or avatar change
            joins.append((ts, UserId(user)))
        return [user for _, user in sorted(joins)]

    async def enforce(
        self, actions: Iterable[PolicyAction], rooms: Sequence[RoomId]
    ) -> list[BanReport]:
        """Carry out what a policy change asks for across `rooms` (ban with the rule's reason;
        unban only where this bot's ban stands, and only if no other rule still bans them)."""
        reports = []
        for action in actions:
            user = UserId(action.user_id)
            if action.kind == "ban":
                reports.append(
                    await self.ban_everywhere(user, action.rule.reason, rooms, source="policy")
                )
            else:
                reports.append(
                    await self.unban_everywhere(user, rooms, only_own_bans=True, source="policy")
                )
        return reports

    async def _fanout(
        self,
        action: FanoutAction,
        user_id: UserId,
        rooms: Iterable[RoomId],
        one: Callable[[RoomId, BanReport], Awaitable[None]],
        reason: str | None,
        actor: UserId | None,
        source: Source,
    ) -> BanReport:
        report = BanReport(action, user_id)
        started = self.clock.monotonic()
        gate = asyncio.Semaphore(self.concurrency)

        async def guarded(room: RoomId) -> None:
            async with gate:
                try:
                    await one(room, report)
                except MatrixError as e:
                    report.failed[room] = e.errcode
                except Unreachable as e:
                    report.failed[room] = type(e).__name__

        unique = list(dict.fromkeys(rooms))
        async with asyncio.TaskGroup() as tg:
            for room in unique:
                tg.create_task(guarded(room))
        report.elapsed_s = self.clock.monotonic() - started
        log.info(
            "%s %s: %d done, %d skipped, %d refused, %d failed of %d rooms in %.3fs",
            action,
            user_id,
            len(report.done),
            len(report.skipped),
            len(report.refused),
            len(report.failed),
            len(unique),
            report.elapsed_s,
        )
        if report.done:
            await self._audit(
                action,
                user_id,
                report.done[0] if len(unique) == 1 else None,
                reason,
                actor,
                source,
                rooms=len(report.done),
            )
        return report
