"""The example network (config/network.example.yaml) through the whole chain, and the CLI."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from dataclasses import replace
from pathlib import Path

from clubs.core.secrets import Vault
from clubs.provisioning.compile import compile_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.load import load_network
from clubs.provisioning.tokens import TokenStore
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import (
    Provisioner,
    check_room_matches,
    new_provisioner,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "config" / "network.example.yaml"


def example(server_name: str, key: str) -> DesiredNetwork:
    network = replace(load_network(EXAMPLE), key=key)
    return compile_network(network, server_name)


async def test_example_network_applies_as_declared_and_converges(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    prov = await new_provisioner(synapse)
    net = example(synapse.server_name, f"ex-{secrets.token_hex(4)}")
    store = TokenStore(tmp_path / "tokens.sqlite")
    vault = Vault(tmp_path / "vault")
    first = await prov.apply(net, vault=vault, tokens=store)
    active = [r for r in net.rooms if r.life == "active"]
    assert len(first.created) == len(active)
    assert {t.person for t in first.issued} == {
        p.key for p in net.people if p.onboarding == "token" and not p.mxid
    }
    actual = await prov.discover(net)
    async with prov.http() as http:
        await check_room_matches(http, net, actual, prov.user_id)
    second = await prov.apply(net, vault=vault, tokens=store)
    assert second.writes == 0
    store.close()


async def _clubs(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clubs.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_plan_exit_codes_and_apply(synapse: SynapseHarness, tmp_path: Path) -> None:
    prov: Provisioner = await new_provisioner(synapse)
    net_id = f"cli-{secrets.token_hex(4)}"
    doc = tmp_path / "network.yaml"
    doc.write_text(
        "\n".join(
            [
                "version: 1",
                f"network: {net_id}",
                'name: "Сеть"',
                "countries:",
                "  - key: de",
                '    name: "Германия"',
                "    clubs:",
                "      - key: berlin",
                '        name: "Берлин"',
                "        rooms:",
                '          - {key: general, name: "Общий"}',
                "",
            ]
        )
    )
    env = {
        **os.environ,
        "CLUBS_HOMESERVER_URL": synapse.url,
        "CLUBS_ADMIN_TOKEN": prov.token,
        "CLUBS_VAR_DIR": str(tmp_path / "var"),
    }
    code, out, err = await _clubs("validate", str(doc), env=env)
    assert code == 0, err
    code, out, err = await _clubs("plan", str(doc), env=env)
    assert code == 2, err
    assert "+ create club:berlin" in out
    code, out, err = await _clubs("apply", str(doc), env=env)
    assert code == 1  # not a terminal and no --yes: nothing applied
    assert "--yes" in err
    code, out, err = await _clubs("apply", str(doc), "--yes", env=env)
    assert code == 0, err
    assert "verified: no changes left" in out
    code, out, err = await _clubs("plan", str(doc), "--json", env=env)
    assert code == 0, err
    assert '"changes": 0' in out
    assert prov.token not in out + err
