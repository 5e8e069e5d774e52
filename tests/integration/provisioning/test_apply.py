"""Applying generated networks against the real Synapse."""

from __future__ import annotations

from clubs.core.http import path
from clubs.provisioning.plan import plan
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import check_room_matches, new_provisioner
from tests.integration.provisioning.networks import make_network

CS = ("_matrix", "client", "v3")


async def test_apply_creates_every_room_as_declared_and_second_apply_makes_no_writes(
    synapse: SynapseHarness,
) -> None:
    prov = await new_provisioner(synapse)
    staff = await synapse.new_user("fac")
    member = await synapse.new_user("mem")
    net = make_network(
        synapse.server_name,
        members={"c0": {staff.user_id: 50, member.user_id: 0}, "c1": {member.user_id: 0}},
    )
    assert len(net.rooms) == 20

    first = await prov.apply(net)
    assert len(first.created) == 20
    assert first.writes == len(first.plan.actions) + 2  # + the run marker: running, done

    actual = await prov.discover(net)
    assert len(actual.rooms) == 20
    assert not actual.duplicates
    async with prov.http() as http:
        await check_room_matches(http, net, actual, prov.user_id)
    # Members are invited to the club space and every room of their club.
    for ref, room in actual.rooms.items():
        if ref.startswith("club:c0"):
            assert room.members[staff.user_id].membership == "invite"
            assert room.members[member.user_id].membership == "invite"
    # Nothing is published in the room directory.
    public = await member.http.get(path(*CS, "publicRooms"))
    assert not {r["room_id"] for r in public["chunk"]} & set(actual.room_ids().values())

    second = await prov.apply(net)
    assert second.plan.empty
    assert second.writes == 0
    assert plan(net, await prov.discover(net)).empty
