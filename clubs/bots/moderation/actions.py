"""The moderation bot's hands: bans, kicks, mutes, raid locks, redactions and the policy room.

Everything here is plain client-server HTTP with the bot's own token (plus Synapse's admin API
when an admin client is given): membership, power levels, join rules, redactions and policy
rules are room state or unencrypted events, so no E2EE client is needed.

- Network-wide actions fan out over rooms concurrently (bounded), each room on its own: a room
  that fails or refuses is reported and never stops the others. Rooms where there is nothing to
  do (already banned, not banned, not a member) are skipped without a write.
- Nobody at or above the moderator threshold, no bot and no room creator is ever acted against
  (`power.refusal`), whichever path asks: command, protection, policy rule or report.
- Power levels and join rules are changed read-modify-write under a per-room lock, one user's
  entry at a time; what must be restored later (the previous level, the previous join rules) is
  recorded in the store *before* the change is sent, so a restart can always undo it, and an
  undo never overwrites a change someone else made in the meantime.

Logs carry ids, counts and durations only: never reasons, never message content.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from clubs.bots.moderation.policy import (
    RULE_TYPE,
    PolicyAction,
    RuleKind,
    entity_hash,
    parse_rule,
    rule_content,
    rule_kind,
    rule_state_key,
)
from clubs.bots.moderation.power import (
    MODERATOR_LEVEL,
    Action,
    Refusal,
    mute_level,
    refusal,
    with_user_level,
)
from clubs.bots.moderation.store import AuditEntry, Lock, ModerationStore, Mute, Source
from clubs.core.adminview import AdminView
from clubs.core.clock import Clock
from clubs.core.errors import Forbidden, MatrixError, NotFound, Unreachable
from clubs.core.http import EventId, JsonDict, MatrixHttp, RoomId, UserId, cs
from clubs.core.namespace import LOCATOR, LOCATOR_SCHEMA
from clubs.core.power import creators_of, level_of
from clubs.core.txn import txn_id

log = logging.getLogger(__name__)

MEGOLM = "m.megolm.v1.aes-sha2"
POLICY_ROOM_KIND = "policy_room"
POLICY_ROOM_VERSION = "12"
DEFAULT_CONCURRENCY = 100
"""Requests in flight for one fan-out (the HTTP client's connection pool also allows 100).
Measured against Synapse 1.163 on SQLite, 100 rooms under load: at 100 the last ban event is stamped
~0.8-1.0 s after the start, at 64 ~1.7-1.9 s, at 32 ~2.4-2.8 s: Synapse stamps an event when it
creates it and persists events one by one afterwards, so a request that waits on our side for
a free slot also waits behind the persistence of every earlier ban."""
MESSAGES_PAGE = 100
MAX_HISTORY_PAGES = 20
"""How far back `redact_recent` pages through one room on the client path (20 × 100 events)."""
ADMIN_REDACT_TIMEOUT_S = 60.0

FanoutAction = Literal["ban", "unban", "kick"]
REDACT_EVENTS = "org.matrix.msc4293.redact_events"
"""In a ban's content: the banned person's events in the room are served redacted (MSC4293)."""
PowerSource = Callable[[RoomId], Awaitable[tuple[Mapping[str, Any], frozenset[str]]]]
"""Where the checks read a room's (power levels, creators) from: the runtime's room cache,
invalidated on every state event, saves one request per room on the critical path."""


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


@dataclass(frozen=True)
class MuteResult:
    changed: bool
    mute: Mute | None = None
    """The mute now in force (also when an existing one was only extended)."""
    refused: Refusal | None = None


@dataclass
class RedactReport:
    user_id: UserId
    redacted: dict[RoomId, list[EventId]] = field(default_factory=dict)
    """Client path: the events redacted per room (admin path: not known, see `redact_id`)."""
    refused: dict[RoomId, Refusal] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Event id (or room id when a room could not be read) → errcode or reason code."""
    redact_id: str | None = None
    """Admin path: Synapse's background task id."""
    elapsed_s: float = 0.0

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.redacted.values())


