"""Sessions declared in the network file, from YAML to the `sessions` room's state on the real
Synapse: created with the room, read back exactly, removed from the room when removed from the
file, and never a venue or a link in it."""

from __future__ import annotations

import secrets

from clubs.core.namespace import CLUB_SESSIONS
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.load import parse_network
from clubs.provisioning.plan import plan, render_text
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import check_room_matches, new_provisioner, state_map

SESSIONS = """\
        sessions:
          - key: weekly
            title: "Встреча клуба"
            when: "каждый четверг в 19:00"
            from: 2026-12-01
            capacity: 20
          - key: visa-talk
            title: "Лекция о визах"
            when: "10.01.2027 в 18:30"
            duration: 90m
            kind: lecture
            format: online
            materials: https://example.org/visa
"""

WEEKLY = {
    "key": "weekly",
    "title": "Встреча клуба",
    "kind": "meeting",
    "start": "2026-12-03T19:00",
    "rrule": "FREQ=WEEKLY;BYDAY=TH",
    "duration_s": 7200,
    "online": False,
    "capacity": 20,
    "materials": None,
}
TALK = {
    "key": "visa-talk",
    "title": "Лекция о визах",
    "kind": "lecture",
    "start": "2027-01-10T18:30",
    "rrule": None,
    "duration_s": 5400,
    "online": True,
    "capacity": None,
    "materials": "https://example.org/visa",
}


def network(net_id: str, server_name: str, sessions: str) -> DesiredNetwork:
    text = f"""\
version: 1
network: {net_id}
name: "Сеть"
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
    - {{key: sessions, name: "Встречи"}}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        time_zone: Asia/Almaty
{sessions}      - key: astana
        name: "Астана"
"""
    return compile_network(parse_network(text), server_name)


async def test_declared_sessions_are_the_sessions_rooms_state_and_leave_it_with_the_yaml(
    synapse: SynapseHarness,
) -> None:
    prov = await new_provisioner(synapse)
    net_id = f"ses-{secrets.token_hex(4)}"
    declared = network(net_id, synapse.server_name, SESSIONS)

    await prov.apply(declared)
    actual = await prov.discover(declared)
    async with prov.http() as http:
        await check_room_matches(http, declared, actual, prov.user_id)
        almaty = await state_map(http, actual.rooms["club:almaty/sessions"].room_id)
        astana = await state_map(http, actual.rooms["club:astana/sessions"].room_id)
        general = await state_map(http, actual.rooms["club:almaty/general"].room_id)
    assert almaty[(CLUB_SESSIONS, "")] == {"sessions": [TALK, WEEKLY]}  # sorted by key
    assert astana[(CLUB_SESSIONS, "")] == {"sessions": []}
    assert (CLUB_SESSIONS, "") not in general
    power = almaty[("m.room.power_levels", "")]
    assert power["events"][CLUB_SESSIONS] == 100  # only the provisioner writes it
    assert plan(declared, actual).empty

    removed = network(net_id, synapse.server_name, "")
    change = plan(removed, actual)
    assert [(a.kind, a.ref, a.event_type) for a in change.actions] == [
        ("put_state", "club:almaty/sessions", CLUB_SESSIONS)
    ]
    assert not change.security
    assert "SECURITY" not in render_text(change)

    await prov.apply(removed)
    actual = await prov.discover(removed)
    async with prov.http() as http:
        almaty = await state_map(http, actual.rooms["club:almaty/sessions"].room_id)
    assert almaty[(CLUB_SESSIONS, "")] == {"sessions": []}
    assert plan(removed, actual).empty
