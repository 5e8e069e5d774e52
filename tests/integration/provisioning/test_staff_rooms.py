"""A club's staff-only room (`audience: staff`) from YAML to the real Synapse."""

from __future__ import annotations

import secrets

import pytest

from clubs.core.errors import Forbidden
from clubs.core.http import path
from clubs.core.namespace import LOCATOR
from clubs.provisioning.compile import compile_network
from clubs.provisioning.load import parse_network
from clubs.provisioning.plan import plan
from tests.harness import Account, SynapseHarness
from tests.integration.provisioning.helpers import check_room_matches, new_provisioner, state_map

CS = ("_matrix", "client", "v3")


def network_yaml(net_id: str, bot: Account, admin: Account, mod: Account, member: Account) -> str:
    localpart = bot.user_id[1:].split(":", 1)[0]
    return f"""\
version: 1
network: {net_id}
name: "Сеть"
bots: {{moderation: {localpart}}}
people:
  - {{key: anna, mxid: "{admin.user_id}", onboarding: existing}}
  - {{key: vera, mxid: "{mod.user_id}", onboarding: existing}}
  - {{key: gleb, mxid: "{member.user_id}", onboarding: existing}}
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
    - {{key: moderators, name: "Модераторы", audience: staff, order: "090"}}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        staff: {{admin: [anna], moderator: [vera]}}
        members: [gleb]
"""


async def join(account: Account, room_id: str) -> None:
    await account.http.post(path(*CS, "join", room_id), {})


async def test_only_staff_and_bots_are_in_a_staff_room_and_its_locator_says_so(
    synapse: SynapseHarness,
) -> None:
    prov = await new_provisioner(synapse)
    bot = await synapse.new_user("mod-bot", user_type="bot")
    admin = await synapse.new_user("adm")
    mod = await synapse.new_user("mod")
    member = await synapse.new_user("mem")
    text = network_yaml(f"staff-{secrets.token_hex(4)}", bot, admin, mod, member)
    net = compile_network(parse_network(text), synapse.server_name)

    await prov.apply(net)
    actual = await prov.discover(net)
    async with prov.http() as http:
        await check_room_matches(http, net, actual, prov.user_id)
        staff_id = actual.rooms["club:almaty/moderators"].room_id
        general_id = actual.rooms["club:almaty/general"].room_id
        staff_locator = (await state_map(http, staff_id))[(LOCATOR, "")]
        general_locator = (await state_map(http, general_id))[(LOCATOR, "")]
    assert staff_locator["audience"] == "staff"
    assert "audience" not in general_locator

    # People on this server are joined directly (the network's default); the bot is invited.
    memberships = {
        user: m.membership
        for user, m in actual.rooms["club:almaty/moderators"].members.items()
        if user != prov.user_id
    }
    assert memberships == {bot.user_id: "invite", admin.user_id: "join", mod.user_id: "join"}
    assert actual.rooms["club:almaty/general"].members[member.user_id].membership == "join"

    # A member of the club cannot join the staff room, even from inside the club space.
    with pytest.raises(Forbidden):
        await join(member, staff_id)
    joined = (await prov.discover(net)).rooms["club:almaty/moderators"].members
    assert {u for u, m in joined.items() if m.membership == "join"} == {
        prov.user_id,
        admin.user_id,
        mod.user_id,
    }

    assert plan(net, await prov.discover(net)).empty
    second = await prov.apply(net)
    assert second.writes == 0
