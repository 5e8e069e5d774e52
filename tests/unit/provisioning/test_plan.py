"""The planner, with no homeserver: snapshots are built from the desired network itself."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clubs.core.http import RoomId
from clubs.core.namespace import CLUB_SETTINGS, LOCATOR
from clubs.provisioning.actual import Actual, ActualRoom, Membership
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork, DesiredPerson
from clubs.provisioning.load import parse_network
from clubs.provisioning.plan import (
    Plan,
    _Ids,
    desired_state,
    differing_keys,
    placeholder,
    plan,
    render_json,
    render_text,
)
from tests.integration.provisioning.networks import make_network, with_members

SERVER = "hs.test"
ME = "@provisioner:hs.test"
ANNA = "@anna:hs.test"
IVAN = "@ivan:hs.test"


def rid(ref: str) -> RoomId:
    return RoomId(f"!{ref.replace(':', '_').replace('/', '_')}")


def applied(
    net: DesiredNetwork,
    *,
    members: Mapping[str, str] | None = None,
    edit: Mapping[tuple[str, tuple[str, str]], Any] | None = None,
) -> Actual:
    """The snapshot discovery would return if `net` had been applied exactly.

    `members` overrides the membership of everyone ("join", "invite", "left", "kicked");
    `edit` replaces state content by (ref, (type, state key)).
    """
    ids = _Ids({r.ref: rid(r.ref) for r in net.rooms})
    rooms: dict[str, ActualRoom] = {}
    for room in net.rooms:
        state: dict[tuple[str, str], Mapping[str, Any]] = {
            ("m.room.create", ""): {
                "room_version": room.room_version,
                "m.federate": False,
                **({"type": "m.space"} if room.is_space else {}),
            }
        }
        for key, content in desired_state(room, ids, SERVER).items():
            state[key] = content
        pl = dict(state[("m.room.power_levels", "")])
        state[("m.room.power_levels", "")] = {**pl, "historical": 100}  # added by the server
        for child in net.rooms:
            if child.parent_ref == room.ref:
                edge: dict[str, Any] = {"via": [SERVER], "suggested": child.suggested}
                if child.order is not None:
                    edge["order"] = child.order
                state[("m.space.child", rid(child.ref))] = edge
        for (ref, key), content in (edit or {}).items():
            if ref == room.ref:
                state[key] = content
        people: dict[str, Membership] = {ME: Membership("join", ME)}
        for mxid in room.members:
            how = (members or {}).get(mxid, "join")
            people[mxid] = {
                "join": Membership("join", mxid),
                "invite": Membership("invite", ME),
                "left": Membership("leave", mxid),
                "kicked": Membership("leave", "@mod:hs.test"),
            }[how]
        rooms[room.ref] = ActualRoom(rid(room.ref), room.ref, room.locator.content(), state, people)
    return Actual(net.network, ME, rooms)


def net(**kw: Any) -> DesiredNetwork:
    return make_network(SERVER, network="n1", **kw)


def test_empty_homeserver_plans_one_create_per_room_parents_first() -> None:
    n = net(n_clubs=2, rooms_per_club=2)
    p = plan(n, Actual("n1", ME, {}))
    creates = [a for a in p.actions if a.kind == "create"]
    assert len(creates) == len(n.rooms)
    seen: set[str] = set()
    for a in creates:
        room = n.room(a.ref)
        assert room.parent_ref is None or room.parent_ref in seen
        seen.add(a.ref)
    assert {a.kind for a in p.actions} == {"create", "space_child"}


def test_create_carries_everything_security_relevant_and_no_invites() -> None:
    n = net(n_clubs=1, rooms_per_club=1, members={"c0": {ANNA: 50, IVAN: 0}})
    p = plan(n, Actual("n1", ME, {}))
    body = next(a for a in p.actions if a.kind == "create" and a.ref == "club:c0/r0").content
    assert body["preset"] == "private_chat"
    assert body["visibility"] == "private"
    assert body["room_version"] == "12"
    assert body["creation_content"] == {"m.federate": False}
    assert "invite" not in body
    assert body["power_level_content_override"]["users"] == {ANNA: 50}
    assert ME not in body["power_level_content_override"]["users"]
    state = {(e["type"], e["state_key"]): e["content"] for e in body["initial_state"]}
    assert body["initial_state"][0]["type"] == "m.room.encryption"
    assert state[("m.room.join_rules", "")] == {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": placeholder("club:c0")}],
    }
    assert state[("m.room.history_visibility", "")] == {"history_visibility": "joined"}
    assert state[("m.room.guest_access", "")] == {"guest_access": "forbidden"}
    assert state[("m.space.parent", placeholder("club:c0"))] == {
        "via": [SERVER],
        "canonical": True,
    }
    assert state[(LOCATOR, "")]["network"] == "n1"
    assert ("m.room.power_levels", "") not in state  # sent as the override
    space = next(a for a in p.actions if a.kind == "create" and a.ref == "club:c0").content
    assert space["creation_content"] == {"m.federate": False, "type": "m.space"}
    invites = [a for a in p.actions if a.kind == "invite"]
    assert {(a.ref, a.user_id) for a in invites} == {
        (r, u) for r in ("club:c0", "club:c0/r0") for u in (ANNA, IVAN)
    }
    assert all(a.needs == (f"room:{a.ref}",) for a in invites)


def test_applied_network_plans_nothing_despite_server_added_keys() -> None:
    n = net(n_clubs=2, rooms_per_club=3, members={"c0": {ANNA: 50}})
    a = applied(n, edit={("club:c0/r0", ("m.room.topic", "")): {"topic": "x", "m.topic": {}}})
    assert plan(n, a).empty


def test_existing_rooms_are_referred_to_by_id() -> None:
    n = net(n_clubs=1, rooms_per_club=1)
    a = applied(n)
    rooms = {k: v for k, v in a.rooms.items() if k != "club:c0/r0"}
    p = plan(n, Actual("n1", ME, rooms))
    create = next(x for x in p.actions if x.kind == "create")
    state = {(e["type"], e["state_key"]) for e in create.content["initial_state"]}
    assert ("m.space.parent", rid("club:c0")) in state
    assert create.needs == ()
    link = next(x for x in p.actions if x.kind == "space_child")
    assert (link.ref, link.state_key) == ("club:c0", placeholder("club:c0/r0"))


def test_public_join_rule_and_world_readable_history_are_security_drift() -> None:
    n = net(n_clubs=1, rooms_per_club=1)
    a = applied(
        n,
        edit={
            ("club:c0/r0", ("m.room.join_rules", "")): {"join_rule": "public"},
            ("club:c0/r0", ("m.room.history_visibility", "")): {
                "history_visibility": "world_readable"
            },
            ("club:c0/r0", ("m.room.name", "")): {"name": "renamed"},
        },
    )
    p = plan(n, a)
    assert [(x.event_type, x.security) for x in p.actions] == [
        ("m.room.join_rules", True),
        ("m.room.history_visibility", True),
        ("m.room.name", False),
    ]
    text = render_text(p)
    assert text.splitlines()[0].startswith("! SECURITY club:c0/r0: m.room.join_rules")
    assert "~ update club:c0/r0: m.room.name" in text
    assert "2 SECURITY" in text.splitlines()[-1]


def test_power_threshold_drift_is_security_and_merges_unmanaged_keys() -> None:
    n = net(n_clubs=1, rooms_per_club=1)
    base = applied(n).rooms["club:c0/r0"].state[("m.room.power_levels", "")]
    drifted = {**base, "invite": 0, "users": {"@x:hs.test": 20}}
    p = plan(n, applied(n, edit={("club:c0/r0", ("m.room.power_levels", "")): drifted}))
    (action,) = p.actions
    assert action.security
    assert action.content["invite"] == 50
    assert action.content["historical"] == 100
    assert action.content["users"] == {"@x:hs.test": 20}
    (pruned,) = plan(
        n,
        applied(n, edit={("club:c0/r0", ("m.room.power_levels", "")): {**base, "users": {}}}),
        prune=True,
    ).actions or (None,)
    assert pruned is None  # declared users {} match


def test_a_rooms_audience_in_its_locator_is_security_drift_both_ways() -> None:
    n = net(n_clubs=1, rooms_per_club=2)
    general = n.room("club:c0/r0").locator.content()
    marked = applied(n, edit={("club:c0/r0", (LOCATOR, "")): {**general, "audience": "staff"}})
    (unmark,) = plan(n, marked).actions
    assert (unmark.ref, unmark.event_type, unmark.security) == ("club:c0/r0", LOCATOR, True)
    assert unmark.content == general  # the whole locator, without audience
    assert unmark.detail == f'{LOCATOR}: audience: "staff" → "members"'

    mods = n.room("club:c0/r1")
    staff = replace(mods, locator=replace(mods.locator, audience="staff"))
    n_staff = replace(n, rooms=tuple(staff if r.ref == mods.ref else r for r in n.rooms))
    (mark,) = plan(n_staff, applied(n)).actions
    assert (mark.ref, mark.event_type, mark.security) == ("club:c0/r1", LOCATOR, True)
    assert mark.content["audience"] == "staff"
    assert plan(n_staff, applied(n_staff)).empty


def test_spec_defaults_are_not_drift() -> None:
    assert differing_keys("m.room.guest_access", {"guest_access": "forbidden"}, {}) == []
    assert differing_keys("m.room.power_levels", {"invite": 0, "ban": 50}, {}) == []
    assert differing_keys("m.room.power_levels", {"invite": 50}, {}) == ["invite"]
    assert differing_keys("m.room.name", {"name": "a"}, None) == ["name"]


def test_member_who_left_is_not_reinvited_unless_asked() -> None:
    n = net(n_clubs=1, rooms_per_club=1, members={"c0": {IVAN: 0}})
    a = applied(n, members={IVAN: "left"})
    p = plan(n, a)
    assert p.empty
    assert {note.kind for note in p.notes} == {"left"}
    again = plan(n, a, reinvite=True)
    assert {(x.kind, x.user_id) for x in again.actions} == {("invite", IVAN)}


def test_member_removed_by_a_moderator_is_reported_not_reinvited() -> None:
    n = net(n_clubs=1, rooms_per_club=1, members={"c0": {IVAN: 0}})
    p = plan(n, applied(n, members={IVAN: "kicked"}))
    assert p.empty
    assert {note.kind for note in p.notes} == {"kicked"}


def test_undeclared_member_is_kicked_and_provisioner_never() -> None:
    n = net(n_clubs=1, rooms_per_club=1, members={"c0": {ANNA: 50, IVAN: 0}})
    a = applied(n)
    smaller = with_members(n, "c0", {ANNA: 50})
    p = plan(smaller, a)
    assert {(x.kind, x.ref, x.user_id) for x in p.actions} == {
        ("kick", "club:c0", IVAN),
        ("kick", "club:c0/r0", IVAN),
    }
    assert all(x.user_id != ME for x in p.actions)


def test_undeclared_club_is_an_orphan_until_pruned() -> None:
    n = net(n_clubs=2, rooms_per_club=1)
    a = applied(n)
    gone = make_network(SERVER, network="n1", n_clubs=1, rooms_per_club=1)
    p = plan(gone, a)
    assert p.empty
    assert sorted(note.ref for note in p.notes) == ["club:c1", "club:c1/r0"]
    pruned = plan(gone, a, prune=True)
    assert {x.kind for x in pruned.actions} == {"archive"}
    unlink = [x for x in pruned.actions if x.event_type == "m.space.child"]
    assert {(x.ref, x.state_key) for x in unlink} == {
        ("country:k0", rid("club:c1")),
        ("club:c1", rid("club:c1/r0")),
    }
    assert all(x.content == {} for x in unlink)
    locators = [x for x in pruned.actions if x.event_type == LOCATOR]
    assert all(x.content["state"] == "archived" for x in locators)
    destroyed = plan(gone, a, prune=True, destroy=True)
    assert {(x.kind, x.ref) for x in destroyed.actions} == {
        ("destroy", "club:c1"),
        ("destroy", "club:c1/r0"),
    }


def test_archived_club_becomes_invite_only_read_only_and_unlinked() -> None:
    n = net(n_clubs=1, rooms_per_club=1)
    a = applied(n)
    archived = make_network(
        SERVER, network="n1", n_clubs=1, rooms_per_club=1, archived_clubs=["c0"]
    )
    p = plan(archived, a)
    by_target = {(x.ref, x.event_type): x for x in p.actions}
    assert {x.kind for x in p.actions} == {"archive"}
    room = by_target[("club:c0/r0", "m.room.power_levels")]
    assert room.content["events_default"] == 50
    assert by_target[("club:c0/r0", "m.room.join_rules")].content == {"join_rule": "invite"}
    assert by_target[("club:c0", "m.space.child")].content == {}
    assert by_target[("country:k0", "m.space.child")].content == {}
    # Archived rooms that were never created are not created.
    assert plan(archived, Actual("n1", ME, {})).counts() == {
        "create": 2,
        "space_child": 1,
    }


def test_precreated_people_get_accounts_before_their_invites() -> None:
    pc = DesiredPerson("pc", IVAN, "Иван", "precreate", ("c0",))
    tk = DesiredPerson("tk", None, None, "token", ("c0",))
    n = net(n_clubs=1, rooms_per_club=1, members={"c0": {IVAN: 0}}, people=[pc, tk])
    a = applied(n)
    empty = Actual("n1", ME, a.rooms, users=frozenset())
    p = plan(n, replace(empty))
    assert [x.kind for x in p.actions] == ["create_user", "issue_token"]
    assert p.actions[0].content == {"user_type": None, "displayname": "Иван"}
    assert "password" not in json.dumps(p.to_json())
    done = Actual("n1", ME, a.rooms, users=frozenset({IVAN}), tokens={"tk": "live"})
    assert plan(n, done).empty
    used = Actual("n1", ME, a.rooms, users=frozenset({IVAN}), tokens={"tk": "used"})
    assert [note.kind for note in plan(n, used).notes] == ["registered"]


def test_json_rendering_and_hash_are_stable() -> None:
    n = net(n_clubs=1, rooms_per_club=2, members={"c0": {ANNA: 50}})
    p1 = plan(n, Actual("n1", ME, {}))
    p2 = plan(n, Actual("n1", ME, {}))
    assert p1.hash == p2.hash
    doc = json.loads(render_json(p1))
    assert doc["hash"] == p1.hash
    assert doc["changes"] == len(p1.actions)
    assert doc["counts"] == {"create": 5, "space_child": 4, "invite": 3}
    other = plan(with_members(n, "c0", {ANNA: 100}), Actual("n1", ME, {}))
    assert other.hash != p1.hash


# --- club settings: moderation -------------------------------------------------------------------

CLUB = """\
version: 1
network: n1
name: N
club_template:
  rooms:
    - {key: general, name: "Общий"}
