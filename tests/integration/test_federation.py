"""Two of the network's own servers federating over TLS from the network's CA, and an outsider.

A club space and its room live on A; a member whose account is on B joins both and reads an
encrypted message from A through an independent E2EE client. The shipped moderation bot, an
account on A in rooms of both servers, bans a person network-wide on a moderator's `!ban`: B's
members see the ban in A's room and in a room hosted on B. Each server provisions its own
countries from one network file. Server C has a certificate from the same CA and allows A, but
neither A nor B lists it: A refuses to invite C's user and refuses C's user joining. Server D is
on B's list, but its certificate comes from another CA: B cannot reach it.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mautrix.types import RoomID, UserID

from clubs.bots.moderation.detect import Thresholds
from clubs.bots.runtime import RuntimeSettings
from clubs.core.errors import Forbidden, MatrixError
from clubs.core.http import MatrixHttp, RoomId, path
from clubs.provisioning.compile import compile_network
from clubs.provisioning.load import parse_network
from tests.federation import Federation, federated_servers
from tests.harness import Account, eventually
from tests.integration.bots.support import (
    bot_host,
    create_bot_account,
    managed_room,
    new_network,
)
from tests.integration.bots.test_moderation_bot import factory as moderation_factory
from tests.integration.moderation.helpers import membership
from tests.integration.provisioning.helpers import new_provisioner
from tests.mautrix_client import MIN_TRUST, MautrixPeer, mautrix_peer

CS = ("_matrix", "client", "v3")
MEGOLM = "m.megolm.v1.aes-sha2"


@pytest.fixture(scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federation]:
    async with federated_servers(
        tmp_path_factory.mktemp("federation"), ("a", "b"), outsider=True, impostor=True
    ) as federation:
        yield federation


async def create_room(
    owner: Account,
    *,
    invite: list[str],
    space: bool = False,
    users: dict[str, int] | None = None,
) -> RoomId:
    """An invite-only, encrypted room v12 as the provisioner makes them (or a space)."""
    body: dict[str, Any] = {
        "room_version": "12",
        "preset": "private_chat",
        "initial_state": [
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
            {"type": "m.room.guest_access", "content": {"guest_access": "forbidden"}},
            {"type": "m.room.encryption", "content": {"algorithm": MEGOLM}},
        ],
        "power_level_content_override": {"users": users or {}},
        "invite": invite,
    }
    if space:
        body["creation_content"] = {"type": "m.space"}
    resp = await owner.http.post(path(*CS, "createRoom"), body)
    return RoomId(resp["room_id"])


async def join(account: Account, room: RoomId, via: str) -> None:
    """Join through `via` (a room v12 id names no server: a remote joiner must say where)."""
    await account.http.post(path(*CS, "join", room) + f"?server_name={via}", {})


async def joined(reader: Account, room: RoomId, user_id: str) -> bool:
    return await membership(reader.http, room, user_id) == "join"


async def test_member_on_b_joins_a_space_on_a_and_reads_an_encrypted_message(
    net: Federation,
) -> None:
    a, b = net["a"], net["b"]
    owner, anna = await a.new_user("owner"), await a.new_user("anna")
    bob = await b.new_user("bob")
    space = await create_room(owner, invite=[bob.user_id], space=True)
    room = await create_room(owner, invite=[anna.user_id, bob.user_id])
    await owner.http.put(
        path(*CS, "rooms", space, "state", "m.space.child", room), {"via": [a.server_name]}
    )
    await join(bob, space, a.server_name)
    await join(bob, room, a.server_name)
    await join(anna, room, a.server_name)
    await eventually(lambda: joined(owner, room, bob.user_id), within=30)
    assert bob.user_id.endswith(":" + b.server_name)

    async with (
        mautrix_peer(anna, a.url) as sender,
        mautrix_peer(bob, b.url, key_wait_s=30) as reader,
    ):
        # Anna's client rates bob's device as cross-signed, and knows the room is encrypted and
        # bob is in it, before it encrypts (else it withholds the key from his device).
        await eventually(lambda: _trusted_by(sender, bob), within=30)
        await synced(sender, room, bob.user_id)
        await sender.send_text(room, "federated hello")  # type: ignore[arg-type]
        try:
            got = await eventually(lambda: _texts(reader.received, room), within=30)
        except AssertionError:
            seen = await bob.http.get(path(*CS, "rooms", room, "messages") + "?dir=b&limit=20")
            raise AssertionError(
                f"not decrypted on B: events there {[e['type'] for e in seen['chunk']]}, "
                f"undecryptable {reader.undecryptable}, withheld {reader.withheld}, "
                f"key shared with/withheld from {await sender.outbound_shared_with(room)}"  # type: ignore[arg-type]
            ) from None
        assert got == ["federated hello"]
    # The server of B holds the event as ciphertext only.
    events = await bob.http.get(path(*CS, "rooms", room, "messages") + "?dir=b&limit=20")
    types = {e["type"] for e in events["chunk"] if e.get("sender") == anna.user_id}
    assert "m.room.encrypted" in types
    assert "m.room.message" not in types


async def synced(peer: MautrixPeer, room: RoomId, member: str) -> None:
    """Wait until the peer's own sync has the room as encrypted with `member` joined (a send
    before that would go out unencrypted, or without a key for that member)."""
    store = peer.client.state_store

    async def ready() -> bool:
        return bool(
            await store.is_encrypted(RoomID(room))
            and await store.is_joined(RoomID(room), UserID(member))
        )

    await eventually(ready, within=30)


async def _device_known(asker: Account, owner: Account) -> bool:
    """Whether `asker`'s server reports `owner`'s device signed by `owner`'s self-signing key
    (a remote user's device list and cross-signing keys reach it over federation, and may be
    cached from before the cross-signing: a client then withholds room keys from the device)."""
    keys = await asker.http.post(path(*CS, "keys", "query"), {"device_keys": {owner.user_id: []}})
    device = keys.get("device_keys", {}).get(owner.user_id, {}).get(owner.session.device_id)
    ssk = keys.get("self_signing_keys", {}).get(owner.user_id, {}).get("keys", {})
    if not device or not ssk:
        return False
    signatures = device.get("signatures", {}).get(owner.user_id, {})
    return any(key_id in signatures for key_id in ssk)


async def _trusted_by(peer: MautrixPeer, owner: Account) -> bool:
    """Whether `peer`'s client rates `owner`'s device as cross-signed. Its first look at a
    remote user's cross-signing keys may predate them on its server (they come over
    federation), and the client does not look again by itself: once the server has them, the
    keys are fetched anew."""
    if not await _device_known(peer.account, owner):
        return False
    await peer.crypto._fetch_keys([UserID(owner.user_id)], include_untracked=True)
    return await peer.trust_of(owner.user_id, owner.session.device_id) >= MIN_TRUST


async def _texts(received: list[Any], room: RoomId) -> list[str]:
    return [r.body for r in received if r.room_id == room]


async def _is_banned(reader: Account, room: RoomId, user_id: str) -> bool:
    return await membership(reader.http, room, user_id) == "ban"


async def test_server_outside_the_allowlist_is_refused_both_ways(net: Federation) -> None:
    a, c = net["a"], net.outsider
    assert c is not None
    owner = await a.new_user("owner")
    carol = await c.new_user("carol")
    room = await create_room(owner, invite=[])
    # A will not send an invite to C.
    with pytest.raises(Forbidden, match=f"Federation denied with {c.server_name}"):
        await owner.http.post(path(*CS, "rooms", room, "invite"), {"user_id": carol.user_id})
    # C's user asks to join through A (C allows A, and its certificate is from the CA): A
    # refuses C's request, so the join fails and A's room never lists carol.
    await owner.http.put(
        path(*CS, "rooms", room, "state", "m.room.join_rules"), {"join_rule": "public"}
    )
    with pytest.raises(Forbidden, match=f"Federation denied with {c.server_name}"):
        await join(carol, room, a.server_name)
    assert await membership(owner.http, room, carol.user_id) is None


async def test_a_listed_server_whose_certificate_is_not_from_the_network_ca_is_refused(
    net: Federation,
) -> None:
    """B lists D, but D's certificate comes from another CA: B does not get past TLS."""
    b, d = net["b"], net.impostor
    assert d is not None
    owner, dave = await b.new_user("owner"), await d.new_user("dave")
    room = await create_room(owner, invite=[])
    with pytest.raises(MatrixError) as refused:
        await owner.http.post(path(*CS, "rooms", room, "invite"), {"user_id": dave.user_id})
    assert refused.value.status == 502
    assert f"Can't connect to server {d.server_name}" in refused.value.error
    assert "certificate verify failed" in b.hs.settings.log_file.read_text()
    assert await membership(owner.http, room, dave.user_id) is None


