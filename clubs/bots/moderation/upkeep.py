"""The moderation bot's background work, each a loop the runtime owns (started in `start`).

- members: the management room's staff and the policy list's users kept current, and every
  managed room's server ACL following the ban list (at start, then every half minute);
- mutes: timed mutes lifted when due (also those that ran out while the bot was down);
- reports: reports members sent to the server relayed to the moderators (needs the admin view).

Every wait goes through the bot's clock, so a test moves time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from clubs.bots.moderation.network import Network
from clubs.bots.moderation.policy import server_acl_content, server_acl_denies
from clubs.bots.moderation.reports import Report
from clubs.core.http import RoomId

log = logging.getLogger(__name__)

MUTE_CHECK_S = 5.0
REPORT_POLL_S = 10.0
STAFF_FIRST_S = 1.0
STAFF_EVERY_S = 30.0


class Upkeep:
    """The loops, on the network they serve."""

    def __init__(self, net: Network) -> None:
        self.net = net

    async def follow_members_forever(self) -> None:
        """Keep the management room's staff and the policy list's users current: at start (once
        the first syncs have brought the rooms' members in) and then every half minute."""
        await self.net.clock.sleep(STAFF_FIRST_S)
        while True:
            try:
                await self.sync_staff()
                await self.net.enforce(self.net.watcher.note_users(await self.net.members()))
                await self.sync_server_acls()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("moderation: following members failed: %s", type(e).__name__)
            await self.net.clock.sleep(STAFF_EVERY_S)

    async def sync_server_acls(self) -> int:
        """Keep every managed room's `m.room.server_acl` denying the servers the ban list bans
        (`m.policy.rule.server`): a banned server's users then cannot even reach the room over
        federation, not only those the bot already knows. The rooms' current ACLs come from the
        room directory (already loaded), so a round with nothing to change sends nothing.
        Returns how many rooms changed."""
        if self.net.policy_room is None or self.net.ctx is None:
            return 0
        deny = server_acl_denies(self.net.watcher.rules, self.net.watcher.protected_servers)
        wanted: dict[RoomId, dict[str, Any]] = {}
        for room_id in await self.net.managed_rooms():
            content = server_acl_content((await self.net.ctx.rooms.info(room_id)).server_acl, deny)
            if content is not None:
                wanted[room_id] = content
        if not wanted:
            return 0
        changed, _ = await self.net.mod.put_server_acls(wanted)
        for room_id in wanted:  # read anew, whether the write went through or not
            self.net.ctx.rooms.invalidate(room_id)
        if changed:
            await self.net.audit(
                self.net.mod.user_id,
                "server ACL",
                ", ".join(deny) or "-",
                changed[0] if len(changed) == 1 else None,
                None,
                "policy",
                rooms=len(changed),
                # Not replayed from an event (a restart re-checks the rooms instead): the time
                # keeps a later return to the same list from being taken for this one.
                job=("acl", ",".join(deny), str(int(self.net.clock.now() * 1000))),
            )
        return len(changed)

    async def sync_staff(self) -> int:
        """Invite everyone with moderator power in a managed room to the management room, at
        their level. Returns how many were added. Someone who was there once and left (or
        declined, or was removed) is not invited again: that was somebody's decision."""
        assert self.net.ctx is not None
        if self.net.policy_room is None:
            return 0
        staff = await self.net.staff()
        state = await self.net.ctx.client.room_state(self.net.policy_room)
        known = {
            ev.get("state_key")
            for ev in state
            if ev.get("type") == "m.room.member" and isinstance(ev.get("state_key"), str)
        }
        missing = {u: lvl for u, lvl in staff.items() if u not in known}
        if not missing:
            return 0
        await self.net.mod.add_staff(self.net.policy_room, missing)
        log.info("moderation: invited %d staff member(s) to the management room", len(missing))
        return len(missing)

    async def lift_mutes_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.net.mod.lift_due_mutes()
            await self.net.clock.sleep(MUTE_CHECK_S)

    async def poll_reports_forever(self) -> None:
        assert self.net.reports is not None
        while True:
            try:
                for report in await self.net.reports.poll():
                    await self._report(report)
                    await self.net.reports.acknowledge(report)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("moderation: report polling failed: %s", type(e).__name__)
            await self.net.clock.sleep(REPORT_POLL_S)

    async def _report(self, report: Report) -> None:
        assert self.net.ctx is not None
        assert self.net.reports is not None
        context: str | None = None
        raw = await self.net.reports.event_json(report)
        if raw is not None:
            # The admin API returns the PDU, which carries no event id (it is the PDU's hash).
            raw = {"event_id": report.event_id, **raw}
            decrypted = await self.net.ctx.client.decrypt_json(report.room_id, raw)
            if decrypted is not None:
                body = decrypted.content.get("body")
                context = body[:1000] if isinstance(body, str) else None
        await self.net.alert(
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
