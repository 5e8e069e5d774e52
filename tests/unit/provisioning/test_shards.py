"""`shards:`: the bots split by club across processes, each shard on accounts of its own."""

from __future__ import annotations

from clubs.core.namespace import CLUB_SETTINGS
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.model import Network
from clubs.provisioning.plan import plan, render_text
from tests.unit.provisioning.test_load import EXAMPLE, errors, load
from tests.unit.provisioning.test_plan import SERVER, applied

PL = "m.room.power_levels"

NET = """\
version: 1
network: demo
name: "Сеть"
bots:
  moderation: bot-moderation
  scheduling: bot-scheduling
people:
  - {key: anna, mxid: "@anna", onboarding: existing}
club_template:
  rooms:
    - {key: general, name: "Общий"}
    - {key: sessions, name: "Встречи"}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - {key: almaty, name: "Алматы", members: [anna]}
      - {key: astana, name: "Астана"}
  - key: ge
    name: "Грузия"
    clubs:
      - {key: tbilisi, name: "Тбилиси"}
  - key: de
    name: "Германия"
    clubs:
      - {key: berlin, name: "Берлин"}
"""

SHARDS = """\
shards:
  asia:
    countries: [kz]
  south:
    clubs: [tbilisi]
    accounts: {scheduling: sched-south}
"""


def with_shards(shards: str = SHARDS) -> str:
    return NET.replace("people:\n", shards + "people:\n")


def compiled(text: str) -> DesiredNetwork:
    return compile_network(load(text), "hs.test")


def test_shards_have_their_countries_clubs_and_accounts() -> None:
    net = load(with_shards())
    assert [(s.key, s.countries, s.clubs) for s in net.shards] == [
        ("asia", ("kz",), ()),
        ("south", (), ("tbilisi",)),
    ]
    assert {s.key: {n: b.localpart for n, b in s.bots.items()} for s in net.shards} == {
        "asia": {"moderation": "bot-moderation-asia", "scheduling": "bot-scheduling-asia"},
        "south": {"moderation": "bot-moderation-south", "scheduling": "sched-south"},
    }
    asia, south = net.shards
    assert asia.bots["scheduling"].rooms == frozenset({"announcements", "sessions"})
    assert net.shard_of("kz", "astana") is asia
    assert net.shard_of("ge", "tbilisi") is south
    assert net.shard_of("ge") is None  # the country space: tbilisi's shard has not all of ge
    assert net.shard_of("de", "berlin") is None
    assert net.shard_of(None) is None  # the network space


def test_each_room_has_its_shards_bots_at_the_bots_levels() -> None:
    desired = compiled(with_shards())
    assert desired.bots == {
        "moderation": "@bot-moderation:hs.test",
        "scheduling": "@bot-scheduling:hs.test",
    }
    assert desired.shard_bots == {
        "asia": {
            "moderation": "@bot-moderation-asia:hs.test",
            "scheduling": "@bot-scheduling-asia:hs.test",
        },
        "south": {
            "moderation": "@bot-moderation-south:hs.test",
            "scheduling": "@sched-south:hs.test",
        },
    }

    def bots(ref: str) -> dict[str, int]:
        room = desired.room(ref)
        users = room.power_levels["users"]
        found = {m: lvl for m, lvl in room.members.items() if "bot" in m or "sched" in m}
        assert {m: users[m] for m in found} == found  # in the power levels at the same level
        return found

    assert bots("network") == {"@bot-moderation:hs.test": 100}
    assert bots("country:kz") == {"@bot-moderation-asia:hs.test": 100}
    assert bots("club:almaty/sessions") == {
        "@bot-moderation-asia:hs.test": 100,
        "@bot-scheduling-asia:hs.test": 50,
    }
    assert bots("club:astana/general") == {"@bot-moderation-asia:hs.test": 100}
    assert bots("country:ge") == {"@bot-moderation:hs.test": 100}
    assert bots("club:tbilisi/sessions") == {
        "@bot-moderation-south:hs.test": 100,
        "@sched-south:hs.test": 50,
    }
    assert bots("club:berlin/sessions") == {
        "@bot-moderation:hs.test": 100,
        "@bot-scheduling:hs.test": 50,
    }
    settings = desired.room("club:tbilisi/sessions").state[(CLUB_SETTINGS, "")]
    assert settings["bots"] == ["@bot-moderation-south:hs.test", "@sched-south:hs.test"]
    assert desired.bot_accounts()["@sched-south:hs.test"] == "scheduling of shard south"


def test_without_shards_the_compiled_network_is_the_same_as_before() -> None:
    plain = compiled(NET)
    assert plain.shard_bots == {}
    # Declaring a shard changes the rooms of its clubs only.
    sharded = compiled(with_shards("shards:\n  south: {clubs: [tbilisi]}\n"))
    changed = {a.ref for a, b in zip(plain.rooms, sharded.rooms, strict=True) if a != b}
    assert changed == {"club:tbilisi", "club:tbilisi/general", "club:tbilisi/sessions"}


def test_the_example_network_declares_no_shards_and_its_commented_ones_are_valid() -> None:
    text = EXAMPLE.read_text()
    net: Network = load(text)
    assert net.shards == ()
    start = text.index("# shards:\n")
    commented = text[start : text.index("\n\n", start)]
    uncommented = text.replace(commented, commented.replace("# ", "").replace("#", ""))
    sharded = load(uncommented)
    assert [(s.key, s.countries, s.clubs) for s in sharded.shards] == [
        ("central-asia", ("kz",), ()),
        ("caucasus", (), ("tbilisi",)),
    ]
    assert sharded.shards[1].bots["moderation"].localpart == "bot-mod-caucasus"


