"""The facilitation bot's later parts against Synapse, with a manual clock, in one session:
upvotes of anonymous questions through a secret poll (ranked results), breakout groups in
threads and in temporary encrypted rooms (summaries recalled into the minutes; the rooms
archived: every member removed, the bot gone), a session left running that ends by itself
with its minutes, and the reflection DM to the member who asked for it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from mautrix.types import EventType, RoomID

from clubs.bots.facilitation.bot import FacilitationBot
from clubs.bots.polls import POLL_START
from clubs.core.clock import ManualClock
from clubs.core.http import path
from clubs.core.ids import EventId, RoomId
from clubs.core.namespace import OCCURRENCE
from clubs.core.txn import txn_id
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    open_dm,
    send_text,
)
from tests.integration.bots.test_facilitation import from_bot, host, status_messages, until
from tests.integration.bots.test_scheduling import accepting_invites
from tests.mautrix_client import mautrix_peer


async def membership(account: object, room: str, user: str) -> str | None:
    try:
        state = await account.http.get(  # type: ignore[attr-defined]
            path(*CS, "rooms", room, "state", "m.room.member", user)
        )
    except Exception:
        return None
    return str(state.get("membership"))


async def test_upvotes_breakouts_auto_end_and_reflection(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "facilitation")
    bot_user = account.user_id
    chair = await synapse.new_user("chair")
    anna = await synapse.new_user("anna")
    boris = await synapse.new_user("boris")
    sched = await synapse.new_user("sched")  # stands in for the scheduling bot
    people = [chair, anna, boris]
    room = await managed_room(
        synapse,
        network,
        invite=[bot_user, sched.user_id, *(p.user_id for p in people)],
        key="sessions",
        powers={bot_user: 50, chair.user_id: 50},
    )
    for person in (*people, sched):
        await person.http.post(path(*CS, "join", room), {})
    clock = ManualClock(start=time.time())
    holder: list[FacilitationBot] = []
    async with contextlib.AsyncExitStack() as stack:
        ch, an, bo, sc = [
            await stack.enter_async_context(mautrix_peer(p, synapse.url)) for p in (*people, sched)
        ]
        running = await stack.enter_async_context(
            host(synapse, tmp_path, account, network, holder, clock)
        )
        await stack.enter_async_context(accepting_invites([anna, boris]))
        bot = holder[-1]
        await eventually(lambda: joined(chair, room, bot_user), within=20)

        # Anna asks for the reflection DM; the session starts.
        await send_text(an, room, "!reflect on")
        await until(lambda: [r for r in from_bot(an, bot_user, room) if "Fine: after" in r.body])
        # The scheduling bot's "starting now" notice carries the occurrence (encrypted); a
        # `!start` without a title takes its title, agenda (an item the bot would not take is
        # skipped; an exercise is titled by it and shown) and call link, and parks by its series.
        bot.service_accounts = bot.service_accounts | {sched.user_id}
        await sc.client.send_message_event(
            RoomID(room),
            EventType.ROOM_MESSAGE,
            {
                "msgtype": "m.notice",
                "body": "Starting now: Groups",
                OCCURRENCE: {
                    "series": "7",
                    "title": "Groups",
                    "link": "https://meet.example.org/groups-7",
                    "ends_at": clock.now() + 7200,
                    "agenda": [
                        {"title": "Check-in round", "minutes": 10},
                        {"title": "method listening", "minutes": 15},
                        {"title": "Too short", "minutes": 0},
                    ],
                },
            },
        )

        async def scheduled() -> object:
            return await bot.store.scheduled(room)

        await eventually(scheduled, within=30)
        await send_text(ch, room, "!start")
        (status,) = await until(lambda: status_messages(an, bot_user, room))
        assert status.body.startswith("▶ Groups")
        started = await bot.store.session(room)
        assert started is not None
        assert started.series == "7"
        assert started.call == "https://meet.example.org/groups-7"
        assert [(i.title, i.duration_s, i.method) for i in started.agenda] == [
            ("Check-in round", 600, None),
            ("Active listening", 900, "listening"),
        ]
        assert started.current == 0
        await send_text(ch, room, "#later tagged-for-the-series")

        # Two anonymous questions, then the secret upvote poll over them, ranked at its end.
        dm = await open_dm(boris, bot_user)
        await send_text(ch, room, "!vote")
        await until(
            lambda: [r for r in from_bot(ch, bot_user, room) if "Nothing to vote" in r.body]
        )
        await send_text(bo, dm, "!ask First question?")
        await send_text(bo, dm, "!ask Second question?")
        await until(lambda: len(from_bot(bo, bot_user, dm)) >= 2)
        await clock.advance(31)
        await until(
            lambda: len([r for r in from_bot(an, bot_user, room) if "question?" in r.body]) == 2
        )
        asked = await send_text(ch, room, "!vote 1m")
        rt = running.runtime("facilitation")

        async def poll_id() -> str | None:
            row = await rt.ctx.outbox.find(txn_id(POLL_START, "facilitation", "poll", str(asked)))
            return row.event_id if row is not None else None

        poll = await eventually(poll_id, within=30)
        await an.send_poll_response(RoomID(room), poll, ["a2"])
        await bo.send_poll_response(RoomID(room), poll, ["a1", "a2"])

        async def counted() -> bool:
            result = await rt.ctx.poll_results(RoomId(room), EventId(poll))
            return result is not None and result.voters == 2

        await eventually(counted, within=30)
        await clock.advance(61)
        (ranking,) = await until(
            lambda: [r for r in from_bot(an, bot_user, room) if r.body.startswith("The questions")]
        )
        assert "1. Second question? — 2\n2. First question? — 1" in ranking.body

        # Breakout in threads: two groups, each told in its own message with its members.
        await send_text(ch, room, "!breakout 2")
        groups = await until(
            lambda: [r for r in from_bot(an, bot_user, room) if r.body.startswith("Group ")]
        )
        await until(
            lambda: (
                len([r for r in from_bot(an, bot_user, room) if r.body.startswith("Group ")]) == 2
            )
        )
        session = await bot.store.session(room)
        assert session is not None
        assert session.breakout is not None
        assert sorted(u for g in session.breakout.groups for u in g.members) == sorted(
            p.user_id for p in people
        )
        assert all(g.root for g in session.breakout.groups)
        assert groups
        await send_text(an, room, "!summary listening first works")
        await send_text(ch, room, "!breakout 3")  # a second breakout while one runs: refused
        await until(lambda: [r for r in from_bot(ch, bot_user, room) if "already out" in r.body])
        await send_text(ch, room, "!recall")
        (recall,) = await until(
            lambda: [r for r in from_bot(an, bot_user, room) if r.body.startswith("The groups")]
        )
        assert "listening first works" in recall.body
        assert "no summary" in recall.body

        # Breakout in temporary rooms: created encrypted, members invited; archived at recall.
        await send_text(ch, room, "!breakout 2 rooms")

        async def rooms_made() -> list[str] | None:
            s = await bot.store.session(room)
            if s is None or s.breakout is None or not all(g.room for g in s.breakout.groups):
                return None
            return [str(g.room) for g in s.breakout.groups]

        temp = await eventually(rooms_made, within=30)
        assert len(set(temp)) == 2
        for temp_room in temp:
            state = await rt.ctx.http.get(
                path(*CS, "rooms", temp_room, "state", "m.room.encryption", "")
            )
            assert state.get("algorithm") == "m.megolm.v1.aes-sha2"
        made = await bot.store.session(room)
        assert made is not None
        assert made.breakout is not None
        (annas,) = [str(g.room) for g in made.breakout.groups if anna.user_id in g.members]
        await eventually(lambda: membership_is(anna, annas, "join"), within=30)
        # (The welcome with the call link is not read at the member here: her client does not
        # always hold its room key when this module runs after another one; see the report.)
        assert made.call == "https://meet.example.org/groups-7"
        await send_text(ch, room, "!recall")

        async def archived() -> bool:
            mine = await rt.ctx.http.get(path(*CS, "joined_rooms"))
            if set(temp) & set(mine.get("joined_rooms", [])):
                return False
            theirs = await anna.http.get(path(*CS, "joined_rooms"))
            return annas not in theirs.get("joined_rooms", [])

        await eventually(archived, within=30)

        # Left running: an hour past its agenda the session ends by itself, with minutes.
        await send_text(ch, room, "!agenda add 1m Short")

        async def has_item() -> bool:
            s = await bot.store.session(room)
            return s is not None and len(s.agenda) == 3

        await eventually(has_item, within=30)
        await clock.advance(3700 + 25 * 60)  # the two scheduled items' 25 minutes too
        await until(
            lambda: [r for r in from_bot(an, bot_user, room) if "nobody ended it" in r.body]
        )
        (minutes,) = await until(
            lambda: [r for r in from_bot(an, bot_user, room) if r.body.startswith("Minutes")]
        )
        assert "Group " in minutes.body
        assert "listening first works" in minutes.body

        async def ended() -> bool:
            return await bot.store.session(room) is None

        await eventually(ended, within=30)
        assert await bot.store.parking(f"{room}#series:7") == ["tagged-for-the-series"]
        assert await bot.store.parking(room) == []
        # The reflection DM reaches anna (who asked), not boris.
        await until(
            lambda: [r for r in an.received if r.sender == bot_user and "After “Groups”" in r.body]
        )
        assert not [r for r in bo.received if r.sender == bot_user and "After “" in r.body]


async def membership_is(account: object, room: str, wanted: str) -> bool:
    return await membership(account, room, account.user_id) == wanted  # type: ignore[attr-defined]
