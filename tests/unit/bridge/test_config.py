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
        "bridge.yaml:4:54: telegram.poll: unknown key; expected one of api, poll_timeout_s, "
        "per_chat_minute",
    ]


def test_the_as_token_is_accepted_from_loopback_only_when_the_homeserver_is_there() -> None:
    assert parse_config("homeserver: http://127.0.0.1:8008\n").token_ranges() == (
        "127.0.0.0/8",
        "::1/128",
    )
    assert parse_config("homeserver: http://synapse:8008\n").token_ranges() == ()
    explicit = parse_config("homeserver: http://synapse:8008\nas_token_from: [172.16.0.0/12]\n")
    assert explicit.token_ranges() == ("172.16.0.0/12",)


def test_a_wrong_network_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("as_token_from: [10.0.0.1/8, everywhere]\n", "bridge.yaml")
    assert str(caught.value).splitlines() == [
        "bridge.yaml:1:17: as_token_from[0]: expected a network like 10.0.0.0/8 or "
        '127.0.0.1/32; got "10.0.0.1/8"',
        "bridge.yaml:1:29: as_token_from[1]: expected a network like 10.0.0.0/8 or "
        '127.0.0.1/32; got "everywhere"',
    ]


def test_the_file_is_found_in_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLUBS_BRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("CLUBS_CONFIG_DIR", str(tmp_path))
    assert load_config().enabled is False
    (tmp_path / "bridge.yaml").write_text("enabled: true\n")
    assert load_config().enabled is True
    other = tmp_path / "other.yaml"
    other.write_text("enabled: false\n")
    monkeypatch.setenv("CLUBS_BRIDGE_CONFIG", str(other))
    assert load_config().enabled is False


def test_the_moderation_hold_and_the_chat_pace_default_to_production_values() -> None:
    assert (BridgeConfig().hold_s, BridgeConfig().per_chat_minute) == (2, 20)
    config = parse_config("hold_s: 0\ntelegram: {per_chat_minute: 6000}\n")
    assert (config.hold_s, config.per_chat_minute) == (0, 6000)
    with pytest.raises(ConfigError) as e:
        parse_config("hold_s: 61\ntelegram: {per_chat_minute: 0}\n", "b.yaml")
    assert "b.yaml:1:9: hold_s: expected an integer from 0 to 60; got 61" in str(e.value)
    assert "telegram.per_chat_minute: expected an integer from 1 to 100000; got 0" in str(e.value)
