"""Room names carry their club: `defaults.room_name_format` and `cohort_room_name_format`."""

from __future__ import annotations

import pytest

from clubs.core.yamlconf import ConfigError
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.load import parse_network
from clubs.provisioning.model import ROOM_NAME_MAX_BYTES

NETWORK = """\
version: 1
network: demo
name: "Сеть"
{defaults}
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
    - {{key: moderators, name: "Модераторы", audience: staff}}
cohort_template:
  rooms:
    - {{key: chat, name: "Группа"}}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "{club}"
        cohorts: [{{key: spring, name: "Весна"}}]
      - key: astana
        name: "Астана"
"""


def text(defaults: str = "", club: str = "Алматы") -> str:
    return NETWORK.format(defaults=defaults, club=club)


def names(defaults: str = "") -> dict[str, str]:
    net: DesiredNetwork = compile_network(parse_network(text(defaults), "n.yaml"), "hs.test")
    assert all(r.state[("m.room.name", "")] == {"name": r.name} for r in net.rooms)
    return {r.ref: r.name for r in net.rooms}


SPACES = {
    "network": "Сеть",
    "country:kz": "Казахстан",
    "club:almaty": "Алматы",
    "cohort:almaty/spring": "Весна",
    "club:astana": "Астана",
}


def test_club_rooms_carry_their_club_and_cohort_rooms_their_cohort_by_default() -> None:
    assert names() == {
        **SPACES,
        "club:almaty/general": "Общий · Алматы",
        "club:almaty/moderators": "Модераторы · Алматы",
        "cohort:almaty/spring/chat": "Группа · Весна",
        "club:astana/general": "Общий · Астана",
        "club:astana/moderators": "Модераторы · Астана",
    }


def test_the_formats_may_use_every_placeholder_and_escaped_braces() -> None:
    defaults = (
        "defaults:\n"
        '  room_name_format: "{room} ({club}, {country})"\n'
        '  cohort_room_name_format: "{{{cohort}}} {room} · {club}"'
    )
    assert names(defaults) == {
        **SPACES,
        "club:almaty/general": "Общий (Алматы, Казахстан)",
        "club:almaty/moderators": "Модераторы (Алматы, Казахстан)",
        "cohort:almaty/spring/chat": "{Весна} Группа · Алматы",
        "club:astana/general": "Общий (Астана, Казахстан)",
        "club:astana/moderators": "Модераторы (Астана, Казахстан)",
    }


def test_room_alone_keeps_the_declared_names_in_clubs_and_cohorts() -> None:
    plain = {
        **SPACES,
        "club:almaty/general": "Общий",
        "club:almaty/moderators": "Модераторы",
        "cohort:almaty/spring/chat": "Группа",
        "club:astana/general": "Общий",
        "club:astana/moderators": "Модераторы",
    }
    assert names('defaults: {room_name_format: "{room}"}') == plain
    # The cohort format, once written, is its own.
    both = 'defaults: {room_name_format: "{room}", cohort_room_name_format: "{room} · {cohort}"}'
    assert names(both) == {**plain, "cohort:almaty/spring/chat": "Группа · Весна"}


@pytest.mark.parametrize(
    ("defaults", "where", "message"),
    [
        (
            'defaults: {room_name_format: "{room} · {town}"}',
            "n.yaml:4:30: defaults.room_name_format",
            "unknown placeholder {town}; expected {room}, {club}, {country}",
        ),
        (
            'defaults: {room_name_format: "{room} · {cohort}"}',
            "n.yaml:4:30: defaults.room_name_format",
            "unknown placeholder {cohort}; expected {room}, {club}, {country} "
            "({cohort} names only cohort rooms: see cohort_room_name_format)",
        ),
        (
            'defaults: {cohort_room_name_format: "{room} · {club"}',
            "n.yaml:4:37: defaults.cohort_room_name_format",
            'expected a room name format like "{room} · {club}": unbalanced braces',
        ),
        (
            'defaults: {room_name_format: "{room}} · {club}"}',
            "n.yaml:4:30: defaults.room_name_format",
            'expected a room name format like "{room} · {club}": unbalanced braces '
            "(a placeholder is written {room}, a brace itself {{ or }})",
        ),
        (
            'defaults: {room_name_format: "{room!r}"}',
            "n.yaml:4:30: defaults.room_name_format",
            'expected a room name format like "{room} · {club}": '
            "write {room} alone, without conversion or format spec",
        ),
        (
            'defaults: {room_name_format: "{club}"}',
            "n.yaml:4:30: defaults.room_name_format",
            "expected a format containing {room}, the room's own name "
            '(like "{room} · {club}"); got "{club}"',
        ),
        (
            "defaults: {room_name_format: 12}",
            "n.yaml:4:30: defaults.room_name_format",
            'expected a string; got 12 (a number); quote it: "12"',
        ),
    ],
)
def test_a_bad_format_is_a_located_error(defaults: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_network(text(defaults), "n.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{where}: {message}"), lines


def test_a_formatted_name_longer_than_the_limit_is_a_located_error_at_the_club() -> None:
    # 80 two-byte letters: 160 bytes, a valid club name; "Модераторы · " adds 23 more.
    long_club = "Ж" * 80
    parse_network(text(club=long_club), "n.yaml")  # fits with the default format
    twice = 'defaults: {room_name_format: "{room} · {club} · {club}"}'
    with pytest.raises(ConfigError) as caught:
        parse_network(text(twice, club=long_club), "n.yaml")
    lines = str(caught.value).splitlines()
    size = len(f"Модераторы · {long_club} · {long_club}".encode())
    assert size > ROOM_NAME_MAX_BYTES
    assert lines == [
        f'n.yaml:{line}:15: countries[0].clubs[0].name: room "{key}" would be named with '
        f"{n} bytes by defaults.room_name_format; expected at most {ROOM_NAME_MAX_BYTES} "
        "bytes: shorten this name or the format"
        for line, key, n in [
            (17, "general", len(f"Общий · {long_club} · {long_club}".encode())),
            (17, "moderators", size),
        ]
    ]


def test_a_cohort_room_name_too_long_is_reported_at_the_cohort() -> None:
    long_club = "Ж" * 80
    fmt = 'defaults: {cohort_room_name_format: "{room} · {cohort} · {club} · {club}"}'
    with pytest.raises(ConfigError) as caught:
        parse_network(text(fmt, club=long_club), "n.yaml")
    (line,) = str(caught.value).splitlines()
    assert line.startswith(
        'n.yaml:18:39: countries[0].clubs[0].cohorts[0].name: room "chat" would be named with'
    )
    assert "by defaults.cohort_room_name_format" in line
