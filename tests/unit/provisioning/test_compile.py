from __future__ import annotations

import re

import pytest

from clubs.core.errors import ClubsError
from clubs.core.namespace import CLUB_SETTINGS, LOCATOR
from clubs.core.paths import config_dir
from clubs.provisioning.compile import compile_network, resolve_mxid
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.load import load_network, parse_network

SERVER = "clubs.test"
MODERATION, FACILITATION, SCHEDULING, CHECKINS = (
    f"@bot-{name}:{SERVER}" for name in ("moderation", "facilitation", "scheduling", "checkins")
)
BOTS = {MODERATION, FACILITATION, SCHEDULING, CHECKINS}


@pytest.fixture(scope="module")
def net() -> DesiredNetwork:
    return compile_network(load_network(config_dir() / "network.example.yaml"), SERVER)


def test_the_tree_is_network_countries_clubs_rooms_and_cohorts_parents_first(
    net: DesiredNetwork,
) -> None:
    refs = [r.ref for r in net.rooms]
    assert refs[:4] == ["network", "country:kz", "club:almaty", "club:almaty/general"]
    assert "cohort:almaty/spring-2026" in refs
    assert "cohort:almaty/spring-2026/chat" in refs
    seen: set[str] = set()
    for room in net.rooms:
        assert room.parent_ref is None or room.parent_ref in seen, room.ref
        seen.add(room.ref)
    assert len(refs) == len(set(refs))
    parents = {r.ref: r.parent_ref for r in net.rooms}
    assert parents["country:kz"] == "network"
    assert parents["club:almaty"] == "country:kz"
    assert parents["club:almaty/general"] == "club:almaty"
    assert parents["cohort:almaty/spring-2026"] == "club:almaty"
    assert parents["cohort:almaty/spring-2026/chat"] == "cohort:almaty/spring-2026"


def test_every_room_is_encrypted_joined_only_and_closed_to_guests(net: DesiredNetwork) -> None:
    for room in net.rooms:
        assert room.room_version == "12"
        assert room.state[("m.room.encryption", "")] == {
            "algorithm": "m.megolm.v1.aes-sha2",
            "rotation_period_ms": 604_800_000,
            "rotation_period_msgs": 100,
        }
        assert room.state[("m.room.history_visibility", "")] == {"history_visibility": "joined"}
        assert room.state[("m.room.guest_access", "")] == {"guest_access": "forbidden"}
        assert room.state[("m.room.name", "")] == {"name": room.name}
        assert room.state[("m.room.retention", "")] == {"max_lifetime": 180 * 86_400_000}
        assert room.join_rule in ("invite", "restricted")
        assert not room.federate


def test_spaces_allow_no_messages_and_rooms_follow_their_declaration(net: DesiredNetwork) -> None:
    for room in net.rooms:
        expected = 100 if room.is_space else 0
        if room.ref.endswith("/announcements"):
            expected = 50
        assert room.power_levels["events_default"] == expected, room.ref
    kinds = {r.ref: (r.is_space, r.locator.kind) for r in net.rooms}
    assert kinds["network"] == (True, "network_space")
    assert kinds["cohort:almaty/spring-2026"] == (True, "cohort_space")
    assert kinds["club:almaty/support"] == (False, "club_room")


def test_power_levels_are_complete_and_never_list_the_creator(net: DesiredNetwork) -> None:
    for room in net.rooms:
        pl = room.power_levels
        assert {k: pl[k] for k in ("users_default", "state_default", "invite", "kick")} == {
            "users_default": 0,
            "state_default": 50,
            "invite": 50,
            "kick": 50,
        }
        assert (pl["ban"], pl["redact"], pl["notifications"]) == (50, 50, {"room": 50})
        assert pl["events"]["m.room.power_levels"] == 100
        assert pl["events"]["m.room.tombstone"] == 150
        assert pl["events"][LOCATOR] == 100
        assert pl["events"][CLUB_SETTINGS] == 100
        assert not any("provisioner" in user for user in pl["users"])
        assert all(level > 0 for level in pl["users"].values())
        assert set(pl["users"]) & BOTS == set(room.members) & BOTS
        assert MODERATION in pl["users"]


