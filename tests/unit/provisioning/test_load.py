from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clubs.bots.moderation.detect import Thresholds
from clubs.core.paths import config_dir
from clubs.core.yamlconf import ConfigError
from clubs.provisioning.compile import moderation_content
from clubs.provisioning.load import duration_ms, load_network, parse_network
from clubs.provisioning.model import DEFAULT_POWER_LEVELS, Bot, Moderation, Network

EXAMPLE = config_dir() / "network.example.yaml"

SMALL = """\
version: 1
network: demo
name: "Сеть"
people:
  - {key: anna, mxid: "@anna", display_name: "Анна", onboarding: precreate}
  - {key: boris, mxid: "@boris:example.org", onboarding: existing}
  - {key: vera}
club_template:
  rooms:
    - {key: general, name: "Общий", order: "010", suggested: true}
    - {key: news, name: "Объявления", power_levels: {events_default: 50}}
    - {key: support, name: "Поддержка", join_rule: invite}
cohort_template:
  rooms:
    - {key: chat, name: "Группа"}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        staff: {facilitator: [anna], moderator: [anna]}
        members: [anna, boris, vera]
        rooms:
          - {key: news, topic: "Новости", power_levels: {events: {m.room.pinned_events: 50}}}
          - {key: walks, name: "Прогулки"}
        cohorts:
          - {key: spring, name: "Весна", members: [vera, anna], state: archived}
"""


