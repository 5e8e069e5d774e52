"""Local people are put into their rooms directly; invitations only for those who choose them.

A new member used to get one invitation per space and room (seven or more) and had to accept
each. Provisioning now joins an account on the network's own homeserver to its club's spaces
and rooms with Synapse's admin API, so the first login shows the club ready: the member's own
sync has every room under `join` and nothing under `invite`. A person who chose invitations
(`join: invite`) is invited as before; a pending invitation is turned into the join when the
person switches; someone who left on their own is not put back.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

from clubs.core.http import MatrixHttp, admin_v1, path
from clubs.core.secrets import Vault
from clubs.provisioning.desired import DesiredNetwork, DesiredPerson
from clubs.provisioning.onboard import password_key
from clubs.provisioning.plan import render_text
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import new_provisioner
from tests.integration.provisioning.networks import make_network

CS = ("_matrix", "client", "v3")


async def session_of(synapse: SynapseHarness, user_id: str) -> MatrixHttp:
    """The member's own session, through the admin API's "log in as" (a password login per
    check would use up Synapse's per-address login limit for the rest of the suite)."""
    resp = await synapse.admin.http.post(admin_v1("users", user_id, "login"), {})
    return synapse.client(str(resp["access_token"]))


async def member_sync(http: MatrixHttp) -> dict[str, Any]:
    """The member's own view: one initial sync (a fresh filter, so no cached response)."""
    nonce = secrets.token_hex(4)
    sync_filter = f'{{"room":{{"timeline":{{"limit":1}}}},"presence":{{"not_types":["{nonce}"]}}}}'
    return await http.get(path(*CS, "sync"), query={"timeout": "0", "filter": sync_filter})


def club_network(server: str, people: list[DesiredPerson]) -> DesiredNetwork:
    members = {"c0": {p.mxid: 0 for p in people if p.mxid}}
    return make_network(server, n_clubs=1, rooms_per_club=3, members=members, people=people)


def club_rooms(net: DesiredNetwork) -> set[str]:
    """The refs of the club's space and rooms (what its members belong to)."""
    return {r.ref for r in net.rooms if r.members}


async def test_a_precreated_member_finds_the_club_ready_with_no_invitation_to_accept(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    prov = await new_provisioner(synapse)
    direct = f"@direct-{secrets.token_hex(4)}:{synapse.server_name}"
    chooser = f"@chooser-{secrets.token_hex(4)}:{synapse.server_name}"
    people = [
        DesiredPerson("direct", direct, "Анна", "precreate", ("c0",), join="direct"),
        DesiredPerson("chooser", chooser, "Борис", "precreate", ("c0",), join="invite"),
    ]
    net = club_network(synapse.server_name, people)
    vault = Vault(tmp_path / "vault")

    result = await prov.apply(net, vault=vault)
    joins = {(a.user_id, a.ref) for a in result.plan.actions if a.kind == "join"}
    invites = {(a.user_id, a.ref) for a in result.plan.actions if a.kind == "invite"}
    refs = club_rooms(net)
    assert len(refs) == 4  # the club space and its three rooms
    assert joins == {(direct, ref) for ref in refs}
    assert invites == {(chooser, ref) for ref in refs}
    text = render_text(result.plan)
    assert f"+ join {direct} → " in text
    assert f"+ invite {chooser} → " in text

    ids = {ref: room.room_id for ref, room in (await prov.discover(net)).rooms.items()}
    assert vault.get(password_key(direct))  # precreated with a password the member logs in with
    sync = await member_sync(await session_of(synapse, direct))
    rooms = sync.get("rooms", {})
    assert set(rooms.get("join", {})) == {ids[ref] for ref in refs}
    assert rooms.get("invite", {}) == {}
    sync = await member_sync(await session_of(synapse, chooser))
    rooms = sync.get("rooms", {})
    assert set(rooms.get("invite", {})) == {ids[ref] for ref in refs}
    assert rooms.get("join", {}) == {}

    # Nothing is left to do: a second apply writes nothing.
    assert (await prov.apply(net, vault=vault)).writes == 0


async def test_a_pending_invitation_becomes_a_join_and_who_left_stays_out(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    prov = await new_provisioner(synapse)
    anna = f"@anna-{secrets.token_hex(4)}:{synapse.server_name}"
    boris = f"@boris-{secrets.token_hex(4)}:{synapse.server_name}"
    people = [
        DesiredPerson("anna", anna, None, "precreate", ("c0",), join="invite"),
        DesiredPerson("boris", boris, None, "precreate", ("c0",), join="direct"),
    ]
    net = club_network(synapse.server_name, people)
    vault = Vault(tmp_path / "vault")
    await prov.apply(net, vault=vault)
    ids = {ref: room.room_id for ref, room in (await prov.discover(net)).rooms.items()}
    refs = sorted(club_rooms(net))

    # Boris leaves one room on his own; Anna switches from invitations to direct joins.
    boris_http = await session_of(synapse, boris)
    await boris_http.post(path(*CS, "rooms", ids[refs[-1]], "leave"), {})
    switched = replace(net, people=(replace(people[0], join="direct"), people[1]))
    second = await prov.apply(switched, vault=vault)
    assert {(a.kind, a.user_id, a.ref) for a in second.plan.actions} == {
        ("join", anna, ref) for ref in refs
    }
    assert [n.detail for n in second.plan.notes if n.kind == "left"] == [
        f"{boris} left on their own; not added again"
    ]
    rooms = (await member_sync(await session_of(synapse, anna))).get("rooms", {})
    assert set(rooms.get("join", {})) == {ids[ref] for ref in refs}
    assert rooms.get("invite", {}) == {}
