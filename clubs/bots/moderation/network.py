"""The network as the moderation bot sees it, shared by its commands, protections and loops.

Its managed rooms and their staff, the policy room and the watcher of its rules, the club
thresholds, where alerts go (a club's own moderators room, else the management room) and the
audit trail. The bot builds one at construction and opens it in `start`, once its context (the
client, the room directory) exists.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from clubs.bots.context import BotContext
from clubs.bots.moderation.detect import Thresholds, club_thresholds
from clubs.bots.moderation.moderator import Moderator
from clubs.bots.moderation.policy import PolicyAction, PolicyWatcher
from clubs.bots.moderation.power import MODERATOR_LEVEL
from clubs.bots.moderation.reports import ReportPoller
from clubs.bots.moderation.store import AuditEntry, ModerationStore, Source
from clubs.bots.rooms import RoomInfo
from clubs.core.adminview import AdminView
from clubs.core.clock import Clock
from clubs.core.db import Database
from clubs.core.http import RoomId, UserId

log = logging.getLogger(__name__)


class Network:
    """One moderation bot's network: its rooms, policy room, alerts and audit."""

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
        self.watcher = PolicyWatcher(())
        self.policy_room: RoomId | None = None
        self.ctx: BotContext | None = None

    async def open(self, ctx: BotContext) -> None:
        """Open the store and the moderator on the bot's context; find or create the policy
        room and apply its rules."""
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
                self.network, moderators=await self.staff()
            )
            self.policy_room = room
            self.watcher = PolicyWatcher([room], protected_servers=[self.mod.server_name])
            self.watcher.note_users(await self.members())
            actions = self.watcher.feed(room, await self.mod.policy_state(room))
            await self.enforce(actions)
            log.info("moderation: policy room %s (%s)", room, "created" if created else "found")

    async def _power_source(self, room_id: RoomId) -> tuple[Any, frozenset[str]]:
        assert self.ctx is not None
        info = await self.ctx.rooms.info(room_id)
        return info.power_levels, info.creators

    async def managed_rooms(self) -> list[RoomId]:
        """The network's rooms the bot is in, the policy room excepted."""
        assert self.ctx is not None
        rooms = []
        await self.ctx.rooms.prefetch(self.ctx.client.joined_rooms())
        for room_id in self.ctx.client.joined_rooms():
            info = await self.ctx.rooms.info(room_id)
            if info.managed and room_id != self.policy_room and info.kind != "policy_room":
                rooms.append(room_id)
        return rooms

    async def members(self) -> set[str]:
        """Everyone in the managed rooms (the policy list's users are matched against them)."""
        assert self.ctx is not None
        members: set[str] = set()
        for room_id in await self.managed_rooms():
            members |= await self.ctx.client.members(room_id)
        return members

    async def staff(self) -> dict[str, int]:
        """People with moderator power anywhere in the network (they manage the policy room)."""
        assert self.ctx is not None
        staff: dict[str, int] = {}
        for room_id in await self.managed_rooms():
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
        for room_id in await self.managed_rooms():
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

    def thresholds(self, room: RoomInfo) -> Thresholds:
        """The protections' settings in `room`: the bot's defaults, with its club's choices."""
        return club_thresholds(self.t, room.settings.get("moderation"))

    async def enforce(self, actions: list[PolicyAction]) -> None:
        """Carry out what a policy change asks for in every managed room, and audit it."""
        if not actions:
            return
        reports = await self.mod.enforce(actions, await self.managed_rooms())
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