def load(text: str) -> Network:
    return parse_network(text, "n.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return str(caught.value).splitlines()


def test_the_example_loads_and_is_as_big_as_the_issue_asks() -> None:
    network = load_network(EXAMPLE)
    clubs = [club for _, club in network.clubs()]
    assert network.key == "commclubs"
    assert len(network.countries) >= 3
    assert len(clubs) >= 4
    assert sum(len(club.cohorts) for club in clubs) >= 2
    assert len(network.people) >= 20
    assert set(network.bots) == {"moderation", "facilitation", "scheduling", "checkins"}
    for club in clubs:
        assert {"general", "announcements", "sessions", "support"} <= {r.key for r in club.rooms}


def test_defaults_apply_when_the_file_leaves_them_out() -> None:
    network = load(SMALL)
    d = network.defaults
    assert (d.room_version, d.history_visibility, d.guest_access) == ("12", "joined", "forbidden")
    assert d.encryption.algorithm == "m.megolm.v1.aes-sha2"
    assert network.roles == {
        "admin": 100,
        "moderator": 50,
        "facilitator": 50,
        "bot": 50,
        "member": 0,
    }
    assert network.power_levels == DEFAULT_POWER_LEVELS
    club = network.countries[0].clubs[0]
    assert (club.time_zone, club.language) == ("UTC", "ru")


def test_club_rooms_are_the_template_with_the_clubs_changes_and_additions() -> None:
    club = load(SMALL).countries[0].clubs[0]
    rooms = {r.key: r for r in club.rooms}
    assert list(rooms) == ["general", "news", "support", "walks"]
    assert rooms["general"].join_rule == "restricted"  # the default for club rooms
    assert rooms["general"].suggested
    assert rooms["general"].order == "010"
    assert rooms["support"].join_rule == "invite"
    news = rooms["news"]
    assert (news.name, news.topic) == ("Объявления", "Новости")
    assert news.power_levels.thresholds == {"events_default": 50}
    assert news.power_levels.events == {"m.room.pinned_events": 50}
    assert rooms["walks"].name == "Прогулки"


def test_cohorts_get_the_cohort_template_and_keep_their_state() -> None:
    cohort = load(SMALL).countries[0].clubs[0].cohorts[0]
    assert cohort.state == "archived"
    assert cohort.members == ("vera", "anna")
    assert [(r.key, r.join_rule) for r in cohort.rooms] == [("chat", "invite")]


def test_a_person_may_be_staff_and_member_and_hold_two_roles() -> None:
    club = load(SMALL).countries[0].clubs[0]
    assert club.staff == {"moderator": ("anna",), "facilitator": ("anna",)}
    assert club.people() == ("anna", "boris", "vera")


def test_people_keep_their_ids_as_written() -> None:
    people = {p.key: p for p in load(SMALL).people}
    assert people["anna"].mxid == "@anna"
    assert people["boris"].mxid == "@boris:example.org"
    assert (people["vera"].mxid, people["vera"].onboarding) == (None, "token")


def test_network_power_levels_merge_into_the_defaults() -> None:
    text = SMALL.replace(
        "people:", "power_levels: {invite: 0, events: {m.room.avatar: 100}}\npeople:", 1
    )
    power = load(text).power_levels
    assert power.thresholds["invite"] == 0
    assert power.thresholds["kick"] == 50
    assert power.events["m.room.avatar"] == 100
    assert power.events["m.room.power_levels"] == 100


@pytest.mark.parametrize(
    ("value", "ms"), [("180d", 180 * 86_400_000), ("12h", 43_200_000), ("2w", 1_209_600_000)]
)
def test_durations(value: str, ms: int) -> None:
    assert duration_ms(value) == ms


@pytest.mark.parametrize("value", ["6 months", "0d", "1y", "d", "-1d", "1.5d"])
def test_not_durations(value: str) -> None:
    assert duration_ms(value) is None


def test_template_room_without_name_is_reported_once_at_the_template() -> None:
    text = SMALL.replace('{key: support, name: "Поддержка", join_rule: invite}', "{key: support}")
    assert errors(text) == ['n.yaml:12:7: club_template.rooms[2]: missing required key "name"']


def test_staff_roles_are_admin_moderator_facilitator() -> None:
    text = SMALL.replace("staff: {facilitator: [anna]", "staff: {member: [anna]")
    assert errors(text) == [
        "n.yaml:22:17: countries[0].clubs[0].staff.member: unknown key; "
        "expected one of admin, moderator, facilitator"
    ]


def test_duplicate_room_and_cohort_keys_in_a_club() -> None:
    text = SMALL.replace(
        '- {key: walks, name: "Прогулки"}',
        '- {key: walks, name: "Прогулки"}\n          - {key: walks, name: "Ещё"}',
    ).replace("- {key: spring,", '- {key: spring, name: "Б"}\n          - {key: spring,')
    assert errors(text) == [
        "n.yaml:27:19: countries[0].clubs[0].rooms[2].key: duplicate room key "
        '"walks" (first at line 26)',
        "n.yaml:30:19: countries[0].clubs[0].cohorts[1].key: duplicate cohort key "
        '"spring" (first at line 29)',
    ]


def test_a_person_id_may_not_be_a_bots() -> None:
    text = SMALL.replace("people:", "bots: {moderation: mod}\npeople:").replace(
        '"@boris:example.org", onboarding: existing', '"@mod", onboarding: existing'
    )
    assert errors(text) == ['n.yaml:7:24: people[1].mxid: "@mod" is the account of a bot']


# --- staff rooms (audience: staff) --------------------------------------------------------------

STAFF = SMALL.replace(
    '    - {key: support, name: "Поддержка", join_rule: invite}\n',
    '    - {key: support, name: "Поддержка", join_rule: invite}\n'
    '    - {key: mods, name: "Модераторы", audience: staff}\n',
).replace(
    '    - {key: chat, name: "Группа"}\n',
    '    - {key: chat, name: "Группа"}\n    - {key: leads, name: "Ведущие", audience: staff}\n',
)


def test_a_staff_room_is_invite_only_unless_told_and_other_rooms_are_for_members() -> None:
    club = load(STAFF).countries[0].clubs[0]
    rooms = {r.key: r for r in club.rooms}
    assert (rooms["mods"].audience, rooms["mods"].join_rule) == ("staff", "invite")
    assert (rooms["general"].audience, rooms["general"].join_rule) == ("members", "restricted")
    cohort_rooms = {r.key: r.audience for r in club.cohorts[0].rooms}
    assert cohort_rooms == {"chat": "members", "leads": "staff"}


def test_a_clubs_entry_changes_a_template_rooms_audience_by_key() -> None:
    text = STAFF.replace(
        '          - {key: walks, name: "Прогулки"}\n',
        '          - {key: walks, name: "Прогулки"}\n'
        "          - {key: support, audience: staff}\n"
        '          - {key: mods, topic: "Для ведущих"}\n',
    )
    rooms = {r.key: r for r in load(text).countries[0].clubs[0].rooms}
    support = rooms["support"]
    assert (support.name, support.audience, support.join_rule) == ("Поддержка", "staff", "invite")
    mods = rooms["mods"]
    assert (mods.topic, mods.audience, mods.join_rule) == ("Для ведущих", "staff", "invite")


def test_a_template_staff_room_made_restricted_by_a_club_is_reported_at_the_club() -> None:
    text = STAFF.replace(
        '          - {key: walks, name: "Прогулки"}\n',
        '          - {key: walks, name: "Прогулки"}\n'
        "          - {key: mods, join_rule: restricted}\n",
    )
    assert errors(text) == [
        "n.yaml:29:36: countries[0].clubs[0].rooms[2].join_rule: a staff room must be "
        'invite-only: "restricted" would let every member of the club join it'
    ]


def test_a_restricted_template_room_made_staff_only_by_a_club_is_reported_at_the_club() -> None:
    text = STAFF.replace(
        '{key: general, name: "Общий", order: "010", suggested: true}',
        '{key: general, name: "Общий", join_rule: restricted}',
    ).replace(
        '          - {key: walks, name: "Прогулки"}\n',
        '          - {key: walks, name: "Прогулки"}\n          - {key: general, audience: staff}\n',
    )
    assert errors(text) == [
        "n.yaml:29:38: countries[0].clubs[0].rooms[2].audience: a staff room must be "
        'invite-only: "restricted" would let every member of the club join it '
        "(join_rule: restricted in club_template, line 10); set join_rule: invite here"
    ]


def test_a_restricted_staff_room_in_the_template_is_reported_once_at_the_template() -> None:
    text = STAFF.replace("audience: staff}", "audience: staff, join_rule: restricted}", 1)
    assert errors(text) == [
        "n.yaml:13:67: club_template.rooms[3].join_rule: a staff room must be "
        'invite-only: "restricted" would let every member of the club join it'
    ]


def test_an_unknown_audience_is_reported_at_its_place() -> None:
    text = STAFF.replace("audience: staff}", "audience: everyone}", 1)
    assert errors(text) == [
        "n.yaml:13:49: club_template.rooms[3].audience: expected one of members, staff; "
        'got "everyone"'
    ]


# --- moderation settings -----------------------------------------------------------------------

MODERATED = SMALL.replace(
    "people:",
    "defaults:\n"
    "  moderation:\n"
    "    personal_data: redact\n"
    "    flood: {messages: 8, seconds: 10}\n"
    "    words: [spam, casino]\n"
    "people:",
    1,
).replace(
    "        staff: {facilitator: [anna], moderator: [anna]}\n",
    "        staff: {facilitator: [anna], moderator: [anna]}\n"
    "        moderation:\n"
    '          personal_data: "off"\n'
    "          flood: {seconds: 30}\n"
    "          join_wave: {joins: 12}\n"
    "          words: [casino, lottery]\n",
) + ('      - key: astana\n        name: "Астана"\n        members: [boris]\n')


def test_a_full_moderation_block_loads_as_written() -> None:
    text = SMALL.replace(
        "        members: [anna, boris, vera]\n",
        "        members: [anna, boris, vera]\n"
        "        moderation:\n"
        "          personal_data: flag\n"
        "          flood: {messages: 12, seconds: 20}\n"
        "          mute_minutes: 10080\n"
        "          max_mentions: 1\n"
        "          join_wave: {joins: 1000, seconds: 3600}\n"
        "          new_member_hours: 0\n"
        '          words: [spam, "Казино", spam]\n',
    )
    assert load(text).countries[0].clubs[0].moderation == Moderation(
        personal_data="flag",
        flood_messages=12,
        flood_seconds=20,
        mute_minutes=10080,
        max_mentions=1,
        join_wave_joins=1000,
        join_wave_seconds=3600,
        new_member_hours=0,
        words=("spam", "Казино"),
    )


def test_without_moderation_settings_nothing_is_set() -> None:
    network = load(SMALL)
    assert network.defaults.moderation == Moderation()
    assert network.countries[0].clubs[0].moderation == Moderation()


def test_a_clubs_moderation_is_the_defaults_with_its_own_settings_over_them_key_by_key() -> None:
    network = load(MODERATED)
    almaty, astana = network.countries[0].clubs
    assert almaty.moderation == Moderation(
        personal_data="off",
        flood_messages=8,  # from the defaults: flood is merged key by key
        flood_seconds=30,
        join_wave_joins=12,
        words=("spam", "casino", "lottery"),  # the defaults' first, each once
    )
    assert (
        astana.moderation
        == network.defaults.moderation
        == Moderation(
            personal_data="redact", flood_messages=8, flood_seconds=10, words=("spam", "casino")
        )
    )


def test_the_word_lists_together_are_at_most_five_hundred_words() -> None:
    def with_words(defaults: int, own: int) -> str:
        return MODERATED.replace(
            "[spam, casino]", "[" + ", ".join(f"d{i}" for i in range(defaults)) + "]"
        ).replace("[casino, lottery]", "[" + ", ".join(f"c{i}" for i in range(own)) + "]")

    club = load(with_words(300, 200)).countries[0].clubs[0]
    assert len(club.moderation.words) == 500
    assert errors(with_words(300, 201)) == [
        "n.yaml:32:18: countries[0].clubs[0].moderation.words: expected at most 500 words "
        "with those of defaults.moderation.words; got 501 words"
    ]


def test_the_examples_commented_moderation_block_is_the_bots_defaults() -> None:
    """The block under defaults, uncommented, sets exactly what the bot does without it."""
    text = Path(EXAMPLE).read_text()
    block = re.search(r"^  # moderation:\n(?:  #   .*\n)+", text, re.MULTILINE)
    assert block is not None
    uncommented = re.sub(r"^  # ", "  ", block.group(0), flags=re.MULTILINE)
    network = load(text.replace(block.group(0), uncommented))
    assert network.defaults.moderation == Moderation(
        personal_data="redact",
        flood_messages=8,
        flood_seconds=10,
        mute_minutes=10,
        max_mentions=5,
        join_wave_joins=8,
        join_wave_seconds=60,
        new_member_hours=24,
    )
    bot = Thresholds()
    assert moderation_content(network.defaults.moderation) == {
        "personal_data": bot.personal_data,
        "flood_messages": bot.flood_messages,
        "flood_window_s": bot.flood_window_s,
        "mute_s": bot.mute_s,
        "max_mentions": bot.max_mentions,
        "join_wave_joins": bot.join_wave_joins,
        "join_wave_window_s": bot.join_wave_window_s,
        "new_member_hours": bot.new_member_hours,
    }


# --- fuzz: nothing but ConfigError ever comes out of the loader ----------------------------------

KEYS = [
    "version", "network", "name", "topic", "defaults", "people", "countries", "clubs", "rooms",
    "cohorts", "members", "staff", "key", "mxid", "join_rule", "power_levels", "events", "roles",
    "bots", "time_zone", "language", "state", "club_template", "retention", "max_lifetime",
    "moderation", "personal_data", "flood", "messages", "seconds", "words",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["@anna", "kz", "almaty", "invite", "12", "ru", "Asia/Almaty", "180d", "1"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8))
def test_random_documents_give_a_network_or_a_config_error(doc: dict[str, object]) -> None:
    with contextlib.suppress(ConfigError):
        load(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_example_gives_a_network_or_a_config_error(data: st.DataObject) -> None:
    text = Path(EXAMPLE).read_text()
    start = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 20))
    insert = data.draw(
        st.text(max_size=10) | st.sampled_from(["\n  ", ": ", "- ", "&a ", "*a", "'"])
    )
    with contextlib.suppress(ConfigError):
        load(text[:start] + insert + text[start + cut :])


