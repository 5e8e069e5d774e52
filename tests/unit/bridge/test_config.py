"""The bridge's deployment file: off by default, located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from clubs.bridge.config import BridgeConfig, load_config, parse_config
from clubs.core.yamlconf import ConfigError


def test_without_a_file_the_bridge_is_off(tmp_path: Path) -> None:
    config = load_config(tmp_path / "bridge.yaml")
    assert config == BridgeConfig()
    assert config.enabled is False


def test_a_file_enables_it_with_its_settings() -> None:
    config = parse_config(
        "enabled: true\n"
        "listen: {host: 127.0.0.1, port: 29400}\n"
        "homeserver: http://127.0.0.1:8448\n"
        "server_name: club.example\n"
        "telegram: {api: 'http://127.0.0.1:9000/', poll_timeout_s: 5}\n"
    )
    assert config.enabled
    assert (config.host, config.port, config.url) == ("127.0.0.1", 29400, "http://127.0.0.1:29400")
    assert config.homeserver == "http://127.0.0.1:8448"
    assert config.server_name == "club.example"
    assert (config.telegram_api, config.poll_timeout_s) == ("http://127.0.0.1:9000", 5)


def test_enabled_false_keeps_it_off() -> None:
    assert parse_config("enabled: false\n").enabled is False


def test_every_problem_is_reported_where_it_is() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "enabled: yes\n"
            "listen: {port: 70000}\n"
            "url: ftp://x\n"
            "telegram: {api: 'https://api.telegram.org/?token=1', poll: 3}\n",
            "bridge.yaml",
        )
    assert str(caught.value).splitlines() == [
        "bridge.yaml:1:10: enabled: expected true or false; got yes (YAML 1.1 reads it as true)",
        "bridge.yaml:2:16: listen.port: expected an integer from 1 to 65535; got 70000",
        'bridge.yaml:3:6: url: expected an http:// or https:// URL without a query; got "ftp://x"',
        "bridge.yaml:4:17: telegram.api: expected an http:// or https:// URL without a query; "
        'got "https://api.telegram.org/?token=1"',
        "bridge.yaml:4:54: telegram.poll: unknown key; expected one of api, poll_timeout_s",
    ]
