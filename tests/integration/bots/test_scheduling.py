"""The scheduling bot, as a club uses it: a facilitator schedules a weekly evening with three
places; five members answer the RSVP poll from the independent client (the events Element
sends); three get a place and the address by DM, two wait; one cancels and the first waiting is
promoted, told once. The bot's clock is a manual one: the test moves it to the reminders (24 h
and 15 min before, by DM to everyone going or maybe), the start and the end, after which the
next week's session is announced. The venue's address is in no room state and no room message.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mautrix.types import RoomID

from clubs.bots.host import BotAccount, BotFactory, HostServices
from clubs.bots.runtime import RuntimeSettings
from clubs.bots.scheduling.bot import SchedulingBot
from clubs.bots.scheduling.store import Occurrence
from clubs.core.clock import ManualClock
from clubs.core.errors import ClubsError, MatrixError
from clubs.core.http import path
from clubs.core.namespace import CLUB_SESSIONS
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    send_text,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

BERLIN = ZoneInfo("Europe/Berlin")
VENUE = f"Secret Street {secrets.randbelow(900) + 100}"
NEW_VENUE = f"Hidden Lane {secrets.randbelow(900) + 100}"


def factory(holder: list[SchedulingBot]) -> BotFactory:
    def make(services: HostServices) -> SchedulingBot:
        assert services.sealer is not None
        bot = SchedulingBot(services.db, services.sealer, services.clock)
        holder.append(bot)
        return bot

    return make


def scheduling_host(
    synapse: SynapseHarness,
    tmp_path: Path,
    account: BotAccount,
    network: str,
    holder: list[SchedulingBot],
    *,
    clock: ManualClock | None = None,
    many_commands: bool = False,
) -> Any:
    """The scheduling bot in a host of its own (the bot lands in `holder`); `many_commands`
    lifts the per-sender command limit for tests that type many commands in a row."""
    settings = RuntimeSettings(
        sync_timeout_ms=1000, commands_per_window=100 if many_commands else 5
    )
    return bot_host(
        synapse,
        tmp_path,
        [account],
        {"scheduling": factory(holder)},
        network=network,
        clock=clock,
        settings=settings,
    )


@contextlib.asynccontextmanager
async def accepting_invites(accounts: Sequence[Account]) -> AsyncIterator[None]:
    """The members join the DM rooms the bot invites them to, as Element users would. A request
    that fails is tried again in the next round (a loop that died on one error would leave every
    later invitation unanswered)."""

    async def loop() -> None:
        while True:
            for account in accounts:
                nonce = secrets.token_hex(4)
                sync_filter = (
                    '{"room":{"timeline":{"limit":1}},"presence":{"not_types":["' + nonce + '"]}}'
                )
                try:
                    sync = await account.http.get(
                        path(*CS, "sync"), query={"timeout": "0", "filter": sync_filter}
                    )
                    for room_id in sync.get("rooms", {}).get("invite", {}):
                        await account.http.post(path(*CS, "join", room_id), {})
                except ClubsError:
                    continue
            await asyncio.sleep(0.3)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def make_club_rooms(
    synapse: SynapseHarness,
    network: str,
    bot_user: str,
    people: Sequence[Account],
    *,
    club: str = "c1",
    powers: dict[str, int] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, str]:
    """A club's announcements and sessions rooms as the provisioner makes them, the bot
    invited and `people` joined: key → room id."""
    invite = [bot_user, *(p.user_id for p in people)]
    rooms = {}
    for key in ("announcements", "sessions"):
        rooms[key] = await managed_room(
            synapse,
            network,
            invite=invite,
            key=key,
            club=club,
            powers={bot_user: 50, **(powers or {})},
            settings=settings,
        )
        for person in people:
            await person.http.post(path(*CS, "join", rooms[key]), {})
    return rooms


async def bot_messages(member: Account, room: str, bot_user: str) -> list[dict[str, Any]]:
    """The bot's message events in a room as the server has them (encrypted or not)."""
    page = await member.http.get(
        path(*CS, "rooms", room, "messages"), query={"dir": "b", "limit": "100"}
    )
    return [
        e
        for e in page.get("chunk", [])
        if e.get("sender") == bot_user and e.get("type") in ("m.room.encrypted", "m.room.message")
    ]


