"""A club's moderation settings from YAML to the club settings state on the real Synapse."""

from __future__ import annotations

import secrets

from clubs.core.namespace import CLUB_SETTINGS
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.load import parse_network
from clubs.provisioning.plan import plan, render_text
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import check_room_matches, new_provisioner, state_map


def network(net_id: str, server_name: str, personal_data: str) -> DesiredNetwork:
    text = f"""\
version: 1
network: {net_id}
name: "Сеть"
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
cohort_template:
  rooms:
    - {{key: chat, name: "Группа"}}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        time_zone: Asia/Almaty
        cohorts: [{{key: spring, name: "Весна"}}]
        moderation: {{personal_data: {personal_data}, flood: {{messages: 12}}}}
      - key: astana
        name: "Астана"
"""
    return compile_network(parse_network(text), server_name)


async def test_changed_moderation_settings_are_planned_as_an_update_and_applied(
    synapse: SynapseHarness,
) -> None:
    prov = await new_provisioner(synapse)
    net_id = f"mod-{secrets.token_hex(4)}"
    flagged = network(net_id, synapse.server_name, "flag")

    await prov.apply(flagged)
    actual = await prov.discover(flagged)
    async with prov.http() as http:
        await check_room_matches(http, flagged, actual, prov.user_id)
        chat = await state_map(http, actual.rooms["cohort:almaty/spring/chat"].room_id)
        other = await state_map(http, actual.rooms["club:astana/general"].room_id)
    assert chat[(CLUB_SETTINGS, "")] == {
        "name": "Алматы",
        "time_zone": "Asia/Almaty",
        "language": "ru",
        "moderation": {"personal_data": "flag", "flood_messages": 12},
        "bots": [],
    }
    assert other[(CLUB_SETTINGS, "")] == {
        "name": "Астана",
        "time_zone": "UTC",
        "language": "ru",
        "bots": [],
    }

    unflagged = network(net_id, synapse.server_name, '"off"')
    change = plan(unflagged, actual)
    almaty = {r.ref for r in unflagged.rooms if r.locator.club == "almaty"}
    assert {(a.kind, a.event_type, a.ref) for a in change.actions} == {
        ("put_state", CLUB_SETTINGS, ref) for ref in almaty
    }
    assert not change.security
    text = render_text(change)
    assert "SECURITY" not in text
    assert (
        f'~ update club:almaty/general: {CLUB_SETTINGS}: moderation.personal_data: "flag" → "off"'
        in text
    )

    result = await prov.apply(unflagged)
    assert result.plan == change
    actual = await prov.discover(unflagged)
    async with prov.http() as http:
        general = await state_map(http, actual.rooms["club:almaty/general"].room_id)
    assert general[(CLUB_SETTINGS, "")]["moderation"] == {
        "personal_data": "off",
        "flood_messages": 12,
    }
    assert plan(unflagged, actual).empty
    assert (await prov.apply(unflagged)).writes == 0