def test_staff_get_their_role_level_in_their_clubs_rooms(net: DesiredNetwork) -> None:
    users = net.room("club:almaty/general").power_levels["users"]
    assert users[f"@anna:{SERVER}"] == 100  # admin
    assert users[f"@boris:{SERVER}"] == 50  # facilitator
    assert f"@gleb:{SERVER}" not in users  # a member: users_default
    assert f"@anna:{SERVER}" not in net.room("network").power_levels["users"]


def test_club_rooms_are_restricted_to_their_club_space_unless_invite_only(
    net: DesiredNetwork,
) -> None:
    general = net.room("club:almaty/general")
    assert (general.join_rule, general.join_allow_refs) == ("restricted", ("club:almaty",))
    support = net.room("club:almaty/support")
    assert (support.join_rule, support.join_allow_refs) == ("invite", ())
    assert support.private_description is not None
    for ref in ("network", "country:kz", "club:almaty", "cohort:almaty/spring-2026"):
        assert net.room(ref).join_rule == "invite"
    for room in net.rooms:
        if room.ref.startswith("cohort:"):
            assert (room.join_rule, room.join_allow_refs) == ("invite", ())


def test_members_of_each_level(net: DesiredNetwork) -> None:
    def people(ref: str) -> set[str]:
        return {m.split(":")[0][1:] for m in net.room(ref).members if m not in BOTS}

    assert set(net.room("network").members) & BOTS == {MODERATION}
    assert people("network") == {p.mxid.split(":")[0][1:] for p in net.people if p.mxid}
    assert people("country:kz") == {
        "anna", "boris", "vera", "gleb", "dina", "egor", "zhanna", "zakhar", "inna", "kirill"
    }  # fmt: skip
    assert people("club:almaty") == {"anna", "boris", "vera", "gleb", "dina", "egor", "zhanna"}
    assert people("club:almaty/general") == people("club:almaty")
    assert people("cohort:almaty/spring-2026") == {"anna", "boris", "vera", "gleb", "dina"}
    assert people("cohort:almaty/spring-2026/chat") == people("cohort:almaty/spring-2026")
    assert people("cohort:almaty/spring-2026") <= people("club:almaty")


def test_people_without_an_account_are_not_members_yet(net: DesiredNetwork) -> None:
    guest = next(p for p in net.people if p.key == "guest-1")
    assert (guest.mxid, guest.onboarding, guest.clubs) == (None, "token", ("almaty",))
    assert all(
        m.startswith("@") and m.endswith(f":{SERVER}") for m in net.room("club:almaty").members
    )


def test_locators_and_club_settings(net: DesiredNetwork) -> None:
    loc = net.room("cohort:almaty/spring-2026/chat").locator
    assert loc.content() == {
        "network": "commclubs",
        "kind": "cohort_room",
        "key": "chat",
        "schema": 1,
        "state": "active",
        "country": "kz",
        "club": "almaty",
        "cohort": "spring-2026",
    }
    assert net.room("cohort:almaty/autumn-2025").life == "archived"
    assert net.room("cohort:almaty/autumn-2025/chat").life == "archived"
    settings = net.room("club:almaty/general").state[(CLUB_SETTINGS, "")]
    assert settings == {  # no moderation set
        "name": "Алматы",
        "time_zone": "Asia/Almaty",
        "language": "ru",
        "bots": [MODERATION],
    }
    settings = net.room("club:berlin/sessions").state[(CLUB_SETTINGS, "")]
    assert settings == {
        "name": "Berlin",
        "time_zone": "Europe/Berlin",
        "language": "en",
        "moderation": {"personal_data": "flag"},
        "bots": [MODERATION, FACILITATION, SCHEDULING],
    }
    assert (CLUB_SETTINGS, "") not in net.room("network").state