def test_shard_errors_are_located() -> None:
    text = with_shards(
        """\
shards:
  asia:
    countries: [kz, kz]
    clubs: [almaty]
    region: central
  south:
    countries: [atlantis]
    clubs: [tbilisi, almaty, berlinn]
  empty: {}
  nothing: {countries: []}
  west:
    clubs: [berlin]
    accounts: {moderation: bot-scheduling, checkins: bot-c, scheduling: anna}
"""
    )
    assert errors(text) == [
        'n.yaml:9:21: shards.asia.countries[1]: country "kz" is already in this shard (line '
        "9); a country is served by one shard",
        'n.yaml:10:13: shards.asia.clubs[0]: club "almaty" is in country "kz", which this shard '
        "has whole (line 9); a club is served by one shard: list the country's clubs one by "
        "one instead",
        "n.yaml:11:5: shards.asia.region: unknown key; expected one of countries, clubs, accounts",
        'n.yaml:13:17: shards.south.countries[0]: unknown country "atlantis"; no country has it',
        'n.yaml:14:22: shards.south.clubs[1]: club "almaty" is in country "kz", which shard '
        '"asia" has whole (line 9); a club is served by one shard: list the country\'s clubs '
        "one by one instead",
        'n.yaml:14:30: shards.south.clubs[2]: unknown club "berlinn"; did you mean "berlin"?',
        "n.yaml:15:3: shards.empty: a shard serves at least one club: list countries or clubs "
        "under it",
        "n.yaml:16:3: shards.nothing: a shard serves at least one club: list countries or clubs "
        "under it",
        'n.yaml:19:28: shards.west.accounts.moderation: "bot-scheduling" would be the account '
        'of bot "moderation" in shard "west", but it is already the account of the network\'s '
        'bot "scheduling"',
        "n.yaml:19:44: shards.west.accounts.checkins: unknown bot; the network's bots are "
        "moderation, scheduling",
        'n.yaml:19:73: shards.west.accounts.scheduling: "anna" would be the account of bot '
        '"scheduling" in shard "west", but it is person "anna"\'s',
    ]


def test_a_derived_account_that_is_taken_is_reported_at_the_shard() -> None:
    text = with_shards("shards:\n  asia: {countries: [kz]}\n").replace(
        "scheduling: bot-scheduling", "scheduling: bot-moderation-asia"
    )
    assert errors(text) == [
        'n.yaml:8:3: shards.asia: "bot-moderation-asia" would be the account of bot '
        '"moderation" in shard "asia", but it is already the account of the network\'s bot '
        '"scheduling"; name another under accounts'
    ]


def test_a_country_named_after_one_of_its_clubs_elsewhere_is_refused() -> None:
    text = with_shards("shards:\n  a: {clubs: [almaty]}\n  b: {countries: [ge, kz]}\n")
    assert errors(text) == [
        'n.yaml:9:23: shards.b.countries[1]: country "kz" has club "almaty", which shard "a" '
        "serves (line 8); a club is served by one shard"
    ]


def test_a_shard_whose_countries_have_no_club_is_refused() -> None:
    text = with_shards("shards:\n  asia: {countries: [kz]}\n").replace(
        '      - {key: almaty, name: "Алматы", members: [anna]}\n'
        '      - {key: astana, name: "Астана"}\n',
        "      []\n",
    )
    assert errors(text) == [
        "n.yaml:8:21: shards.asia.countries: the shard serves no club: no club is declared in "
        "kz yet; a shard serves at least one club"
    ]


def test_moving_a_club_to_another_shard_is_a_plan_of_memberships_and_power() -> None:
    before = compile_network(load(with_shards()), SERVER)
    moved = with_shards(SHARDS.replace("clubs: [tbilisi]", "clubs: [tbilisi, berlin]"))
    after = compile_network(load(moved), SERVER)
    p = plan(after, applied(before))
    old, new = "@bot-moderation:hs.test", "@bot-moderation-south:hs.test"
    sched_old, sched_new = "@bot-scheduling:hs.test", "@sched-south:hs.test"
    berlin = {"club:berlin", "club:berlin/general", "club:berlin/sessions"}
    assert {(a.kind, a.ref, a.user_id) for a in p.actions if a.user_id} == {
        *(("invite", ref, new) for ref in berlin),
        *(("kick", ref, old) for ref in berlin),
        ("invite", "club:berlin/sessions", sched_new),
        ("kick", "club:berlin/sessions", sched_old),
    }
    kick = next(a for a in p.actions if a.kind == "kick" and a.user_id == old)
    assert kick.detail == "join; bot moderation does not serve this room"
    levels = {a.ref: a.content["users"] for a in p.actions if a.event_type == PL}
    assert levels == {
        "club:berlin": {new: 100},
        "club:berlin/general": {new: 100},
        "club:berlin/sessions": {new: 100, sched_new: 50},
    }
    assert all(not a.security for a in p.actions)
    text = render_text(p)
    assert f"+ invite {new} → club:berlin/general" in text
    assert f"- kick {old} ← club:berlin/general" in text
    assert plan(after, applied(after)).empty
    # And back: the shard's bots leave, the network's come back.
    back = plan(before, applied(after))
    assert ("kick", "club:berlin/general", new) in {
        (a.kind, a.ref, a.user_id) for a in back.actions
    }
    detail = next(a.detail for a in back.actions if a.kind == "kick" and a.user_id == new)
    assert detail == "join; bot moderation of shard south does not serve this room"


def test_a_key_that_names_a_country_and_a_club_cannot_be_sharded() -> None:
    text = with_shards("shards:\n  a: {clubs: [de]}\n").replace("key: berlin", "key: de")
    assert errors(text) == [
        'n.yaml:8:15: shards.a.clubs[0]: "de" is the key of a country and of a club; the bots\' '
        "processes tell a shard's rooms by these keys: rename the club"
    ]
