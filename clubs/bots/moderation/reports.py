"""Content reports from clients, read from Synapse's admin API, each handed over exactly once.

Members report with `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`; Synapse keeps
the reports, and `GET /_synapse/admin/v1/event_reports?from=<offset>&dir=f` lists them oldest
first. The `from` token is an offset into that list, so it shifts when an admin deletes a
report; the poller therefore re-reads a small overlap before its cursor and remembers which
report ids it has handed over and seen acknowledged. Delivery is at-least-once until
`acknowledge()`, and exactly once after it: the bot posts a report to the moderators room with
a txn id derived from the report id, then acknowledges, so a crash in between is absorbed by
Synapse's txn-id deduplication.

The reporter's reason is the reporter's own text: it goes to the moderators room, never to a log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from clubs.bots.moderation.store import REPORT_CURSOR, ModerationStore
from clubs.core.adminview import AdminView
from clubs.core.clock import Clock
from clubs.core.http import EventId, JsonDict, RoomId, UserId
from clubs.core.ids import as_event_id, as_room_id, as_user_id

log = logging.getLogger(__name__)

PAGE = 100
OVERLAP = 50
"""Reports re-read before the cursor on every poll, so up to this many deletions by an admin
between two polls cannot make the poller skip a new report."""
MAX_PAGES = 20


@dataclass(frozen=True)
class Report:
    report_id: int
    room_id: RoomId
    event_id: EventId
    reporter: UserId
    reason: str | None
    """Free text by the reporter: show it to moderators, never log it."""
    sender: UserId | None
    """Who sent the reported event (None if the server no longer has the event)."""
    received_ts: int


def parse_report(item: object) -> Report | None:
    """One entry of `event_reports`, or None if it is malformed."""
    if not isinstance(item, dict):
        return None
    report_id = item.get("id")
    room_id = as_room_id(item.get("room_id"))
    event_id = as_event_id(item.get("event_id"))
    reporter = as_user_id(item.get("user_id"))
    if not isinstance(report_id, int) or room_id is None or event_id is None or reporter is None:
        return None
    reason = item.get("reason")
    received = item.get("received_ts")
    return Report(
        report_id=report_id,
        room_id=room_id,
        event_id=event_id,
        reporter=reporter,
        reason=reason if isinstance(reason, str) else None,
        sender=as_user_id(item.get("sender")),
        received_ts=received if isinstance(received, int) else 0,
    )


class ReportPoller:
    """Reads new event reports with a cursor persisted in the moderation store."""

    def __init__(
        self,
        admin: AdminView,
        store: ModerationStore,
        *,
        clock: Clock,
        cursor_name: str = REPORT_CURSOR,
    ) -> None:
        self.admin = admin
        self.store = store
        self.clock = clock
        self.cursor_name = cursor_name

    async def poll(self) -> list[Report]:
        """Reports not yet acknowledged, oldest first. Moves the cursor up to the first report
        still waiting for acknowledgement."""
        cursor = await self.store.cursor(self.cursor_name)
        start = max(0, cursor - OVERLAP)
        items, total = await self._read(start)
        if total < cursor and start > 0:
            log.info("event reports shrank below the cursor (%d < %d); rescanning", total, cursor)
            start = 0
            items, total = await self._read(start)
        reports = [parse_report(item) for item in items]
        done = await self.store.processed_reports(r.report_id for r in reports if r)
        fresh: list[Report] = []
        first_waiting: int | None = None
        for index, report in enumerate(reports):
            if report is None or report.report_id in done:
                continue
            fresh.append(report)
            if first_waiting is None:
                first_waiting = start + index
        new_cursor = first_waiting if first_waiting is not None else start + len(items)
        if new_cursor != cursor:
            await self.store.set_cursor(new_cursor, self.cursor_name)
        if fresh:
            log.info("%d event reports waiting", len(fresh))
        return fresh

    async def _read(self, start: int) -> tuple[list[dict[str, Any]], int]:
        """Every report from offset `start` on (at most MAX_PAGES pages), and the total."""
        items: list[dict[str, Any]] = []
        total = 0
        offset = start
        for _ in range(MAX_PAGES):
            page = await self.admin.event_reports(offset, PAGE)
            found = page.get("total")
            total = found if isinstance(found, int) else total
            chunk = [r for r in page.get("event_reports", []) if isinstance(r, dict)]
            items += chunk
            offset += len(chunk)
            if not chunk or "next_token" not in page:
                break
        return items, total

    async def acknowledge(self, report: Report | int) -> None:
        """Mark a report handled: it is never returned again, also after a restart."""
        report_id = report.report_id if isinstance(report, Report) else report
        await self.store.mark_report_processed(report_id, self.clock.now())

    async def details(self, report: Report | int) -> JsonDict:
        """The full report, with `event_json` (ciphertext for an encrypted event: the bot's
        E2EE client decrypts it if it holds the room key)."""
        report_id = report.report_id if isinstance(report, Report) else report
        return await self.admin.event_report(report_id)

    async def event_json(self, report: Report | int) -> dict[str, Any] | None:
        event = (await self.details(report)).get("event_json")
        return event if isinstance(event, dict) else None
