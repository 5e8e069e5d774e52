"""Bots sharded by club (`clubs bots run --clubs`): a shard answers in its clubs' rooms only and
keeps the others' invitations (never leaves them); one process per bot account."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mautrix.types import RoomID

from clubs.bots.host import HostConfig, open_runtimes
from clubs.bots.runtime import RuntimeSettings
from clubs.core.e2ee import StoreError
from clubs.core.http import path
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