def dms(peer: MautrixPeer, bot: str, rooms: set[str], prefix: str) -> list[str]:
    return [
        r.body
        for r in peer.received
        if r.sender == bot and r.room_id not in rooms and r.body.startswith(prefix)
    ]


def in_rooms(peer: MautrixPeer, bot: str, room: str) -> list[str]:
    return [r.body for r in peer.received if r.sender == bot and r.room_id == room]


async def pinned(account: Account, room: str) -> list[str]:
    state = await account.http.get(path(*CS, "rooms", room, "state", "m.room.pinned_events", ""))
    return list(state.get("pinned", []))


async def room_state_text(account: Account, room: str) -> str:
    return str(await account.http.get(path(*CS, "rooms", room, "state")))


async def test_a_weekly_evening_with_places_a_waitlist_reminders_and_the_next_week(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    bot_user = account.user_id
    facilitator = await synapse.new_user("facil")
    members = [await synapse.new_user(f"m{i}") for i in range(5)]
    people = [facilitator, *members]
    rooms = await make_club_rooms(
        synapse,
        network,
        bot_user,
        people,
        powers={facilitator.user_id: 50},
        settings={"name": "Berlin"},
    )
    announcements, sessions = rooms["announcements"], rooms["sessions"]
    club_rooms = {announcements, sessions}

    clock = ManualClock(start=time.time())
    holder: list[SchedulingBot] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            scheduling_host(synapse, tmp_path, account, network, holder, clock=clock)
        )
        peers = [await stack.enter_async_context(mautrix_peer(p, synapse.url)) for p in people]
        await stack.enter_async_context(accepting_invites(members))
        (bot,) = holder
        fac, *mpeers = peers
        for room in club_rooms:
            await eventually(lambda room=room: joined(facilitator, room, bot_user), within=20)

        command = await send_text(
            fac,
            sessions,
            "!session Club evening; every Thursday 19:00; 2h; offline; venue " + VENUE + "; cap 3",
        )

        async def created() -> bool:
            return any(r.reply_to == command and "#1" in r.body for r in fac.received)

        await eventually(created, within=30)

        async def redacted() -> bool:
            # The command carried the address: the bot keeps it sealed and redacts the command.
            event = await facilitator.http.get(path(*CS, "rooms", sessions, "event", command))
            return event.get("content") == {}

        await eventually(redacted, within=20)

        # The first Thursday after now, 19:00 in Berlin.
        now_local = datetime.fromtimestamp(clock.now(), BERLIN)
        days = (3 - now_local.weekday()) % 7 or 7
        first = (now_local + timedelta(days=days)).replace(
            hour=19, minute=0, second=0, microsecond=0
        )
        if first <= now_local:
            first += timedelta(days=7)
        key = first.strftime("%Y-%m-%dT%H:%M")

        async def announced() -> Occurrence | None:
            occ = await bot.store.occurrence(1, key)
            return occ if occ is not None and occ.poll_event else None

        occ = await eventually(announced, within=30)
        assert occ.announce_room == announcements
        assert occ.poll_room == sessions
        assert occ.start_utc == first.timestamp()
        assert await pinned(facilitator, announcements) == [occ.announce_event]

        # Five members say "going", one after the other.
        for peer in mpeers:
            await peer.send_poll_response(RoomID(sessions), str(occ.poll_event), ["a1"])

            async def told(peer: MautrixPeer = peer) -> bool:
                return bool(
                    dms(peer, bot_user, club_rooms, "You have a place")
                    or dms(peer, bot_user, club_rooms, '"Club evening"')
                )

            await eventually(told, within=30)
        for i in range(3):
            (place,) = dms(mpeers[i], bot_user, club_rooms, "You have a place")
            assert VENUE in place
        for i, position in ((3, 1), (4, 2)):
            (wait,) = dms(mpeers[i], bot_user, club_rooms, '"Club evening"')
            assert f"number {position} on the waitlist" in wait
            assert VENUE not in wait

        # m1 cannot come after all: m3 is promoted, once, with the address.
        await mpeers[1].send_poll_response(RoomID(sessions), str(occ.poll_event), ["a3"])

        async def promoted() -> list[str]:
            return dms(mpeers[3], bot_user, club_rooms, "A place opened up")

        (promotion,) = await eventually(promoted, within=30)
        assert VENUE in promotion

        async def counted() -> bool:
            edits = in_rooms(mpeers[0], bot_user, announcements)
            return bool(edits) and "Going: 4, maybe: 0, waitlist: 1." in edits[-1]

        await eventually(counted, within=30)

        # The venue moves: people with a place (m0, m2, m3) are told by DM; the command that
        # named it is redacted from the room.
        moved = await send_text(fac, sessions, f"!venue 1 {NEW_VENUE}")

        async def told_new_venue() -> bool:
            return all(
                len(dms(mpeers[i], bot_user, club_rooms, "The address of")) == 1 for i in (0, 2, 3)
            )

        await eventually(told_new_venue, within=30)
        assert all(
            NEW_VENUE in dms(mpeers[i], bot_user, club_rooms, "The address of")[0]
            for i in (0, 2, 3)
        )
        assert dms(mpeers[4], bot_user, club_rooms, "The address of") == []
        assert dms(mpeers[1], bot_user, club_rooms, "The address of") == []
        moved_event = await facilitator.http.get(path(*CS, "rooms", sessions, "event", moved))
        assert moved_event.get("content") == {}

        # A member asks for the calendar: an encrypted .ics by DM, with the rule, without any
        # address.
        await send_text(mpeers[4], sessions, "!ics 1")

        async def calendar_file() -> list[Any]:
            return [
                r
                for r in mpeers[4].received
                if r.sender == bot_user and r.msgtype == "m.file" and r.room_id not in club_rooms
            ]

        (ics_event,) = await eventually(calendar_file, within=30)
        _, ics = await mpeers[4].download_encrypted(ics_event.content["file"])
        assert b"RRULE:FREQ=WEEKLY;BYDAY=TH" in ics
        assert b"DTSTART;TZID=Europe/Berlin:" in ics
        assert VENUE.encode() not in ics
        assert NEW_VENUE.encode() not in ics

        # 24 h and 15 min before: one reminder each to m0, m2, m3, m4 (m1 is not going).
        for offset in (24 * 3600, 15 * 60):
            await clock.set(first.timestamp() - offset)

            async def reminded(n: int = 1 if offset > 3600 else 2) -> bool:
                return all(
                    len(dms(mpeers[i], bot_user, club_rooms, "Reminder: Club evening")) == n
                    for i in (0, 2, 3, 4)
                )

            await eventually(reminded, within=30)
        assert dms(mpeers[1], bot_user, club_rooms, "Reminder") == []
        (reminder, _) = dms(mpeers[0], bot_user, club_rooms, "Reminder")
        assert "19:00–21:00 (Berlin)" in reminder  # the club's wall time and name
        for i in (0, 2, 3):  # the address goes only to people with a place
            assert all(NEW_VENUE in r for r in dms(mpeers[i], bot_user, club_rooms, "Reminder"))
        assert all(NEW_VENUE not in r for r in dms(mpeers[4], bot_user, club_rooms, "Reminder"))

        await clock.set(first.timestamp())

        async def started() -> bool:
            return any(
                b.startswith("Starting now: Club evening")
                for b in in_rooms(fac, bot_user, sessions)
            )

        await eventually(started, within=30)

        # The end: unpinned, and next Thursday announced and pinned instead.
        await clock.set(first.timestamp() + 2 * 3600)
        nxt_key = (first + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")

        async def next_week() -> Occurrence | None:
            nxt = await bot.store.occurrence(1, nxt_key)
            return nxt if nxt is not None and nxt.poll_event else None

        nxt = await eventually(next_week, within=30)
        assert nxt.start_utc == (first + timedelta(days=7)).timestamp()

        async def pins_moved() -> bool:
            return await pinned(facilitator, announcements) == [nxt.announce_event]

        await eventually(pins_moved, within=30)
        assert (await bot.store.occurrence(1, key)).state == "over"  # type: ignore[union-attr]

        # Exactly once: nobody got a reminder twice (the count above is exact), and the venue
        # is in no room state and no message of the club's rooms.
        for room in club_rooms:
            for address in (VENUE, NEW_VENUE):
                assert address not in await room_state_text(facilitator, room)
                for peer in peers:
                    assert all(address not in body for body in in_rooms(peer, bot_user, room))
        assert len(dms(mpeers[1], bot_user, club_rooms, "You have a place")) == 1
        assert len(dms(mpeers[3], bot_user, club_rooms, "A place opened up")) == 1


async def test_hostile_session_commands_get_a_usage_reply_and_store_nothing(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    facilitator = await synapse.new_user("facil")
    powers = {account.user_id: 50, facilitator.user_id: 50}
    sessions = await managed_room(
        synapse,
        network,
        invite=[account.user_id, facilitator.user_id],
        key="sessions",
        powers=powers,
    )
    await facilitator.http.post(path(*CS, "join", sessions), {})
    # A club whose settings name a zone that does not exist (state is input like any other).
    nowhere = await managed_room(
        synapse,
        network,
        invite=[account.user_id, facilitator.user_id],
        key="sessions",
        club="c2",
        powers=powers,
        settings={"time_zone": "Mars/Olympus"},
    )
    await facilitator.http.post(path(*CS, "join", nowhere), {})
    holder: list[SchedulingBot] = []
    async with (
        scheduling_host(synapse, tmp_path, account, network, holder, many_commands=True),
        mautrix_peer(facilitator, synapse.url) as peer,
    ):
        await eventually(lambda: joined(facilitator, sessions, account.user_id), within=20)
        await eventually(lambda: joined(facilitator, nowhere, account.user_id), within=20)
        hostile = [
            "!session Evening; at some point",
            "!session Evening; every Thursday 25:00",
            "!session Evening; 2020-01-01 19:00",
            "!session Evening; FREQ=SECONDLY;COUNT=10000",
            "!session " + "x" * 900 + "; every Thursday 19:00",
            "!session Evening; every Thursday 19:00; online javascript:alert(1)",
            "!session Evening; every Thursday 19:00; cap 100000",
            "!session Evening; every Thursday 19:00; online; venue Somewhere",
            "!session only a title",
        ]
        sent = [await send_text(peer, sessions, text) for text in hostile]
        sent.append(await send_text(peer, nowhere, "!session Evening; every Thursday 19:00"))

        async def answered() -> list[Any]:
            replies = {r.reply_to: r.body for r in peer.received if r.reply_to in sent}
            return list(replies.values()) if len(replies) == len(sent) else []

        try:
            replies = await eventually(answered, within=40)
        except AssertionError:
            got = {r.reply_to: r.body[:60] for r in peer.received if r.reply_to in sent}
            raise AssertionError([got.get(e) for e in sent]) from None
        assert all(r.startswith("That did not work") for r in replies), replies
        assert await holder[0].store.active_series() == []


async def test_a_reminder_the_bot_was_down_for_goes_out_late_or_tells_the_facilitator(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """Stopped across the 24 h reminder and back within its window (6 h): it goes out, marked
    late. Stopped across the 15 min reminder and back after its window (5 min): the member gets
    nothing stale, the facilitator who scheduled it gets one "missed" DM."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    bot_user = account.user_id
    facilitator = await synapse.new_user("facil")
    member = await synapse.new_user("member")
    rooms = await make_club_rooms(
        synapse, network, bot_user, [facilitator, member], powers={facilitator.user_id: 50}
    )
    club_rooms = set(rooms.values())
    clock = ManualClock(start=time.time())
    holder: list[SchedulingBot] = []

    def host() -> Any:
        return scheduling_host(synapse, tmp_path, account, network, holder, clock=clock)

    async with (
        mautrix_peer(facilitator, synapse.url) as fac,
        mautrix_peer(member, synapse.url) as peer,
        accepting_invites([facilitator, member]),
    ):
        async with host():
            await eventually(lambda: joined(facilitator, rooms["sessions"], bot_user), within=20)
            await send_text(fac, rooms["sessions"], "!session Walk; 2030-01-10 11:00")
            bot = holder[-1]

            async def announced() -> Occurrence | None:
                occ = await bot.store.occurrence(1, "2030-01-10T11:00")
                return occ if occ is not None and occ.poll_event else None

            occ = await eventually(announced, within=30)
            # Going: the place comes by DM, which the member joins (as after any first DM); the
            # reminders later go into that room.
            await peer.send_poll_response(RoomID(rooms["sessions"]), str(occ.poll_event), ["a1"])

            async def placed() -> list[str]:
                return dms(peer, bot_user, club_rooms, "You have a place: Walk")

            await eventually(placed, within=30)

        start = occ.start_utc
        await clock.set(start - 24 * 3600 + 600)  # 10 min late, within the 6 h window
        async with host():

            async def late() -> list[str]:
                return dms(peer, bot_user, club_rooms, "Reminder: Walk")

            (reminder,) = await eventually(late, within=30)
            assert "(Late: the bot was unavailable.)" in reminder

        await clock.set(start - 15 * 60 + 600)  # 10 min late, past the 5 min window
        async with host():

            async def told() -> list[str]:
                return dms(fac, bot_user, club_rooms, "The bot was unavailable")

            (missed,) = await eventually(told, within=30)
            assert "reminder" in missed
            await asyncio.sleep(2)  # anything else due now would have gone out by now
        assert len(dms(peer, bot_user, club_rooms, "Reminder: Walk")) == 1


CLUBS = {"berlin": "Europe/Berlin", "almaty": "Asia/Almaty", "tbilisi": "Asia/Tbilisi"}


async def test_weekly_series_in_three_zones_fire_at_local_time_across_a_dst_change(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """Weekly 19:00 series in Berlin (DST on 2027-03-28), Almaty and Tbilisi (no DST), driven
    by the manual clock from now to mid-April 2027, stepping to each due job: every occurrence
    is announced, reminded at each offset and started exactly once, each at its club's 19:00
    (18:00 UTC in Berlin's winter, 17:00 UTC in its summer; 14:00 and 15:00 UTC all along)."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    bot_user = account.user_id
    facilitator = await synapse.new_user("facil")
    sessions: dict[str, str] = {}
    for club, tz in CLUBS.items():
        rooms = await make_club_rooms(
            synapse,
            network,
            bot_user,
            [facilitator],
            club=club,
            powers={facilitator.user_id: 50},
            settings={"time_zone": tz, "name": club.title()},
        )
        sessions[club] = rooms["sessions"]
    clock = ManualClock(start=time.time())
    holder: list[SchedulingBot] = []
    end = datetime(2027, 4, 16, tzinfo=UTC).timestamp()
    async with (
        scheduling_host(
            synapse, tmp_path, account, network, holder, clock=clock, many_commands=True
        ),
        mautrix_peer(facilitator, synapse.url) as fac,
    ):
        bot = holder[0]
        for club, room in sessions.items():
            await eventually(lambda room=room: joined(facilitator, room, bot_user), within=20)
            await send_text(fac, room, f"!session {club} evening; every Thursday 19:00; 1h")

        async def all_created() -> bool:
            return len(await bot.store.active_series()) == 3

        await eventually(all_created, within=30)
        db = bot.store.db

        async def settled() -> bool:
            row = await db.fetchone(
                "SELECT COUNT(*) AS n FROM jobs WHERE state = 'running' "
                "OR (state = 'pending' AND not_before <= ?)",
                (clock.now(),),
            )
            return row is not None and row["n"] == 0

        while True:
            await eventually(settled, within=30)
            row = await db.fetchone("SELECT MIN(not_before) AS t FROM jobs WHERE state = 'pending'")
            due = row["t"] if row is not None else None
            if due is None or due > end:
                break
            await clock.set(max(float(due), clock.now()))

        series_club = {s.id: s.club for s in await bot.store.active_series()}
        rows = await db.fetchall(
            "SELECT kind, key, due_at, state FROM jobs WHERE due_at <= ?", (end,)
        )
    by_kind: dict[str, list[tuple[str, float, str]]] = {}
    for r in rows:
        by_kind.setdefault(str(r["kind"]), []).append(
            (str(r["key"]), float(r["due_at"]), str(r["state"]))
        )
    assert all(state == "done" for kind in by_kind.values() for _, _, state in kind)
    starts = by_kind["start"]
    per_club: dict[str, list[datetime]] = {}
    for key, due, _ in starts:
        club = series_club[int(key.split("@")[0])]
        local = datetime.fromtimestamp(due, ZoneInfo(CLUBS[club]))
        assert (local.weekday(), local.hour, local.minute) == (3, 19, 0), (club, local)
        assert key.endswith(local.strftime("@%Y-%m-%dT%H:%M"))
        per_club.setdefault(club, []).append(local)
    for club, locals_ in per_club.items():
        locals_.sort()
        assert len(locals_) >= 17, club  # every Thursday from December to mid-April
        assert all(b - a == timedelta(days=7) for a, b in pairwise(locals_)), club
    berlin_utc = {d.astimezone(UTC).hour for d in per_club["berlin"]}
    assert berlin_utc == {18, 17}  # winter and summer time
    assert {d.astimezone(UTC).hour for d in per_club["almaty"]} == {14}
    assert {d.astimezone(UTC).hour for d in per_club["tbilisi"]} == {15}
    # Exactly one reminder per occurrence and offset, 24 h and 15 min before its start; one
    # announcement per occurrence (and the next week's, announced when the last one ended).
    start_at = {key: due for key, due, _ in starts}
    reminders = [key.rsplit("#", 1) for key, _, _ in by_kind["remind"]]
    assert sorted((k, int(o)) for k, o in reminders) == sorted(
        (k, o) for k in start_at for o in (86400, 900)
    )
    assert all(
        start_at[key.rsplit("#", 1)[0]] - due == int(key.rsplit("#", 1)[1])
        for key, due, _ in by_kind["remind"]
    )
    announced = [key for key, _, _ in by_kind["announce"]]
    assert len(announced) == len(set(announced)) == len(start_at) + 3
    assert set(start_at) < set(announced)


async def test_sessions_the_network_file_declares_are_followed_as_the_state_changes(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """The provisioner publishes a club's declared sessions as state in its sessions room: the
    bot starts a series for each valid entry (a hostile one is skipped), a changed entry ends
    the old series and starts a new one, an entry removed from the file ends its series."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    bot_user = account.user_id
    rooms = await make_club_rooms(synapse, network, bot_user, [])
    weekly = {
        "key": "weekly",
        "title": "Club evening",
        "kind": "meeting",
        "start": "2030-01-03T19:00",
        "rrule": "FREQ=WEEKLY;BYDAY=TH",
        "duration_s": 7200,
        "online": False,
        "capacity": None,
        "materials": None,
    }
    hostile = {**weekly, "key": "flood", "rrule": "FREQ=SECONDLY"}
    state = path(*CS, "rooms", rooms["sessions"], "state", CLUB_SESSIONS, "")
    await synapse.admin.http.put(state, {"sessions": [weekly, hostile]})
    holder: list[SchedulingBot] = []
    async with scheduling_host(synapse, tmp_path, account, network, holder):
        bot = holder[0]

        async def active() -> list[Any]:
            return [(s.id, s.start_local) for s in await bot.store.active_series()]

        async def announced(series_id: int, key: str) -> Occurrence | None:
            occ = await bot.store.occurrence(series_id, key)
            return occ if occ is not None and occ.poll_event else None

        assert await eventually(active, within=30) == [(1, "2030-01-03T19:00")]
        first = await eventually(lambda: announced(1, "2030-01-03T19:00"), within=30)
        assert first.announce_room == rooms["announcements"]

        await synapse.admin.http.put(state, {"sessions": [{**weekly, "start": "2030-01-03T20:00"}]})

        async def moved() -> bool:
            return await active() == [(2, "2030-01-03T20:00")]

        await eventually(moved, within=30)
        await eventually(lambda: announced(2, "2030-01-03T20:00"), within=30)
        gone = await bot.store.occurrence(1, "2030-01-03T19:00")
        assert gone is not None
        assert gone.state == "cancelled"

        await synapse.admin.http.put(state, {"sessions": []})

        async def none_left() -> bool:
            return await active() == []

        await eventually(none_left, within=30)


async def test_an_online_session_puts_its_call_widget_up_from_five_minutes_before_to_the_end(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """In a club that accepts call widgets (`call_widget: true`), Element shows the session's
    Jitsi call pinned on top of the sessions room from five minutes before the start; after
    the end the widget and its place in the layout are gone."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    bot_user = account.user_id
    facilitator = await synapse.new_user("facil")
    rooms = await make_club_rooms(
        synapse,
        network,
        bot_user,
        [facilitator],
        powers={facilitator.user_id: 50},
        settings={"call_widget": True},
    )
    clock = ManualClock(start=time.time())
    holder: list[SchedulingBot] = []
    widgets_url = path(*CS, "rooms", rooms["sessions"], "state")

    async def widgets() -> dict[str, Any]:
        state = await facilitator.http.get_list(widgets_url)
        return {
            e["state_key"]: e["content"]
            for e in state
            if e["type"] in ("im.vector.modular.widgets", "io.element.widgets.layout")
        }

    async with (
        scheduling_host(synapse, tmp_path, account, network, holder, clock=clock),
        mautrix_peer(facilitator, synapse.url) as fac,
    ):
        await eventually(lambda: joined(facilitator, rooms["sessions"], bot_user), within=20)
        await send_text(
            fac,
            rooms["sessions"],
            "!session Lecture; 2030-01-10 19:00; 90 min; lecture; "
            "online https://meet.example.org/club-lecture-7",
        )
        bot = holder[0]

        async def announced() -> Occurrence | None:
            occ = await bot.store.occurrence(1, "2030-01-10T19:00")
            return occ if occ is not None and occ.poll_event else None

        occ = await eventually(announced, within=30)
        assert await widgets() == {}
        await clock.set(occ.start_utc - 300)

        async def up() -> dict[str, Any]:
            found = await widgets()
            return found if len(found) == 2 else {}

        found = await eventually(up, within=30)
        wid = next(k for k in found if k)
        assert found[wid]["type"] == "jitsi"
        assert found[wid]["data"]["domain"] == "meet.example.org"
        assert found[wid]["data"]["conferenceId"] == "club-lecture-7"
        assert found[""]["widgets"][wid]["container"] == "top"

        await clock.set(occ.start_utc + 90 * 60)

        async def down() -> bool:
            found = await widgets()
            return found.get(wid) == {} and wid not in found.get("", {}).get("widgets", {})

        await eventually(down, within=30)


async def test_a_network_wide_lecture_is_announced_in_each_club_with_its_time_and_one_count(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    """A facilitator of two clubs (Berlin and Almaty) announces one online lecture in both:
    each club's announcement shows its own time first and the other club's after it; members
    vote in their own club's poll; both announcements show the shared count; each member is
    reminded in their own club's time; a facilitator of one club only cannot add the other."""
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "scheduling")
    bot_user = account.user_id
    facilitator = await synapse.new_user("facil")
    local = await synapse.new_user("local")  # facilitates Berlin only
    anna, bek = await synapse.new_user("anna"), await synapse.new_user("bek")
    clubs = {"berlin": ("Europe/Berlin", "Berlin", anna), "almaty": ("Asia/Almaty", "Almaty", bek)}
    rooms: dict[tuple[str, str], str] = {}
    for club, (tz, name, member) in clubs.items():
        powers = {facilitator.user_id: 50}
        if club == "berlin":
            powers[local.user_id] = 50
        made = await make_club_rooms(
            synapse,
            network,
            bot_user,
            [facilitator, local, member],
            club=club,
            powers=powers,
            settings={"time_zone": tz, "name": name},
        )
        rooms |= {(club, key): room for key, room in made.items()}
    every_room = set(rooms.values())
    clock = ManualClock(start=time.time())
    holder: list[SchedulingBot] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            scheduling_host(
                synapse, tmp_path, account, network, holder, clock=clock, many_commands=True
            )
        )
        fac, loc, a_peer, b_peer = [
            await stack.enter_async_context(mautrix_peer(p, synapse.url))
            for p in (facilitator, local, anna, bek)
        ]
        await stack.enter_async_context(accepting_invites([anna, bek]))
        bot = holder[0]
        for room in every_room:
            await eventually(lambda room=room: joined(facilitator, room, bot_user), within=20)

        refused = await send_text(
            loc,
            rooms[("berlin", "sessions")],
            "!session Talk; 2030-01-10 19:00; online; clubs almaty",
        )

        async def refusal() -> list[str]:
            return [r.body for r in loc.received if r.reply_to == refused]

        (why,) = await eventually(refusal, within=30)
        assert "you do not facilitate these clubs (almaty)" in why

        await send_text(
            fac,
            rooms[("berlin", "sessions")],
            "!session Talking to parents; 2030-01-10 19:00; lecture; online; clubs almaty, berlin",
        )

        async def announced() -> Occurrence | None:
            occ = await bot.store.occurrence(1, "2030-01-10T19:00")
            return occ if occ is not None and occ.poll_event else None

        occ = await eventually(announced, within=30)
        (other,) = await bot.store.other_posts(1, "2030-01-10T19:00")
        assert (other.club, other.announce_room, other.poll_room) == (
            "almaty",
            rooms[("almaty", "announcements")],
            rooms[("almaty", "sessions")],
        )

        async def announcement(peer: MautrixPeer, room: str) -> list[str]:
            return in_rooms(peer, bot_user, room)

        (berlin_text,) = await eventually(
            lambda: announcement(a_peer, rooms[("berlin", "announcements")]), within=30
        )
        (almaty_text,) = await eventually(
            lambda: announcement(b_peer, rooms[("almaty", "announcements")]), within=30
        )
        assert berlin_text.splitlines()[1] == "Thu 10 Jan, 19:00–21:00 (Berlin)"
        assert "other clubs: Thu 10 Jan, 23:00 (Almaty)" in berlin_text
        assert almaty_text.splitlines()[1] == "Thu 10 Jan, 23:00 – Fri 11 Jan, 01:00 (Almaty)"
        assert "other clubs: Thu 10 Jan, 19:00 (Berlin)" in almaty_text

        # Each member answers in their own club's poll: one shared count in both clubs.
        await a_peer.send_poll_response(
            RoomID(rooms[("berlin", "sessions")]), str(occ.poll_event), ["a1"]
        )
        await b_peer.send_poll_response(
            RoomID(rooms[("almaty", "sessions")]), str(other.poll_event), ["a1"]
        )

        async def both_counted() -> bool:
            texts = [
                in_rooms(a_peer, bot_user, rooms[("berlin", "announcements")]),
                in_rooms(b_peer, bot_user, rooms[("almaty", "announcements")]),
            ]
            return all(t and "Going: 2, maybe: 0." in t[-1] for t in texts)

        await eventually(both_counted, within=30)

        await clock.set(occ.start_utc - 15 * 60)

        # One reminder each, sent by the bot into each member's DM room, in that member's club
        # time (checked as raw events on the server: see the note below the test).
        async def reminded() -> dict[str, int]:
            rows = await bot.store.db.fetchall("SELECT user_id, room_id FROM dm_rooms")
            dm_of = {str(r["user_id"]): str(r["room_id"]) for r in rows}
            counts = {}
            for who in (anna, bek):
                room = dm_of.get(who.user_id)
                try:
                    counts[who.user_id] = (
                        len(await bot_messages(who, room, bot_user)) if room else 0
                    )
                except MatrixError:  # not joined yet
                    counts[who.user_id] = 0
            return counts if all(counts.values()) else {}

        assert await eventually(reminded, within=30) == {anna.user_id: 1, bek.user_id: 1}
        for peer, hour, club in ((a_peer, "19:00", "(Berlin)"), (b_peer, "23:00", "(Almaty)")):
            for text in dms(peer, bot_user, every_room, "Reminder: Talking to parents"):
                assert hour in text
                assert club in text
