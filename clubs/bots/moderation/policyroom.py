"""The network's policy room: found by its locator or created, its rules written and removed,
and the rooms' server ACLs written from it.

The policy room (`m.policy`, invite-only, encrypted, unfederated) holds the network's ban list
as `m.policy.rule.*` state; it doubles as the moderators' management room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from clubs.bots.moderation.access import RoomAccess
from clubs.bots.moderation.policy import (
    RULE_TYPE,
    RuleKind,
    entity_hash,
    parse_rule,
    rule_content,
    rule_kind,
    rule_state_key,
)
from clubs.core.errors import Forbidden, MatrixError, NotFound, Unreachable
from clubs.core.http import JsonDict, RoomId, UserId, cs
from clubs.core.namespace import LOCATOR, LOCATOR_SCHEMA

log = logging.getLogger(__name__)

MEGOLM = "m.megolm.v1.aes-sha2"
POLICY_ROOM_KIND = "policy_room"
POLICY_ROOM_VERSION = "12"


class PolicyRoom(RoomAccess):
    """The policy room and the server ACLs it asks for."""

    async def find_policy_room(self, network: str, key: str = "bans") -> RoomId | None:
        """The policy room of `network` the bot is joined to, found by its locator."""
        cached = await self.store.find_policy_room(network, key)
        if cached is not None and await self._is_policy_room(cached, network, key):
            return cached
        joined = await self.http.get(cs("joined_rooms"), label="joined_rooms")
        rooms = [RoomId(r) for r in joined.get("joined_rooms", []) if isinstance(r, str)]
        gate = asyncio.Semaphore(self.concurrency)

        async def check(room: RoomId) -> bool:
            async with gate:
                return await self._is_policy_room(room, network, key)

        for room, hit in zip(rooms, await asyncio.gather(*(check(r) for r in rooms)), strict=True):
            if hit:
                await self.store.set_policy_room(network, key, room)
                return room
        return None

    async def ensure_policy_room(
        self,
        network: str,
        *,
        key: str = "bans",
        moderators: Mapping[str, int] | None = None,
        name: str | None = None,
    ) -> tuple[RoomId, bool]:
        """The network's policy room, created if missing: type `m.policy`, invite-only,
        encrypted, unpublished, not federated, only level ≥ 50 may write (rules are state).
        `moderators` (user id → level) are given their level and invited. Returns (room,
        created)."""
        found = await self.find_policy_room(network, key)
        if found is not None:
            return found, False
        moderators = dict(moderators or {})
        locator = {
            "network": network,
            "kind": POLICY_ROOM_KIND,
            "key": key,
            "schema": LOCATOR_SCHEMA,
            "state": "active",
        }
        body: dict[str, Any] = {
            "room_version": POLICY_ROOM_VERSION,
            "preset": "private_chat",
            "visibility": "private",
            "creation_content": {"type": "m.policy", "m.federate": False},
            "initial_state": [
                _state("m.room.join_rules", {"join_rule": "invite"}),
                _state("m.room.history_visibility", {"history_visibility": "joined"}),
                _state("m.room.guest_access", {"guest_access": "forbidden"}),
                _state("m.room.encryption", {"algorithm": MEGOLM}),
                _state(LOCATOR, locator),
            ],
            "power_level_content_override": {
                "users": {u: lvl for u, lvl in moderators.items() if u != self.user_id},
                "users_default": 0,
                "events_default": 50,
                "state_default": 50,
                "invite": 50,
                "kick": 50,
                "ban": 50,
                "redact": 50,
                "events": {
                    "m.room.power_levels": 100,
                    "m.room.encryption": 100,
                    "m.room.history_visibility": 100,
                    "m.room.join_rules": 100,
                    "m.room.guest_access": 100,
                    "m.room.server_acl": 100,
                    "m.room.tombstone": 150,
                    LOCATOR: 100,
                },
            },
            "invite": [u for u in moderators if u != self.user_id],
        }
        if name:
            body["name"] = name
        resp = await self.http.post(cs("createRoom"), body, label="createRoom")
        room = RoomId(resp["room_id"])
        await self.store.set_policy_room(network, key, room)
        log.info("created policy room %s for network %s", room, network)
        return room, True

    async def add_staff(self, policy_room: RoomId, levels: Mapping[str, int]) -> None:
        """Give these people their level in the policy room and invite them (an invite that
        fails, e.g. for someone already there, is skipped)."""
        url = cs("rooms", policy_room, "state", "m.room.power_levels", "")
        pl = await self.http.get(url, label="state m.room.power_levels")
        users = dict(pl.get("users", {}))
        if any(users.get(u) != lvl for u, lvl in levels.items()):
            users.update(levels)
            await self.http.put(url, {**pl, "users": users}, label="policy room staff")
        for user in levels:
            with contextlib.suppress(MatrixError, Unreachable):
                await self.http.post(
                    cs("rooms", policy_room, "invite"), {"user_id": user}, label="invite staff"
                )

    async def put_server_acls(
        self, contents: Mapping[RoomId, Mapping[str, Any]]
    ) -> tuple[list[RoomId], dict[RoomId, str]]:
        """Write each room's `m.room.server_acl` (all at once, up to `concurrency`). Returns the
        rooms changed and, per room, the error code of those that failed."""
        changed: list[RoomId] = []
        failed: dict[RoomId, str] = {}
        gate = asyncio.Semaphore(self.concurrency)

        async def one(room: RoomId, content: Mapping[str, Any]) -> None:
            async with gate:
                try:
                    await self._put_state(room, "m.room.server_acl", "", content)
                    changed.append(room)
                except MatrixError as e:
                    failed[room] = e.errcode

        await asyncio.gather(*(one(r, c) for r, c in contents.items()))
        log.info("server ACL set in %d rooms, %d failed", len(changed), len(failed))
        return changed, failed

    async def add_rule(
        self,
        policy_room: RoomId,
        kind: RuleKind,
        entity: str,
        reason: str,
        *,
        hashed: bool = False,
        actor: UserId | None = None,
    ) -> str:
        """Publish an `m.ban` rule (hashed: only the entity's SHA-256, MSC4205). Returns the
        state key (derived from the entity's hash, so adding the same rule twice is one rule)."""
        state_key = rule_state_key(entity)
        content = rule_content(entity, reason, hashed=hashed)
        await self._put_state(policy_room, RULE_TYPE[kind], state_key, content)
        await self._audit("rule_add", entity, policy_room, reason, actor, "command")
        return state_key

    async def remove_rule(
        self, policy_room: RoomId, kind: RuleKind, entity: str, *, actor: UserId | None = None
    ) -> int:
        """Remove every rule of `kind` naming exactly `entity` (plain or hashed, whoever wrote
        it and under whatever state key) by blanking its content. Returns how many."""
        removed = 0
        digest = entity_hash(entity)
        for event in await self.policy_state(policy_room):
            event_type = str(event.get("type"))
            if rule_kind(event_type) != kind:
                continue
            rule = parse_rule(event_type, event.get("state_key"), event.get("content"))
            if rule is None or (rule.entity != entity and rule.sha256 != digest):
                continue
            await self._put_state(policy_room, event_type, rule.state_key, {})
            removed += 1
        if removed:
            await self._audit("rule_remove", entity, policy_room, None, actor, "command")
        return removed

    async def policy_state(self, policy_room: RoomId) -> list[JsonDict]:
        """The policy room's rule events (current state), to feed a `PolicyWatcher` at start."""
        events = await self.http.get_list(cs("rooms", policy_room, "state"), label="state")
        return [e for e in events if isinstance(e, dict) and rule_kind(str(e.get("type")))]

    async def _is_policy_room(self, room: RoomId, network: str, key: str) -> bool:
        try:
            locator = await self._state(room, LOCATOR)
        except (NotFound, Forbidden):
            return False
        return (
            locator.get("kind") == POLICY_ROOM_KIND
            and locator.get("network") == network
            and locator.get("key") == key
            and locator.get("state", "active") == "active"
        )


def _state(event_type: str, content: Mapping[str, Any], state_key: str = "") -> JsonDict:
    return {"type": event_type, "state_key": state_key, "content": dict(content)}
