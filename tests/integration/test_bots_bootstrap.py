"""`clubs bots bootstrap` (the compose stack's one-shot service): the network's bot accounts are
created on a real Synapse with the registration secret, without rate limits, kept in the vault,
and reused on a second run (same device); without the secret it says where it looked."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clubs.core.secrets import MASTER_KEY_ENV, Vault
from tests.harness import SynapseHarness
from tests.integration.test_backup import clubs


def network_file(tmp_path: Path, tag: str) -> Path:
    doc = tmp_path / "network.yaml"
    doc.write_text(
        f'version: 1\nnetwork: boot-{tag}\nname: "Сеть"\n'
        f"bots:\n  moderation: mod-{tag}\n  scheduling: sched-{tag}\n"
        'countries:\n  - key: de\n    name: "Германия"\n    clubs:\n      - key: berlin\n'
        '        name: "Берлин"\n        rooms:\n          - {key: general, name: "Общий"}\n'
    )
    return doc


async def test_bootstrap_creates_the_bot_accounts_once(
    synapse: SynapseHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = secrets.token_hex(4)
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(MASTER_KEY_ENV, key)  # the vault is read here too
    network = network_file(tmp_path, tag)
    var = tmp_path / "var"
    (var / "synapse").mkdir(parents=True)
    # The homeserver's data as the stack shares it: its secrets under var/synapse/.
    (var / "synapse" / "secrets").symlink_to(synapse.hs.settings.secrets_dir)
    env = {
        **os.environ,
        MASTER_KEY_ENV: key,
        "CLUBS_SERVER_NAME": synapse.server_name,
        # The test homeserver's provisioner exists already, with its password elsewhere.
        "CLUBS_ADMIN_TOKEN": synapse.admin.session.access_token,
    }
    argv = ["bots", "bootstrap", "--network", str(network), "--var-dir", str(var)]
    argv += ["--homeserver", synapse.url, "--server-name", synapse.server_name, "--wait", "5"]

    code, out, err = await clubs(*argv, env=env)
    assert code == 0, err
    mod, sched = (f"@{name}-{tag}:{synapse.server_name}" for name in ("mod", "sched"))
    assert out.splitlines() == [f"bot moderation: {mod}", f"bot scheduling: {sched}"]
    vault = Vault(var / "secrets" / "vault")
    device = vault.get(f"{mod}/device_id")
    assert device
    for user in (mod, sched):
        admin = ("_synapse", "admin")
        got = await synapse.admin.http.get("/".join(("", *admin, "v2", "users", user)))
        assert got["user_type"] == "bot"
        override = await synapse.admin.http.get(
            "/".join(("", *admin, "v1", "users", user, "override_ratelimit"))
        )
        assert override == {"messages_per_second": 0, "burst_count": 0}
    token = vault.get(f"{mod}/access_token")
    assert token is not None
    assert token not in out + err  # never printed
    assert env["CLUBS_ADMIN_TOKEN"] not in out + err

    # Again (a restarted stack): the same accounts, devices and tokens.
    code, out_again, err = await clubs(*argv, env=env)
    assert code == 0, err
    assert out_again == out
    assert Vault(var / "secrets" / "vault").get(f"{mod}/device_id") == device
    assert Vault(var / "secrets" / "vault").get(f"{mod}/access_token") == token

    # Where the homeserver's data is not: the path it looked at, and nothing created.
    empty = tmp_path / "elsewhere"
    code, _, err = await clubs(*argv[:-8], "--var-dir", str(empty), *argv[-6:], env=env)
    assert code == 1
    assert f"{empty / 'synapse' / 'secrets' / 'registration_shared_secret'}" in err
    assert not (empty / "secrets").exists()