def test_a_staff_room_has_the_clubs_staff_and_the_moderation_bot_and_no_member(
    net: DesiredNetwork,
) -> None:
    room = net.room("club:almaty/moderators")
    assert (room.join_rule, room.join_allow_refs) == ("invite", ())
    people = {m for m in room.members if m not in BOTS}
    assert people == {f"@{k}:{SERVER}" for k in ("anna", "boris", "vera")}  # admin, fac., mod.
    assert f"@gleb:{SERVER}" in net.room("club:almaty/general").members
    assert f"@gleb:{SERVER}" not in room.members  # a member of the club
    assert set(room.members) & BOTS == {MODERATION}
    users = room.power_levels["users"]
    assert users == {
        f"@anna:{SERVER}": 100,
        f"@boris:{SERVER}": 50,
        f"@vera:{SERVER}": 50,
        MODERATION: 100,
    }
    assert {k: v for k, v in room.power_levels.items() if k != "users"} == {
        k: v for k, v in net.room("club:almaty/support").power_levels.items() if k != "users"
    }


def test_only_a_staff_rooms_locator_names_its_audience(net: DesiredNetwork) -> None:
    assert net.room("club:almaty/moderators").locator.content() == {
        "network": "commclubs",
        "kind": "club_room",
        "key": "moderators",
        "schema": 1,
        "state": "active",
        "country": "kz",
        "club": "almaty",
        "audience": "staff",
    }
    assert net.room("club:almaty/general").locator.content() == {
        "network": "commclubs",
        "kind": "club_room",
        "key": "general",
        "schema": 1,
        "state": "active",
        "country": "kz",
        "club": "almaty",
    }
    staff_rooms = {r.ref for r in net.rooms if "audience" in r.locator.content()}
    assert staff_rooms == {
        f"club:{club}/moderators" for club in ("almaty", "astana", "tbilisi", "berlin", "warsaw")
    }


def test_a_cohort_staff_room_has_the_clubs_staff_not_the_cohorts_members() -> None:
    model = parse_network(
        """\
version: 1
network: n
name: N
bots: {moderation: mod}
people:
  - {key: anna, mxid: "@anna"}
  - {key: boris, mxid: "@boris"}
  - {key: vera, mxid: "@vera"}
cohort_template:
  rooms:
    - {key: chat, name: "Группа"}
    - {key: leads, name: "Ведущие", audience: staff}
countries:
  - key: kz
    name: K
    clubs:
      - key: almaty
        name: A
        staff: {moderator: [anna]}
        members: [boris, vera]
        cohorts: [{key: spring, name: S, members: [vera]}]
"""
    )
    net = compile_network(model, SERVER)
    leads = net.room("cohort:almaty/spring/leads")
    assert dict(leads.members) == {f"@anna:{SERVER}": 50, f"@mod:{SERVER}": 100}
    assert leads.locator.content()["audience"] == "staff"
    assert set(net.room("cohort:almaty/spring/chat").members) == {
        f"@anna:{SERVER}",
        f"@vera:{SERVER}",
        f"@mod:{SERVER}",
    }


MODERATED = """\
version: 1
network: n
name: N
defaults:
  moderation:
    flood: {messages: 8}
    mute_minutes: 15
    words: [spam]
people:
  - {key: anna, mxid: "@anna"}
club_template:
  rooms:
    - {key: general, name: "Общий"}
    - {key: moderators, name: "Модераторы", audience: staff}
cohort_template:
  rooms:
    - {key: chat, name: "Группа"}
countries:
  - key: kz
    name: K
    clubs:
      - key: almaty
        name: A
        staff: {moderator: [anna]}
        cohorts: [{key: spring, name: S, members: [anna]}]
        moderation:
          personal_data: flag
          flood: {seconds: 20}
          max_mentions: 3
          join_wave: {joins: 10, seconds: 30}
          new_member_hours: 0
          words: [casino, spam]
      - key: astana
        name: B
      - key: aktau
        name: C
        moderation: {mute_minutes: 1, words: []}
"""


