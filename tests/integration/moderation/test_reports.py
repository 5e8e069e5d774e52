"""Reports made in clients reach the poller once, and never again after acknowledgement."""

from __future__ import annotations

from pathlib import Path

from clubs.bots.moderation.reports import Report, ReportPoller
from clubs.bots.moderation.store import ModerationStore
from clubs.core.adminview import AdminView
from clubs.core.clock import SystemClock
from clubs.core.db import Database
from clubs.core.http import admin_v1, path
from tests.harness import SynapseHarness
from tests.integration.moderation.helpers import CS, make_room, new_club, send_fake_encrypted


async def _poll(
    synapse: SynapseHarness, db_path: Path
) -> tuple[list[Report], ReportPoller, Database]:
    db = await Database.open(db_path)
    poller = ReportPoller(
        AdminView(synapse.admin.http), await ModerationStore.open(db), clock=SystemClock()
    )
    return await poller.poll(), poller, db


async def test_reported_event_is_returned_exactly_once_across_restarts(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    room = await make_room(club, joined=[club.member])
    (bad,) = await send_fake_encrypted(club.member, room, 1, "bad")
    await club.moderator.http.post(
        path(*CS, "rooms", room, "report", bad), {"reason": "doxxing someone"}
    )
    db_path = tmp_path / "mod.db"

    first, poller, db = await _poll(synapse, db_path)
    mine = [r for r in first if r.event_id == bad]
    assert len(mine) == 1
    (report,) = mine
    assert (report.room_id, report.reporter, report.sender) == (
        room,
        club.moderator.user_id,
        club.member.user_id,
    )
    assert report.reason == "doxxing someone"
    event = await poller.event_json(report)
    assert event is not None
    assert event["type"] == "m.room.encrypted"
    assert event["content"]["ciphertext"].startswith("AwgAEn")
    # Not acknowledged yet (the bot crashed before posting it): handed over again.
    again = await poller.poll()
    assert [r.report_id for r in again if r.event_id == bad] == [report.report_id]
    for r in again:
        await poller.acknowledge(r)
    assert [r for r in await poller.poll() if r.event_id == bad] == []
    await db.close()

    # A restarted bot with the same store: nothing old comes back, a new report does.
    (worse,) = await send_fake_encrypted(club.member, room, 1, "worse")
    await club.moderator.http.post(path(*CS, "rooms", room, "report", worse), {"reason": "x"})
    after, poller, db = await _poll(synapse, db_path)
    assert [r.event_id for r in after if r.room_id == room] == [worse]
    await db.close()


async def test_a_deleted_report_does_not_hide_the_next_one(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    club = await new_club(synapse)
    room = await make_room(club, joined=[club.member])
    events = await send_fake_encrypted(club.member, room, 3, "many")
    for event_id in events[:2]:
        await club.moderator.http.post(path(*CS, "rooms", room, "report", event_id), {})
    seen, poller, db = await _poll(synapse, tmp_path / "mod.db")
    for r in seen:
        await poller.acknowledge(r)
    old = [r for r in seen if r.room_id == room]
    assert len(old) == 2
    # An admin deletes handled reports: every offset after them shifts down.
    for r in old:
        await synapse.admin.http.delete(admin_v1("event_reports", str(r.report_id)))
    await club.moderator.http.post(path(*CS, "rooms", room, "report", events[2]), {})
    fresh = await poller.poll()
    assert [r.event_id for r in fresh if r.room_id == room] == [events[2]]
    await db.close()
