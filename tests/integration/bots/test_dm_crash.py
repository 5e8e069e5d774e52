"""DM rooms, `m.direct` and pins: what the bot keeps on the homeserver, crash-safely.

- A bot process killed between `createRoom` and recording the room (`dm_created`), again and
  again across restarts, still leaves each member exactly one DM room with it, one invite, one
  `m.direct` entry, and the DM message once.
- A read of `m.direct` or of a room's pins that fails transiently never turns into a write that
  replaces what is there: the other entries and the old pins survive, and the new DM room and
  pin are added once the read works again.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clubs.core.http import MatrixHttp, path
from clubs.core.secrets import Vault
from tests.harness import Account, SynapseHarness, eventually
from tests.integration.bots.proxy import CountingProxy, counting_proxy
from tests.integration.bots.support import (
    CS,
    BotProcess,
    bot_process,
    create_bot_account,
    joined,
    managed_room,
    new_network,
    send_text,
    wait_replies,
)
from tests.mautrix_client import MautrixPeer, mautrix_peer

KILLS = 4
"""Members, each of whose first `!dmme` kills the bot right after `createRoom`."""


@contextlib.asynccontextmanager
async def as_bot(url: str, var_dir: Path, user_id: str) -> AsyncIterator[MatrixHttp]:
    """The bot account's own HTTP client (its token from the vault)."""
    token = Vault(var_dir / "secrets" / "vault").get(f"{user_id}/access_token")
    async with MatrixHttp(url, token) as http:
        yield http


async def invites(member: Account) -> list[str]:
    """The rooms the member is invited to now (a filter of its own per call: Synapse caches
    a sync response for a while and would answer the same request with the old one)."""
    nonce = secrets.token_hex(4)
    sync_filter = f'{{"room":{{"timeline":{{"limit":1}}}},"presence":{{"not_types":["{nonce}"]}}}}'
    sync = await member.http.get(path(*CS, "sync"), query={"timeout": "0", "filter": sync_filter})
    return sorted(sync.get("rooms", {}).get("invite", {}))


async def bot_events(member: Account, room_id: str, bot_user: str) -> list[dict[str, Any]]:
    page = await member.http.get(
        path(*CS, "rooms", room_id, "messages"), query={"dir": "b", "limit": "100"}
    )
    return [
        e
        for e in page.get("chunk", [])
        if e.get("sender") == bot_user and e.get("type") in ("m.room.encrypted", "m.room.message")
    ]


def dm_texts(peer: MautrixPeer, bot_user: str, managed: str) -> list[str]:
    return [r.body for r in peer.received if r.sender == bot_user and r.room_id != managed]


def request_to(method: bytes, *fragments: bytes) -> Callable[[bytes], bool]:
    """A proxy `drop` hook: requests with this method whose path contains every fragment."""

    def matches(head: bytes) -> bool:
        line = head.split(b"\r\n", 1)[0]
        return line.startswith(method + b" ") and all(f in line for f in fragments)

    return matches


async def dropped_at_least(proxy: CountingProxy, n: int) -> None:
    async def enough() -> bool:
        return len(proxy.dropped) >= n

    await eventually(enough, within=30)


