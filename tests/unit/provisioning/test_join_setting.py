"""`join:` in the network YAML: how people on the network's own server get into their rooms."""

from __future__ import annotations

import pytest

from clubs.core.yamlconf import ConfigError
from clubs.provisioning.compile import compile_network
from clubs.provisioning.load import parse_network

NETWORK = """\
version: 1
network: demo
name: "Сеть"
{defaults}
people:
  - {{key: anna, mxid: "@anna", onboarding: precreate}}
  - {{key: boris, mxid: "@boris", onboarding: existing, join: {boris_join}}}
  - {{key: vera}}
club_template:
  rooms:
    - {{key: general, name: "Общий"}}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        members: [anna, boris, vera]
"""


def joins(defaults: str = "", boris_join: str = "invite") -> dict[str, str]:
    text = NETWORK.format(defaults=defaults, boris_join=boris_join)
    net = compile_network(parse_network(text, "n.yaml"), "hs.test")
    return {p.key: p.join for p in net.people}


def test_people_are_joined_directly_unless_they_or_the_network_chose_invitations() -> None:
    assert joins() == {"anna": "direct", "boris": "invite", "vera": "direct"}
    assert joins("defaults: {join: invite}", boris_join="direct") == {
        "anna": "invite",
        "boris": "direct",
        "vera": "invite",
    }


@pytest.mark.parametrize(
    ("defaults", "boris_join", "where"),
    [("", "maybe", "n.yaml:7"), ("defaults: {join: always}", "invite", "n.yaml:4")],
)
def test_an_unknown_join_mode_is_a_located_error(
    defaults: str, boris_join: str, where: str
) -> None:
    text = NETWORK.format(defaults=defaults, boris_join=boris_join)
    with pytest.raises(ConfigError) as caught:
        parse_network(text, "n.yaml")
    message = str(caught.value)
    assert where in message
    assert "expected one of direct, invite" in message
