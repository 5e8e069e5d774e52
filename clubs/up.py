"""`clubs up`: the whole club network on an embedded homeserver, for a newcomer's machine.

1. Synapse from the hardened template, all state under the var directory.
2. The provisioner (server admin) and the bot accounts, each exempt from rate limits.
3. `config/network.example.yaml` applied: encrypted spaces and rooms, demo members' accounts.
4. `var/demo.json` for scripts.
5. The bots, each on its own cross-signed device; once every bot has synced (it answers), the
   homeserver URL and the demo logins on screen.

Running it again reuses the same keys, accounts and rooms (the apply makes no writes); Ctrl-C
stops the bots, then Synapse.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clubs.bots.host import BotAccount, BotFactory, HostConfig, run_bots
from clubs.core.admin import Session, ensure_ratelimit_override, ensure_service_account
from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import MatrixHttp, UserId
from clubs.core.paths import config_dir
from clubs.core.secrets import Vault, write_private
from clubs.provisioning.apply import apply_network
from clubs.provisioning.desired import DesiredNetwork
from clubs.provisioning.discover import discover
from clubs.provisioning.onboard import password_key
from clubs.provisioning.source import check, compile_desired, private_descriptions
from clubs.provisioning.tokens import TokenStore

log = logging.getLogger(__name__)


def example_network() -> Path:
    return config_dir() / "network.example.yaml"


async def run_up(
    var_dir: Path,
    port: int,
    server_name: str,
    *,
    network_file: Path | None = None,
    factories: Mapping[str, BotFactory] | None = None,
) -> int:
    network_file = network_file or example_network()
    checked = check(network_file)  # a broken file stops us before anything starts
    desired = compile_desired(checked.network, server_name)
    settings = Settings(data_dir=var_dir / "synapse", port=port, server_name=server_name)
    hs = Homeserver(settings)
    hs.start()
    try:
        vault = Vault(var_dir / "secrets" / "vault")
        async with MatrixHttp(hs.url) as anon:
            provisioner, created = await ensure_service_account(
                anon,
                vault,
                hs.registration_shared_secret(),
                settings.provisioner_localpart,
                server_name=server_name,
                admin=True,
            )
            log.info("provisioner %s %s", provisioner.user_id, "created" if created else "reused")
            admin = MatrixHttp(hs.url, provisioner.access_token, session=anon.session)
            await ensure_ratelimit_override(admin, provisioner.user_id)
            bots = await _bot_accounts(anon, admin, vault, hs, desired)
            demo = await _apply(admin, desired, provisioner, vault, var_dir)
        demo["homeserver"] = hs.url
        demo["bots"] = {b.name: b.user_id for b in bots}
        write_private(
            var_dir / "demo.json", json.dumps(demo, ensure_ascii=False, indent=2).encode()
        )
        text = banner(hs.url, server_name, demo)
        if factories is None:
            from clubs.bots.catalog import default_factories

            factories = default_factories()
        running = [b for b in bots if b.name in factories]
        if not running:
            print(text, flush=True)
            await asyncio.Event().wait()
        config = HostConfig(
            homeserver_url=hs.url,
            var_dir=var_dir,
            accounts=running,
            network=desired.network,
            provisioner=provisioner.user_id,
            admin_token=provisioner.access_token,
            descriptions=private_descriptions(desired),
        )
        # The banner says "ready" once the bots answer, not while they are still starting.
        await run_bots(config, factories, on_ready=lambda: print(text, flush=True))
    finally:
        hs.stop()
    return 0


async def _bot_accounts(
    anon: MatrixHttp, admin: MatrixHttp, vault: Vault, hs: Homeserver, desired: DesiredNetwork
) -> list[BotAccount]:
    accounts = []
    for name, mxid in sorted(desired.bots.items()):
        localpart = mxid[1:].split(":", 1)[0]
        session, _ = await ensure_service_account(
            anon,
            vault,
            hs.registration_shared_secret(),
            localpart,
            server_name=hs.settings.server_name,
            displayname=name,
        )
        await ensure_ratelimit_override(admin, session.user_id)
        accounts.append(BotAccount(name, UserId(session.user_id)))
    return accounts


async def _apply(
    admin: MatrixHttp, desired: DesiredNetwork, provisioner: Session, vault: Vault, var_dir: Path
) -> dict[str, Any]:
    tokens = TokenStore(var_dir / "provisioning" / "tokens.sqlite")
    try:
        result = await apply_network(
            admin, desired, provisioner.user_id, vault=vault, tokens=tokens
        )
    finally:
        tokens.close()
    log.info("%s", result.summary())
    actual = await discover(admin, desired, provisioner.user_id)
    rooms = {
        ref.removeprefix("club:"): room_id
        for ref, room_id in actual.room_ids().items()
        if ref.startswith("club:") and "/" in ref
    }
    members = []
    for person in desired.people:
        if person.mxid is None:
            continue
        password = vault.get(password_key(person.mxid))
        if password is None:
            continue  # not a precreated account: no password of ours
        members.append({"user_id": person.mxid, "password": password, "clubs": list(person.clubs)})
    return {"members": members, "rooms": rooms}


def banner(url: str, server_name: str, demo: Mapping[str, Any]) -> str:
    logins = "\n".join(
        f"  {m['user_id']:<32} {m['password']}   ({', '.join(m['clubs'])})"
        for m in demo.get("members", [])[:8]
    )
    more = len(demo.get("members", [])) - 8
    more_line = f"\n  … and {more} more in var/demo.json" if more > 0 else ""
    return f"""
Matrix Clubs is running.

  Homeserver:  {url}
  Server name: {server_name}

Log in with Element Desktop (or any Matrix client): choose "Sign in", edit the homeserver and
enter {url}, then use a demo member's user name and password:

{logins}{more_line}

Every room is end-to-end encrypted. Scripts find the same data in var/demo.json.
Press Ctrl-C to stop everything; `make up` again resumes with the same accounts and keys.
"""
