"""`clubs up` supervises the Telegram bridge only when the deployment enables it, the network
file bridges a room and the bot token is in the vault."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.bridge.registration import TELEGRAM_TOKEN
from clubs.core.secrets import Vault
from clubs.up import bridge_spec


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path / "vault", key=Fernet.generate_key())


def spec(tmp_path: Path, vault: Vault, rooms: int = 1) -> object:
    return bridge_spec(
        tmp_path, "http://127.0.0.1:8008", "clubs.test", tmp_path / "n.yaml",
        bridged_rooms=rooms, vault=vault,
    )  # fmt: skip


def test_the_bridge_is_off_by_default(
    tmp_path: Path, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLUBS_BRIDGE_CONFIG", str(tmp_path / "absent.yaml"))
    vault.set(TELEGRAM_TOKEN, "1:x")
    assert spec(tmp_path, vault) is None


def test_an_enabled_bridge_runs_as_a_child_with_a_token_and_a_bridged_room(
    tmp_path: Path, vault: Vault, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("enabled: true\nlisten: {port: 29399}\n")
    monkeypatch.setenv("CLUBS_BRIDGE_CONFIG", str(config))
    assert spec(tmp_path, vault) is None  # no token yet
    assert "clubs bridge token" in caplog.text
    vault.set(TELEGRAM_TOKEN, "1:x")
    assert spec(tmp_path, vault, rooms=0) is None
    child = bridge_spec(
        tmp_path, "http://127.0.0.1:8008", "clubs.test", tmp_path / "n.yaml",
        bridged_rooms=2, vault=vault,
    )  # fmt: skip
    assert child is not None
    assert child.name == "bridge"
    assert list(child.argv[-6:]) == [
        "bridge", "run", "--network", str(tmp_path / "n.yaml"), "--var-dir", str(tmp_path),
    ]  # fmt: skip
    assert child.env == {
        "CLUBS_HOMESERVER_URL": "http://127.0.0.1:8008",
        "CLUBS_SERVER_NAME": "clubs.test",
    }
    assert "1:x" not in " ".join(child.argv)
    assert child.ready is not None
    assert child.ready() is False
