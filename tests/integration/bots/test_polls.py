"""Polls end to end: a bot's poll, members voting from an independent client exactly as Element
does, the bot's tally, the end, and a re-count after a restart."""

from __future__ import annotations

from pathlib import Path

from mautrix.types import EncryptedEvent, EventType, RoomID

from clubs.bots.base import Bot
from clubs.bots.context import BotContext
from clubs.bots.polls import PollUpdate, on_poll
from clubs.core.http import EventId, RoomId, path
from tests.harness import SynapseHarness, eventually
from tests.integration.bots.support import (
    CS,
    bot_host,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    simple_factory,
)
from tests.mautrix_client import mautrix_peer


class Pollster(Bot):
    name = "pollster"

    def __init__(self) -> None:
        self.updates: list[PollUpdate] = []

    @on_poll
    async def changed(self, ctx: BotContext, update: PollUpdate) -> None:
        self.updates.append(update)


async def test_votes_are_counted_like_element_and_survive_a_restart(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "pollster")
    alice = await synapse.new_user("alice")
    bob = await synapse.new_user("bob")
    room = await managed_room(
        synapse, network, invite=[account.user_id, alice.user_id, bob.user_id]
    )
    for member in (alice, bob):
        await member.http.post(path(*CS, "join", room), {})
    bot = Pollster()
    factories = {"pollster": simple_factory(bot)}
    async with (
        mautrix_peer(alice, synapse.url) as pa,
        mautrix_peer(bob, synapse.url) as pb,
    ):
        async with bot_host(synapse, tmp_path, [account], factories, network=network) as host:
            await eventually(lambda: joined(alice, room, account.user_id), within=20)
            ctx = host.runtime("pollster").ctx

            async def synced() -> bool:
                return ctx.client.knows_room(RoomId(room))

            await eventually(synced, within=20)
            disclosed = await ctx.poll(
                RoomId(room), "Meet on Friday?", ["yes", "no"], job=("t", "p1"), disclosed=True
            )
            hidden = await ctx.poll(RoomId(room), "Mood?", ["ok", "meh"], job=("t", "p2"))
            assert disclosed is not None
            assert hidden is not None

            await pa.send_poll_response(RoomID(room), disclosed, ["a1"])
            await pb.send_poll_response(RoomID(room), disclosed, ["a1"])
            await pb.send_poll_response(RoomID(room), disclosed, ["a2"])  # changes their mind
            await pa.send_poll_response(RoomID(room), hidden, ["nope"])  # not in the poll
            await pb.send_poll_response(RoomID(room), hidden, ["a1"])

            def latest(poll_id: EventId) -> PollUpdate | None:
                ours = [u for u in bot.updates if u.poll_id == poll_id]
                return ours[-1] if ours else None

            async def counted() -> bool:
                d, h = latest(disclosed), latest(hidden)
                return (
                    d is not None
                    and dict(d.counts) == {"a1": 1, "a2": 1}
                    and h is not None
                    and dict(h.counts) == {"a1": 1, "a2": 0}
                )

            await eventually(counted, within=30)
            d_update, h_update = latest(disclosed), latest(hidden)
            assert d_update is not None
            assert h_update is not None
            assert (d_update.disclosed, h_update.disclosed) == (True, False)
            assert (d_update.voters, h_update.voters) == (2, 1)  # a spoiled vote is no vote

            final = await ctx.end_poll(RoomId(room), disclosed, job=("t", "end1"))
            assert final is not None
            assert final.ended
            assert dict(final.counts) == {"a1": 1, "a2": 1}
            # Element sees the end as a relation (in clear) and reads its fallback text.
            relations = await alice.http.get(
                path("_matrix", "client", "v1", "rooms", room, "relations", disclosed)
            )
            ends = [e for e in relations["chunk"] if e["sender"] == account.user_id]
            assert len(ends) == 1
            assert ends[0]["content"]["m.relates_to"]["event_id"] == disclosed
            decrypted = await pa.crypto.decrypt_megolm_event(EncryptedEvent.deserialize(ends[0]))
            assert decrypted.type.t == "org.matrix.msc3381.poll.end"
            end_content = decrypted.content.serialize()
            assert end_content["org.matrix.msc3381.poll.end"] == {}
            assert end_content["org.matrix.msc1767.text"].startswith(
                "The poll has ended. Top answer: yes, no\nMeet on Friday?\nyes: 1\nno: 1"
            )
            await pa.send_poll_response(RoomID(room), disclosed, ["a2"])  # after the end
            # A member who may not redact others' events cannot end the bot's poll.
            await pb.client.send_message_event(
                RoomID(room),
                EventType.find("org.matrix.msc3381.poll.end", EventType.Class.MESSAGE),
                {
                    "m.relates_to": {"rel_type": "m.reference", "event_id": hidden},
                    "org.matrix.msc1767.text": "The poll has ended.",
                    "org.matrix.msc3381.poll.end": {},
                },
            )
            await pa.send_poll_response(RoomID(room), hidden, ["a2"])  # still open

            async def late_vote_seen() -> bool:
                h = latest(hidden)
                return h is not None and not h.ended and dict(h.counts) == {"a1": 1, "a2": 1}

            await eventually(late_vote_seen, within=30)
            after_end = await ctx.poll_results(RoomId(room), disclosed)
            assert after_end is not None
            assert dict(after_end.counts) == {"a1": 1, "a2": 1}

        # A new process: the results are re-counted from /relations (decrypting every vote).
        bot2 = Pollster()
        async with bot_host(
            synapse, tmp_path, [account], {"pollster": simple_factory(bot2)}, network=network
        ) as host2:
            ctx2 = host2.runtime("pollster").ctx
            again = await ctx2.poll_results(RoomId(room), disclosed)
            assert again is not None
            assert (again.ended, dict(again.counts), again.undecryptable) == (
                True,
                {"a1": 1, "a2": 1},
                0,
            )
            still_open = await ctx2.poll_results(RoomId(room), hidden)
            assert still_open is not None
            assert (still_open.ended, dict(still_open.counts)) == (False, {"a1": 1, "a2": 1})
            assert still_open.voters == 2
