"""Room names carry their club on the real Synapse, and a changed format renames the rooms."""

from __future__ import annotations

import secrets

from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.load import parse_network
from clubs.provisioning.plan import plan, render_text
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import (
    Provisioner,
    check_room_matches,
    new_provisioner,
    state_map,
)


def network(net_id: str, server_name: str, defaults: str = "") -> DesiredNetwork:
    text = f"""\
version: 1
network: {net_id}
name: "Сеть"
{defaults}
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
    - {{key: announcements, name: "Объявления"}}
cohort_template:
  rooms:
    - {{key: chat, name: "Группа"}}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        cohorts: [{{key: spring, name: "Весна"}}]
      - key: astana
        name: "Астана"
"""
    return compile_network(parse_network(text), server_name)


async def names_on_server(prov: Provisioner, net: DesiredNetwork) -> dict[str, str]:
    """ref → the m.room.name the homeserver holds."""
    actual = await prov.discover(net)
    async with prov.http() as http:
        await check_room_matches(http, net, actual, prov.user_id)
        return {
            ref: (await state_map(http, room.room_id))[("m.room.name", "")]["name"]
            for ref, room in actual.rooms.items()
        }


async def test_rooms_are_named_with_their_club_and_renamed_when_the_format_changes(
    synapse: SynapseHarness,
) -> None:
    prov = await new_provisioner(synapse)
    net_id = f"names-{secrets.token_hex(4)}"
    spaces = {
        "network": "Сеть",
        "country:kz": "Казахстан",
        "club:almaty": "Алматы",
        "club:astana": "Астана",
        "cohort:almaty/spring": "Весна",
    }
    named = network(net_id, synapse.server_name)

    await prov.apply(named)
    assert await names_on_server(prov, named) == {
        **spaces,
        "club:almaty/general": "Общий · Алматы",
        "club:almaty/announcements": "Объявления · Алматы",
        "club:astana/general": "Общий · Астана",
        "club:astana/announcements": "Объявления · Астана",
        "cohort:almaty/spring/chat": "Группа · Весна",
    }

    renamed = network(
        net_id,
        synapse.server_name,
        'defaults: {room_name_format: "{club}: {room}", cohort_room_name_format: "{room}"}',
    )
    actual = await prov.discover(renamed)
    change = plan(renamed, actual)
    rooms = {r.ref for r in renamed.rooms if not r.is_space}
    assert {(a.kind, a.event_type, a.ref) for a in change.actions} == {
        ("put_state", "m.room.name", ref) for ref in rooms
    }
    assert not change.security
    assert "~ update club:almaty/general: m.room.name" in render_text(change)

    result = await prov.apply(renamed)
    assert result.plan == change
    assert await names_on_server(prov, renamed) == {
        **spaces,
        "club:almaty/general": "Алматы: Общий",
        "club:almaty/announcements": "Алматы: Объявления",
        "club:astana/general": "Астана: Общий",
        "club:astana/announcements": "Астана: Объявления",
        "cohort:almaty/spring/chat": "Группа",
    }
    assert plan(renamed, await prov.discover(renamed)).empty
    assert (await prov.apply(renamed)).writes == 0
