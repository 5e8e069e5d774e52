"""`clubs bridge …`: off by default, the bot token into the vault, the network's bridged rooms."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.bridge.commands import store_token
from clubs.bridge.config import Portal
from clubs.bridge.registration import TELEGRAM_TOKEN
from clubs.cli import _bridged_rooms, main
from clubs.core.secrets import Vault

NETWORK = """\
version: 1
network: demo
name: "Сеть"
club_template:
  rooms:
    - {key: general, name: "Общий"}
    - {key: news, name: "Объявления"}
countries:
  - key: kz
    name: "Казахстан"
    clubs:
      - key: almaty
        name: "Алматы"
        rooms:
          - {key: news, bridge: {telegram: {chat: -1001234567890}}}
      - key: astana
        name: "Астана"
        rooms:
          - {key: general, bridge: {telegram: {chat: -42, mode: relay}}}
"""


def test_the_network_files_bridged_rooms_become_portals(tmp_path: Path) -> None:
    path = tmp_path / "network.yaml"
    path.write_text(NETWORK)
    assert _bridged_rooms(path) == (
        "demo",
        [
            Portal("demo", "almaty", "news", -1001234567890, "mirror"),
            Portal("demo", "astana", "general", -42, "relay"),
        ],
    )


def test_the_bot_token_goes_into_the_vault_and_nowhere_else(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault", key=Fernet.generate_key())
    token = "123456789:AAH" + "x" * 32
    assert store_token(vault, io.StringIO(token + "\n")) == 0
    assert vault.get(TELEGRAM_TOKEN) == token
    for f in tmp_path.iterdir():
        assert token.encode() not in f.read_bytes()


def test_something_else_than_a_token_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault", key=Fernet.generate_key())
    with pytest.raises(Exception, match="not a Telegram bot token"):
        store_token(vault, io.StringIO("hello\n"))
    assert vault.get(TELEGRAM_TOKEN) is None


def test_the_bridge_is_off_without_a_deployment_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["bridge", "run", "--config", str(tmp_path / "none.yaml"), "--var-dir", str(tmp_path)]
    )
    assert code == 1
    assert "the Telegram bridge is off" in capsys.readouterr().err
    assert not (tmp_path / "bridge").exists()


def test_validate_lists_what_leaves_matrix(tmp_path: Path) -> None:
    from clubs.provisioning.commands import cmd_validate

    path = tmp_path / "network.yaml"
    path.write_text(NETWORK)
    out = io.StringIO()
    assert cmd_validate(path, out) == 0
    assert out.getvalue().splitlines()[1:] == [
        "  almaty/news: bridged to Telegram chat -1001234567890 (mirror: one way, to Telegram)",
        "  astana/general: bridged to Telegram chat -42 (relay: both ways)",
    ]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--room", "almaty"], "write it as CLUB/ROOM"),
        (["--room", "almaty/news/x"], "write it as CLUB/ROOM"),
        (["--room", "almaty/general"], "has no bridge: key"),
        (["--room", "almaty/news"], "Pass --yes to confirm"),
    ],
)
def test_consent_with_bad_input_says_why_and_never_connects(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    says: str,
) -> None:
    path = tmp_path / "network.yaml"
    path.write_text(NETWORK)
    # No homeserver anywhere: a command that tried to connect would fail differently.
    monkeypatch.setenv("CLUBS_HOMESERVER_URL", "http://127.0.0.1:9")
    argv = ["bridge", "consent", "--network", str(path), "--var-dir", str(tmp_path), *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert says in err
    assert "Connection" not in err
    assert not (tmp_path / "secrets").exists()  # nothing written, not even a vault
