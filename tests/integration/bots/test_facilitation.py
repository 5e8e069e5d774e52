"""The facilitation bot in a club's sessions room, with a manual clock: a chair starts a
session, builds an agenda, members raise hands (one as a direct response) and take notes; the
item runs over and the chairs are warned once; a round gets a pass; the bot is stopped and
started again mid-session (agenda, queue and notes intact, the status message the same one);
at the end the minutes (HTML message and encrypted .md) hold every tagged line and no untagged
message, and no author.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mautrix.types import RoomID

from clubs.bots.facilitation.bot import FacilitationBot
from clubs.bots.host import BotAccount, BotFactory, HostServices
from clubs.bots.polls import POLL_START
from clubs.bots.runtime import RuntimeSettings
from clubs.core.clock import ManualClock
from clubs.core.errors import NotFound
from clubs.core.http import path
from clubs.core.ids import EventId, RoomId
from clubs.core.txn import txn_id
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    open_dm,
    send_text,
)
from tests.integration.bots.test_scheduling import accepting_invites
from tests.mautrix_client import MautrixPeer, Received, mautrix_peer

T = TypeVar("T")


def factory(holder: list[FacilitationBot]) -> BotFactory:
    def make(services: HostServices) -> FacilitationBot:
        assert services.sealer is not None
        bot = FacilitationBot(
            services.db,
            services.sealer,
            services.clock,
            service_accounts=services.service_accounts,
        )
        holder.append(bot)
        return bot

    return make


def host(
    synapse: SynapseHarness,
    tmp_path: Path,
    account: BotAccount,
    network: str,
    holder: list[FacilitationBot],
    clock: ManualClock,
) -> Any:
    return bot_host(
        synapse,
        tmp_path,
        [account],
        {"facilitation": factory(holder)},
        network=network,
        clock=clock,
        settings=RuntimeSettings(
            sync_timeout_ms=1000,
            commands_per_window=100,
            stale_command_s=86400,  # the manual clock runs ahead of the server's
        ),
    )


async def until(probe: Callable[[], T], *, within: float = 30) -> T:
    """`eventually` for a plain (not awaitable) probe."""

    async def wrapped() -> T:
        return probe()

    return await eventually(wrapped, within=within)


async def pinned(account: Any, room: str) -> list[str]:
    try:
        state = await account.http.get(
            path(*CS, "rooms", room, "state", "m.room.pinned_events", "")
        )
    except NotFound:
        return []
    return list(state.get("pinned", []))


def from_bot(peer: MautrixPeer, bot: str, room: str) -> list[Received]:
    return [r for r in peer.received if r.sender == bot and r.room_id == room]


def is_edit(r: Received) -> bool:
    return (r.content.get("m.relates_to") or {}).get("rel_type") == "m.replace"


def status_messages(peer: MautrixPeer, bot: str, room: str) -> list[Received]:
    return [r for r in from_bot(peer, bot, room) if r.body.startswith("▶") and not is_edit(r)]


def latest_status(peer: MautrixPeer, bot: str, room: str) -> str:
    edits = [r for r in from_bot(peer, bot, room) if is_edit(r)]
    if edits:
        return str(edits[-1].content.get("m.new_content", {}).get("body", ""))
    first = status_messages(peer, bot, room)
    return first[0].body if first else ""


async def test_a_scripted_session_with_a_restart_in_the_middle(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "facilitation")
    bot_user = account.user_id
    chair = await synapse.new_user("chair")
    anna = await synapse.new_user("anna")
    boris = await synapse.new_user("boris")
    people = [chair, anna, boris]
    room = await managed_room(
        synapse,
        network,
        invite=[bot_user, *(p.user_id for p in people)],
        key="sessions",
        powers={bot_user: 50, chair.user_id: 50},
    )
    for person in people:
        await person.http.post(path(*CS, "join", room), {})

    clock = ManualClock(start=time.time())
    holder: list[FacilitationBot] = []
    async with contextlib.AsyncExitStack() as peers_stack:
        ch, an, bo = [
            await peers_stack.enter_async_context(mautrix_peer(p, synapse.url)) for p in people
        ]
        async with host(synapse, tmp_path, account, network, holder, clock) as running:
            await eventually(lambda: joined(chair, room, bot_user), within=20)
            bot = holder[-1]
            await send_text(ch, room, "!start Club evening")
            (status,) = await until(lambda: status_messages(an, bot_user, room), within=30)

            async def pinned_now() -> bool:
                return await pinned(chair, room) == [status.event_id]

            await eventually(pinned_now, within=30)

            await send_text(ch, room, "!agenda add 10m Intro")
            await send_text(ch, room, "!agenda add 5m method story")
            await until(
                lambda: "Item 1 of 2: Intro" in latest_status(an, bot_user, room), within=30
            )
            # A member who is not a chair cannot change the agenda; nothing is stored.
            await send_text(an, room, "!agenda add 5m Hijack")
            await until(
                lambda: any(
                    "Only the session's chairs" in r.body for r in from_bot(an, bot_user, room)
                ),
                within=30,
            )

            # Hostile input: usage replies or refusals, nothing stored, the bot goes on.
            await send_text(an, room, "!start Takeover")
            for attempt in ("!end", "!next item", f"!cochair {anna.user_id}", "!extend 5m"):
                await send_text(an, room, attempt)
            await send_text(ch, room, "!agenda add 10m " + "x" * 10240)
            await send_text(ch, room, "!agenda add 10m " + "я" * 300)
            await send_text(ch, room, "!round nonsense")
            await until(
                lambda: any("!round [shuffle] [2m]" in r.body for r in from_bot(ch, bot_user, room))
            )
            await until(
                lambda: any("power level 50" in r.body for r in from_bot(an, bot_user, room))
            )
            await until(
                lambda: (
                    len(
                        [
                            r
                            for r in from_bot(an, bot_user, room)
                            if "Only the session's chairs" in r.body
                        ]
                    )
                    == 5
                )  # the agenda change above and these four
            )
            hostile = await bot.store.session(room)
            assert hostile is not None
            assert hostile.cochairs == []
            assert hostile.current == 0
            assert [i.title for i in hostile.agenda] == ["Intro", "Your own story"]
            assert hostile.title == "Club evening"

            await send_text(an, room, "+")
            await until(lambda: "anna" in latest_status(an, bot_user, room), within=30)
            await send_text(bo, room, "!q+ dr")
            await send_text(an, room, "just chatting, untagged-canary")
            await send_text(an, room, "#info tagged-one")
            await send_text(bo, room, "#решено tagged-two")
            await send_text(ch, room, "#later tagged-three")

            async def noted() -> bool:
                s = await bot.store.session(room)
                return s is not None and len(s.notes) == 3

            await eventually(noted, within=30)
            session = await bot.store.session(room)
            assert session is not None
            assert [(e.user, e.direct) for e in session.queue] == [
                (boris.user_id, True),
                (anna.user_id, False),
            ]
            assert [i.title for i in session.agenda] == ["Intro", "Your own story"]

            # The item runs over: the chairs are warned once, not again on later ticks.
            def warnings() -> list[Received]:
                return [
                    r
                    for r in from_bot(ch, bot_user, room)
                    if r.body.startswith("Chairs: the time for")
                ]

            await clock.advance(11 * 60)
            await until(warnings)
            await clock.advance(60)
            await until(lambda: "min over" in latest_status(an, bot_user, room), within=30)
            assert len(warnings()) == 1

            await send_text(ch, room, "!ack")
            await until(lambda: "Speaking: boris" in latest_status(an, bot_user, room), within=30)
            await send_text(ch, room, "!next item")
            await until(
                lambda: "Item 2 of 2: Your own story" in latest_status(an, bot_user, room),
                within=30,
            )

            # The item is an exercise from the methods library: its text is shown as it starts.
            await until(
                lambda: [
                    r for r in from_bot(an, bot_user, room) if r.body.startswith("Your own story (")
                ]
            )

            # A round: everyone but the bot, in order of their ids; boris passes ahead of time.
            await send_text(ch, room, "!round 1m")

            async def round_started() -> Any:
                s = await bot.store.session(room)
                return s.round if s is not None else None

            rnd = await eventually(round_started, within=30)
            assert rnd.order == sorted(p.user_id for p in people)
            await send_text(bo, room, "!pass")

            async def passed() -> bool:
                s = await bot.store.session(room)
                return s is not None and s.round is not None and boris.user_id in s.round.passed

            await eventually(passed, within=30)

            # A quick poll: a secret one for a minute; at its end the results are posted.
            asked = await send_text(ch, room, "!poll 1m Good pace? | yes | no")
            rt = running.runtime("facilitation")

            async def poll_id() -> str | None:
                row = await rt.ctx.outbox.find(
                    txn_id(POLL_START, "facilitation", "poll", str(asked))
                )
                return row.event_id if row is not None else None

            poll = await eventually(poll_id, within=30)
            await an.send_poll_response(RoomID(room), poll, ["a1"])
            await bo.send_poll_response(RoomID(room), poll, ["a1"])

            async def counted() -> bool:
                result = await rt.ctx.poll_results(RoomId(room), EventId(poll))
                return result is not None and result.voters == 2

            await eventually(counted, within=30)
            await clock.advance(61)
            (results,) = await until(
                lambda: [r for r in from_bot(an, bot_user, room) if r.body.startswith("Results")]
            )
            assert "• yes: 2" in results.body
            assert "• no: 0" in results.body
            before = await bot.store.session(room)

        # The bot stops mid-session and starts again: everything is where it was.
        async with host(synapse, tmp_path, account, network, holder, clock):
            bot = holder[-1]
            after = await bot.store.session(room)
            assert after is not None
            assert before is not None
            for kept in ("agenda", "current", "queue", "speaker", "round", "notes", "status_event"):
                assert getattr(after, kept) == getattr(before, kept), kept
            await send_text(an, room, "+")
            await until(lambda: "Queue: anna" in latest_status(bo, bot_user, room), within=30)
            await clock.advance(35)
            await send_text(ch, room, "!end")

            def minutes() -> list[Received]:
                return [r for r in from_bot(bo, bot_user, room) if "tagged-one" in r.body]

            (html,) = await until(minutes)
            files = await until(
                lambda: [r for r in from_bot(bo, bot_user, room) if r.msgtype == "m.file"],
                within=30,
            )
            _, md = await bo.download_encrypted(files[0].content["file"])
            for text in (html.body, html.formatted_body or "", md.decode()):
                for tagged in ("tagged-one", "tagged-two", "tagged-three"):
                    assert tagged in text
                assert "untagged-canary" not in text
                for person in people:
                    assert person.user_id not in text

            async def ended() -> bool:
                return await bot.store.session(room) is None

            await eventually(ended, within=30)
            assert await bot.store.parking(room) == ["tagged-three"]

            # One status message in all, edited in place; unpinned at the end.
            assert len(status_messages(an, bot_user, room)) == 1
            edits = [r for r in from_bot(an, bot_user, room) if is_edit(r)]
            assert edits
            assert {r.content["m.relates_to"]["event_id"] for r in edits} == {status.event_id}

            async def unpinned() -> bool:
                return status.event_id not in await pinned(chair, room)

            await eventually(unpinned, within=30)

            # The next session in the room starts with what was parked for later.
            await send_text(ch, room, "!start Next evening")
            (parked,) = await until(
                lambda: [r for r in from_bot(an, bot_user, room) if r.body.startswith("Parked")]
            )
            assert "tagged-three" in parked.body
            assert "tagged-one" not in parked.body


async def test_an_anonymous_question_leaves_no_trace_of_who_asked(
    synapse: SynapseHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "facilitation")
    bot_user = account.user_id
    chair = await synapse.new_user("chair")
    asker = await synapse.new_user("asker")
    room = await managed_room(
        synapse,
        network,
        invite=[bot_user, chair.user_id, asker.user_id],
        key="sessions",
        powers={bot_user: 50, chair.user_id: 50},
    )
    for person in (chair, asker):
        await person.http.post(path(*CS, "join", room), {})
    canary = f"canary-{secrets.token_hex(6)}"
    clock = ManualClock(start=time.time())
    holder: list[FacilitationBot] = []
    async with (
        mautrix_peer(chair, synapse.url) as ch,
        mautrix_peer(asker, synapse.url) as ask,
        host(synapse, tmp_path, account, network, holder, clock),
    ):
        bot = holder[-1]
        await eventually(lambda: joined(chair, room, bot_user), within=20)
        await send_text(ch, room, "!start Q&A")
        (status,) = await until(lambda: status_messages(ch, bot_user, room))
        dm = await open_dm(asker, bot_user)
        asked = await send_text(ask, dm, f"!ask What if my mother asks {canary}?")

        def posted() -> list[Received]:
            return [r for r in from_bot(ch, bot_user, room) if canary in r.body]

        # Told at once; posted by the next tick, not at the time of the DM.
        await until(lambda: from_bot(ask, bot_user, dm))
        assert posted() == []
        await clock.advance(31)
        (question,) = await until(posted)
        # In the room: from the bot, in the status message's thread, nothing about the asker.
        assert question.body.startswith("Anonymous question:")
        relation = question.content["m.relates_to"]
        assert relation["rel_type"] == "m.thread"
        assert relation["event_id"] == status.event_id
        assert asker.user_id not in str(question.content)
        assert asked not in str(question.content)
        raw = await chair.http.get(path(*CS, "rooms", room, "event", question.event_id))
        assert raw["sender"] == bot_user
        assert asker.user_id not in str(raw)
        # With approval on, the question goes to the chair first, then to the room.
        await send_text(ch, room, "!questions on")
        await until(lambda: any("go to the chairs first" in r.body for r in ch.received))
        async with accepting_invites([chair]):
            await send_text(ask, dm, f"!ask Second {canary}")

            def waiting() -> list[Received]:
                return [
                    r
                    for r in ch.received
                    if r.sender == bot_user and r.room_id != room and canary in r.body
                ]

            (held,) = await until(waiting)
        assert held.body.startswith("Anonymous question 1 waits for approval")
        assert asker.user_id not in str(held.content)
        assert len(posted()) == 1
        await send_text(ch, room, "!approve 1")
        await until(lambda: len(posted()) == 2)
        assert posted()[1].body == f"Anonymous question: Second {canary}"
        await send_text(ch, room, "!approve 1")
        await until(lambda: any("No waiting question" in r.body for r in ch.received))
        # The session the bot keeps names neither the asker nor the DM's event.
        session = await bot.store.session(room)
        assert session is not None
        assert asker.user_id not in str(session.to_json())
        assert asked not in str(session.to_json())
    # The question is sealed in every file the bot wrote, and in no log line at DEBUG.
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert canary.encode() not in file.read_bytes(), file
    # The members' clients (mautrix, `mau.*`) run in this process too and log their own syncs.
    logged = "\n".join(
        f"{r.name}: {r.getMessage()}" for r in caplog.records if not r.name.startswith("mau")
    )
    assert canary not in logged
    # No log line of the facilitation bot, the outbox or the runtime names the asker or the
    # DM's event. (At DEBUG, nio logs whole sync responses and aiosqlite every statement: those
    # lines hold the DM event's id and sender, as for every event; see docs/facilitation.md.)
    ours = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("clubs.bots.facilitation", "clubs.bots.outbox", "clubs.bots.runtime"))
    ]
    assert ours  # the runtime did log at DEBUG: the check below is not vacuous
    assert all(asker.user_id not in line and asked not in line for line in ours)