NETWORK = """\
version: 1
network: {key}
name: "Сеть"
servers:
  kz: {{server_name: "{a}"}}
  de: {{server_name: "{b}"}}
bots:
  moderation: {bot}
people:
  - {{key: anna, mxid: "{anna}", onboarding: existing}}
  - {{key: bob, mxid: "{bob}", onboarding: existing}}
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
countries:
  - key: kz
    name: "Казахстан"
    server: kz
    clubs:
      - {{key: almaty, name: "Алматы", members: [anna, bob]}}
  - key: de
    name: "Германия"
    server: de
    clubs:
      - {{key: berlin, name: "Берлин", members: [bob, anna]}}
"""


async def test_each_server_provisions_its_own_countries_and_invites_the_others_people(
    net: Federation,
) -> None:
    a, b = net["a"], net["b"]
    anna, bot, bob = await a.new_user("anna"), await a.new_user("modbot"), await b.new_user("bob")
    text = NETWORK.format(
        key=f"net{secrets.token_hex(3)}",
        a=a.server_name,
        b=b.server_name,
        bot=bot.user_id[1:].split(":")[0],
        anna=anna.user_id,
        bob=bob.user_id,
    )
    network = parse_network(text, "network.yaml")
    provisioners = {
        a.server_name: await new_provisioner(a),
        b.server_name: await new_provisioner(b),
    }
    desired = {name: compile_network(network, name) for name in provisioners}
    for name, prov in provisioners.items():
        result = await prov.apply(desired[name])
        assert result.writes > 0

    rooms_on_a = (await provisioners[a.server_name].discover(desired[a.server_name])).rooms
    rooms_on_b = (await provisioners[b.server_name].discover(desired[b.server_name])).rooms
    assert "club:almaty/general" in rooms_on_a
    assert "country:de" not in rooms_on_a
    assert "club:berlin/general" in rooms_on_b
    assert "country:kz" not in rooms_on_b
    almaty = rooms_on_a["club:almaty/general"].room_id
    berlin = rooms_on_b["club:berlin/general"].room_id
    # Local people are joined by their own server; the other server's people and the bot
    # (an account on the first server) are invited across, and can join.
    assert await membership(anna.http, almaty, anna.user_id) == "join"
    assert await membership(anna.http, almaty, bob.user_id) == "invite"
    assert await membership(bob.http, berlin, bob.user_id) == "join"
    await eventually(lambda: _is(bob.http, berlin, bot.user_id, "invite"), within=20)
    await join(bob, almaty, a.server_name)
    await join(bot, berlin, b.server_name)
    await eventually(lambda: _is(anna.http, almaty, bob.user_id, "join"), within=20)
    # The bot has its power in the room of the other server.
    levels = await bot.http.get(path(*CS, "rooms", berlin, "state", "m.room.power_levels", ""))
    assert levels["users"][bot.user_id] == 100

    # A second apply on each server changes nothing.
    for name, prov in provisioners.items():
        again = await prov.apply(desired[name])
        assert again.writes == 0, again.summary()