def test_every_room_and_space_of_a_club_carries_its_moderation_settings_flat() -> None:
    net = compile_network(parse_network(MODERATED), SERVER)
    almaty = [r for r in net.rooms if r.locator.content().get("club") == "almaty"]
    assert {r.ref for r in almaty} == {
        "club:almaty",
        "club:almaty/general",
        "club:almaty/moderators",
        "cohort:almaty/spring",
        "cohort:almaty/spring/chat",
    }
    for room in almaty:
        assert room.state[(CLUB_SETTINGS, "")] == {
            "name": "A",
            "time_zone": "UTC",
            "language": "ru",
            "moderation": {
                "personal_data": "flag",
                "flood_messages": 8,
                "flood_window_s": 20,
                "mute_s": 900,
                "max_mentions": 3,
                "join_wave_joins": 10,
                "join_wave_window_s": 30,
                "new_member_hours": 0,
                "words": ["spam", "casino"],
            },
            "bots": [],
        }, room.ref
    for ref in ("network", "country:kz"):
        assert (CLUB_SETTINGS, "") not in net.room(ref).state


def test_only_the_settings_that_were_set_are_written() -> None:
    net = compile_network(parse_network(MODERATED), SERVER)
    astana = net.room("club:astana/general").state[(CLUB_SETTINGS, "")]
    assert astana["moderation"] == {"flood_messages": 8, "mute_s": 900, "words": ["spam"]}
    aktau = net.room("club:aktau/general").state[(CLUB_SETTINGS, "")]
    assert aktau["moderation"] == {"flood_messages": 8, "mute_s": 60, "words": ["spam"]}


def test_without_moderation_settings_the_club_settings_have_no_moderation_key() -> None:
    unset = re.sub(r"^( *)moderation:.*\n(?:\1  .*\n)*", "", MODERATED, flags=re.MULTILINE)
    assert "moderation" not in unset
    net = compile_network(parse_network(unset), SERVER)
    settings = [r.state[(CLUB_SETTINGS, "")] for r in net.rooms if r.locator.club is not None]
    assert len(settings) == 11  # 5 in almaty (with its cohort), 3 in astana, 3 in aktau
    assert all(s["name"] in ("A", "B", "C") for s in settings)
    assert all(
        {k: v for k, v in s.items() if k != "name"}
        == {"time_zone": "UTC", "language": "ru", "bots": []}
        for s in settings
    )


def test_people_and_bots(net: DesiredNetwork) -> None:
    anna = next(p for p in net.people if p.key == "anna")
    assert anna.mxid == f"@anna:{SERVER}"
    assert anna.clubs == ("almaty", "tbilisi")
    gleb = next(p for p in net.people if p.key == "gleb")
    assert gleb.cohorts == ("almaty/spring-2026",)
    assert net.bots["moderation"] == f"@bot-moderation:{SERVER}"
    assert set(net.bots.values()) == BOTS


def test_compiling_twice_gives_the_same_network() -> None:
    model = load_network(config_dir() / "network.example.yaml")
    first, second = compile_network(model, SERVER), compile_network(model, SERVER)
    assert first == second
    assert [list(r.members) for r in first.rooms] == [list(r.members) for r in second.rooms]
    for room in first.rooms:
        assert list(room.members) == sorted(room.members)


def test_ids_on_other_servers_stay_as_written() -> None:
    assert resolve_mxid("@anna", SERVER) == f"@anna:{SERVER}"
    assert resolve_mxid("@anna:other.org", SERVER) == "@anna:other.org"
    with pytest.raises(ClubsError):
        resolve_mxid("@" + "a" * 250, "example.org")


