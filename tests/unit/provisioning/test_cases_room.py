"""The club template's case library room: in the example, served by the facilitation bot by
default, never bridged; a club's `cases: {approval: true}` reaches the club settings."""

from __future__ import annotations

import pytest

from clubs.core.namespace import CLUB_SETTINGS
from clubs.core.paths import config_dir
from clubs.core.yamlconf import ConfigError
from clubs.provisioning.compile import compile_network
from clubs.provisioning.load import load_network, parse_network
from clubs.provisioning.model import CASES_ROOM, DEFAULT_BOT_ROOMS, Cases, Network

TEXT = """\
version: 1
network: demo
name: "Сеть"
people:
  - {key: anna, mxid: "@anna", onboarding: precreate}
club_template:
  rooms:
    - {key: general, name: "Общий"}
    - {key: cases, name: "Случаи"}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        members: [anna]
        CASES
"""


def test_the_example_clubs_have_a_cases_room_the_facilitation_bot_serves() -> None:
    network = load_network(config_dir() / "network.example.yaml")
    for _, club in network.clubs():
        assert CASES_ROOM in {r.key for r in club.rooms}
    assert DEFAULT_BOT_ROOMS["facilitation"].serves(CASES_ROOM, in_cohort=False)


def test_approval_is_published_in_the_club_settings() -> None:
    on = parse_network(TEXT.replace("CASES", "cases: {approval: true}"), "n.yaml")
    off = parse_network(TEXT.replace("CASES", ""), "n.yaml")
    assert [c.cases for _, c in on.clubs()] == [Cases(approval=True)]
    assert [c.cases for _, c in off.clubs()] == [Cases()]

    def settings(net: Network) -> dict[str, object]:
        room = compile_network(net, "test.local").room("club:almaty/cases")
        return dict(room.state[(CLUB_SETTINGS, "")])

    assert settings(on)["cases"] == {"approval": True}
    assert "cases" not in settings(off)


def test_a_bad_approval_and_a_bridged_cases_room_are_refused_where_written() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_network(TEXT.replace("CASES", "cases: {approval: maybe}"), "n.yaml")
    assert "n.yaml" in str(caught.value)
    bridged = TEXT.replace(
        "CASES", "rooms:\n          - {key: cases, bridge: {telegram: {chat: -1001234567890}}}"
    )
    with pytest.raises(ConfigError) as caught:
        parse_network(bridged, "n.yaml")
    assert "the case library room is never bridged" in str(caught.value)
