"""Bots sharded by club (`clubs bots run --clubs`): a shard answers in its clubs' rooms only and
keeps the others' invitations (never leaves them); one process per bot account. With `shards:`
in the network file, each shard has accounts of its own, provisioned into its clubs' rooms."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mautrix.types import RoomID

from clubs.bots.host import BotAccount, HostConfig, open_runtimes, supervised
from clubs.bots.runtime import RuntimeSettings
from clubs.core.e2ee import StoreError
from clubs.core.http import UserId, path
from clubs.core.secrets import Vault
from clubs.provisioning.compile import compile_network
from clubs.provisioning.load import parse_network
from clubs.provisioning.plan import plan
from clubs.up import ensure_bot_accounts
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
from tests.integration.bots.test_runtime import Echo, replies_from, wait_reply
from tests.integration.provisioning.helpers import new_provisioner
from tests.mautrix_client import mautrix_peer


async def test_a_shard_answers_in_its_clubs_rooms_only_and_stays_in_the_others(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    account = await create_bot_account(synapse, tmp_path, "echo")
    member = await synapse.new_user("member")
    invite = [account.user_id, member.user_id]
    ours = await managed_room(synapse, network, invite=invite, club="almaty")
    theirs = await managed_room(synapse, network, invite=invite, club="berlin")
    for room in (ours, theirs):
        await member.http.post(path(*CS, "join", room), {})
    settings = RuntimeSettings(sync_timeout_ms=1000, shard=frozenset({"kz", "almaty"}))
    async with (
        bot_host(
            synapse,
            tmp_path,
            [account],
            {"echo": simple_factory(Echo())},
            network=network,
            settings=settings,
        ) as host,
        mautrix_peer(member, synapse.url) as peer,
    ):
        for room in (ours, theirs):  # joined both: the other shard's room is not left
            await eventually(lambda room=room: joined(member, room, account.user_id), within=20)
        await peer.send_text(RoomID(theirs), "!ping")
        await peer.send_text(RoomID(ours), "!ping")
        await wait_reply(peer, account.user_id, ours, 0)
        await peer.send_text(RoomID(ours), "!ping")  # a later batch than the other room's ping
        await wait_reply(peer, account.user_id, ours, 1)
        assert replies_from(peer, account.user_id, theirs) == []
        assert await joined(member, theirs, account.user_id)
        host.check_alive()


async def test_a_second_process_for_the_same_account_is_refused(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    account = await create_bot_account(synapse, tmp_path, "echo")
    config = HostConfig(
        homeserver_url=synapse.url,
        var_dir=tmp_path,
        accounts=[account],
        network=new_network(),
        settings=RuntimeSettings(shard=frozenset({"almaty"})),
    )
    factories = {"echo": simple_factory(Echo())}
    async with open_runtimes(config, factories):
        with pytest.raises(StoreError) as err:
            async with open_runtimes(config, factories):
                pass
    store = tmp_path / "bots" / "devices" / "echo"
    assert str(err.value) == (
        f"{store}: bot account {account.user_id} is already run by another process (pid "
        f"{os.getpid()}); one process per account: give each shard its own "
        "accounts, or stop that process first"
    )


SHARDED = """\
version: 1
network: NETWORK
name: "Сеть"
bots:
  echo: BOT
shards:
  east: {countries: [kz]}
  west: {clubs: [berlin]}
people:
  - {key: member, mxid: "MEMBER", onboarding: existing}
club_template:
  rooms:
    - {key: general, name: "Общий"}
countries:
  - {key: kz, name: "Казахстан", clubs: [{key: almaty, name: "Алматы", members: [member]}]}
  - {key: de, name: "Германия", clubs: [{key: berlin, name: "Берлин", members: [member]}]}
"""


@contextlib.asynccontextmanager
async def shard_host(
    synapse: SynapseHarness, var_dir: Path, config: HostConfig
) -> AsyncIterator[None]:
    """One shard's bots process, as `clubs bots run --shard` hosts them (the echo bot)."""
    async with open_runtimes(config, {"echo": simple_factory(Echo())}) as runtimes:
        (runtime,) = runtimes
        task = asyncio.create_task(supervised(runtime))

        async def ready() -> bool:
            if task.done():
                task.result()  # its failure, raised here
            return runtime.ready.is_set()

        try:
            await eventually(ready, within=30)
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_two_shards_on_their_own_accounts_each_answer_in_its_own_clubs_room(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    network = new_network()
    member = await synapse.new_user("member")
    text = SHARDED.replace("NETWORK", network).replace("MEMBER", member.user_id)
    text = text.replace("BOT", f"echo-{secrets.token_hex(4)}")
    net = parse_network(text)
    desired = compile_network(net, synapse.server_name)
    prov = await new_provisioner(synapse)
    vault = Vault(tmp_path / "secrets" / "vault")
    async with prov.http() as admin:
        # The bootstrap of `clubs up` / `clubs bots bootstrap`: the shards' accounts too.
        made = await ensure_bot_accounts(
            synapse.client(),
            admin,
            vault,
            synapse.hs.registration_shared_secret(),
            synapse.server_name,
            desired,
        )
    east, west = (desired.shard_bots[s]["echo"] for s in ("east", "west"))
    assert [a.user_id for a in made] == [desired.bots["echo"], east, west]
    await prov.apply(desired)
    actual = await prov.discover(desired)
    assert plan(desired, actual).empty  # the sharded network applied: no changes left
    rooms = actual.room_ids()
    almaty, berlin = rooms["club:almaty/general"], rooms["club:berlin/general"]
    for room, bot, other in ((almaty, east, west), (berlin, west, east)):
        levels = await member.http.get(path(*CS, "rooms", room, "state", "m.room.power_levels"))
        assert levels["users"][bot] == 50  # the bot role, as the network's one bot gets it
        assert other not in levels["users"]
        assert desired.bots["echo"] not in levels["users"]

    def config(shard: str, bot: str) -> HostConfig:
        return HostConfig(
            homeserver_url=synapse.url,
            var_dir=tmp_path,
            accounts=[BotAccount("echo", UserId(bot))],
            network=network,
            provisioner=prov.user_id,
            settings=RuntimeSettings(
                sync_timeout_ms=1000, shard=next(s.keys for s in net.shards if s.key == shard)
            ),
            shard=shard,
        )

    async with (
        shard_host(synapse, tmp_path, config("east", east)),
        shard_host(synapse, tmp_path, config("west", west)),
        mautrix_peer(member, synapse.url) as peer,
    ):
        for room, bot in ((almaty, east), (berlin, west)):
            await eventually(lambda room=room, bot=bot: joined(member, room, bot), within=20)
            await peer.send_text(RoomID(room), "!ping")
        await wait_reply(peer, east, almaty, 0)
        await wait_reply(peer, west, berlin, 0)
        assert replies_from(peer, west, almaty) == replies_from(peer, east, berlin) == []
        assert not await joined(member, almaty, west)
    for shard in ("east", "west"):  # one store per account, in its shard's directory
        assert (tmp_path / "bots" / "shards" / shard / "devices" / "echo").is_dir()
