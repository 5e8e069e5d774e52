"""Secrets at rest are encrypted, private to the owner, and written atomically."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.core.secrets import MASTER_KEY_ENV, Vault, VaultError, ensure_secret_file


def test_values_round_trip_and_never_appear_in_plaintext(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault")
    vault.set("@bot:x/access_token", "syt_canary_token_value")
    assert Vault(tmp_path / "vault").get("@bot:x/access_token") == "syt_canary_token_value"
    for f in tmp_path.iterdir():
        assert b"syt_canary_token_value" not in f.read_bytes()
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    Vault(tmp_path / "vault").set("a", "b")
    with pytest.raises(VaultError, match="cannot decrypt the vault with the configured key"):
        Vault(tmp_path / "vault", key=Fernet.generate_key()).get("a")


def test_key_from_environment_creates_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, Fernet.generate_key().decode())
    Vault(tmp_path / "vault").set("a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vault"]


def test_delete_and_missing(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault")
    assert vault.get("nothing") is None
    vault.set("a", "1")
    vault.delete("a")
    assert vault.get("a") is None


def test_secret_file_is_created_once(tmp_path: Path) -> None:
    target = tmp_path / "s" / "secret"
    assert ensure_secret_file(target) is True
    first = target.read_bytes()
    assert ensure_secret_file(target) is False
    assert target.read_bytes() == first
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
