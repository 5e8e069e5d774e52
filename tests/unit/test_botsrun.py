"""`clubs bots run` builds its host configuration from the network file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clubs.botsrun import add_parsers, config_from_args

NETWORK = """\
version: 1
network: demo
name: "Сеть"
{defaults}
bots:
  moderation: bot-moderation
countries: []
"""


def bots_run_args(tmp_path: Path, defaults: str, *extra: str) -> argparse.Namespace:
    """The arguments as `clubs bots run` parses them (its own parser, its own defaults)."""
    path = tmp_path / "network.yaml"
    path.write_text(NETWORK.format(defaults=defaults))
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(
        [
            "bots",
            "run",
            "--network",
            str(path),
            "--var-dir",
            str(tmp_path / "var"),
            "--homeserver",
            "http://127.0.0.1:1",
            "--server-name",
            "hs.test",
            *extra,
        ]
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


@pytest.mark.parametrize(
    ("extra", "port", "public"),
    [
        ((), None, None),
        (("--http-port", "8091"), 8091, "http://127.0.0.1:8091"),
        (
            ("--http-port", "8091", "--public-url", "https://clubs.example/bots/"),
            8091,
            "https://clubs.example/bots",
        ),
    ],
)
def test_the_bots_http_endpoint_is_off_unless_a_port_is_given(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: tuple[str, ...],
    port: int | None,
    public: str | None,
) -> None:
    monkeypatch.setenv("CLUBS_ADMIN_TOKEN", "not-a-real-token")
    monkeypatch.delenv("CLUBS_BOTS_HTTP_PORT", raising=False)
    monkeypatch.delenv("CLUBS_BOTS_PUBLIC_URL", raising=False)
    config = config_from_args(bots_run_args(tmp_path, "", *extra))
    assert (config.http_port, config.public_url) == (port, public)
    assert config.http_host == "127.0.0.1"
