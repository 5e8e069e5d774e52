"""The registration file Synapse loads: random tokens from the vault, exclusive namespace."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import yaml
from cryptography.fernet import Fernet

from clubs.bridge.config import BridgeConfig
from clubs.bridge.registration import (
    AS_TOKEN,
    HS_TOKEN,
    app_service_files,
    ensure_tokens,
    ghost_id,
    ghost_user,
    in_namespace,
    registration_path,
    write_registration,
)
from clubs.core.secrets import Vault

CONFIG = BridgeConfig(
    enabled=True,
    server_name="club.example",
    url="http://127.0.0.1:29317",
    homeserver="https://matrix.club.example",
)


def vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path / "secrets" / "vault", key=Fernet.generate_key())


def test_tokens_are_random_different_and_kept_in_the_vault(tmp_path: Path) -> None:
    v = vault(tmp_path)
    tokens = ensure_tokens(v)
    assert tokens.as_token != tokens.hs_token
    assert len(tokens.as_token) >= 60
    assert len(tokens.hs_token) >= 60
    assert (v.get(AS_TOKEN), v.get(HS_TOKEN)) == (tokens.as_token, tokens.hs_token)
    assert ensure_tokens(v) == tokens
    assert tokens.as_token not in repr(tokens)
    assert tokens.hs_token not in repr(tokens)


def test_the_registration_is_what_synapse_needs(tmp_path: Path) -> None:
    v = vault(tmp_path)
    path = write_registration(CONFIG, v, tmp_path)
    doc = yaml.safe_load(path.read_text())
    tokens = ensure_tokens(v)
    assert doc["id"] == "clubs-telegram"
    assert doc["url"] == "http://127.0.0.1:29317"
    assert (doc["as_token"], doc["hs_token"]) == (tokens.as_token, tokens.hs_token)
    assert doc["rate_limited"] is False
    assert re.fullmatch(r"[a-z0-9]{16}", doc["sender_localpart"])
    [users] = doc["namespaces"]["users"]
    assert users == {"exclusive": True, "regex": r"@tg_.*:club\.example"}
    assert re.fullmatch(users["regex"], ghost_user(123, "club.example"))
    assert not re.fullmatch(users["regex"], "@tg_1:clubXexample")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "ip_range_whitelist" not in doc  # the homeserver is not on loopback here


def test_on_loopback_the_as_token_works_from_loopback_only(tmp_path: Path) -> None:
    config = BridgeConfig(enabled=True, homeserver="http://127.0.0.1:8008")
    doc = yaml.safe_load(write_registration(config, vault(tmp_path), tmp_path).read_text())
    assert doc["ip_range_whitelist"] == ["127.0.0.0/8", "::1/128"]


def test_it_is_rewritten_only_when_it_changes(tmp_path: Path) -> None:
    v = vault(tmp_path)
    path = write_registration(CONFIG, v, tmp_path)
    before = path.stat().st_ino
    write_registration(CONFIG, v, tmp_path)
    assert path.stat().st_ino == before


def test_the_homeserver_loads_it_only_when_the_bridge_is_enabled(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    vault_path = tmp_path / "secrets" / "vault"
    Vault(vault_path, key=key)
    off = BridgeConfig(enabled=False)
    assert app_service_files(off, vault_path, tmp_path) == ()
    assert not registration_path(tmp_path).exists()


def test_ghost_ids_are_read_back_only_from_the_namespace() -> None:
    assert ghost_id("@tg_42:club.example", "club.example") == 42
    assert ghost_id("@tg_bridge:club.example", "club.example") is None
    assert ghost_id("@tg_42:other.example", "club.example") is None
    assert ghost_id("@tg_042:club.example", "club.example") is None
    assert in_namespace("@tg_bridge:club.example", "club.example")
    assert not in_namespace("@anna:club.example", "club.example")
