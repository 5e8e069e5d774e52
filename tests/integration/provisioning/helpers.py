"""Shared helpers for provisioning integration tests: a provisioner per test, checks of rooms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clubs.core.http import MatrixHttp, path
from clubs.core.namespace import LOCATOR
from clubs.provisioning.actual import Actual
from clubs.provisioning.apply import ApplyResult, apply_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.discover import discover
from tests.harness import SynapseHarness

ADMIN_V1 = ("_synapse", "admin", "v1")
CREATE_BATCH = {
    "m.room.create",
    "m.room.member",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
}


@dataclass
class Provisioner:
    """A fresh server-admin account per test, so discovery sees only this test's rooms."""

    user_id: str
    token: str
    url: str

    def http(self) -> MatrixHttp:
        return MatrixHttp(self.url, self.token)

    async def apply(self, net: DesiredNetwork, **kw: Any) -> ApplyResult:
        async with self.http() as http:
            return await apply_network(http, net, self.user_id, **kw)

    async def discover(self, net: DesiredNetwork) -> Actual:
        async with self.http() as http:
            return await discover(http, net, self.user_id)


async def new_provisioner(synapse: SynapseHarness) -> Provisioner:
    account = await synapse.new_user("prov", admin=True, user_type="bot")
    return Provisioner(account.user_id, account.session.access_token, synapse.url)


async def state_map(http: MatrixHttp, room_id: str) -> dict[tuple[str, str], Any]:
    resp = await http.get(path(*ADMIN_V1, "rooms", room_id, "state"))
    return {(e["type"], e["state_key"]): e["content"] for e in resp["state"]}


async def first_events(http: MatrixHttp, room_id: str, limit: int = 50) -> list[dict[str, Any]]:
    resp = await http.get(
        path(*ADMIN_V1, "rooms", room_id, "messages"), query={"dir": "f", "limit": str(limit)}
    )
    return list(resp["chunk"])


async def check_room_matches(
    http: MatrixHttp, net: DesiredNetwork, actual: Actual, provisioner: str
) -> None:
    """Every active managed room is exactly as declared, encrypted from its creation batch."""
    ids = actual.room_ids()
    for room in net.rooms:
        if room.life != "active":
            continue
        room_id = ids[room.ref]
        state = await state_map(http, room_id)
        create = state[("m.room.create", "")]
        assert create["room_version"] == room.room_version
        assert create.get("m.federate") is False
        assert (create.get("type") == "m.space") == room.is_space
        assert ("m.room.canonical_alias", "") not in state
        assert state[("m.room.encryption", "")]["algorithm"] == "m.megolm.v1.aes-sha2"
        join = state[("m.room.join_rules", "")]
        if room.join_rule == "restricted":
            assert join == {
                "join_rule": "restricted",
                "allow": [
                    {"type": "m.room_membership", "room_id": ids[r]} for r in room.join_allow_refs
                ],
            }
        else:
            assert join == {"join_rule": "invite"}
        for key in (("m.room.history_visibility", ""), ("m.room.guest_access", "")):
            assert state[key] == room.state[key]
        pl = state[("m.room.power_levels", "")]
        assert {k: pl[k] for k in room.power_levels} == dict(room.power_levels)
        assert provisioner not in pl["users"]  # v12: the creator is never listed
        assert state[(LOCATOR, "")] == room.locator.content()
        if room.parent_ref is not None:
            parent_id = ids[room.parent_ref]
            assert state[("m.space.parent", parent_id)] == {
                "via": [net.server_name],
                "canonical": True,
            }
            parent_state = await state_map(http, parent_id)
            edge = parent_state[("m.space.child", room_id)]
            assert edge["via"] == [net.server_name]
            assert edge.get("suggested", False) == room.suggested
            assert edge.get("order") == room.order
        # m.room.encryption is in the creation batch: only createRoom's own events precede it.
        events = await first_events(http, room_id)
        types = [e["type"] for e in events]
        enc = types.index("m.room.encryption")
        assert set(types[:enc]) <= CREATE_BATCH, types[:enc]
        assert all(e["sender"] == provisioner for e in events[: enc + 1])
        assert "m.room.message" not in types[:enc]
