"""The network file's `bridge:` key: which rooms may be bridged to Telegram, with located errors."""

from __future__ import annotations

import pytest

from clubs.core.yamlconf import ConfigError
from clubs.provisioning.load import parse_network
from clubs.provisioning.model import Network, TelegramBridge

HEAD = """\
version: 1
network: demo
name: "Сеть"
people:
  - {key: anna}
club_template:
  rooms:
    - {key: general, name: "Общий"}
    - {key: news, name: "Объявления"}
    - {key: support, name: "Поддержка", join_rule: invite}
    - {key: mods, name: "Модераторы", audience: staff}
cohort_template:
  rooms:
    - {key: chat, name: "Группа"}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        members: [anna]
        rooms:
"""


def network(rooms: str, tail: str = "") -> Network:
    return parse_network(HEAD + rooms + tail, "n.yaml")


def errors(rooms: str, tail: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        network(rooms, tail)
    return str(caught.value).splitlines()


def room(net: Network, key: str) -> TelegramBridge | None:
    _, club = next(net.clubs())
    return next(r for r in club.rooms if r.key == key).bridge


def test_a_club_room_is_bridged_with_its_chat_and_mode() -> None:
    net = network(
        "          - {key: news, bridge: {telegram: {chat: -1001234567890}}}\n"
        "          - {key: general, bridge: {telegram: {chat: -42, mode: relay}}}\n"
    )
    assert room(net, "news") == TelegramBridge(chat=-1001234567890, mode="mirror")
    assert room(net, "general") == TelegramBridge(chat=-42, mode="relay")
    assert room(net, "support") is None


def test_rooms_are_not_bridged_unless_the_file_says_so() -> None:
    net = network("          - {key: walks, name: Прогулки}\n")
    _, club = next(net.clubs())
    assert all(r.bridge is None for r in club.rooms)


def test_a_staff_room_is_never_bridged() -> None:
    assert errors("          - {key: mods, bridge: {telegram: {chat: -5}}}\n") == [
        "n.yaml:23:33: countries[0].clubs[0].rooms[0].bridge: "
        "a staff room (audience: staff) is never bridged"
    ]


def test_the_support_room_is_never_bridged() -> None:
    assert errors("          - {key: support, bridge: {telegram: {chat: -5, mode: relay}}}\n") == [
        "n.yaml:23:36: countries[0].clubs[0].rooms[0].bridge: "
        "peer-support rooms are never bridged: what is said there stays on Matrix"
    ]


def test_a_room_of_the_checkins_bot_is_never_bridged() -> None:
    text = HEAD.replace("people:", "bots: {checkins: {localpart: ci, rooms: [general]}}\npeople:")
    with pytest.raises(ConfigError) as caught:
        parse_network(text + "          - {key: general, bridge: {telegram: {chat: -5}}}\n", "n")
    assert str(caught.value) == (
        "n:24:36: countries[0].clubs[0].rooms[0].bridge: peer-support rooms are never bridged: "
        'what is said there stays on Matrix (the check-ins bot works in "general")'
    )


def test_cohort_rooms_are_never_bridged() -> None:
    tail = (
        "        cohorts:\n"
        "          - key: spring\n"
        "            name: Весна\n"
        "            rooms:\n"
        "              - {key: chat, bridge: {telegram: {chat: -5}}}\n"
    )
    assert errors("          - {key: walks, name: Прогулки}\n", tail) == [
        "n.yaml:28:37: countries[0].clubs[0].cohorts[0].rooms[0].bridge: "
        "cohort rooms are never bridged: what a cohort says stays on Matrix"
    ]


def test_a_template_room_is_not_bridged() -> None:
    text = HEAD.replace(
        '    - {key: general, name: "Общий"}',
        '    - {key: general, name: "Общий", bridge: {telegram: {chat: -7}}}',
    )
    with pytest.raises(ConfigError) as caught:
        parse_network(text + "          - {key: walks, name: W}\n", "n")
    assert str(caught.value) == (
        "n:8:45: club_template.rooms[0].bridge: a bridge names one Telegram chat, "
        "so it is written in one club's rooms, not in a template"
    )


def test_a_chat_is_bridged_to_one_room_only() -> None:
    assert errors(
        "          - {key: news, bridge: {telegram: {chat: -5}}}\n"
        "          - {key: general, bridge: {telegram: {chat: -5, mode: relay}}}\n"
    ) == [
        "n.yaml:24:36: countries[0].clubs[0].rooms[1].bridge: Telegram chat -5 is already "
        "bridged to another room (line 23); a chat is bridged to one room only"
    ]


@pytest.mark.parametrize(
    ("bridge", "expected"),
    [
        (
            "{telegram: {chat: 12345}}",
            [
                "23:51: countries[0].clubs[0].rooms[0].bridge.telegram.chat: expected a Telegram "
                "group or channel id, a negative number like -1001234567890 (a positive id is a "
                "person's private chat); got 12345"
            ],
        ),
        (
            "{telegram: {chat: 0}}",
            [
                "23:51: countries[0].clubs[0].rooms[0].bridge.telegram.chat: expected a Telegram "
                "group or channel id, a negative number like -1001234567890; got 0"
            ],
        ),
        (
            '{telegram: {chat: "-100"}}',
            [
                "23:51: countries[0].clubs[0].rooms[0].bridge.telegram.chat: expected an integer; "
                'got "-100" (a string)'
            ],
        ),
        (
            "{telegram: {chat: -5, mode: both}}",
            [
                "23:61: countries[0].clubs[0].rooms[0].bridge.telegram.mode: expected one of "
                'mirror, relay; got "both"'
            ],
        ),
        (
            "{telegram: {mode: relay}}",
            ['23:44: countries[0].clubs[0].rooms[0].bridge.telegram: missing required key "chat"'],
        ),
        (
            "{matrix: {chat: -5}}",
            [
                '23:33: countries[0].clubs[0].rooms[0].bridge: missing required key "telegram"',
                "23:34: countries[0].clubs[0].rooms[0].bridge.matrix: unknown key; "
                "expected one of telegram",
            ],
        ),
    ],
)
def test_a_wrong_bridge_says_where_and_what(bridge: str, expected: list[str]) -> None:
    found = errors("          - {key: news, bridge: " + bridge + "}\n")
    assert found == ["n.yaml:" + line for line in expected]


def test_the_provisioner_invites_the_bridges_bot_into_bridged_rooms_only() -> None:
    from clubs.bridge.registration import BOT_LOCALPART
    from clubs.provisioning.compile import compile_network
    from clubs.provisioning.model import BRIDGE_BOT_LOCALPART

    assert BRIDGE_BOT_LOCALPART == BOT_LOCALPART  # one account, named in two packages
    net = network("          - {key: general, bridge: {telegram: {chat: -42, mode: relay}}}\n")
    desired = compile_network(net, "clubs.test")
    bot = "@tg_bridge:clubs.test"
    rooms = {r.locator.key: r for r in desired.rooms if not r.is_space}
    assert rooms["general"].members[bot] == 50
    assert rooms["general"].power_levels["users"][bot] == 50
    assert rooms["general"].power_levels["invite"] <= 50  # it invites the ghosts
    for key in ("news", "support", "mods"):
        assert bot not in rooms[key].members
        assert bot not in rooms[key].power_levels["users"]
