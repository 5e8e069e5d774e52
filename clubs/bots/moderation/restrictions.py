"""Timed mutes and raid locks: changes that must be undone later, also after a restart.

A mute lowers one member's power level below what any event needs; a raid lock sets the room's
join rules to invite-only. What must be restored (the previous level, the previous join rules)
is recorded in the store *before* the change is sent, so a restart can always undo it, and an
undo never overwrites a change someone else made in the meantime.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clubs.bots.moderation.access import RoomAccess
from clubs.bots.moderation.power import Refusal, mute_level, with_user_level
from clubs.bots.moderation.store import Lock, Mute, Source
from clubs.core.errors import Forbidden, MatrixError, NotFound, Unreachable
from clubs.core.http import RoomId, UserId
from clubs.core.power import level_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MuteResult:
    changed: bool
    mute: Mute | None = None
    """The mute now in force (also when an existing one was only extended)."""
    refused: Refusal | None = None


class Restrictions(RoomAccess):
    """Timed mutes and raid locks."""

    async def mute(
        self,
        room_id: RoomId,
        user_id: UserId,
        until: float,
        *,
        reason: str | None = None,
        actor: UserId | None = None,
        source: Source = "command",
    ) -> MuteResult:
        """Lower `user_id`'s power level below what any event needs, until `until` (epoch s).

        Muting someone already muted by the bot only moves the end time. Someone who already
        cannot send anything is left alone (nothing to restore later).
        """
        async with self._lock(room_id):
            pl, creators = await self._power(room_id, fresh=True)
            why = self._refuses(pl, creators, user_id, "mute")
            if why:
                return MuteResult(False, refused=why)
            current = level_of(pl, user_id, creators)
            existing = await self.store.find_mute(room_id, user_id)
            if existing is not None and current == existing.muted_level:
                extended = Mute(
                    room_id, user_id, existing.previous_level, existing.muted_level, until
                )
                await self.store.put_mute(extended)
                await self._audit("mute", user_id, room_id, reason, actor, source)
                return MuteResult(False, extended)
            level = mute_level(pl)
            if current <= level:
                return MuteResult(False)
            mute = Mute(room_id, user_id, _entry(pl, user_id), level, until)
            # Recorded first: whatever happens to the PUT, a later lift can undo it. If the PUT
            # never took effect, the lift finds another level there and only drops the record.
            await self.store.put_mute(mute)
            try:
                await self._put_state(
                    room_id, "m.room.power_levels", "", with_user_level(pl, user_id, level)
                )
            except MatrixError:  # refused by the server: certainly not applied
                await self.store.delete_mute(room_id, user_id)
                raise
        await self._audit("mute", user_id, room_id, reason, actor, source)
        log.info("muted %s in %s until %d", user_id, room_id, int(until))
        return MuteResult(True, mute)

    async def unmute(
        self,
        room_id: RoomId,
        user_id: UserId,
        *,
        actor: UserId | None = None,
        source: Source = "command",
    ) -> bool:
        """Restore the level recorded when the bot muted the user. Returns whether the power
        levels changed (not if someone already changed that user's level since)."""
        async with self._lock(room_id):
            mute = await self.store.find_mute(room_id, user_id)
            if mute is None:
                return False
            pl = await self._state(room_id, "m.room.power_levels")
            changed = False
            if _entry(pl, user_id) == mute.muted_level:
                content = with_user_level(pl, user_id, mute.previous_level)
                await self._put_state(room_id, "m.room.power_levels", "", content)
                changed = True
            await self.store.delete_mute(room_id, user_id)
        await self._audit("unmute", user_id, room_id, None, actor, source)
        log.info("unmuted %s in %s (restored: %s)", user_id, room_id, changed)
        return changed

    async def lift_due_mutes(self, now: float | None = None) -> list[Mute]:
        """Lift every mute whose time is up; returns those resolved. A mute that cannot be
        lifted for a passing reason (server error, network) stays for the next call; one in a
        room the bot can no longer act in (403/404) is dropped with a warning."""
        now = self.clock.now() if now is None else now
        resolved = []
        for mute in await self.store.due_mutes(now):
            try:
                await self.unmute(mute.room_id, mute.user_id, actor=self.user_id, source="timer")
            except (Forbidden, NotFound) as e:
                log.warning(
                    "cannot lift mute of %s in %s (%s); dropping it",
                    mute.user_id,
                    mute.room_id,
                    e.errcode,
                )
                await self.store.delete_mute(mute.room_id, mute.user_id)
            except MatrixError as e:
                log.warning("lifting mute in %s failed (%s); will retry", mute.room_id, e.errcode)
                continue
            except Unreachable as e:
                log.warning("lifting mute in %s failed (%s); will retry", mute.room_id, type(e))
                continue
            resolved.append(mute)
        return resolved

    # --- raid mode --------------------------------------------------------------------------

    async def lock(
        self,
        room_id: RoomId,
        *,
        reason: str | None = None,
        actor: UserId | None = None,
        source: Source = "command",
    ) -> bool:
        """Set the room's join rules to invite, remembering the previous ones. Returns whether
        anything changed (not if the room is already invite-only, locked by the bot or not)."""
        async with self._lock(room_id):
            current = await self._join_rules(room_id)
            if current.get("join_rule") == "invite":
                return False
            # A record left by a lock that never took effect (or was undone by hand) is
            # replaced: what is open now is what an unlock must bring back.
            await self.store.put_lock(Lock(room_id, current, self.clock.now()))
            try:
                await self._put_state(room_id, "m.room.join_rules", "", {"join_rule": "invite"})
            except MatrixError:  # refused by the server: certainly not applied
                await self.store.delete_lock(room_id)
                raise
        await self._audit("lock", room_id, room_id, reason, actor, source)
        log.info("locked %s to invite", room_id)
        return True

    async def unlock(
        self, room_id: RoomId, *, actor: UserId | None = None, source: Source = "command"
    ) -> bool:
        """Restore the join rules recorded by `lock`, unless someone changed them since."""
        async with self._lock(room_id):
            lock = await self.store.find_lock(room_id)
            if lock is None:
                return False
            current = await self._join_rules(room_id)
            changed = False
            if current.get("join_rule") == "invite":
                await self._put_state(room_id, "m.room.join_rules", "", lock.previous_join_rules)
                changed = True
            await self.store.delete_lock(room_id)
        await self._audit("unlock", room_id, room_id, None, actor, source)
        log.info("unlocked %s (restored: %s)", room_id, changed)
        return changed


def _entry(power_levels: Mapping[str, Any], user_id: str) -> int | None:
    """The user's explicit entry in `users`, or None."""
    users = power_levels.get("users")
    if not isinstance(users, Mapping):
        return None
    value = users.get(user_id)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
