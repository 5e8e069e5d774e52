"""R3: the applier killed right before its Nth write converges on the next run, no duplicates.

Each sampled boundary runs in its own process (`runner.py`) with CLUBS_CRASH_AT_WRITE=N, which
exits with status 137 before write N; then a re-run must converge (apply verifies that nothing is
left to do), and a third run must make 0 writes. Boundaries: first, second, middle, last two, and
the first write of every kind of request, taken from a reference run of the same network.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from clubs.core.http import MatrixHttp
from clubs.core.secrets import Vault
from clubs.provisioning.apply import CRASH_ENV, apply_network
from clubs.provisioning.tokens import TokenStore
from tests.harness import SynapseHarness
from tests.integration.provisioning.helpers import (
    Provisioner,
    check_room_matches,
    new_provisioner,
)
from tests.integration.provisioning.runner import spec_network

ROOT = Path(__file__).resolve().parents[3]
PARALLEL = 3


def _spec(server_name: str, staff: str, member: str) -> dict[str, Any]:
    pc = f"@pc-{secrets.token_hex(4)}:{server_name}"
    return {
        "server_name": server_name,
        "network": f"crash-{secrets.token_hex(4)}",
        "n_clubs": 3,
        "rooms_per_club": 5,
        "members": {"c0": {staff: 50, member: 0, pc: 0}, "c1": {member: 0}},
        "people": [
            ["pc", pc, "Пётр", "precreate", ["c0"]],
            ["tk", None, None, "token", ["c1"]],
        ],
    }


async def _run(
    prov: Provisioner, spec: dict[str, Any], var: Path, crash: int | None
) -> tuple[int, Any]:
    env = {
        **os.environ,
        "CLUBS_TEST_URL": prov.url,
        "CLUBS_TEST_TOKEN": prov.token,
        "CLUBS_TEST_PROVISIONER": prov.user_id,
        "CLUBS_TEST_VAR": str(var),
        "CLUBS_TEST_VAULT_KEY": (var / "key").read_text(),
        "CLUBS_TEST_SPEC": json.dumps(spec),
    }
    env.pop(CRASH_ENV, None)
    if crash is not None:
        env[CRASH_ENV] = str(crash)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.provisioning.runner",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    if proc.returncode == 0:
        return 0, json.loads(out.decode().strip().splitlines()[-1])
    return proc.returncode, err.decode()[-2000:]


def _var(tmp: Path) -> Path:
    tmp.mkdir(parents=True)
    (tmp / "key").write_text(Fernet.generate_key().decode())
    return tmp


async def test_killed_applier_converges_without_duplicates(
    synapse: SynapseHarness, tmp_path: Path
) -> None:
    prov = await new_provisioner(synapse)
    staff = await synapse.new_user("fac")
    member = await synapse.new_user("mem")

    # Reference run (in-process): the sequence of writes a full apply makes.
    labels: list[str] = []
    ref_spec = _spec(synapse.server_name, staff.user_id, member.user_id)
    ref_var = _var(tmp_path / "ref")
    async with MatrixHttp(prov.url, prov.token) as http:
        http.on_write = lambda method, label: labels.append(label)
        store = TokenStore(ref_var / "tokens.sqlite")
        await apply_network(
            http,
            spec_network(ref_spec),
            prov.user_id,
            vault=Vault(ref_var / "vault", key=(ref_var / "key").read_bytes()),
            tokens=store,
        )
        store.close()
    total = len(labels)
    assert total > 60
    firsts = {label: i + 1 for i, label in reversed(list(enumerate(labels)))}
    boundaries = sorted({1, 2, total // 2, total - 1, total, *firsts.values()})
    assert len(firsts) >= 5  # user, token, createRoom, m.space.child, invite

    async def boundary(n: int) -> None:
        spec = _spec(synapse.server_name, staff.user_id, member.user_id)
        var = _var(tmp_path / f"b{n}")
        code, _ = await _run(prov, spec, var, crash=n)
        assert code == 137, f"boundary {n}: exit {code}"
        code, second = await _run(prov, spec, var, crash=None)
        assert code == 0, f"boundary {n}: re-run failed: {second}"
        code, third = await _run(prov, spec, var, crash=None)
        assert code == 0, third
        assert third == {"writes": 0, "changes": 0}, f"boundary {n}: {third}"
        net = spec_network(spec)
        actual = await prov.discover(net)
        assert len(actual.rooms) == 20
        assert not actual.duplicates
        async with prov.http() as http:
            await check_room_matches(http, net, actual, prov.user_id)

    sem = asyncio.Semaphore(PARALLEL)

    async def limited(n: int) -> None:
        async with sem:
            await boundary(n)

    await asyncio.gather(*(limited(n) for n in boundaries))
