"""`defaults.identity_policy`: what the bots do when a member's identity changes."""

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
countries: []
"""


def policy(defaults: str = "") -> str:
    net = compile_network(parse_network(NETWORK.format(defaults=defaults), "n.yaml"), "hs.test")
    return net.identity_policy


def test_the_policy_is_accept_unless_the_network_says_hold() -> None:
    assert policy() == "accept"
    assert policy("defaults: {identity_policy: accept}") == "accept"
    assert policy("defaults: {identity_policy: hold}") == "hold"


@pytest.mark.parametrize(
    ("value", "got"), [("trust", '"trust"'), ("true", "true (a boolean)"), ("[hold]", "a list")]
)
def test_another_policy_is_a_located_error(value: str, got: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_network(NETWORK.format(defaults=f"defaults: {{identity_policy: {value}}}"), "n.yaml")
    assert str(caught.value).splitlines() == [
        f"n.yaml:4:29: defaults.identity_policy: expected one of accept, hold; got {got}"
    ]
