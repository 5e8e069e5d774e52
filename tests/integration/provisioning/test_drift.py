"""Drift on the homeserver: security fields reverted, members left alone or removed, archives."""

from __future__ import annotations

from clubs.core.http import path
from clubs.core.namespace import LOCATOR
from clubs.provisioning.plan import plan, render_text
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import new_provisioner, state_map
from tests.integration.provisioning.networks import make_network, with_members, without_club

CS = ("_matrix", "client", "v3")


async def test_hand_made_public_room_is_security_drift_and_apply_reverts_it(
    synapse: SynapseHarness,
) -> None:
    prov = await new_provisioner(synapse)
    net = make_network(synapse.server_name, n_clubs=1, rooms_per_club=2)
    await prov.apply(net)
    room_id = (await prov.discover(net)).rooms["club:c0/r1"].room_id
    async with prov.http() as http:
        for etype, content in (
            ("m.room.join_rules", {"join_rule": "public"}),
            ("m.room.history_visibility", {"history_visibility": "world_readable"}),
        ):
            await http.put(path(*CS, "rooms", room_id, "state", etype, ""), content)

    drift = plan(net, await prov.discover(net))
    assert [(a.event_type, a.security) for a in drift.actions] == [
        ("m.room.join_rules", True),
        ("m.room.history_visibility", True),
    ]
    text = render_text(drift)
    assert '! SECURITY club:c0/r1: m.room.join_rules: join_rule: "public" → "invite"' in text
    assert "history_visibility" in text

    result = await prov.apply(net)
    assert result.writes == 2 + 2  # the two state events + the run marker (running, done)
    async with prov.http() as http:
        state = await state_map(http, room_id)
    assert state[("m.room.join_rules", "")] == {"join_rule": "invite"}
    assert state[("m.room.history_visibility", "")] == {"history_visibility": "joined"}
    assert plan(net, await prov.discover(net)).empty


async def test_power_threshold_drift_is_security_and_unmanaged_keys_survive(
    synapse: SynapseHarness,
) -> None:
    prov = await new_provisioner(synapse)
    outsider = await synapse.new_user("out")
    net = make_network(synapse.server_name, n_clubs=1, rooms_per_club=1)
    await prov.apply(net)
    room_id = (await prov.discover(net)).rooms["club:c0/r0"].room_id
    async with prov.http() as http:
        pl = (await state_map(http, room_id))[("m.room.power_levels", "")]
        pl = {**pl, "invite": 0, "users": {**pl["users"], outsider.user_id: 10}}
        await http.put(path(*CS, "rooms", room_id, "state", "m.room.power_levels", ""), pl)

    drift = plan(net, await prov.discover(net))
    assert len(drift.actions) == 1
    assert drift.actions[0].security
    await prov.apply(net)
    async with prov.http() as http:
        pl = (await state_map(http, room_id))[("m.room.power_levels", "")]
    assert pl["invite"] == 50
    assert pl["historical"] == 100  # added by the server, preserved
    assert pl["users"][outsider.user_id] == 10  # unmanaged entry kept without --prune
    pruned = plan(net, await prov.discover(net), prune=True)
    assert [a.event_type for a in pruned.actions] == ["m.room.power_levels"]


async def test_member_who_left_is_not_reinvited_unless_asked(synapse: SynapseHarness) -> None:
    prov = await new_provisioner(synapse)
    member = await synapse.new_user("mem")
    net = make_network(
        synapse.server_name, n_clubs=1, rooms_per_club=1, members={"c0": {member.user_id: 0}}
    )
    await prov.apply(net)
    room_id = (await prov.discover(net)).rooms["club:c0/r0"].room_id
    await member.http.post(path(*CS, "join", room_id), {})
    await member.http.post(path(*CS, "rooms", room_id, "leave"), {})

    quiet = plan(net, await prov.discover(net))
    assert quiet.empty
    assert [n.kind for n in quiet.notes] == ["left"]
    assert (await prov.apply(net)).writes == 0

    again = await prov.apply(net, reinvite=True)
    assert [(a.kind, a.user_id) for a in again.plan.actions] == [("invite", member.user_id)]


async def test_person_removed_from_the_network_is_kicked(synapse: SynapseHarness) -> None:
    prov = await new_provisioner(synapse)
    staff = await synapse.new_user("fac")
    member = await synapse.new_user("mem")
    net = make_network(
        synapse.server_name,
        n_clubs=1,
        rooms_per_club=2,
        members={"c0": {staff.user_id: 50, member.user_id: 0}},
    )
    await prov.apply(net)
    general = (await prov.discover(net)).rooms["club:c0/r0"].room_id
    await member.http.post(path(*CS, "join", general), {})

    smaller = with_members(net, "c0", {staff.user_id: 50})
    result = await prov.apply(smaller)
    kicks = [a for a in result.plan.actions if a.kind == "kick"]
    assert {a.ref for a in kicks} == {"club:c0", "club:c0/r0", "club:c0/r1"}
    assert {a.user_id for a in kicks} == {member.user_id}
    async with prov.http() as http:
        state = await http.get(
            path(*CS, "rooms", general, "state", "m.room.member", member.user_id)
        )
    assert state == {"membership": "leave", "reason": "removed by provisioner"}
    after = await prov.discover(smaller)
    assert after.rooms["club:c0/r0"].members[staff.user_id].membership == "invite"
    assert plan(smaller, after).empty


async def test_removed_club_is_reported_then_archived_with_prune(synapse: SynapseHarness) -> None:
    prov = await new_provisioner(synapse)
    net = make_network(synapse.server_name, n_clubs=2, rooms_per_club=1)
    await prov.apply(net)
    before = await prov.discover(net)
    gone = without_club(net, "c1")

    report = plan(gone, before)
    assert report.empty
    assert sorted(n.ref for n in report.notes if n.kind == "orphan") == ["club:c1", "club:c1/r0"]

    result = await prov.apply(gone, prune=True)
    assert {a.kind for a in result.plan.actions} == {"archive"}
    assert plan(gone, await prov.discover(gone), prune=True).empty
    room_id = before.rooms["club:c1/r0"].room_id
    async with prov.http() as http:
        state = await state_map(http, room_id)
        country = await state_map(http, before.rooms["country:k0"].room_id)
        space = await state_map(http, before.rooms["club:c1"].room_id)
    assert state[("m.room.join_rules", "")] == {"join_rule": "invite"}
    assert state[("m.room.power_levels", "")]["events_default"] == 50
    assert state[(LOCATOR, "")]["state"] == "archived"
    assert space[("m.space.child", room_id)] == {}
    assert country[("m.space.child", before.rooms["club:c1"].room_id)] == {}


async def test_archived_club_is_archived_and_not_created(synapse: SynapseHarness) -> None:
    prov = await new_provisioner(synapse)
    net = make_network(synapse.server_name, n_clubs=2, rooms_per_club=1, archived_clubs=["c1"])
    first = await prov.apply(net)
    assert "club:c1" not in first.created
    live = make_network(synapse.server_name, n_clubs=2, rooms_per_club=1, network=net.network)
    await prov.apply(live)
    result = await prov.apply(net)
    assert {a.kind for a in result.plan.actions} == {"archive"}
    after = await prov.discover(net)
    assert after.rooms["club:c1/r0"].archived
    assert plan(net, after).empty
