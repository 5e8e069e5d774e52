"""One apply of a generated network in its own process, for fault injection.

`python -m tests.integration.provisioning.runner` with the environment:
CLUBS_TEST_URL, CLUBS_TEST_TOKEN (the provisioner's token: never on the command line),
CLUBS_TEST_PROVISIONER, CLUBS_TEST_VAR (vault and token store), CLUBS_TEST_SPEC (JSON: the
arguments of `spec_network`), and optionally CLUBS_CRASH_AT_WRITE=N. Prints one JSON line:
{"writes": …, "changes": …}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from clubs.core.http import MatrixHttp
from clubs.core.secrets import Vault
from clubs.provisioning.apply import apply_network, crash_hook_from_env
from clubs.provisioning.desired import DesiredNetwork, DesiredPerson
from clubs.provisioning.tokens import TokenStore
from tests.integration.provisioning.networks import make_network


def spec_network(spec: dict[str, Any]) -> DesiredNetwork:
    people = tuple(
        DesiredPerson(key, mxid, name, mode, tuple(clubs))
        for key, mxid, name, mode, clubs in spec.get("people", [])
    )
    return make_network(
        spec["server_name"],
        network=spec["network"],
        n_clubs=spec.get("n_clubs", 3),
        rooms_per_club=spec.get("rooms_per_club", 5),
        members=spec.get("members"),
        people=people,
    )


async def main() -> int:
    env = os.environ
    net = spec_network(json.loads(env["CLUBS_TEST_SPEC"]))
    var = Path(env["CLUBS_TEST_VAR"])
    store = TokenStore(var / "tokens.sqlite")
    async with MatrixHttp(env["CLUBS_TEST_URL"], env["CLUBS_TEST_TOKEN"]) as http:
        http.on_write = crash_hook_from_env()
        result = await apply_network(
            http,
            net,
            env["CLUBS_TEST_PROVISIONER"],
            vault=Vault(var / "vault", key=env["CLUBS_TEST_VAULT_KEY"].encode()),
            tokens=store,
        )
    store.close()
    summary: dict[str, object] = {"writes": result.writes, "changes": len(result.plan.actions)}
    if result.plan.actions:
        summary["actions"] = [f"{a.kind} {a.ref} {a.event_type}" for a in result.plan.actions]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
