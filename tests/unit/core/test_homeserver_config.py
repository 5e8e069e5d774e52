"""The rendered homeserver.yaml carries the hardening the threat model needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clubs.core.homeserver import Settings, render_config, render_log_config


def rendered(**kw: Any) -> dict[str, Any]:
    settings = Settings(data_dir=Path("/srv/clubs/synapse"), **kw)
    config = yaml.safe_load(render_config(settings, 8008))
    assert isinstance(config, dict)
    return config


def test_listens_on_loopback_client_api_only() -> None:
    (listener,) = rendered()["listeners"]
    assert listener["bind_addresses"] == ["127.0.0.1"]
    assert listener["x_forwarded"] is False
    assert [r["names"] for r in listener["resources"]] == [["client"]]


def test_federation_is_closed_without_an_allowlist() -> None:
    config = rendered()
    assert config["federation_domain_whitelist"] == []
    assert config["trusted_key_servers"] == []
    assert config["allow_public_rooms_over_federation"] is False


def test_allowlist_opens_federation_to_listed_servers_only() -> None:
    config = rendered(federation_allowlist=("kz.clubs.example", "de.clubs.example"))
    assert config["federation_domain_whitelist"] == ["kz.clubs.example", "de.clubs.example"]
    assert config["listeners"][0]["resources"][0]["names"] == ["client", "federation"]


def test_metadata_minimisation() -> None:
    config = rendered()
    assert config["presence"] == {"enabled": False}
    assert config["url_preview_enabled"] is False
    assert config["require_auth_for_profile_requests"] is True
    assert config["limit_profile_requests_to_users_who_share_rooms"] is True
    assert config["include_profile_data_on_invite"] is False
    assert config["enable_3pid_lookup"] is False
    assert config["enable_room_list_search"] is False
    assert config["push"]["include_content"] is False
    assert config["encryption_enabled_by_default_for_room_type"] == "all"
    assert config["user_ips_max_age"] == "1d"
    assert config["allow_guest_access"] is False
    assert config["report_stats"] is False


def test_registration_only_with_a_token() -> None:
    config = rendered()
    assert config["enable_registration"] is True
    assert config["registration_requires_token"] is True
    assert rendered(token_registration=False)["enable_registration"] is False


def test_only_the_provisioner_may_create_aliases() -> None:
    rules = rendered(server_name="clubs.example")["alias_creation_rules"]
    assert rules == [
        {"user_id": "@provisioner:clubs.example", "action": "allow"},
        {"action": "deny"},
    ]


def test_secrets_are_referenced_by_path_not_inline() -> None:
    config = rendered()
    for key in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
        assert key not in config
        assert config[f"{key}_path"].startswith("/srv/clubs/synapse/secrets/")


def test_metrics_listener_stays_on_loopback() -> None:
    listeners = rendered(metrics_port=9000)["listeners"]
    metrics = [ln for ln in listeners if ln["type"] == "metrics"]
    assert metrics == [{"port": 9000, "bind_addresses": ["127.0.0.1"], "type": "metrics"}]


def test_sql_logging_never_goes_to_debug() -> None:
    settings = Settings(data_dir=Path("/srv/clubs/synapse"), log_level="DEBUG")
    log_config = yaml.safe_load(render_log_config(settings))
    assert log_config["loggers"]["synapse.storage.SQL"]["level"] == "INFO"
