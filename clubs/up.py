"""`clubs up`: the whole club network on an embedded homeserver, for a newcomer's machine.

Starts Synapse with all state under the var directory, bootstraps the provisioner account (a
server admin exempt from rate limits), and prints how to log in. Running it again reuses the
same keys and accounts; Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from clubs.core.admin import ensure_ratelimit_override, ensure_service_account
from clubs.core.homeserver import Homeserver, Settings
from clubs.core.http import MatrixHttp
from clubs.core.secrets import Vault

log = logging.getLogger(__name__)


async def run_up(var_dir: Path, port: int, server_name: str) -> int:
    settings = Settings(data_dir=var_dir / "synapse", port=port, server_name=server_name)
    hs = Homeserver(settings)
    hs.start()
    try:
        vault = Vault(var_dir / "secrets" / "vault")
        async with MatrixHttp(hs.url) as http:
            provisioner, created = await ensure_service_account(
                http,
                vault,
                hs.registration_shared_secret(),
                settings.provisioner_localpart,
                server_name=server_name,
                admin=True,
            )
            admin = MatrixHttp(hs.url, provisioner.access_token, session=http.session)
            await ensure_ratelimit_override(admin, provisioner.user_id)
            log.info("provisioner %s %s", provisioner.user_id, "created" if created else "reused")
        print(banner(hs.url, server_name), flush=True)
        await asyncio.Event().wait()
    finally:
        hs.stop()
    return 0


def banner(url: str, server_name: str) -> str:
    return f"""
Matrix Clubs is running.

  Homeserver:  {url}
  Server name: {server_name}

Log in with Element Desktop (or any Matrix client): choose "Sign in", edit the homeserver and
enter {url}, then use a demo member's user name and password.

Press Ctrl-C to stop everything; `make up` again resumes with the same accounts and keys.
"""