# --- bots and the rooms they work in -------------------------------------------------------------

BOTS = SMALL.replace(
    "people:",
    "bots:\n"
    "  moderation: mod\n"
    "  scheduling: {localpart: sched, rooms: [news, walks]}\n"
    "  checkins: {localpart: care}\n"
    "  facilitation: {localpart: facil, rooms: all}\n"
    "people:",
    1,
)


def test_a_bot_is_a_localpart_with_default_rooms_or_a_mapping_with_its_rooms() -> None:
    bots = load(BOTS).bots
    assert list(bots) == ["moderation", "scheduling", "checkins", "facilitation"]  # file order
    assert bots["moderation"] == Bot("mod")  # every room and space
    assert bots["scheduling"] == Bot("sched", frozenset({"news", "walks"}))
    assert bots["checkins"] == Bot("care", frozenset({"support"}))  # its default
    assert bots["facilitation"] == Bot("facil")  # rooms: all


def test_default_rooms_per_bot_and_for_other_names() -> None:
    text = SMALL.replace(
        "people:",
        "bots: {moderation: m, scheduling: s, facilitation: f, checkins: c, echo: e}\npeople:",
    )
    bots = load(text).bots
    assert bots["moderation"].rooms is None
    assert bots["scheduling"].rooms == frozenset({"announcements", "sessions"})
    assert bots["facilitation"].rooms == frozenset({"sessions", "cases"})
    assert bots["facilitation"].cohort_rooms
    assert bots["checkins"].rooms == frozenset({"support"})
    assert bots["echo"] == Bot("e")  # not built in: every room and space
    assert bots["facilitation"].serves("chat", in_cohort=True)
    assert not bots["facilitation"].serves("chat", in_cohort=False)
    assert not bots["scheduling"].serves("general", in_cohort=False)
    assert bots["echo"].in_spaces
    assert not bots["checkins"].in_spaces


