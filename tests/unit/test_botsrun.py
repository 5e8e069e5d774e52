"""`clubs bots run` builds its host configuration from the network file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clubs.botsrun import config_from_args

NETWORK = """\
version: 1
network: demo
name: "Сеть"
{defaults}
bots:
  moderation: bot-moderation
countries: []
"""


def bots_run_args(tmp_path: Path, defaults: str) -> argparse.Namespace:
    path = tmp_path / "network.yaml"
    path.write_text(NETWORK.format(defaults=defaults))
    return argparse.Namespace(
        network=path,
        only=[],
        var_dir=tmp_path / "var",
        homeserver="http://127.0.0.1:1",
        server_name="hs.test",
    )


@pytest.mark.parametrize(
    ("defaults", "policy"),
    [("", "accept"), ("defaults: {identity_policy: hold}", "hold")],
)
def test_every_bot_gets_the_networks_identity_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defaults: str, policy: str
) -> None:
    monkeypatch.setenv("CLUBS_ADMIN_TOKEN", "not-a-real-token")
    config = config_from_args(bots_run_args(tmp_path, defaults))
    assert [a.name for a in config.accounts] == ["moderation"]
    assert config.network == "demo"
    # The host starts every bot's RuntimeSettings from these (clubs.bots.host.open_runtimes).
    assert config.settings.identity_policy == policy