async def test_a_bot_killed_after_creating_a_dm_creates_no_second_one(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    members = [await synapse.new_user(f"member{i}") for i in range(KILLS)]
    room = await managed_room(
        synapse, network, invite=[account.user_id, *(m.user_id for m in members)]
    )
    for m in members:
        await m.http.post(path(*CS, "join", room), {})
    async with contextlib.AsyncExitStack() as stack:
        bp: BotProcess = await stack.enter_async_context(
            bot_process(synapse.url, tmp_path, [account], network, synapse.admin.user_id)
        )
        peers = [await stack.enter_async_context(mautrix_peer(m, synapse.url)) for m in members]
        await bp.start()
        await bp.wait_ready()
        await eventually(lambda: joined(members[0], room, account.user_id), within=20)
        for peer in peers:  # the bot has every member's room key from here on
            warmup = await send_text(peer, room, "!echo warm-up")
            await wait_replies(peer, account.user_id, room, [warmup], within=20)
        await bp.stop()

        # Member i asks while the bot is down; run i creates their room and dies before
        # recording it (after adopting member i-1's room, created by the run before).
        for i, peer in enumerate(peers):
            await send_text(peer, room, "!dmme")
            await bp.start(crash_at="dm_created:1")
            assert await bp.wait_exit(within=30) == 137, f"run {i} did not die there; {bp}"
        await bp.start()
        await bp.wait_ready()

        for m, peer in zip(members, peers, strict=True):

            async def dm_delivered(m: Account = m, peer: MautrixPeer = peer) -> bool:
                for invited in await invites(m):
                    await m.http.post(path(*CS, "join", invited), {})
                return bool(dm_texts(peer, account.user_id, room))

            await eventually(dm_delivered, within=30)
        # One more command from the last member: anything replayed would come before it.
        last = await send_text(peers[-1], room, "!echo last")
        await wait_replies(peers[-1], account.user_id, room, [last], within=20)
        await bp.stop()

    async with as_bot(synapse.url, tmp_path, account.user_id) as bot:
        joined_rooms = (await bot.get(path(*CS, "joined_rooms")))["joined_rooms"]
        others: dict[str, list[str]] = {}
        for r in joined_rooms:
            if r == room:
                continue
            state = await bot.get_list(path(*CS, "rooms", r, "state"))
            people = [
                e["state_key"]
                for e in state
                if e["type"] == "m.room.member" and e["state_key"] != account.user_id
            ]
            assert len(people) == 1, people
            others.setdefault(people[0], []).append(r)
        direct = await bot.get(path(*CS, "user", account.user_id, "account_data", "m.direct"))
    # Exactly one DM room per member, the one in m.direct, with the DM message once in it.
    assert sorted(others) == sorted(m.user_id for m in members)
    assert all(len(rooms) == 1 for rooms in others.values()), others
    assert direct == {user: rooms for user, rooms in others.items()}
    for m, peer in zip(members, peers, strict=True):
        dm_room = others[m.user_id][0]
        assert (await m.http.get(path(*CS, "joined_rooms")))["joined_rooms"].count(dm_room) == 1
        assert sorted((await m.http.get(path(*CS, "joined_rooms")))["joined_rooms"]) == sorted(
            [room, dm_room]
        )
        assert await invites(m) == []
        assert len(await bot_events(m, dm_room, account.user_id)) == 1
        assert dm_texts(peer, account.user_id, room) == ["Echo: dm"]


async def test_a_failed_read_of_m_direct_never_overwrites_it(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    member = await synapse.new_user("member")
    room = await managed_room(synapse, network, invite=[account.user_id, member.user_id])
    await member.http.post(path(*CS, "join", room), {})
    # A DM the bot had before (or another client of the account recorded).
    other = {"@someone:elsewhere.example": ["!earlier:elsewhere.example"]}
    direct_url = path(*CS, "user", account.user_id, "account_data", "m.direct")
    async with as_bot(synapse.url, tmp_path, account.user_id) as bot:
        await bot.put(direct_url, other)
    upstream = urlsplit(synapse.url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    with counting_proxy(upstream.hostname, upstream.port) as proxy:
        async with (
            bot_process(proxy.url, tmp_path, [account], network, synapse.admin.user_id) as bp,
            mautrix_peer(member, synapse.url) as peer,
        ):
            await bp.start()
            await bp.wait_ready()
            await eventually(lambda: joined(member, room, account.user_id), within=20)
            warmup = await send_text(peer, room, "!echo warm-up")
            await wait_replies(peer, account.user_id, room, [warmup], within=20)

            proxy.drop = request_to(b"GET", b"/account_data/m.direct")
            await send_text(peer, room, "!dmme")
            await dropped_at_least(proxy, 3)
            async with as_bot(synapse.url, tmp_path, account.user_id) as bot:
                assert await bot.get(direct_url) == other  # not replaced meanwhile
            proxy.drop = None

            async def dm_delivered() -> bool:
                for invited in await invites(member):
                    await member.http.post(path(*CS, "join", invited), {})
                return bool(dm_texts(peer, account.user_id, room))

            await eventually(dm_delivered, within=30)
            await bp.stop()

    async with as_bot(synapse.url, tmp_path, account.user_id) as bot:
        direct = await bot.get(direct_url)
    dm_rooms = [r for r in (await member.http.get(path(*CS, "joined_rooms")))["joined_rooms"]]
    dm_rooms.remove(room)
    assert direct == {**other, member.user_id: dm_rooms}
    assert len(dm_rooms) == 1
    assert dm_texts(peer, account.user_id, room) == ["Echo: dm"]


async def test_a_failed_read_of_the_pins_never_unpins_the_others(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    member = await synapse.new_user("member")
    room = await managed_room(
        synapse,
        network,
        invite=[account.user_id, member.user_id],
        powers={account.user_id: 50},
    )
    await member.http.post(path(*CS, "join", room), {})
    old_pins = []
    for i in range(2):
        sent = await synapse.admin.http.put(
            path(*CS, "rooms", room, "send", "m.room.message", f"pinned-{i}"),
            {"msgtype": "m.notice", "body": f"rules {i}"},
        )
        old_pins.append(sent["event_id"])
    pins_url = path(*CS, "rooms", room, "state", "m.room.pinned_events", "")
    await synapse.admin.http.put(pins_url, {"pinned": old_pins})
    upstream = urlsplit(synapse.url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    with counting_proxy(upstream.hostname, upstream.port) as proxy:
        async with (
            bot_process(proxy.url, tmp_path, [account], network, synapse.admin.user_id) as bp,
            mautrix_peer(member, synapse.url) as peer,
        ):
            await bp.start()
            await bp.wait_ready()
            await eventually(lambda: joined(member, room, account.user_id), within=20)

            proxy.drop = request_to(b"GET", b"/state/m.room.pinned_events")
            pin = await send_text(peer, room, "!pin")
            await dropped_at_least(proxy, 3)
            assert (await member.http.get(pins_url))["pinned"] == old_pins
            proxy.drop = None

            async def pinned() -> list[str]:
                now: list[str] = (await member.http.get(pins_url))["pinned"]
                return now if pin in now else []

            assert await eventually(pinned, within=30) == [*old_pins, pin]
            await bp.stop()
    assert "retrying the batch" in bp.log_text()