def test_a_bad_server_name_is_refused() -> None:
    model = parse_network("version: 1\nnetwork: n\nname: N\n")
    with pytest.raises(ClubsError):
        compile_network(model, "not a server")
    assert [r.ref for r in compile_network(model, SERVER).rooms] == ["network"]


# --- which bots are in which room ----------------------------------------------------------------


def bots_in(net: DesiredNetwork, ref: str) -> set[str]:
    return set(net.room(ref).members) & BOTS


def test_each_bot_is_only_in_the_rooms_it_works_in(net: DesiredNetwork) -> None:
    assert bots_in(net, "club:almaty/general") == {MODERATION}
    assert bots_in(net, "club:almaty/announcements") == {MODERATION, SCHEDULING}
    assert bots_in(net, "club:almaty/sessions") == {MODERATION, SCHEDULING, FACILITATION}
    assert bots_in(net, "club:almaty/support") == {MODERATION, CHECKINS}
    assert bots_in(net, "club:almaty/moderators") == {MODERATION}
    assert bots_in(net, "club:tbilisi/walks") == {MODERATION}  # a club's own room
    assert bots_in(net, "cohort:almaty/spring-2026/chat") == {MODERATION, FACILITATION}
    for room in net.rooms:
        if room.is_space:  # bots do not read spaces; moderation bans in them
            assert bots_in(net, room.ref) == {MODERATION}, room.ref
        assert set(room.power_levels["users"]) & BOTS == bots_in(net, room.ref), room.ref


def test_club_settings_list_the_bots_serving_the_room_in_the_order_of_the_file(
    net: DesiredNetwork,
) -> None:
    def listed(ref: str) -> list[str]:
        return list(net.room(ref).state[(CLUB_SETTINGS, "")]["bots"])

    # The file says moderation, facilitation, scheduling, checkins.
    assert listed("club:almaty/sessions") == [MODERATION, FACILITATION, SCHEDULING]
    assert listed("club:almaty/support") == [MODERATION, CHECKINS]
    assert listed("cohort:almaty/spring-2026/chat") == [MODERATION, FACILITATION]
    assert listed("club:almaty") == [MODERATION]
    assert listed("cohort:almaty/spring-2026") == [MODERATION]
    for room in net.rooms:
        settings = room.state.get((CLUB_SETTINGS, ""))
        if settings is not None:
            assert set(settings["bots"]) == bots_in(net, room.ref), room.ref


ROOMSETS = """\
version: 1
network: n
name: N
bots:
  checkins: {localpart: care, rooms: [support, general]}
  scheduling: {localpart: sched, rooms: all}
  moderation: {localpart: mod, rooms: [general, chat]}
people:
  - {key: anna, mxid: "@anna"}
club_template:
  rooms:
    - {key: general, name: "Общий"}
    - {key: support, name: "Поддержка", join_rule: invite}
cohort_template:
  rooms:
    - {key: chat, name: "Группа"}
countries:
  - key: kz
    name: K
    clubs:
      - key: almaty
        name: A
        members: [anna]
        cohorts: [{key: spring, name: S, members: [anna]}]
"""


def test_the_long_form_chooses_the_rooms_and_all_includes_the_spaces() -> None:
    net = compile_network(parse_network(ROOMSETS), SERVER)
    care, sched, mod = (f"@{n}:{SERVER}" for n in ("care", "sched", "mod"))

    def settings_bots(ref: str) -> list[str]:
        return list(net.room(ref).state[(CLUB_SETTINGS, "")]["bots"])

    assert settings_bots("club:almaty/general") == [care, sched, mod]
    assert settings_bots("club:almaty/support") == [care, sched]
    assert settings_bots("cohort:almaty/spring/chat") == [sched, mod]
    assert settings_bots("club:almaty") == [sched]
    assert set(net.room("network").members) == {f"@anna:{SERVER}", sched}
    assert net.room("club:almaty/general").power_levels["users"] == {
        care: 50,
        sched: 50,
        mod: 100,
    }