def bot_errors(entry: str) -> list[str]:
    return errors(SMALL.replace("people:", f"bots:\n  {entry}\npeople:", 1))


def test_unknown_keys_in_a_bots_entry_are_reported_at_their_place() -> None:
    assert bot_errors("scheduling: {localpart: s, room: [news]}") == [
        'n.yaml:5:30: bots.scheduling.room: unknown key; did you mean "rooms"?'
    ]
    assert bot_errors("scheduling: {rooms: [news]}") == [
        'n.yaml:5:15: bots.scheduling: missing required key "localpart"'
    ]


def test_room_keys_must_name_a_room_of_a_template_a_club_or_a_cohort() -> None:
    assert bot_errors("scheduling: {localpart: s, rooms: [news, walks, chat, nwes, lobby]}") == [
        'n.yaml:5:57: bots.scheduling.rooms[3]: unknown room key "nwes"; did you mean "news"?',
        'n.yaml:5:63: bots.scheduling.rooms[4]: unknown room key "lobby"; '
        "no club or cohort has such a room",
    ]


def test_rooms_is_all_or_a_list_of_room_keys() -> None:
    assert bot_errors("scheduling: {localpart: s, rooms: news}") == [
        'n.yaml:5:37: bots.scheduling.rooms: expected all or a list of room keys; got "news" '
        "(one room: [news])"
    ]
    assert bot_errors("scheduling: {localpart: s, rooms: 5}") == [
        "n.yaml:5:37: bots.scheduling.rooms: expected all or a list of room keys; got 5 (a number)"
    ]
    assert bot_errors("scheduling: {localpart: s, rooms: [all]}") == [
        'n.yaml:5:38: bots.scheduling.rooms[0]: "all" is not a room key: '
        "write rooms: all, not in a list"
    ]
    assert bot_errors("scheduling: {localpart: s, rooms: [news, news, {key: x}]}") == [
        'n.yaml:5:44: bots.scheduling.rooms[1]: "news" is listed twice',
        "n.yaml:5:50: bots.scheduling.rooms[2]: expected a string; got a mapping",
    ]
    assert load(BOTS.replace("[news, walks]", "[]")).bots["scheduling"].rooms == frozenset()


def test_a_bot_is_a_user_name_or_a_mapping_of_the_right_types() -> None:
    assert bot_errors("scheduling: [s]") == [
        "n.yaml:5:15: bots.scheduling: expected a user name, or a mapping with localpart and "
        "rooms; got a list"
    ]
    assert bot_errors("scheduling: {localpart: 12}") == [
        "n.yaml:5:27: bots.scheduling.localpart: expected a string; got 12 (a number); "
        'quote it: "12"'
    ]
    assert bot_errors("scheduling: {localpart: Sched}") == [
        "n.yaml:5:27: bots.scheduling.localpart: expected a user name of lowercase letters, "
        'digits and ._=-/+; got "Sched"'
    ]


def test_a_misspelt_bot_name_is_an_error_and_two_bots_need_two_accounts() -> None:
    assert bot_errors("scheduler: s") == [
        'n.yaml:5:3: bots.scheduler: unknown bot; did you mean "scheduling"? '
        "(a bot of another name works in every room)"
    ]
    assert errors(
        SMALL.replace("people:", "bots: {moderation: m, checkins: {localpart: m}}\npeople:")
    ) == ['n.yaml:4:45: bots.checkins.localpart: "m" is already the account of another bot']
