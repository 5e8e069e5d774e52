"""Per-bot room sets on the real Synapse: each bot is invited only to the rooms it works in, and
a bot reassigned away from a room is removed from it by plan and apply."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from clubs.core.http import path
from clubs.core.namespace import CLUB_SETTINGS
from clubs.provisioning.actual import Actual
from clubs.provisioning.apply import Executor
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.load import parse_network
from clubs.provisioning.plan import plan, render_text
from tests.harness import Account, SynapseHarness
from tests.integration.provisioning.helpers import (
    Provisioner,
    check_room_matches,
    new_provisioner,
    state_map,
)

CS = ("_matrix", "client", "v3")
PL = "m.room.power_levels"


@dataclass
class Bots:
    moderation: Account
    facilitation: Account
    scheduling: Account
    checkins: Account

    def ids(self) -> dict[str, str]:
        return {name: getattr(self, name).user_id for name in self.__dataclass_fields__}


def localpart(account: Account) -> str:
    return account.user_id[1:].split(":", 1)[0]


def network(
    net_id: str, server_name: str, bots: Bots, member: Account, scheduling_rooms: str = ""
) -> DesiredNetwork:
    sched = localpart(bots.scheduling)
    scheduling = f"{{localpart: {sched}, rooms: {scheduling_rooms}}}" if scheduling_rooms else sched
    text = f"""\
version: 1
network: {net_id}
name: "Сеть"
bots:
  moderation: {localpart(bots.moderation)}
  facilitation: {localpart(bots.facilitation)}
  scheduling: {scheduling}
  checkins: {localpart(bots.checkins)}
people:
  - {{key: gleb, mxid: "{member.user_id}", onboarding: existing}}
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
    - {{key: announcements, name: "Объявления", power_levels: {{events_default: 50}}}}
    - {{key: sessions, name: "Встречи"}}
    - {{key: support, name: "Поддержка", join_rule: invite}}
    - {{key: moderators, name: "Модераторы", audience: staff}}
cohort_template:
  rooms:
    - {{key: chat, name: "Группа"}}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        members: [gleb]
        cohorts: [{{key: spring, name: "Весна", members: [gleb]}}]
