"""Removing what one person wrote: their newest events in given rooms, redacted.

The client path pages `/messages` filtered by sender and redacts event by event with the bot's
own power level, each with a txn id derived from the event, so a retry never sends a second
redaction. The admin path (only with an `AdminView`) asks Synapse to do it in one background
task for all rooms.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clubs.bots.moderation.access import Failure, RoomAccess
from clubs.bots.moderation.power import Refusal
from clubs.bots.moderation.store import Source
from clubs.core.errors import MatrixError, Unreachable
from clubs.core.http import EventId, RoomId, UserId, cs
from clubs.core.txn import txn_id

log = logging.getLogger(__name__)

MESSAGES_PAGE = 100
MAX_HISTORY_PAGES = 20
"""How far back `redact_recent` pages through one room on the client path (20 × 100 events)."""
ADMIN_REDACT_TIMEOUT_S = 60.0


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


class Redactions(RoomAccess):
    """One event, or one person's newest events, redacted room by room or by Synapse's admin
    task."""

    async def redact_event(self, room: RoomId, event_id: EventId, reason: str) -> None:
        """Redact one event; the txn id is derived from the event, so a replay of the same
        decision sends no second redaction."""
        await self.http.put(
            cs("rooms", room, "redact", event_id, txn_id("redact", event_id)),
            {"reason": reason},
            label="redact",
        )

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
        by default when an admin view is given and the user is local): one
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
            if isinstance(why, Failure):
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
    ) -> Refusal | Failure | None:
        try:
            async with gate:
                pl, creators = await self._power(room)
        except MatrixError as e:
            return Failure(e.errcode)
        except Unreachable as e:
            return Failure(type(e).__name__)
        return self._refuses(pl, creators, user_id, "redact")

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