cohort_template:
  rooms:
    - {key: chat, name: "Группа"}
countries:
  - key: kz
    name: K
    clubs:
      - key: almaty
        name: A
        cohorts: [{key: spring, name: S}]
"""
ALMATY = ["club:almaty", "club:almaty/general", "cohort:almaty/spring", "cohort:almaty/spring/chat"]


def club_net(moderation: str | None) -> DesiredNetwork:
    text = CLUB + (f"        moderation: {moderation}\n" if moderation else "")
    return compile_network(parse_network(text), SERVER)


def settings_of(p: Plan) -> dict[str, tuple[bool, str, Mapping[str, Any]]]:
    """ref → (security, detail, content) of each club settings update; nothing else may change."""
    assert {(a.kind, a.event_type) for a in p.actions} == {("put_state", CLUB_SETTINGS)}
    return {a.ref: (a.security, a.detail, a.content) for a in p.actions}


def test_changed_moderation_settings_are_an_ordinary_update_of_every_room_of_the_club() -> None:
    before = club_net("{personal_data: flag, flood: {messages: 12}}")
    after = club_net('{personal_data: "off", flood: {messages: 12}}')
    assert plan(before, applied(before)).empty
    updates = settings_of(plan(after, applied(before)))
    assert list(updates) == ALMATY
    detail = f'{CLUB_SETTINGS}: moderation.personal_data: "flag" → "off"'
    content = {
        "name": "A",
        "time_zone": "UTC",
        "language": "ru",
        "moderation": {"personal_data": "off", "flood_messages": 12},
        "bots": [],
    }
    assert all(u == (False, detail, content) for u in updates.values())
    assert "SECURITY" not in render_text(plan(after, applied(before)))
    assert plan(after, applied(after)).empty


def test_settings_removed_from_the_yaml_are_removed_from_the_rooms() -> None:
    before = club_net("{personal_data: flag, flood: {messages: 12}}")
    updates = settings_of(plan(club_net(None), applied(before)))
    assert list(updates) == ALMATY
    security, detail, content = updates["club:almaty/general"]
    assert not security
    assert detail == (
        f"{CLUB_SETTINGS}: moderation.flood_messages: 12 → null, "
        'moderation.personal_data: "flag" → null'
    )
    assert content == {"name": "A", "time_zone": "UTC", "language": "ru", "bots": []}
    assert plan(club_net(None), applied(club_net(None))).empty


def test_a_changed_word_list_is_not_spelt_out_in_the_plan() -> None:
    before = club_net("{words: [spam]}")
    updates = settings_of(plan(club_net("{words: [spam, casino]}"), applied(before)))
    assert {detail for _, detail, _ in updates.values()} == {
        f"{CLUB_SETTINGS}: moderation.words changed"
    }


def test_moderation_settings_are_compared_whole_and_nested() -> None:
    want = {"time_zone": "UTC", "moderation": {"flood_messages": 12, "words": ("spam",)}}
    same: dict[str, Any] = {
        "time_zone": "UTC",
        "moderation": {"flood_messages": 12, "words": ["spam"]},
    }
    assert differing_keys(CLUB_SETTINGS, want, same) == []
    extra = {**same, "moderation": {**same["moderation"], "mute_s": 60}}
    assert differing_keys(CLUB_SETTINGS, want, extra) == ["moderation"]
    assert differing_keys(CLUB_SETTINGS, {"time_zone": "UTC"}, {"time_zone": "UTC"}) == []
    assert differing_keys(CLUB_SETTINGS, {"time_zone": "UTC"}, same) == ["moderation"]


def test_empty_plan_renders_no_changes() -> None:
    p = Plan("n1", ())
    assert render_text(p) == "No changes: network n1 matches the homeserver.\n"


@settings(max_examples=40, deadline=None)
@given(
    countries=st.integers(1, 3),
    clubs=st.integers(0, 4),
    rooms=st.integers(0, 4),
    staff=st.dictionaries(st.sampled_from([ANNA, IVAN]), st.sampled_from([0, 50, 100])),
)
def test_any_applied_network_plans_nothing(
    countries: int, clubs: int, rooms: int, staff: dict[str, int]
) -> None:
    n = net(n_countries=countries, n_clubs=clubs, rooms_per_club=rooms, members={"c0": staff})
    assert plan(n, applied(n)).empty
    fresh = plan(n, Actual("n1", ME, {}))
    assert fresh.counts()["create"] == len(n.rooms)


# --- bots in the rooms they serve ----------------------------------------------------------------

BOT_CLUB = CLUB.replace(
    "club_template:",
    "bots:\n  moderation: mod\n  scheduling: SCHEDULING\nclub_template:",
).replace(
    '    - {key: general, name: "Общий"}\n',
    '    - {key: general, name: "Общий"}\n    - {key: sessions, name: "Встречи"}\n',
)
MOD = f"@mod:{SERVER}"
SCHED = f"@sched:{SERVER}"


def bot_net(scheduling: str) -> DesiredNetwork:
    return compile_network(parse_network(BOT_CLUB.replace("SCHEDULING", scheduling)), SERVER)


def test_a_bot_no_longer_serving_a_room_is_kicked_and_loses_its_power_level() -> None:
    before = bot_net("{localpart: sched, rooms: [general, sessions]}")
    after = bot_net("sched")  # its default: announcements and sessions
    assert SCHED in before.room("club:almaty/general").members
    p = plan(after, applied(before))
    assert [(a.kind, a.ref, a.user_id, a.detail) for a in p.actions if a.user_id] == [
        ("kick", "club:almaty/general", SCHED, "join; bot scheduling does not serve this room")
    ]
    (pl,) = [a for a in p.actions if a.event_type == "m.room.power_levels"]
    assert (pl.ref, pl.security, pl.detail) == (
        "club:almaty/general",
        False,
        "m.room.power_levels: users changed",
    )
    assert pl.content["users"] == {MOD: 100}
    (settings,) = [a for a in p.actions if a.event_type == CLUB_SETTINGS]
    assert settings.ref == "club:almaty/general"
    assert settings.content["bots"] == [MOD]
    assert f'bots: ["{MOD}", "{SCHED}"] → ["{MOD}"]' in settings.detail
    assert "- kick @sched:hs.test ← club:almaty/general: join; bot scheduling does not serve" in (
        render_text(p)
    )
    # The bot's entry goes even when it is already out of the room (it left on its own).
    p2 = plan(after, applied(before, members={SCHED: "left"}))
    assert [(a.kind, a.ref) for a in p2.actions if a.user_id] == [
        ("invite", "club:almaty/sessions")  # a room it serves (see the next test)
    ]
    assert [a.content["users"] for a in p2.actions if a.event_type == "m.room.power_levels"] == [
        {MOD: 100}
    ]
    assert plan(after, applied(after)).empty


def test_a_bot_that_left_a_room_it_serves_is_invited_again_unlike_a_person() -> None:
    n = bot_net("sched")
    p = plan(n, applied(n, members={SCHED: "left"}))
    assert {(a.kind, a.ref, a.user_id) for a in p.actions} == {
        ("invite", "club:almaty/sessions", SCHED)
    }
    assert {(note.kind, note.ref) for note in p.notes} == set()
    # Removed by a moderator: reported, like a person.
    p = plan(n, applied(n, members={SCHED: "kicked"}))
    assert p.empty
    assert {note.kind for note in p.notes} == {"kicked"}


def test_nothing_changes_for_the_moderation_bot() -> None:
    before = bot_net("{localpart: sched, rooms: all}")
    after = bot_net("sched")
    p = plan(after, applied(before))
    assert all(a.user_id != MOD for a in p.actions)
    for a in p.actions:
        if a.event_type == "m.room.power_levels":
            assert a.content["users"].get(MOD) == 100
    kicked = {a.ref for a in p.actions if a.kind == "kick"}
    assert kicked == {r.ref for r in after.rooms if r.ref != "club:almaty/sessions"}


REMOTE = "@olga:elsewhere.test"


def test_local_people_are_joined_directly_remote_ones_and_choosers_invited() -> None:
    people = [
        DesiredPerson("ivan", IVAN, None, "existing", ("c0",), join="direct"),
        DesiredPerson("anna", ANNA, None, "existing", ("c0",), join="invite"),
        DesiredPerson("olga", REMOTE, None, "existing", ("c0",), join="direct"),
    ]
    members = {"c0": {IVAN: 0, ANNA: 0, REMOTE: 0}}
    n = net(n_clubs=1, rooms_per_club=2, members=members, people=people)
    a = applied(n, members={IVAN: "left", ANNA: "left", REMOTE: "left"})
    absent = Actual(
        "n1", ME, {ref: replace(r, members={ME: r.members[ME]}) for ref, r in a.rooms.items()}
    )
    p = plan(n, absent)
    by_user = {(x.kind, x.user_id) for x in p.actions if x.kind in ("join", "invite")}
    assert by_user == {("join", IVAN), ("invite", ANNA), ("invite", REMOTE)}
    assert len([x for x in p.actions if x.kind == "join"]) == 3  # the club space and two rooms
    assert "+ join @ivan:hs.test → club:c0" in render_text(p)


def test_a_pending_invitation_of_someone_joined_directly_becomes_the_join() -> None:
    people = [
        DesiredPerson("ivan", IVAN, None, "existing", ("c0",), join="direct"),
        DesiredPerson("anna", ANNA, None, "existing", ("c0",), join="invite"),
    ]
    n = net(n_clubs=1, rooms_per_club=1, members={"c0": {IVAN: 0, ANNA: 0}}, people=people)
    p = plan(n, applied(n, members={IVAN: "invite", ANNA: "invite"}))
    assert {(x.kind, x.user_id) for x in p.actions} == {("join", IVAN)}
    left = plan(n, applied(n, members={IVAN: "left"}))
    assert left.empty
    note = f"{IVAN} left on their own; not added again"
    assert [x.detail for x in left.notes] == [note] * 2