"""
    return compile_network(parse_network(text), server_name)


async def setup(synapse: SynapseHarness) -> tuple[Provisioner, Bots, Account, str]:
    prov = await new_provisioner(synapse)
    bots = Bots(
        *[
            await synapse.new_user(f"bot-{name}", user_type="bot")
            for name in ("moderation", "facilitation", "scheduling", "checkins")
        ]
    )
    member = await synapse.new_user("gleb")
    return prov, bots, member, f"bots-{secrets.token_hex(4)}"


def bots_by_room(actual: Actual, bots: Bots, membership: str) -> dict[str, set[str]]:
    """ref → names of the bots with this membership there."""
    names = {mxid: name for name, mxid in bots.ids().items()}
    return {
        ref: {
            names[u] for u, m in room.members.items() if u in names and m.membership == membership
        }
        for ref, room in actual.rooms.items()
    }


async def join(account: Account, room_id: str) -> None:
    await account.http.post(path(*CS, "join", room_id), {})


async def test_each_bot_is_invited_only_to_the_rooms_it_works_in(
    synapse: SynapseHarness,
) -> None:
    prov, bots, member, net_id = await setup(synapse)
    net = network(net_id, synapse.server_name, bots, member)

    await prov.apply(net)
    actual = await prov.discover(net)
    assert bots_by_room(actual, bots, "invite") == {
        "network": {"moderation"},
        "country:kz": {"moderation"},
        "club:almaty": {"moderation"},
        "club:almaty/general": {"moderation"},
        "club:almaty/announcements": {"moderation", "scheduling"},
        "club:almaty/sessions": {"moderation", "scheduling", "facilitation"},
        "club:almaty/support": {"moderation", "checkins"},
        "club:almaty/moderators": {"moderation"},
        "cohort:almaty/spring": {"moderation"},
        "cohort:almaty/spring/chat": {"moderation", "facilitation"},
    }
    ids = bots.ids()
    async with prov.http() as http:
        await check_room_matches(http, net, actual, prov.user_id)
        sessions = await state_map(http, actual.rooms["club:almaty/sessions"].room_id)
        support = await state_map(http, actual.rooms["club:almaty/support"].room_id)
    # In the order of the file's bots: moderation, facilitation, scheduling, checkins.
    assert sessions[(CLUB_SETTINGS, "")]["bots"] == [
        ids["moderation"],
        ids["facilitation"],
        ids["scheduling"],
    ]
    assert support[(CLUB_SETTINGS, "")]["bots"] == [ids["moderation"], ids["checkins"]]
    assert set(support[(PL, "")]["users"]) == {ids["moderation"], ids["checkins"]}
    assert (await prov.apply(net)).writes == 0


async def test_a_reassigned_bot_is_removed_by_plan_and_apply_and_invited_back(
    synapse: SynapseHarness,
) -> None:
    prov, bots, member, net_id = await setup(synapse)
    net = network(net_id, synapse.server_name, bots, member)
    await prov.apply(net)
    actual = await prov.discover(net)
    sessions_id = actual.rooms["club:almaty/sessions"].room_id
    for ref in ("club:almaty/sessions", "club:almaty/announcements"):
        await join(bots.scheduling, actual.rooms[ref].room_id)
    sched = bots.scheduling.user_id

    fewer = network(net_id, synapse.server_name, bots, member, "[announcements]")
    change = plan(fewer, await prov.discover(fewer))
    assert {(a.kind, a.ref, a.user_id) for a in change.actions if a.user_id} == {
        ("kick", "club:almaty/sessions", sched)
    }
    assert {(a.kind, a.event_type) for a in change.actions if a.ref == "club:almaty/sessions"} == {
        ("put_state", PL),
        ("put_state", CLUB_SETTINGS),
        ("kick", ""),
    }
    assert not change.security
    assert (
        f"- kick {sched} ← club:almaty/sessions: join; bot scheduling does not serve this room"
    ) in render_text(change)

    result = await prov.apply(fewer)
    assert result.plan == change
    actual = await prov.discover(fewer)
    gone = actual.rooms["club:almaty/sessions"].members[sched]
    assert (gone.membership, gone.sender) == ("leave", prov.user_id)
    async with prov.http() as http:
        state = await state_map(http, sessions_id)
    assert sched not in state[(PL, "")]["users"]
    assert sched not in state[(CLUB_SETTINGS, "")]["bots"]
    assert bots_by_room(actual, bots, "join")["club:almaty/announcements"] == {"scheduling"}
    assert plan(fewer, actual).empty
    assert (await prov.apply(fewer)).writes == 0

    # Assigned again: the provisioner removed it, so it is invited again.
    await prov.apply(net)
    actual = await prov.discover(net)
    assert actual.rooms["club:almaty/sessions"].members[sched].membership == "invite"
    assert plan(net, actual).empty


async def test_a_bot_that_left_is_invited_again_and_one_leaving_before_its_kick_stops_nothing(
    synapse: SynapseHarness,
) -> None:
    prov, bots, member, net_id = await setup(synapse)
    net = network(net_id, synapse.server_name, bots, member)
    await prov.apply(net)
    actual = await prov.discover(net)
    support_id = actual.rooms["club:almaty/support"].room_id
    sessions_id = actual.rooms["club:almaty/sessions"].room_id
    await join(bots.checkins, support_id)
    await bots.checkins.http.post(path(*CS, "rooms", support_id, "leave"), {})
    # Unlike a person, a bot that left a room it serves is invited again (its network decides).
    change = plan(net, await prov.discover(net))
    assert [(a.kind, a.ref) for a in change.actions] == [("invite", "club:almaty/support")]
    await prov.apply(net)

    # The bot sees its name gone from the club settings and leaves before the kick comes.
    await join(bots.scheduling, sessions_id)
    fewer = network(net_id, synapse.server_name, bots, member, "[announcements]")
    actual = await prov.discover(fewer)
    change = plan(fewer, actual)
    await bots.scheduling.http.post(path(*CS, "rooms", sessions_id, "leave"), {})
    async with prov.http() as http:
        await Executor(http, fewer, actual).run(change)
    assert plan(fewer, await prov.discover(fewer)).empty