async def _is(http: MatrixHttp, room: RoomId, user_id: str, value: str) -> bool:
    return await membership(http, room, user_id) == value


async def test_the_moderation_bot_on_a_joins_rooms_of_b_and_its_ban_command_reaches_both(
    net: Federation, tmp_path: Path
) -> None:
    """The shipped moderation bot, hosted on A as `clubs bots run` hosts it: B's provisioner
    invites it (accepted through `other_provisioners`), and a moderator's encrypted `!ban` in a
    room on A bans the person in the rooms of both servers."""
    a, b = net["a"], net["b"]
    network = new_network()
    bot = await create_bot_account(a, tmp_path, "moderation")
    moderator = await a.new_user("mod")
    reader, troll = await b.new_user("reader"), await b.new_user("troll")
    people = [moderator.user_id, reader.user_id, troll.user_id]
    powers = {bot.user_id: 100, moderator.user_id: 50}
    on_a = await managed_room(a, network, invite=[bot.user_id, *people], powers=powers, club="a")
    on_b = await managed_room(b, network, invite=[bot.user_id, *people], powers=powers, club="b")
    for room, via in ((on_a, a.server_name), (on_b, b.server_name)):
        for who in (moderator, reader, troll):
            await join(who, RoomId(room), via)
    settings = RuntimeSettings(
        sync_timeout_ms=1000, other_provisioners=frozenset({b.admin.user_id})
    )
    async with (
        bot_host(
            a,
            tmp_path,
            [bot],
            {"moderation": moderation_factory(Thresholds())},
            network=network,
            settings=settings,
        ),
        mautrix_peer(moderator, a.url) as mod_peer,
    ):
        for room in (on_a, on_b):
            await eventually(lambda room=room: joined(reader, room, bot.user_id), within=30)
        await synced(mod_peer, RoomId(on_a), bot.user_id)
        await mod_peer.send_text(RoomID(on_a), f"!ban {troll.user_id} spam")
        for room in (on_a, on_b):
            await eventually(
                lambda room=room: _is_banned(reader, RoomId(room), troll.user_id), within=30
            )
    # The banned person cannot come back to either room, from either server's side.
    for room, via in ((on_a, a.server_name), (on_b, b.server_name)):
        with pytest.raises(Forbidden):
            await join(troll, RoomId(room), via)