def _already_redacted(event: Mapping[str, Any]) -> bool:
    """Redacted by a redaction event. An event that a ban with MSC4293's `redact_events` only
    makes Synapse serve redacted (`redacted_because` is then the ban) still gets a real
    redaction: clients that cached it, and know nothing of the MSC, learn of it only so."""
    unsigned = event.get("unsigned")
    if not isinstance(unsigned, Mapping) or "redacted_because" not in unsigned:
        return False
    because = unsigned["redacted_because"]
    return not (isinstance(because, Mapping) and because.get("type") == "m.room.member")


@dataclass(frozen=True)
class _Failure:
    code: str
    """An errcode, or the name of the network error."""


@dataclass(frozen=True)
class _Facts:
    power_levels: Mapping[str, Any]
    creators: frozenset[str]
    membership: str | None
    member_sender: str | None


class Moderator:
    """One moderation bot account's actions, with its store for what must be undone later."""

    def __init__(
        self,
        http: MatrixHttp,
        user_id: UserId,
        store: ModerationStore,
        *,
        admin: AdminView | None = None,
        clock: Clock,
        bots: Iterable[str] = (),
        moderator_level: int = MODERATOR_LEVEL,
        concurrency: int = DEFAULT_CONCURRENCY,
        power_source: PowerSource | None = None,
    ) -> None:
        self.http = http
        self.user_id = user_id
        self.store = store
        self.admin = admin
        self.clock = clock
        self.bots = frozenset(bots) | {user_id}
        self.moderator_level = moderator_level
        self.concurrency = concurrency
        self.power_source = power_source
        self._creators: dict[RoomId, frozenset[str]] = {}
        self._locks: dict[RoomId, asyncio.Lock] = {}

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]

    # --- bans and kicks across rooms --------------------------------------------------------

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

    # --- timed mutes ------------------------------------------------------------------------

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
            why = refusal(
                pl,
                self.user_id,
                user_id,
                action="mute",
                creators=creators,
                bots=self.bots,
                moderator_level=self.moderator_level,
            )
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
                await self._put_state(room_id, "m.room.power_levels", "", _with(pl, user_id, level))
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
                content = _with(pl, user_id, mute.previous_level)
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

    # --- redactions -------------------------------------------------------------------------

    async def redact_recent(
        self,
        user_id: UserId,
        rooms: Sequence[RoomId],
        limit: int,
        *,
        reason: str | None = None,
        use_admin: bool | None = None,
        actor: UserId | None = None,
        source: Source = "command",
    ) -> RedactReport:
        """Redact the newest `limit` events of `user_id` in each of `rooms`.

        Client path (default without an admin client): page `/messages` backwards filtered by
        sender, skip state and already redacted events, and redact each with a txn id derived
        from the event, so a retry never sends a second redaction. Admin path (`use_admin`, or
        by default when an admin client is configured and the user is local): one
        `POST /_synapse/admin/v1/user/<id>/redact` for all rooms, polled to completion; Synapse
        then also redacts the user's join events (profile data) within the same `limit`.
        """
        if limit <= 0:
            raise ValueError("limit must be positive")
        started = self.clock.monotonic()
        report = RedactReport(user_id)
        allowed: list[RoomId] = []
        gate = asyncio.Semaphore(self.concurrency)
        checks = [self._redact_refusal(r, user_id, gate) for r in rooms]
        for room, why in zip(rooms, await asyncio.gather(*checks), strict=True):
            if isinstance(why, _Failure):
                report.failed[room] = why.code
            elif why is not None:
                report.refused[room] = why
            else:
                allowed.append(room)
        local = user_id.endswith(":" + self.server_name)
        admin = use_admin if use_admin is not None else (self.admin is not None and local)
        if allowed:
            if admin:
                await self._redact_admin(user_id, allowed, limit, reason, report)
            else:
                async with asyncio.TaskGroup() as tg:
                    for room in allowed:
                        tg.create_task(
                            self._redact_room(room, user_id, limit, reason, gate, report)
                        )
        report.elapsed_s = self.clock.monotonic() - started
        log.info(
            "redacted %d events of %s in %d rooms (%d refused, %d failed) in %.3fs",
            report.count,
            user_id,
            len(allowed),
            len(report.refused),
            len(report.failed),
            report.elapsed_s,
        )
        await self._audit(
            "redact",
            user_id,
            rooms[0] if len(rooms) == 1 else None,
            reason,
            actor,
            source,
            rooms=len(allowed),
        )
        return report

    async def _redact_refusal(
        self, room: RoomId, user_id: UserId, gate: asyncio.Semaphore
    ) -> Refusal | _Failure | None:
        try:
            async with gate:
                pl, creators = await self._power(room)
        except MatrixError as e:
            return _Failure(e.errcode)
        except Unreachable as e:
            return _Failure(type(e).__name__)
        return refusal(
            pl,
            self.user_id,
            user_id,
            action="redact",
            creators=creators,
            bots=self.bots,
            moderator_level=self.moderator_level,
        )

    async def recent_events(self, room_id: RoomId, user_id: UserId, limit: int) -> list[EventId]:
        """The newest `limit` unredacted non-state events `user_id` sent that the bot can see."""
        found: list[EventId] = []
        query = {
            "dir": "b",
            "limit": str(MESSAGES_PAGE),
            "filter": json.dumps({"senders": [user_id], "lazy_load_members": True}),
        }
        for _ in range(MAX_HISTORY_PAGES):
            page = await self.http.get(
                cs("rooms", room_id, "messages"), query=query, label="messages"
            )
            for event in page.get("chunk", []):
                if not isinstance(event, dict) or event.get("sender") != user_id:
                    continue
                if "state_key" in event or event.get("type") == "m.room.redaction":
                    continue
                if _already_redacted(event):
                    continue
                event_id = event.get("event_id")
                if isinstance(event_id, str):
                    found.append(EventId(event_id))
                    if len(found) >= limit:
                        return found
            end = page.get("end")
            if not isinstance(end, str) or not page.get("chunk"):
                break
            query["from"] = end
        return found

    async def _redact_room(
        self,
        room: RoomId,
        user_id: UserId,
        limit: int,
        reason: str | None,
        gate: asyncio.Semaphore,
        report: RedactReport,
    ) -> None:
        try:
            async with gate:
                events = await self.recent_events(room, user_id, limit)
        except MatrixError as e:
            report.failed[room] = e.errcode
            return
        except Unreachable as e:
            report.failed[room] = type(e).__name__
            return
        done = report.redacted.setdefault(room, [])
        body = {"reason": reason} if reason else {}

        async def one(event_id: EventId) -> None:
            async with gate:
                try:
                    await self.http.put(
                        cs("rooms", room, "redact", event_id, txn_id("redact", room, event_id)),
                        body,
                        label="redact",
                    )
                    done.append(event_id)
                except MatrixError as e:
                    report.failed[event_id] = e.errcode
                except Unreachable as e:
                    report.failed[event_id] = type(e).__name__

        async with asyncio.TaskGroup() as tg:
            for event_id in events:
                tg.create_task(one(event_id))

    async def _redact_admin(
        self,
        user_id: UserId,
        rooms: list[RoomId],
        limit: int,
        reason: str | None,
        report: RedactReport,
    ) -> None:
        if self.admin is None:
            raise ValueError("the admin redaction API needs an admin view")
        redact_id = await self.admin.redact_user(user_id, rooms, limit, reason)
        report.redact_id = redact_id
        deadline = self.clock.monotonic() + ADMIN_REDACT_TIMEOUT_S
        delay = 0.05
        while True:
            status = await self.admin.redact_status(redact_id)
            state = status.get("status")
            if state == "complete":
                failed = status.get("failed_redactions")
                if isinstance(failed, dict):
                    report.failed.update({str(k): "failed" for k in failed})
                return
            if state == "failed":
                report.failed.update({room: "M_TASK_FAILED" for room in rooms})
                return
            if self.clock.monotonic() > deadline:
                report.failed.update({room: "M_TIMEOUT" for room in rooms})
                log.warning("admin redaction %s still %s after %.0fs", redact_id, state, 60)
                return
            await self.clock.sleep(delay)
            delay = min(delay * 2, 1.0)

    # --- the policy room --------------------------------------------------------------------

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

    # --- helpers ----------------------------------------------------------------------------

    def _lock(self, room_id: RoomId) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    def _refusal(self, facts: _Facts, target: str, action: Action) -> Refusal | None:
        return refusal(
            facts.power_levels,
            self.user_id,
            target,
            action=action,
            creators=facts.creators,
            bots=self.bots,
            moderator_level=self.moderator_level,
        )

    async def _state(self, room: RoomId, event_type: str, state_key: str = "") -> JsonDict:
        return await self.http.get(
            cs("rooms", room, "state", event_type, state_key), label="get state"
        )

    async def _put_state(
        self, room: RoomId, event_type: str, state_key: str, content: Mapping[str, Any]
    ) -> EventId:
        resp = await self.http.put(
            cs("rooms", room, "state", event_type, state_key), content, label="put state"
        )
        return EventId(str(resp.get("event_id", "")))

    async def _join_rules(self, room: RoomId) -> JsonDict:
        try:
            return await self._state(room, "m.room.join_rules")
        except NotFound:
            return {"join_rule": "invite"}  # the spec's default when the event is absent

    async def _creators_of(self, room: RoomId) -> frozenset[str]:
        cached = self._creators.get(room)
        if cached is None:
            event = await self.http.get(
                cs("rooms", room, "state", "m.room.create", ""),
                query={"format": "event"},
                label="get create",
            )
            cached = self._creators[room] = creators_of(event)
        return cached

    async def _power(
        self, room: RoomId, *, fresh: bool = False
    ) -> tuple[Mapping[str, Any], frozenset[str]]:
        """The room's power levels and creators: from `power_source` unless `fresh` (a
        read-modify-write needs the server's current content); creators are cached (they never
        change)."""
        if not fresh and self.power_source is not None:
            return await self.power_source(room)
        if room in self._creators:
            return await self._state(room, "m.room.power_levels"), self._creators[room]
        creators = asyncio.create_task(self._creators_of(room))
        try:
            pl = await self._state(room, "m.room.power_levels")
        except BaseException:
            creators.cancel()
            raise
        return pl, await creators

    async def _memberships_of(self, user_id: UserId) -> dict[str, str] | None:
        """Room → membership of `user_id` in every room the server knows, in one admin
        request; None without an admin view (then each room is asked on its own)."""
        if self.admin is None:
            return None
        try:
            return await self.admin.memberships(user_id)
        except MatrixError as e:
            log.warning("admin memberships unavailable (%s); asking room by room", e.errcode)
        except Unreachable:
            log.warning("admin memberships unavailable (unreachable); asking room by room")
        return None

    async def _member(self, room: RoomId, user_id: str) -> tuple[str | None, str | None]:
        """(membership, sender of the membership event), or (None, None) if there is none."""
        try:
            event = await self.http.get(
                cs("rooms", room, "state", "m.room.member", user_id),
                query={"format": "event"},
                label="get member",
            )
        except NotFound:
            return None, None
        content = event.get("content")
        membership = content.get("membership") if isinstance(content, dict) else None
        sender = event.get("sender")
        return (
            membership if isinstance(membership, str) else None,
            sender if isinstance(sender, str) else None,
        )

    async def _facts(
        self, room: RoomId, user_id: str, memberships: Mapping[str, str] | None = None
    ) -> _Facts:
        """Power levels, creators and the user's membership, read concurrently."""
        if memberships is not None:
            pl, creators = await self._power(room)
            return _Facts(pl, creators, memberships.get(room), None)
        power = asyncio.create_task(self._power(room))
        try:
            membership, sender = await self._member(room, user_id)
        except BaseException:
            power.cancel()
            raise
        pl, creators = await power
        return _Facts(pl, creators, membership, sender)

    async def _audit(
        self,
        action: str,
        target: str,
        room: RoomId | None,
        reason: str | None,
        actor: UserId | None,
        source: Source,
        *,
        rooms: int = 1,
    ) -> None:
        await self.store.record(
            AuditEntry(
                actor=actor or self.user_id,
                action=action,
                target=target,
                room_id=room,
                reason=reason,
                source=source,
                at=self.clock.now(),
                rooms=rooms,
            )
        )


def _entry(power_levels: Mapping[str, Any], user_id: str) -> int | None:
    """The user's explicit entry in `users`, or None."""
    users = power_levels.get("users")
    if not isinstance(users, Mapping):
        return None
    value = users.get(user_id)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _with(power_levels: Mapping[str, Any], user_id: str, level: int | None) -> dict[str, Any]:
    return with_user_level(power_levels, user_id, level)


def _state(event_type: str, content: Mapping[str, Any], state_key: str = "") -> JsonDict:
    return {"type": event_type, "state_key": state_key, "content": dict(content)}
